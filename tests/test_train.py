import json

import numpy as np
import pytest

import digitnet
from digitnet.errors import DigitnetError


def test_short_run_learns(tiny_run):
    h = tiny_run.history
    assert h["epoch"] == [1]
    assert h["val_accuracy"][-1] > 0.80  # chance is 0.10
    assert tiny_run.metrics["test_accuracy"] > 0.80


def test_loss_falls_over_epochs(tmp_path):
    run = digitnet.train(epochs=2, limit_train=1000, limit_test=300, out_dir=str(tmp_path), name="r",
                         log="quiet", plots=False)
    assert run.history["loss"][1] < run.history["loss"][0]
    assert run.history["val_loss"][1] < run.history["val_loss"][0]


def test_run_directory_contents(tiny_run):
    d = tiny_run.run_dir
    for name in ["model.safetensors", "model.json", "history.csv", "history.json", "metrics.json",
                 "evaluation.json", "plots/learning_curves.png", "plots/confusion_matrix.png",
                 "plots/misclassified.png"]:
        assert (d / name).stat().st_size > 0, name
    meta = json.loads((d / "model.json").read_text())
    assert meta["architecture"]["params"] == 241_546
    assert meta["dataset"]["sha256"]["train-images-idx3-ubyte"].startswith("ba891046")
    assert meta["config"]["batch_size"] == 32 and meta["config"]["epochs"] == 1
    assert meta["input"]["range"] == [0.0, 1.0]
    assert {"torch", "digitnet", "python"} <= set(meta["versions"])


def test_loaded_model_predicts_like_training(tiny_run):
    from digitnet.data import load_split

    x, y = load_split("mnist", "test")
    model = digitnet.load(tiny_run.run_dir)
    probs = model.predict(x[:500])
    assert probs.shape == (500, 10)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    acc = (probs.argmax(1) == y[:500]).mean()
    assert abs(acc - tiny_run.metrics["test_accuracy"]) < 1e-9


def test_same_seed_same_run(tmp_path):
    kw = dict(epochs=1, limit_train=500, limit_test=200, out_dir=str(tmp_path), log="quiet", plots=False,
              precision="fp32", seed=3)
    a = digitnet.train(name="a", **kw)
    b = digitnet.train(name="b", **kw)
    assert a.history["loss"] == b.history["loss"]


def test_holdout_validation_split(tmp_path):
    run = digitnet.train(epochs=1, limit_train=500, val_size=1000, out_dir=str(tmp_path), name="v",
                         log="quiet", plots=False)
    meta = json.loads((run.run_dir / "model.json").read_text())
    assert meta["dataset"]["val_split"] == "holdout" and meta["dataset"]["val_images"] == 1000


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(DigitnetError, match="did you mean batch_size"):
        digitnet.train(bach_size=4)
    with pytest.raises(DigitnetError, match="epochs must be at least 1"):
        digitnet.train(epochs=0)
    with pytest.raises(DigitnetError, match="unknown recipe"):
        digitnet.train(recipe="fastest-ever")


def test_existing_run_directory_is_not_overwritten(tiny_run):
    with pytest.raises(DigitnetError, match="already exists"):
        digitnet.train(epochs=1, limit_train=100, out_dir=str(tiny_run.run_dir.parent), name="tiny", log="quiet")



@pytest.mark.parametrize("keep", [False, True])
def test_training_steps_reuse_freed_memory(keep):
    """fit() asks glibc to keep freed buffers (train.keep_freed_memory). With glibc's defaults each
    seed-network step faults ~750 fresh pages in (measured: 7,000-15,000 in 20 steps); kept, 0-240. In a
    fresh process, so that nothing else in the test session has set the allocator up already."""
    import subprocess
    import sys

    code = f"""if True:
        import resource, sys, torch, torch.nn.functional as F
        from digitnet.model import autocast, build_model, pool_before_relu
        from digitnet.train import keep_freed_memory
        if {keep} and not keep_freed_memory():
            sys.exit(3)
        torch.manual_seed(0)
        model = build_model("seed").to(memory_format=torch.channels_last)
        net, opt = pool_before_relu(model), torch.optim.Adam(model.parameters())
        def steps(n):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for _ in range(n):
                x = torch.rand(32, 1, 28, 28).contiguous(memory_format=torch.channels_last)
                with autocast(torch.device("cpu"), "bf16"):
                    loss = F.cross_entropy(net(x).float(), torch.randint(0, 10, (32,)))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        steps(10)
        print(steps(20))
    """
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode == 3:
        pytest.skip("the C library is not glibc")
    assert proc.returncode == 0, proc.stderr
    faults = int(proc.stdout)
    if keep:
        assert faults < 20 * 50  # a few stray ones (thread start-up) are fine
    else:
        assert faults > 20 * 100  # what the setting is for (if glibc changes its defaults, look again)
