"""Training output: a Keras-like live bar, JSON lines for scripts, or nothing."""
from __future__ import annotations

import json
import time


class BarProgress:
    """`Epoch 1/3`, a live bar with step count, ETA, running loss and accuracy, then the epoch line."""

    refresh_seconds = 0.25  # reading running sums forces a sync; do it a few times a second, not per step

    def __init__(self, stream):
        self.stream = stream
        self.bar = None
        self.last = 0.0

    def start(self, cfg, device, precision, threads, n_train, n_val, val_name, run_dir):
        print(f"digitnet: training {cfg.model!r} on {cfg.dataset} ({n_train:,} images; validating on "
              f"{n_val:,} {val_name} images) | recipe {cfg.recipe} | {device} {precision} x{threads} "
              f"threads | batch {cfg.batch_size} | -> {run_dir}", file=self.stream, flush=True)

    def epoch_start(self, epoch, epochs, steps):
        from tqdm import tqdm

        print(f"Epoch {epoch}/{epochs}", file=self.stream, flush=True)
        self.bar = tqdm(total=steps, file=self.stream, ascii=".=", ncols=110, leave=False,
                        bar_format="{n_fmt}/{total_fmt} [{bar:30}] - ETA: {remaining} - {desc}")

    def step(self, step, steps, loss_sum, correct, seen):
        now = time.perf_counter()
        if step != steps and now - self.last < self.refresh_seconds:
            return
        self.last = now
        self.bar.n = step
        self.bar.set_description_str(
            f"loss: {loss_sum.item() / seen:.4f} - accuracy: {correct.item() / seen:.4f}", refresh=False)
        self.bar.refresh()

    def epoch_end(self, row):
        steps = self.bar.total
        self.bar.close()
        print(f"{steps}/{steps} - {row['seconds']:.1f}s - {row['seconds'] / steps * 1e3:.1f}ms/step"
              f" - loss: {row['loss']:.4f} - accuracy: {row['accuracy']:.4f}"
              f" - val_loss: {row['val_loss']:.4f} - val_accuracy: {row['val_accuracy']:.4f}"
              f" - {row['images_per_second']:,.0f} img/s", file=self.stream, flush=True)

    def finish(self, run_dir, metrics):
        print(f"Saved {run_dir} (val_accuracy {metrics['val_accuracy']:.4f}, "
              f"{metrics['train_seconds']:.1f}s training)", file=self.stream, flush=True)


class JsonProgress:
    """One JSON object per line: start, epoch (one per epoch) and end events."""

    def __init__(self, stream):
        self.stream = stream

    def emit(self, event, **fields):
        print(json.dumps({"event": event, **fields}), file=self.stream, flush=True)

    def start(self, cfg, device, precision, threads, n_train, n_val, val_name, run_dir):
        self.emit("start", model=cfg.model, dataset=cfg.dataset, recipe=cfg.recipe, device=str(device),
                  precision=precision, threads=threads, train_images=n_train, val_images=n_val,
                  val_split=val_name, run_dir=str(run_dir))

    def epoch_start(self, epoch, epochs, steps):
        pass

    def step(self, step, steps, loss_sum, correct, seen):
        pass

    def epoch_end(self, row):
        self.emit("epoch", **row)

    def finish(self, run_dir, metrics):
        self.emit("end", run_dir=str(run_dir), **metrics)


class QuietProgress(JsonProgress):
    def emit(self, event, **fields):
        pass


def make_progress(log: str, stream):
    kinds = {"bar": BarProgress, "jsonl": JsonProgress, "quiet": QuietProgress}
    if log not in kinds:
        from digitnet.errors import DigitnetError

        raise DigitnetError(f"log must be one of {', '.join(kinds)}, got {log!r}")
    return kinds[log](stream)
