"""digitnet's own training, timed the same way as the other contenders.

    .venv/bin/python benchmarks/digitnet_recipe.py --recipe seed   # prints one JSON line

Runs `digitnet train --recipe R` through the Python API with JSON-lines progress and stamps each
line as it arrives: the start event marks the start of fit (data loaded, model built), each epoch
event the end of that epoch's evaluation. Compile time, where a recipe compiles, counts as training.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time

from common import ROOT, emit, train_result


class StampedLines(io.TextIOBase):
    """A text stream that keeps each JSON line with the moment it was written."""

    def __init__(self):
        self.buffer, self.events = "", []

    def write(self, text: str) -> int:
        self.buffer += text
        while "\n" in self.buffer:
            line, self.buffer = self.buffer.split("\n", 1)
            if line.strip():
                self.events.append((time.perf_counter(), json.loads(line)))
        return len(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="seed")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--limit", type=int, default=0, help="first N train and test images (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default="runs/bench")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra TrainConfig setting (JSON value), e.g. --set batch_size=128")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    import torch

    from digitnet.config import make_config
    from digitnet.train import train

    extra = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    cfg = make_config(args.recipe, epochs=args.epochs, limit_train=args.limit, limit_test=args.limit,
                      seed=args.seed, out_dir=args.out_dir,
                      name=f"{args.recipe}-s{args.seed}-{time.strftime('%Y%m%d-%H%M%S')}", **extra)
    stream = StampedLines()
    t0 = time.perf_counter()
    run = train(cfg, log="jsonl", stream=stream)
    done = time.perf_counter()
    start = next(t for t, e in stream.events if e["event"] == "start")
    epochs = [(t, e) for t, e in stream.events if e["event"] == "epoch"]
    nan = float("nan")
    accs = [nan if e["val_accuracy"] is None else e["val_accuracy"] for _, e in epochs]
    meta = json.loads((run.run_dir / "model.json").read_text())
    result = train_result(
        f"digitnet {args.recipe}", meta["dataset"]["train_images"],
        [e["seconds"] for _, e in epochs], [t - start for t, _ in epochs], accs, epochs[-1][0] - start,
        batch_size=cfg.batch_size, lr=cfg.lr, schedule=cfg.schedule, precision=meta["training"]["precision"],
        threads=torch.get_num_threads(), seed=cfg.seed, setup_seconds=round(start - t0, 3),
        save_seconds=round(done - epochs[-1][0], 3), run_dir=str(run.run_dir))
    emit({"train": result})


if __name__ == "__main__":
    main()
