"""Training: the epoch loop, validation after every epoch, and the run directory it writes.

    digitnet train                      # the notebook: 3 epochs, batch 32, Adam 1e-3
    digitnet train --recipe fast        # same network, trained for speed

The dataset is held once as a uint8 tensor and batches are taken by index, so no Python runs
per sample. A run directory runs/<name>/ receives model.safetensors, model.json, history.csv,
history.json and metrics.json; evaluate.py adds the plots.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import random
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from digitnet import __version__
from digitnet.config import TrainConfig, to_dict
from digitnet.data import checksums, get_spec, load_split
from digitnet.errors import DigitnetError
from digitnet.files import atomic_write_bytes, atomic_write_json
from digitnet.model import (autocast, build_model, count_params, macs_per_image, pick_device,
                            predict_logits, resolve_precision, save_model)
from digitnet.preprocess import scale_pixels


@dataclass
class Run:
    """What a finished training run left behind, Keras-style: run.history['val_accuracy'][-1]."""
    run_dir: Path
    config: TrainConfig
    history: dict[str, list[float]]
    metrics: dict
    model: torch.nn.Module = field(repr=False)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(threads: int) -> int:
    """Use the given thread count, or one per CPU this process may run on."""
    n = threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    return n


@dataclass
class Splits:
    x_train: torch.Tensor  # (N, 28, 28) uint8, white ink on black
    y_train: torch.Tensor  # (N,) int64
    x_val: torch.Tensor
    y_val: torch.Tensor
    val_name: str  # "test" (the notebook's choice) or "holdout"


def load_splits(cfg: TrainConfig) -> Splits:
    """Training and validation tensors, with a seeded hold-out split when val_size > 0."""
    x_train, y_train = load_split(cfg.dataset, "train", cfg.data_dir)
    if cfg.val_size:
        if cfg.val_size >= len(x_train):
            raise DigitnetError(f"val_size {cfg.val_size} leaves no training images (of {len(x_train)})")
        order = np.random.default_rng(cfg.seed).permutation(len(x_train))
        val_idx, train_idx = order[:cfg.val_size], order[cfg.val_size:]
        x_val, y_val = x_train[val_idx], y_train[val_idx]
        x_train, y_train = x_train[train_idx], y_train[train_idx]
        val_name = "holdout"
    else:
        x_val, y_val = load_split(cfg.dataset, "test", cfg.data_dir)
        if cfg.limit_test:
            x_val, y_val = x_val[:cfg.limit_test], y_val[:cfg.limit_test]
        val_name = "test"
    if cfg.limit_train:
        x_train, y_train = x_train[:cfg.limit_train], y_train[:cfg.limit_train]
    return Splits(torch.from_numpy(np.ascontiguousarray(x_train)), torch.from_numpy(y_train),
                  torch.from_numpy(np.ascontiguousarray(x_val)), torch.from_numpy(y_val), val_name)


def make_run_dir(cfg: TrainConfig) -> Path:
    name = cfg.name or f"{cfg.model}-{cfg.recipe}-{datetime.now():%Y%m%d-%H%M%S}"
    run_dir = Path(cfg.out_dir) / name
    if run_dir.exists() and any(run_dir.iterdir()):
        raise DigitnetError(f"run directory {run_dir} already exists and is not empty; "
                            f"pick another --name or remove it")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def make_scheduler(optimizer, cfg: TrainConfig, total_steps: int):
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.lr, total_steps=total_steps, pct_start=cfg.warmup,
            div_factor=25.0, final_div_factor=1e3)
    return None


def train_one_epoch(model, optimizer, scheduler, x, y, cfg: TrainConfig, epoch: int,
                    device, precision: str, progress) -> dict:
    """One pass over (x, y) in a seeded random order; returns mean loss and accuracy."""
    model.train()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
    steps = math.ceil(len(x) / cfg.batch_size)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    for step in range(steps):
        idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
        xb = scale_pixels(x[idx].to(device, non_blocking=True)).unsqueeze(1)  # (B, 1, 28, 28)
        yb = y[idx].to(device, non_blocking=True)
        if cfg.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = model(xb)
            loss = F.cross_entropy(logits.float(), yb, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        # Running sums stay on the device: reading them every step would stall a GPU.
        loss_sum += loss.detach() * len(idx)
        correct += (logits.argmax(1) == yb).sum()
        seen += len(idx)
        progress.step(step + 1, steps, loss_sum, correct, seen)
    return {"loss": loss_sum.item() / seen, "accuracy": correct.item() / seen}


def evaluate(model, x, y, cfg: TrainConfig, device, precision: str) -> dict:
    """Loss and accuracy over (x, y), in eval mode and without gradients."""
    logits = predict_logits(model, x, cfg.eval_batch_size, device, precision)
    y = y.to(logits.device)
    return {"loss": F.cross_entropy(logits, y).item(),
            "accuracy": (logits.argmax(1) == y).float().mean().item()}


def train(cfg: TrainConfig, log: str = "bar", stream=None) -> Run:
    """Train cfg.model on cfg.dataset and write a run directory; log is 'bar', 'jsonl' or 'quiet'."""
    from digitnet.progress import make_progress

    stream = stream or sys.stdout
    seed_everything(cfg.seed)
    threads = set_threads(cfg.threads)
    device = pick_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    splits = load_splits(cfg)
    spec = get_spec(cfg.dataset)
    run_dir = make_run_dir(cfg)

    model = build_model(cfg.model, num_classes=len(spec.class_names)).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # Keras' Adam: epsilon 1e-7. The fused kernel updates all tensors in one pass.
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=cfg.adam_eps,
                                  weight_decay=cfg.weight_decay, fused=True) if cfg.weight_decay else \
        torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=cfg.adam_eps, fused=True)
    steps_per_epoch = math.ceil(len(splits.x_train) / cfg.batch_size)
    scheduler = make_scheduler(optimizer, cfg, cfg.epochs * steps_per_epoch)
    x_train, y_train = splits.x_train.to(device), splits.y_train.to(device)

    progress = make_progress(log, stream)
    progress.start(cfg, device, precision, threads, len(splits.x_train), len(splits.x_val),
                   splits.val_name, run_dir)
    history: dict[str, list[float]] = {k: [] for k in
                                       ("epoch", "loss", "accuracy", "val_loss", "val_accuracy",
                                        "seconds", "images_per_second", "lr")}
    train_seconds = 0.0
    for epoch in range(1, cfg.epochs + 1):
        progress.epoch_start(epoch, cfg.epochs, steps_per_epoch)
        lr = optimizer.param_groups[0]["lr"]
        t0 = time.perf_counter()
        fit = train_one_epoch(model, optimizer, scheduler, x_train, y_train, cfg, epoch, device,
                              precision, progress)
        seconds = time.perf_counter() - t0
        train_seconds += seconds
        val = evaluate(model, splits.x_val, splits.y_val, cfg, device, precision)
        row = {"epoch": epoch, "loss": fit["loss"], "accuracy": fit["accuracy"],
               "val_loss": val["loss"], "val_accuracy": val["accuracy"], "seconds": seconds,
               "images_per_second": len(x_train) / seconds, "lr": lr}
        for k, v in row.items():
            history[k].append(v)
        progress.epoch_end(row)
        write_history(run_dir, history)

    metrics = {"val_split": splits.val_name, "val_accuracy": history["val_accuracy"][-1],
               "val_loss": history["val_loss"][-1], "train_seconds": train_seconds,
               "epochs": cfg.epochs}
    meta = run_meta(cfg, model, spec, splits, device, precision, threads, metrics)
    save_model(run_dir, model, meta)
    atomic_write_json(run_dir / "metrics.json", metrics)
    progress.finish(run_dir, metrics)
    return Run(run_dir, cfg, history, metrics, model)


def write_history(run_dir: Path, history: dict[str, list[float]]) -> None:
    """history.json and history.csv, rewritten after every epoch so a crash keeps what was done."""
    atomic_write_json(run_dir / "history.json", history)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(history.keys())
    writer.writerows(zip(*history.values()))
    atomic_write_bytes(run_dir / "history.csv", buf.getvalue().encode())


def run_meta(cfg, model, spec, splits, device, precision, threads, metrics) -> dict:
    """Everything later steps need to rebuild, feed and trust the model (stored as model.json)."""
    return {
        "architecture": {"name": cfg.model, "num_classes": len(spec.class_names),
                         "input_shape": [1, 28, 28], "params": count_params(model),
                         "macs_per_image": macs_per_image(build_model(cfg.model, len(spec.class_names)))},
        "input": {"size": [28, 28], "scale": "pixel / 255", "range": [0.0, 1.0],
                  "polarity": "white ink on black", "layout": "NCHW"},
        "class_names": list(spec.class_names),
        "dataset": {"name": cfg.dataset, "sha256": checksums(cfg.dataset),
                    "train_images": len(splits.x_train), "val_images": len(splits.x_val),
                    "val_split": splits.val_name},
        "config": to_dict(cfg),
        "seed": cfg.seed,
        "metrics": metrics,
        "calibration": {"temperature": 1.0},
        "training": {"device": str(device), "precision": precision, "threads": threads,
                     "finished": datetime.now().isoformat(timespec="seconds")},
        "versions": {"digitnet": __version__, "torch": torch.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
    }


def history_json(run_dir: Path) -> dict:
    try:
        return json.loads((Path(run_dir) / "history.json").read_text())
    except FileNotFoundError:
        raise DigitnetError(f"{run_dir}: no history.json; is it a training run directory?") from None
