"""Calibration and coverage: expected calibration error, temperature scaling, `digitnet calibrate` and
`digitnet evaluate --coverage`."""
import json

import numpy as np
import pytest

from digitnet.cli import main
from digitnet.read import load_classifier


def test_expected_calibration_error_by_hand():
    from digitnet.calibration import expected_calibration_error

    probs = np.tile([[0.8, 0.2]], (10, 1))
    assert expected_calibration_error(probs, np.array([0] * 8 + [1] * 2)) == pytest.approx(0.0)
    assert expected_calibration_error(probs, np.zeros(10, int)) == pytest.approx(0.2)
    assert expected_calibration_error(probs, np.ones(10, int)) == pytest.approx(0.8)


def test_temperature_scaling_cures_an_over_confident_model(classifier, mnist_test):
    import torch

    from digitnet.calibration import calibrate_logits
    from digitnet.model import predict_logits

    x, y = mnist_test
    logits = predict_logits(classifier.model, torch.from_numpy(x[:2000]))
    base = calibrate_logits(logits, y[:2000], "test")
    # Five times the logits: the same answers, far more sure of them. The fit must undo it exactly,
    # landing on the same calibrated probabilities (and so the same ECE) as the unscaled logits.
    loud = calibrate_logits(logits * 5, y[:2000], "test")
    assert loud["temperature"] == pytest.approx(5 * base["temperature"], rel=0.02)
    assert loud["ece_after"] == pytest.approx(base["ece_after"], abs=5e-4)
    assert loud["ece_after"] < loud["ece_before"]


@pytest.fixture(scope="module")
def holdout_run(tmp_path_factory):
    import torch

    import digitnet

    out = tmp_path_factory.mktemp("holdout")
    threads = torch.get_num_threads()
    # One thread: batches of 32 gain nothing from more, and on a busy machine lose 10x to waiting.
    run = digitnet.train(epochs=1, limit_train=1500, val_size=1000, out_dir=str(out), name="h",
                         log="quiet", plots=False, seed=1, threads=1)
    torch.set_num_threads(threads)
    return run


def test_calibrate_stores_the_temperature_and_keeps_the_weights(holdout_run, tmp_path, capsys):
    import shutil

    from digitnet.model import read_meta, update_meta, weights_digest

    run = str(holdout_run.run_dir)
    before = read_meta(run)
    assert main(["calibrate", run]) == 0
    out = capsys.readouterr().out
    assert "temperature" in out and "before" in out and "after" in out
    meta = read_meta(run)
    cal = meta["calibration"]
    assert cal["temperature"] > 0 and cal["ece_bins"] == 15
    assert "holdout: 1000 training images" in cal["fitted_on"]
    assert 0 <= cal["ece_after"] <= cal["ece_before"]
    assert meta["weights_sha256"] == before["weights_sha256"] == weights_digest(run)
    assert load_classifier(run).temperature == pytest.approx(cal["temperature"])
    # A run validated on the test set has nothing held out: refuse rather than fit on the test set.
    on_test = shutil.copytree(run, tmp_path / "on-test")
    update_meta(on_test, config={**meta["config"], "val_size": 0})
    assert main(["calibrate", str(on_test)]) == 1
    assert "val_size 0" in capsys.readouterr().err


def test_evaluate_coverage_table_and_plot(holdout_run, capsys):
    run = holdout_run.run_dir
    assert main(["evaluate", str(run), "--limit", "1000", "--coverage"]) == 0
    out = capsys.readouterr().out
    assert "accuracy vs coverage" in out and "--min-confidence" in out
    assert (run / "plots" / "coverage.png").exists()
    rows = json.loads((run / "evaluation.json").read_text())["coverage"]["rows"]
    assert [r["coverage"] for r in rows] == [1.0, 0.99, 0.98, 0.95, 0.9, 0.8]
    assert rows[0]["answered"] == 1000 and rows[-1]["answered"] == 800
    thresholds = [r["min_confidence"] for r in rows]
    assert thresholds == sorted(thresholds)  # answering fewer needs a higher threshold
    assert rows[-1]["accuracy"] > rows[0]["accuracy"]  # the confident 80% are right more often
