"""digitnet: handwritten-digit recognition with the teaching notebook's CNN, as real software.

The Python API mirrors the CLI, with Keras-like ergonomics:

    import digitnet
    run = digitnet.train(epochs=1)            # like `digitnet train --epochs 1`
    run.history["val_accuracy"]               # per-epoch history, as Keras' History.history
    model = digitnet.load(run.run_dir)        # like `--model RUN`
    probs = model.predict(images)             # uint8 (N, 28, 28) arrays or PIL images -> (N, 10)

model.predict is the network alone (as Keras' predict). To read photos as `digitnet predict` and
`digitnet read` do (each digit also read deslanted): digitnet.read.predict_image(image, model) and
digitnet.read.read_number(image, model).
"""
__version__ = "0.1.0"

# The submodules train and evaluate share their names with the API functions below. Importing them
# first means the functions, defined afterwards, are what `digitnet.train` and `digitnet.evaluate` name.
from digitnet import evaluate as _evaluate_module  # noqa: E402,F401
from digitnet import train as _train_module  # noqa: E402,F401


def train(recipe: str | None = None, log: str = "bar", plots: bool = True, resume: str | None = None,
          **settings):
    """Train with a recipe (default seed) plus overrides (TrainConfig field names); returns a Run with
    .history. resume="runs/NAME" continues that run from its newest checkpoint instead."""
    from digitnet.config import make_config
    from digitnet.evaluate import evaluate_run
    from digitnet.train import resume as resume_run
    from digitnet.train import train as train_run

    if resume is not None:
        run = resume_run(resume, log=log, recipe=recipe, **settings)
        cfg = run.config
    else:
        cfg = make_config(recipe or "seed", **settings)
        run = train_run(cfg, log=log)
    if plots and run.rank == 0:  # under torchrun only rank 0 has the files to evaluate
        result = evaluate_run(run.run_dir, cfg.data_dir, cfg.device, cfg.limit_test)
        run.metrics["test_accuracy"] = result["accuracy"]
    return run


def load(run=None, device: str = "cpu"):
    """A Classifier from a run directory (default: the model shipped with digitnet)."""
    from digitnet.read import load_classifier

    return load_classifier(run, device)


def evaluate(run, **kwargs) -> dict:
    """Test-set metrics of a run directory (also writes evaluation.json and plots)."""
    from digitnet.evaluate import evaluate_run

    return evaluate_run(run, **kwargs)


def summary(model: str = "seed") -> str:
    """The Keras-like layer table of a named network."""
    from digitnet.model import build_model, format_summary

    return format_summary(build_model(model), model)
