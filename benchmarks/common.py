"""Helpers shared by the benchmark scripts: timing, latency percentiles, peak memory, FLOPs.

Each contender runs in its own process (so peak memory is its own and no framework warms another's
caches) and prints one JSON object on its last stdout line; train_bench.py gathers them.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TARGET_ACCURACY = 0.99
MACS_PER_IMAGE = 3_237_248  # forward multiply-adds of the seed network (`digitnet summary`)
FLOP_FORWARD = 2 * MACS_PER_IMAGE  # a multiply-add is two floating-point operations
FLOP_TRAIN = 3 * FLOP_FORWARD  # forward + backward (input and weight gradients): ~19.4 MFLOP


def mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST from digitnet's verified IDX files as uint8 (N, 28, 28) and int64 labels; no download."""
    sys.path.insert(0, str(ROOT))
    from digitnet.data import load_split

    x_train, y_train = load_split("mnist", "train")
    x_test, y_test = load_split("mnist", "test")
    return x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64)


def limit(arrays, n: int):
    """The first n of each array (0: all), for quick harness checks on tiny data."""
    return [a[:n] for a in arrays] if n else list(arrays)


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_to_target(epoch_end_wall: list[float], accuracies: list[float]) -> float | None:
    """Seconds from the start of fit to the first epoch-end evaluation at >= 99.0%, else None."""
    for wall, acc in zip(epoch_end_wall, accuracies):
        if acc == acc and acc >= TARGET_ACCURACY:  # acc == acc skips NaN (epochs not evaluated)
            return wall
    return None


def train_result(name: str, n_train: int, epoch_seconds: list[float], epoch_end_wall: list[float],
                 accuracies: list[float], fit_seconds: float, **extra) -> dict:
    """The fields every training contender reports."""
    train_seconds = sum(epoch_seconds)
    ips = n_train * len(epoch_seconds) / train_seconds
    final = [a for a in accuracies if a == a][-1]
    return {"name": name, "train_images": n_train, "epochs": len(epoch_seconds),
            "epoch_seconds": [round(s, 3) for s in epoch_seconds],
            "seconds_per_epoch": round(train_seconds / len(epoch_seconds), 3),
            "train_seconds": round(train_seconds, 3), "fit_seconds": round(fit_seconds, 3),
            "images_per_second": round(ips, 1), "gflops": round(ips * FLOP_TRAIN / 1e9, 1),
            "test_accuracy_per_epoch": [round(a, 4) if a == a else None for a in accuracies],
            "final_accuracy": round(final, 4),
            "seconds_to_99": None if (t := time_to_target(epoch_end_wall, accuracies)) is None else round(t, 3),
            **extra}


def throughput(predict, x: np.ndarray, batch: int, max_seconds: float = 10.0, min_calls: int = 3) -> float:
    """Images/s of predict(chunk) over x in chunks of `batch`, once warm.

    Two warm-up calls: Keras' predict() runs its first two calls at a new batch size at half speed
    (measured at batch 10,000: 1.3 s, 1.3 s, then 0.5-0.7 s a call). Then calls go round x until at
    least one pass and `min_calls` calls were timed, or until max_seconds (batch 1 through Keras'
    predict() would otherwise take minutes); at least one call.
    """
    predict(x[:batch])
    predict(x[:batch])
    start = time.perf_counter()
    done = calls = 0
    while True:
        for i in range(0, len(x), batch):
            chunk = x[i:i + batch]
            predict(chunk)
            done += len(chunk)
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed > max_seconds or (done >= len(x) and calls >= min_calls):
                return done / elapsed


def latency_ms(predict, x: np.ndarray, calls: int = 500, max_seconds: float = 10.0) -> dict:
    """Single-image latency p50/p99 over up to `calls` calls (at most max_seconds), after warm-up."""
    for i in range(10):
        predict(x[i:i + 1])
    times = []
    start = time.perf_counter()
    for i in range(calls):
        img = x[i % len(x):i % len(x) + 1]
        t0 = time.perf_counter()
        predict(img)
        times.append((time.perf_counter() - t0) * 1e3)
        if time.perf_counter() - start > max_seconds:
            break
    return {"p50_ms": round(float(np.percentile(times, 50)), 4),
            "p99_ms": round(float(np.percentile(times, 99)), 4), "latency_calls": len(times)}


def infer_result(name: str, predict, x: np.ndarray, batches=(1, 256, 10_000), calls: int = 500,
                 y: np.ndarray | None = None) -> dict:
    """Throughput at each batch size and single-image latency for one predict function; with labels
    y, its test accuracy too (a faster runtime must show what it gives up, e.g. int8)."""
    out = {"name": name}
    if y is not None:
        out["test_accuracy"] = round(float((np.asarray(predict(x)).argmax(1) == y).mean()), 4)
    for b in batches:
        out[f"images_per_second_b{b}"] = round(throughput(predict, x, b), 1)
    out.update(latency_ms(predict, x, calls))
    return out


def emit(result: dict) -> None:
    """The contender's result as the last line of stdout, where train_bench.py reads it."""
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    result["pid"] = os.getpid()
    print(json.dumps(result), flush=True)
