"""Regenerate the pictures and measurements in docs/how-it-works.md, all made by digitnet itself.

    flock /tmp/digitnet-heavy.lock .venv/bin/python docs/make_figures.py      # a few minutes on 2 CPU cores
    .venv/bin/python docs/make_figures.py --limit-train 1000 --out /tmp/figs  # a quick check of the script

Trains the seed network 12 times on the first 10,000 MNIST training images with `digitnet.train`, two
seeds per setting, one setting changed per run: batch size, learning rate, input scaling; the baseline
(the notebook's settings) for 3 epochs. Accuracy is measured on all 10,000 test images. A subset keeps
the sweep to minutes on a shared 2-core machine (with all 60,000 an epoch has 6x the steps, so the
one-epoch gaps would shrink; not measured here). Then it draws with the baseline model:
`digitnet explain` on a photo from benchmarks/make_realistic.py, the first-layer filters, and saliency
before and after training. Writes docs/images/*.png and docs/images/sweep.json, and prints
the tables that how-it-works.md quotes.
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import digitnet  # noqa: E402
from digitnet import model as model_module  # noqa: E402
from digitnet.data import load_split  # noqa: E402
from digitnet.evaluate import _figure, save_figure  # noqa: E402
from digitnet.explain import explain, saliency, saliency_stats  # noqa: E402
from digitnet.files import atomic_write_bytes, atomic_write_json  # noqa: E402

SEEDS = (0, 1)  # two seeds per setting: differences smaller than their spread are noise
BASELINE = {"epochs": 1, "batch_size": 32, "lr": 1e-3}  # the notebook's settings, one epoch
PHOTO_ITEM = 0  # item of benchmarks/make_realistic.py shown by `digitnet explain` (fixed, not picked)


class TimesPixels(nn.Module):
    """Undo scale_pixels' division by 255: the network then sees raw 0-255 pixels, as the notebook fed them."""

    def forward(self, x):
        return x * 255.0


def raw_pixel_layers(num_classes: int = 10) -> list[nn.Module]:
    return [TimesPixels(), *model_module.seed_layers(num_classes)]


# Registered for this process only, so digitnet.train runs its own loop on raw pixels.
model_module.MODELS["seed-raw-pixels"] = raw_pixel_layers


def sweep(out_dir: Path, limit_train: int) -> list[dict]:
    """One row per (setting, seed): per-epoch test accuracy and loss, training seconds and images/s."""
    variants = [("baseline (3 epochs)", {"epochs": 3}),
                ("batch 128", {"batch_size": 128}), ("batch 512", {"batch_size": 512}),
                ("lr 1e-4", {"lr": 1e-4}), ("lr 1e-2", {"lr": 1e-2}),
                ("raw 0-255 pixels", {"model": "seed-raw-pixels"})]
    rows = []
    for label, change in variants:
        for seed in SEEDS:
            settings = {**BASELINE, **change}
            started = time.perf_counter()
            run = digitnet.train(**settings, seed=seed, limit_train=limit_train, out_dir=str(out_dir),
                                 name=f"{label.replace(' ', '-')}-{seed}", log="quiet", plots=False)
            h = run.history
            rows.append({"label": label, "seed": seed, "settings": settings,
                         "val_accuracy": h["val_accuracy"], "val_loss": h["val_loss"], "loss": h["loss"],
                         "seconds": h["seconds"], "images_per_second": h["images_per_second"],
                         "wall_seconds": time.perf_counter() - started, "run_dir": str(run.run_dir)})
            print(f"{label:<22} seed {seed}: test accuracy after each epoch "
                  f"{', '.join(f'{a:.4f}' for a in h['val_accuracy'])}; {h['seconds'][0]:.1f} s/epoch", flush=True)
    return rows


def first_epoch(rows: list[dict], label: str, key: str) -> list[float]:
    return [r[key][0] for r in rows if r["label"] == label]


def summary_table(rows: list[dict], train_images: int) -> str:
    """Markdown: each setting after one epoch, mean over seeds (and the spread).

    Time is the fastest of the seeds: on a shared machine a run can only be slowed down by others,
    never sped up, so the minimum is the closest to the setting's own cost.
    """
    lines = ["| setting (one epoch) | test accuracy: mean (seeds) | test loss | Adam steps | fastest s / epoch |",
             "| --- | --- | --- | --- | --- |"]
    labels = dict.fromkeys(r["label"] for r in rows)
    for label in labels:
        acc = first_epoch(rows, label, "val_accuracy")
        loss = first_epoch(rows, label, "val_loss")
        secs = first_epoch(rows, label, "seconds")
        batch = next(r["settings"]["batch_size"] for r in rows if r["label"] == label)
        name = "baseline: batch 32, lr 1e-3, 0-1 pixels" if label.startswith("baseline") else label
        lines.append(f"| {name} | {np.mean(acc):.2%} ({', '.join(f'{a:.2%}' for a in acc)}) | {np.mean(loss):.4f} | "
                     f"{-(-train_images // batch):,} | {min(secs):.1f} |")
    base = [r for r in rows if r["label"].startswith("baseline")]
    lines += ["", "| epochs (batch 32, lr 1e-3) | test accuracy | train loss | test loss |", "| --- | --- | --- | --- |"]
    for e in range(len(base[0]["val_accuracy"])):
        lines.append(f"| {e + 1} | {np.mean([r['val_accuracy'][e] for r in base]):.2%} | "
                     f"{np.mean([r['loss'][e] for r in base]):.4f} | {np.mean([r['val_loss'][e] for r in base]):.4f} |")
    return "\n".join(lines)


def plot_sweep(rows: list[dict], path: Path) -> None:
    plt = _figure()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    groups = [("batch size", ["baseline (3 epochs)", "batch 128", "batch 512"], ["32", "128", "512"]),
              ("learning rate", ["lr 1e-4", "baseline (3 epochs)", "lr 1e-2"], ["1e-4", "1e-3", "1e-2"]),
              ("input pixels", ["baseline (3 epochs)", "raw 0-255 pixels"], ["0-1", "raw 0-255"])]
    # Zoomed to the data: on full MNIST every setting lands within a few percent of the others.
    low = max(0.0, min(min(r["val_accuracy"][0] for r in rows) - 0.02, 0.9))
    for ax, (title, labels, ticks) in zip(axes, groups):
        for k, label in enumerate(labels):
            acc = first_epoch(rows, label, "val_accuracy")
            ax.bar(k, np.mean(acc), color="tab:blue" if label.startswith("baseline") else "tab:gray")
            ax.plot([k] * len(acc), acc, "k.", ms=4)
            ax.text(k, np.mean(acc), f"{np.mean(acc):.2%}", ha="center", va="bottom", fontsize=8)
        ax.set(xticks=range(len(labels)), title=f"{title}: test accuracy after 1 epoch", ylim=(low, 1.0))
        ax.set_xticklabels(ticks)
        ax.title.set_fontsize(9)
    save_figure(fig, path)


def plot_filters(model: nn.Sequential, path: Path) -> None:
    plt = _figure()
    filters = model[0].weight.detach().cpu()[:, 0]  # (32, 3, 3)
    limit = float(filters.abs().max())
    fig, axes = plt.subplots(2, 16, figsize=(11, 1.8))
    for i, ax in enumerate(axes.flat):
        ax.imshow(filters[i], cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.axis("off")
    fig.suptitle("conv2d: the 32 learned 3x3 filters (red adds the pixel, blue subtracts it)", fontsize=9)
    save_figure(fig, path)


def plot_saliency_before_after(trained: nn.Sequential, x: np.ndarray, path: Path) -> dict:
    """Saliency of an untrained and the trained network on the same test digits, and the share inside the box."""
    plt = _figure()
    torch.manual_seed(0)
    untrained = model_module.build_model("seed").eval()
    shares = {"untrained": [], "trained": []}
    for name, net in (("untrained", untrained), ("trained", trained)):
        for x28 in x[:200]:
            shares[name].append(saliency_stats(saliency(net, x28)[0], x28)["mass_inside_box"])
    fig, axes = plt.subplots(2, 8, figsize=(11, 3.2))
    for k in range(8):
        for row, (name, net) in enumerate((("untrained", untrained), ("trained", trained))):
            ax = axes[row, k]
            ax.imshow(x[k], cmap="gray")
            ax.imshow(saliency(net, x[k])[0], cmap="inferno", alpha=0.65)
            ax.set_xticks([])
            ax.set_yticks([])
            if k == 0:
                ax.set_ylabel(f"{name}\n{np.mean(shares[name]):.0%} in box", fontsize=8)
    fig.suptitle("saliency |d score / d pixel| of the winning class, before and after training", fontsize=9)
    save_figure(fig, path)
    return {k: float(np.mean(v)) for k, v in shares.items()}


def realistic_photo(path: Path) -> tuple[Path, int]:
    """Item PHOTO_ITEM of the repo's realistic test set (benchmarks/make_realistic.py), saved as PNG."""
    spec = importlib.util.spec_from_file_location("make_realistic", ROOT / "benchmarks" / "make_realistic.py")
    make_realistic = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_realistic)
    x_test, y_test = load_split("mnist", "test")
    image, label, _, _ = make_realistic.make_single(PHOTO_ITEM, 0, x_test, y_test)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    atomic_write_bytes(path, buf.getvalue())
    return path, int(label)


def shrink_png(path: Path) -> None:
    """Re-save with a 256-colour palette: the picture looks the same at a third of the bytes."""
    from PIL import Image

    with Image.open(path) as im:
        small = im.convert("RGB").quantize(256)
    buf = io.BytesIO()
    small.save(buf, "PNG", optimize=True)
    atomic_write_bytes(path, buf.getvalue())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "images"), help="folder for the pictures and sweep.json")
    p.add_argument("--limit-train", type=int, default=10_000, help="train on the first N images (0: all 60,000)")
    p.add_argument("--replot", action="store_true", help="no training: redraw sweep.png and reprint the "
                   "tables from the sweep.json already in --out")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        info = json.loads((out / "sweep.json").read_text())
        plot_sweep(info["runs"], out / "sweep.png")
        print(summary_table(info["runs"], info["train_images"]))
        return
    with tempfile.TemporaryDirectory(prefix="digitnet-docs-") as tmp:
        rows = sweep(Path(tmp), args.limit_train)
        baseline = next(r for r in rows if r["label"].startswith("baseline") and r["seed"] == 0)
        plot_sweep(rows, out / "sweep.png")
        model, _ = model_module.load_model(baseline["run_dir"])
        plot_filters(model, out / "filters.png")
        x_test, _ = load_split("mnist", "test")
        shares = plot_saliency_before_after(model, x_test, out / "saliency-before-after.png")
        photo, label = realistic_photo(out / "photo.png")
        report = explain(photo, baseline["run_dir"], out / "explain-photo.png")
    info = {"command": "flock /tmp/digitnet-heavy.lock .venv/bin/python docs/make_figures.py"
                       + (f" --limit-train {args.limit_train}" if args.limit_train != 10_000 else ""),
            "train_images": args.limit_train or 60_000,
            "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                        "torch": torch.__version__},
            "runs": [{k: v for k, v in r.items() if k != "run_dir"} for r in rows],
            "saliency_mass_inside_box": shares,
            "photo": {"item": PHOTO_ITEM, "label": label, "prediction": report["prediction"],
                      "confidence": report["confidence"]}}
    atomic_write_json(out / "sweep.json", info)
    shrink_png(out / "explain-photo.png")
    print()
    print(summary_table(rows, info["train_images"]))
    print(f"\nsaliency mass inside the ink's box (200 test digits): {shares}")
    print(f"photo item {PHOTO_ITEM} (label {label}): read as {report['prediction']} ({report['confidence']:.1%})")
    print(f"pictures in {out}")


if __name__ == "__main__":
    main()
