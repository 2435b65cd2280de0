"""Confidence that means what it says: expected calibration error, temperature scaling, coverage.

A network trained with cross-entropy is usually over-confident: of the answers it gives with 99%
confidence, fewer than 99% are right. Temperature scaling (Guo et al., 2017, "On Calibration of
Modern Neural Networks") divides the logits by one number T > 1 fitted on held-out data; the
ranking of classes within an image, and so the accuracy, is unchanged.

    digitnet calibrate runs/NAME          # fit T on the run's hold-out split, store it in model.json
    digitnet evaluate runs/NAME --coverage
"""
from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from digitnet.errors import DigitnetError

ECE_BINS = 15  # Guo et al. report ECE with 15 equal-width bins; so do most papers since
COVERAGE_LEVELS = (1.0, 0.99, 0.98, 0.95, 0.90, 0.80)


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    if len(y) == 0:
        return 0.0
    confidence = probs.max(1)
    correct = probs.argmax(1) == y
    # Bin i holds confidences in (i/bins, (i+1)/bins]; the max probability is always above 1/classes.
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def fit_temperature(logits: torch.Tensor, y: torch.Tensor | np.ndarray) -> float:
    """The T > 0 minimising the negative log-likelihood of softmax(logits / T) on (logits, y)."""
    from scipy.optimize import minimize_scalar

    logits = torch.as_tensor(logits, dtype=torch.float32)
    y = torch.as_tensor(y, dtype=torch.long)
    if len(y) == 0:
        raise DigitnetError("cannot fit a temperature on zero images")

    def nll(log_t: float) -> float:
        return F.cross_entropy(logits / math.exp(log_t), y).item()

    # Search log T, so T stays positive; T in [0.05, 20] covers any network seen in practice.
    best = minimize_scalar(nll, bounds=(math.log(0.05), math.log(20.0)), method="bounded",
                           options={"xatol": 1e-4})
    return float(math.exp(best.x))


def calibrate_logits(logits: torch.Tensor, y: np.ndarray, fitted_on: str) -> dict:
    """Fit T on (logits, y); the `calibration` entry of model.json with ECE before and after."""
    from digitnet.model import probabilities

    temperature = fit_temperature(logits, y)
    before = expected_calibration_error(probabilities(logits).numpy(), y)
    after = expected_calibration_error(probabilities(logits, temperature).numpy(), y)
    return {"temperature": temperature, "ece_before": before, "ece_after": after,
            "ece_bins": ECE_BINS, "fitted_on": fitted_on,
            "fitted": datetime.now().isoformat(timespec="seconds")}


def calibrate_run(run_dir: str | Path, data_dir: str | None = None, device: str = "auto") -> dict:
    """Fit the temperature on the run's own hold-out split and record it in model.json."""
    from digitnet.config import TrainConfig, check_keys, field_names
    from digitnet.model import load_model, pick_device, predict_logits, update_meta
    from digitnet.train import load_splits

    run_dir = Path(run_dir)
    dev = pick_device(device)
    model, meta = load_model(run_dir, dev)
    settings = dict(meta.get("config") or {})
    check_keys(settings, field_names(), f"setting in {run_dir}/model.json")
    cfg = TrainConfig(**settings)
    if not cfg.val_size:
        raise DigitnetError(
            f"{run_dir} was trained with val_size 0 (validated on the test set), so it has no "
            f"held-out training images to calibrate on; the test set must stay unseen. Retrain with "
            f"--val-size 5000 (any N > 0) and calibrate that run")
    if data_dir is not None:
        cfg.data_dir = data_dir
    # The same seeded permutation as training: these images were never trained on.
    splits = load_splits(cfg)
    logits = predict_logits(model, splits.x_val, device=dev, precision="fp32").cpu()
    calibration = calibrate_logits(logits, splits.y_val.numpy(),
                                   f"holdout: {len(splits.y_val)} training images (val_size "
                                   f"{cfg.val_size}, seed {cfg.seed})")
    update_meta(run_dir, calibration=calibration)
    return calibration


def coverage_curve(probs: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Answer only the most confident images first: (coverage, accuracy, threshold) per answered count."""
    confidence = probs.max(1)
    order = np.argsort(-confidence, kind="stable")
    correct = (probs.argmax(1) == y)[order]
    answered = np.arange(1, len(y) + 1)
    return answered / len(y), np.cumsum(correct) / answered, confidence[order]


def coverage_table(probs: np.ndarray, y: np.ndarray, levels=COVERAGE_LEVELS) -> list[dict]:
    """Accuracy when answering the most confident fraction of images, and the threshold that does it."""
    coverage, accuracy, threshold = coverage_curve(probs, y)
    rows = []
    for level in levels:
        n = max(1, math.ceil(level * len(y) - 1e-9))
        rows.append({"coverage": level, "answered": int(n), "accuracy": float(accuracy[n - 1]),
                     "errors": int(round(n * (1 - accuracy[n - 1]))),
                     "min_confidence": float(threshold[n - 1])})
    return rows


def format_coverage(rows: list[dict], temperature: float, ece: float) -> str:
    lines = [f"accuracy vs coverage (answer only the most confident; temperature {temperature:.3f}, "
             f"test ECE {ece:.4f})",
             f"{'coverage':>9} {'answered':>9} {'accuracy':>9} {'errors':>7} {'--min-confidence':>17}"]
    for r in rows:
        lines.append(f"{r['coverage']:>9.0%} {r['answered']:>9,} {r['accuracy']:>9.4f} {r['errors']:>7} "
                     f"{r['min_confidence']:>17.4f}")
    return "\n".join(lines)


def plot_coverage(probs: np.ndarray, y: np.ndarray, path: Path) -> Path:
    """Accuracy against coverage, the curve `--min-confidence` moves along."""
    from digitnet.evaluate import new_figure, save_figure

    coverage, accuracy, _ = coverage_curve(probs, y)
    fig = new_figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(coverage * 100, accuracy * 100)
    ax.set(xlabel="coverage (% of test images answered)", ylabel="accuracy on answered (%)",
           title="accuracy vs coverage (test set)", xlim=(0, 100.5))
    ax.invert_xaxis()
    ax.grid(alpha=0.3)
    save_figure(fig, path)
    return path
