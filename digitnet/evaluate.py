"""Test-set metrics of a run directory: accuracy, per-class precision/recall/F1, the confusion
matrix, and the plots saved into runs/<name>/plots/ (learning curves, confusion matrix, mistakes)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from digitnet.data import load_split
from digitnet.files import atomic_write_bytes, atomic_write_json
from digitnet.model import load_model, pick_device, predict_logits, probabilities


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(classes, classes) counts: row = true class, column = predicted class."""
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes ** 2).reshape(num_classes, -1)


def per_class(cm: np.ndarray) -> list[dict]:
    tp = np.diag(cm).astype(float)
    predicted, actual = cm.sum(0).astype(float), cm.sum(1).astype(float)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp),
                   where=(precision + recall) > 0)
    return [{"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for p, r, f, s in zip(precision, recall, f1, actual)]


def metrics_from_logits(logits: torch.Tensor, y: np.ndarray, class_names: list[str]) -> dict:
    y_t = torch.from_numpy(y)
    pred = logits.argmax(1).numpy()
    cm = confusion_matrix(y, pred, len(class_names))
    return {"accuracy": float((pred == y).mean()), "loss": F.cross_entropy(logits, y_t).item(),
            "images": int(len(y)), "errors": int((pred != y).sum()),
            "per_class": dict(zip(class_names, per_class(cm))), "confusion_matrix": cm.tolist()}


def evaluate_run(run_dir: str | Path, data_dir: str | None = None, device: str = "auto",
                 limit: int = 0, plots: bool = True, coverage: bool = False,
                 out_dir: str | Path | None = None) -> dict:
    """Reload a run, score it on its dataset's test split, write evaluation.json and the plots.

    They go into out_dir, by default the run directory itself. coverage: also accuracy vs coverage
    with the run's calibrated probabilities (plots/coverage.png).
    """
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir
    dev = pick_device(device)
    model, meta = load_model(run_dir, dev)
    x, y = load_split(meta["dataset"]["name"], "test", data_dir)
    if limit:
        x, y = x[:limit], y[:limit]
    # fp32 on purpose: the reported test accuracy should not depend on the CPU's bf16 support.
    logits = predict_logits(model, torch.from_numpy(x), device=dev, precision="fp32").cpu()
    result = metrics_from_logits(logits, y, meta["class_names"])
    result["run_dir"] = str(run_dir)
    if coverage:
        from digitnet.calibration import coverage_table, expected_calibration_error, plot_coverage

        temperature = float(meta.get("calibration", {}).get("temperature", 1.0))
        probs = probabilities(logits, temperature).numpy()  # as predict sees them
        result["coverage"] = {"temperature": temperature, "ece": expected_calibration_error(probs, y),
                              "rows": coverage_table(probs, y)}
        if plots:
            plot_coverage(probs, y, out / "plots" / "coverage.png")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "evaluation.json", result)
    if plots:
        write_plots(run_dir, x, y, logits, meta["class_names"], out)
    return result


def format_report(result: dict) -> str:
    report = _format_metrics(result)
    if "coverage" in result:
        from digitnet.calibration import format_coverage

        c = result["coverage"]
        report += "\n\n" + format_coverage(c["rows"], c["temperature"], c["ece"])
    return report


def _format_metrics(result: dict) -> str:
    names = list(result["per_class"])
    lines = [f"test accuracy: {result['accuracy']:.4f} ({result['images'] - result['errors']:,}/"
             f"{result['images']:,}; {result['errors']} errors)   test loss: {result['loss']:.4f}", "",
             f"{'class':>12} {'precision':>10} {'recall':>8} {'f1':>8} {'support':>8}"]
    for name in names:
        c = result["per_class"][name]
        lines.append(f"{name:>12} {c['precision']:>10.4f} {c['recall']:>8.4f} {c['f1']:>8.4f} {c['support']:>8}")
    lines += ["", "confusion matrix (rows: true, columns: predicted)",
              "      " + "".join(f"{i:>6}" for i in range(len(names)))]
    for i, row in enumerate(result["confusion_matrix"]):
        lines.append(f"{i:>6}" + "".join(f"{v:>6}" for v in row))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Plots


def new_figure(**kwargs):
    """A matplotlib Figure outside pyplot: no global backend switch (Jupyter keeps inline plots)
    and nothing to close; it is freed with its last reference."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def save_figure(fig, path: Path) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def write_plots(run_dir: Path, x: np.ndarray, y: np.ndarray, logits: torch.Tensor,
                class_names: list[str], out_dir: Path | None = None) -> list[Path]:
    plots = (out_dir or run_dir) / "plots"
    paths = []
    history_path = run_dir / "history.json"
    if history_path.exists():
        paths.append(plot_history(json.loads(history_path.read_text()), plots / "learning_curves.png"))
    pred = logits.argmax(1).numpy()
    paths.append(plot_confusion(confusion_matrix(y, pred, len(class_names)), class_names,
                                plots / "confusion_matrix.png"))
    probs = probabilities(logits).numpy()
    paths.append(plot_mistakes(x, y, pred, probs, class_names, plots / "misclassified.png"))
    return paths


def plot_history(history: dict, path: Path) -> Path:
    fig = new_figure(figsize=(10, 3.8))
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = history["epoch"]
    ax_loss.plot(epochs, history["loss"], "o-", label="train")
    ax_loss.plot(epochs, history["val_loss"], "o-", label="validation")
    ax_loss.set(title="loss (cross-entropy)", xlabel="epoch")
    ax_acc.plot(epochs, history["accuracy"], "o-", label="train")
    ax_acc.plot(epochs, history["val_accuracy"], "o-", label="validation")
    ax_acc.set(title="accuracy", xlabel="epoch")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_xticks(epochs)
    save_figure(fig, path)
    return path


def plot_confusion(cm: np.ndarray, class_names: list[str], path: Path) -> Path:
    fig = new_figure(figsize=(6.5, 5.5))
    ax = fig.subplots()
    # Log colour scale: the diagonal holds ~1000 per class, mistakes single digits.
    ax.imshow(np.log1p(cm), cmap="Blues")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if cm[i, j] > cm.max() / 10 else "black")
    ax.set(xticks=range(len(class_names)), yticks=range(len(class_names)),
           xlabel="predicted", ylabel="true", title="confusion matrix (test set)")
    ax.set_xticklabels(class_names, rotation=45 if len(class_names[0]) > 2 else 0)
    ax.set_yticklabels(class_names)
    save_figure(fig, path)
    return path


def plot_mistakes(x: np.ndarray, y: np.ndarray, pred: np.ndarray, probs: np.ndarray,
                  class_names: list[str], path: Path, limit: int = 48) -> Path:
    """A grid of misclassified test images, most confident mistakes first."""
    wrong = np.flatnonzero(pred != y)
    wrong = wrong[np.argsort(-probs[wrong, pred[wrong]])][:limit]
    cols = 8
    rows = max(1, -(-len(wrong) // cols))
    fig = new_figure(figsize=(cols * 1.3, rows * 1.5))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong):
        ax.imshow(x[i], cmap="gray_r")
        ax.set_title(f"true {class_names[y[i]]}\npred {class_names[pred[i]]} {probs[i, pred[i]]:.0%}",
                     fontsize=7)
    fig.suptitle(f"misclassified test images: {len(np.flatnonzero(pred != y))} of {len(y)}"
                 + (" (most confident first)" if len(wrong) else " (none)"), fontsize=9)
    save_figure(fig, path)
    return path

