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
