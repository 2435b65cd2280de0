"""Training: the epoch loop, validation after every epoch, and the run directory it writes.

    digitnet train                      # the notebook: 3 epochs, batch 32, Adam 1e-3
    digitnet train --recipe fast        # same network, trained for speed
    torchrun --nproc_per_node 2 -m digitnet train --recipe fast   # DDP: 2 processes, same global batch
    digitnet train --nproc 2 --recipe fast                        # the same, torchrun started for you
    digitnet train --resume runs/NAME   # continue an interrupted run from its newest checkpoint

The dataset is held once as a uint8 tensor (on the GPU when there is one) and batches are taken by
index, so no Python runs per sample. A run directory runs/<name>/ receives model.safetensors,
model.json, history.csv, history.json, metrics.json and checkpoints/; evaluate.py adds the plots.
Under torchrun every process runs train(); rank 0 alone prints and writes (see distributed.py).
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
from digitnet import distributed
from digitnet.augment import augment_batch
from digitnet.checkpoint import (Checkpoint, capture, check_compatible, latest_checkpoint, restore,
                                 resume_config, save_checkpoint)
from digitnet.config import TrainConfig, to_dict, validate
from digitnet.data import checksums, get_spec, load_split
from digitnet.distributed import Dist
from digitnet.errors import DigitnetError
from digitnet.files import atomic_write_bytes, atomic_write_json
from digitnet.model import (autocast, build_model, count_params, macs_per_image, predict_logits,
                            resolve_precision, save_model)
from digitnet.preprocess import scale_pixels


@dataclass
class Run:
    """What a finished training run left behind, Keras-style: run.history['val_accuracy'][-1]."""
    run_dir: Path
    config: TrainConfig
    history: dict[str, list[float]]
    metrics: dict
    model: torch.nn.Module = field(repr=False)
    rank: int = 0  # under torchrun: this process's rank; only rank 0 wrote the run directory


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


@dataclass
class EpochState:
    """Where training stands: the next step of an epoch and its running sums (what a checkpoint keeps)."""
    epoch: int
    step: int  # steps of this epoch already taken
    loss_sum: torch.Tensor  # () float32 on the device: this rank's summed loss so far
    correct: torch.Tensor  # () int64 on the device
    seen: int
    augment_rng: torch.Generator
    lr: float  # learning rate when the epoch began (history's "lr")
    seconds: float = 0.0  # time spent in this epoch before a resume


def new_epoch(cfg: TrainConfig, epoch: int, device, dist: Dist, lr: float) -> EpochState:
    # Its own stream (offset from the shuffling seed) so turning augmentation on keeps the same order;
    # offset per rank so the processes of a DDP run distort their shards differently.
    augment_rng = torch.Generator().manual_seed(1_000_003 + cfg.seed * 1000 + epoch + 7919 * dist.rank)
    return EpochState(epoch, 0, torch.zeros((), device=device), torch.zeros((), dtype=torch.long, device=device),
                      0, augment_rng, lr)


def train_one_epoch(model, optimizer, scheduler, x, y, cfg: TrainConfig, state: EpochState,
                    device, precision: str, progress, dist: Dist = Dist(), on_step=None) -> dict:
    """The rest of one pass over (x, y) in a seeded random order; returns mean loss and accuracy.

    Every rank walks the same permutation and takes its shard of each global batch of cfg.batch_size;
    the loss is scaled so DDP's gradient average equals the mean over the global batch."""
    model.train()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(cfg.seed * 1000 + state.epoch))
    order = order.to(x.device)  # drawn on the CPU (same order on every device), indexed where the data is
    steps = math.ceil(len(x) / cfg.batch_size)
    t0 = time.perf_counter() - state.seconds
    for step in range(state.step, steps):
        batch = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
        idx = distributed.shard(batch, dist)
        xb = scale_pixels(x[idx].to(device, non_blocking=True)).unsqueeze(1)  # (B, 1, 28, 28)
        yb = y[idx].to(device, non_blocking=True)
        if cfg.augment != "none":
            xb = augment_batch(xb, cfg.augment, state.augment_rng)  # new distortions every step, seeded
        if cfg.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = model(xb)
            loss_sum = F.cross_entropy(logits.float(), yb, label_smoothing=cfg.label_smoothing, reduction="sum")
        loss = loss_sum * (dist.world / len(batch))  # DDP averages over ranks: mean over the global batch
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        # Running sums stay on the device: reading them every step would stall a GPU.
        state.loss_sum += loss_sum.detach()
        state.correct += (logits.argmax(1) == yb).sum()
        state.seen += len(idx)
        state.step = step + 1
        progress.step(step + 1, steps, state.loss_sum, state.correct, max(state.seen, 1))
        if on_step is not None and state.step < steps:
            state.seconds = time.perf_counter() - t0
            on_step(state)
    state.seconds = time.perf_counter() - t0
    total = distributed.all_reduce_sum(torch.stack([state.loss_sum.double(), state.correct.double(),
                                                    torch.tensor(state.seen, dtype=torch.double, device=device)]),
                                       dist).tolist()
    return {"loss": total[0] / total[2], "accuracy": total[1] / total[2]}


def evaluate(model, x, y, cfg: TrainConfig, device, precision: str, dist: Dist = Dist()) -> dict:
    """Loss and accuracy over (x, y), in eval mode and without gradients; each rank scores its shard."""
    logits = predict_logits(model, distributed.shard(x, dist), cfg.eval_batch_size, device, precision)
    logits, y = logits.to(device), distributed.shard(y, dist).to(device)
    sums = torch.stack([F.cross_entropy(logits, y, reduction="none").double().sum(),
                        (logits.argmax(1) == y).double().sum()])
    loss_sum, correct = distributed.all_reduce_sum(sums, dist).tolist()
    return {"loss": loss_sum / len(x), "accuracy": correct / len(x)}


def train(cfg: TrainConfig, log: str = "bar", stream=None, checkpoint: Checkpoint | None = None) -> Run:
    """Train cfg.model on cfg.dataset and write a run directory; log is 'bar', 'jsonl' or 'quiet'.

    Under torchrun each process calls this and joins the process group; given a checkpoint (see
    resume()), training continues from it inside that checkpoint's run directory."""
    if cfg.deterministic:  # cuBLAS reads it when CUDA starts; without it, CUDA matmuls are not repeatable
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    dist = distributed.from_env()
    device = distributed.rank_device(cfg.device, dist)
    distributed.setup(dist, device)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(cfg.deterministic or was_deterministic)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = not cfg.deterministic  # autotuning picks kernels by timing
        run = fit(cfg, log, stream or sys.stdout, checkpoint, dist, device)
        distributed.wait_for_all(dist)
        return run
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        distributed.teardown(dist)


def resume(run_dir: str | Path, log: str = "bar", stream=None, **settings) -> Run:
    """Continue an interrupted run from its newest checkpoint; settings may only repeat its config."""
    run_dir = Path(run_dir)
    if (run_dir / "model.json").exists():
        raise DigitnetError(f"{run_dir} finished training (model.json exists); nothing to resume")
    ckpt = latest_checkpoint(run_dir)
    cfg = resume_config(ckpt, settings)
    validate(cfg)
    return train(cfg, log, stream, checkpoint=ckpt)


def make_optimizer(model, cfg: TrainConfig) -> torch.optim.Optimizer:
    # Keras' Adam: epsilon 1e-7. The fused kernel updates all tensors in one pass.
    if cfg.weight_decay:
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=cfg.adam_eps,
                                 weight_decay=cfg.weight_decay, fused=True)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=cfg.adam_eps, fused=True)


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """The whole tensor on the device once; from pinned memory, so the copy is a fast DMA."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t


def fit(cfg: TrainConfig, log: str, stream, ckpt: Checkpoint | None, dist: Dist, device) -> Run:
    """The epoch loop, on one device of one process (train() sets up devices and processes)."""
    from digitnet.progress import make_progress

    if cfg.batch_size < dist.world:
        raise DigitnetError(f"batch_size {cfg.batch_size} is the global batch; it must be at least the "
                            f"number of processes ({dist.world})")
    seed_everything(cfg.seed)
    threads = set_threads(cfg.threads or distributed.default_threads(dist))
    precision = resolve_precision(cfg.precision, device)
    splits = load_splits(cfg)
    spec = get_spec(cfg.dataset)

    model = build_model(cfg.model, num_classes=len(spec.class_names)).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg)
    steps_per_epoch = math.ceil(len(splits.x_train) / cfg.batch_size)
    scheduler = make_scheduler(optimizer, cfg, cfg.epochs * steps_per_epoch)
    history: dict[str, list[float]] = {k: [] for k in
                                       ("epoch", "loss", "accuracy", "val_loss", "val_accuracy",
                                        "seconds", "images_per_second", "lr")}
    train_seconds = 0.0
    state = new_epoch(cfg, 1, device, dist, optimizer.param_groups[0]["lr"])
    if ckpt is not None:
        check_compatible(ckpt, cfg, model, checksums(cfg.dataset), len(splits.x_train))
        sums = restore(ckpt, model, optimizer, scheduler, state.augment_rng, device, dist)
        pos = ckpt.meta["position"]
        state.epoch, state.step, state.lr, state.seconds = pos["epoch"], pos["step"], pos["lr"], pos["seconds"]
        state.loss_sum, state.correct, state.seen = sums["loss_sum"], sums["correct"], int(sums["seen"])
        history, train_seconds, run_dir = ckpt.meta["history"], ckpt.meta["train_seconds"], ckpt.run_dir
    else:
        run_dir = Path(distributed.on_main(lambda: str(make_run_dir(cfg)), dist, device))
    # DDP wraps the network to all-reduce gradients during backward; checkpoints and files use `model`.
    net = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device] if device.type == "cuda" else None) if dist.enabled else model
    x_train, y_train = to_device(splits.x_train, device), to_device(splits.y_train, device)
    x_val, y_val = to_device(splits.x_val, device), to_device(splits.y_val, device)

    def save(state: EpochState) -> None:
        """Checkpoint (every rank calls it: RNG states are gathered); rank 0 writes."""
        position = {"epoch": state.epoch, "step": state.step, "lr": state.lr, "seconds": state.seconds,
                    "global_step": (state.epoch - 1) * steps_per_epoch + state.step}
        sums = {"loss_sum": state.loss_sum, "correct": state.correct,
                "seen": torch.tensor(state.seen, device=device)}
        meta = {"config": to_dict(cfg), "history": history, "train_seconds": train_seconds,
                "dataset_sha256": checksums(cfg.dataset), "train_images": len(splits.x_train),
                "steps_per_epoch": steps_per_epoch, "versions": {"digitnet": __version__, "torch": torch.__version__}}
        captured = capture(model, optimizer, scheduler, position, sums, state.augment_rng, meta, device, dist)
        if captured is not None:
            save_checkpoint(run_dir, *captured, keep=cfg.keep_checkpoints)

    def on_step(state: EpochState) -> None:
        global_step = (state.epoch - 1) * steps_per_epoch + state.step
        if cfg.checkpoint_every and cfg.keep_checkpoints and global_step % cfg.checkpoint_every == 0:
            save(state)

    progress = make_progress(log if dist.main else "quiet", stream)
    progress.start(cfg, device, precision, threads, len(splits.x_train), len(splits.x_val),
                   splits.val_name, run_dir)
    if log == "bar" and dist.main and dist.enabled:
        print(f"digitnet: {dist.world} processes ({'nccl' if device.type == 'cuda' else 'gloo'}); global batch "
              f"{cfg.batch_size} = about {cfg.batch_size // dist.world} per process", file=stream, flush=True)
    if log == "bar" and dist.main and ckpt is not None:
        print(f"digitnet: resuming from {ckpt.path.name}: epoch {state.epoch}, step {state.step}/"
              f"{steps_per_epoch}", file=stream, flush=True)
    while state.epoch <= cfg.epochs:
        epoch = state.epoch
        progress.epoch_start(epoch, cfg.epochs, steps_per_epoch)
        result = train_one_epoch(net, optimizer, scheduler, x_train, y_train, cfg, state, device,
                                 precision, progress, dist, on_step)
        seconds = state.seconds
        train_seconds += seconds
        val = evaluate(model, x_val, y_val, cfg, device, precision, dist)
        row = {"epoch": epoch, "loss": result["loss"], "accuracy": result["accuracy"],
               "val_loss": val["loss"], "val_accuracy": val["accuracy"], "seconds": seconds,
               "images_per_second": len(x_train) / seconds, "lr": state.lr}
        for k, v in row.items():
            history[k].append(v)
        progress.epoch_end(row)
        if dist.main:
            write_history(run_dir, history)
        state = new_epoch(cfg, epoch + 1, device, dist, optimizer.param_groups[0]["lr"])
        if cfg.keep_checkpoints:
            save(state)

    metrics = {"val_split": splits.val_name, "val_accuracy": history["val_accuracy"][-1],
               "val_loss": history["val_loss"][-1], "train_seconds": train_seconds,
               "epochs": cfg.epochs}
    if dist.main:
        meta = run_meta(cfg, model, spec, splits, device, precision, threads, metrics)
        meta["training"]["processes"] = dist.world
        save_model(run_dir, model, meta)
        atomic_write_json(run_dir / "metrics.json", metrics)
    progress.finish(run_dir, metrics)
    return Run(run_dir, cfg, history, metrics, model, dist.rank)


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
