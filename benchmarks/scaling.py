"""One process vs N DDP processes (torchrun via `digitnet train --nproc N`): one epoch each, side by side.

    flock /tmp/digitnet-heavy.lock .venv/bin/python benchmarks/scaling.py --nproc 1 2 --recipe seed fast

Prints a table (epoch seconds, images/s, validation accuracy, wall time including start-up) and writes
JSON (default benchmarks/results/scaling.json). On a machine with few cores, N CPU processes share the same
cores as one process with N threads, so expect little or no gain there; the point of DDP is more devices.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from digitnet.files import atomic_write_json


def run_once(recipe: str, nproc: int, epochs: int, out_dir: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "digitnet", "train", "--recipe", recipe, "--epochs", str(epochs), "--jsonl",
           "--no-plots", "--out-dir", str(out_dir), "--name", f"{recipe}-{nproc}", *extra]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    epochs_done = [e for e in events if e["event"] == "epoch"]
    start_event = next(e for e in events if e["event"] == "start")
    return {"recipe": recipe, "processes": nproc, "threads_per_process": start_event["threads"],
            "precision": start_event["precision"], "epoch_seconds": [e["seconds"] for e in epochs_done],
            "images_per_second": [e["images_per_second"] for e in epochs_done],
            "val_accuracy": epochs_done[-1]["val_accuracy"], "wall_seconds": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--recipe", nargs="+", default=["seed", "fast"])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "scaling.json"))
    parser.add_argument("extra", nargs="*", help="more `digitnet train` flags, after --")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in args.recipe:
            for nproc in args.nproc:
                rows.append(run_once(recipe, nproc, args.epochs, Path(tmp), args.extra))
                r = rows[-1]
                print(f"{r['recipe']:<6} {r['processes']} proc x{r['threads_per_process']} threads {r['precision']}: "
                      f"epoch {r['epoch_seconds'][-1]:6.1f}s  {r['images_per_second'][-1]:7,.0f} img/s  "
                      f"val_acc {r['val_accuracy']:.4f}  wall {r['wall_seconds']:5.1f}s", flush=True)
    atomic_write_json(args.json, rows)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
