"""Accuracy beyond the notebook: train the recipes over several seeds, then score them once on the test set.

    .venv/bin/python benchmarks/accuracy.py train best --seeds 0 1 2     # each run under the heavy lock
    .venv/bin/python benchmarks/accuracy.py report                       # table + JSON, ensembles, TTA
    .venv/bin/python benchmarks/accuracy.py report best                  # re-score one group, keep the rest
    .venv/bin/python benchmarks/accuracy.py holdout fashion-flip-24      # hold-out only: does TTA pay?
    .venv/bin/python benchmarks/accuracy.py committees --groups seed-augment best-24 wide --seeds 0 1 2 3 4 5
                                                  # every committee of those groups, on the hold-out

Groups (each a plain `digitnet train` command line, shown in the table):
  seed           the notebook (3 epochs, batch 32, Adam 1e-3)
  seed-augment   the seed network trained with the best recipe (affine augmentation, one-cycle, holdout)
  best           `--recipe best`: the batch-norm CNN, affine augmentation, one-cycle, 5,000-image holdout
  best-24        `--recipe best` trained twice as long (24 epochs)
  fashion-seed   the notebook on Fashion-MNIST
  fashion-best   `--recipe best` on Fashion-MNIST
  fashion-flip   `--recipe best --augment flip` on Fashion-MNIST (mirroring instead of rotation)
  fashion-shift-flip  the same with whole-pixel shifts as well (pad-and-crop)
  fashion-flip-24     fashion-flip trained twice as long (24 epochs)
  fashion-flip-36     ... and three times as long (36 epochs)
  fashion-flip-erase-24  fashion-flip-24 with random erasing as well (a noise rectangle in half the images)
  fashion-wide-flip-24   fashion-flip-24 with the `wide` network (strong with 1.5x the channels)
  elastic        `--recipe best` with elastic distortion on top of the affine maps (dropped on the hold-out)
  wide           `--recipe best --model wide` (strong with 1.5x the channels)
  seed-augment-ink  seed-augment with the pen changes as well (`--augment affine+ink`; a committee member
                 trained on other distortions, dropped on the hold-out)

Epochs and settings were chosen on the holdout (val_accuracy in history.json); the test set is read
only by `report`, once per run, after training is over. Each group's runs form an ensemble (their
probabilities averaged), reported with and without test-time shifts. Runs go to /tmp/<you>/accuracy
unless --out says otherwise; results to benchmarks/results/accuracy.json.
"""
from __future__ import annotations

import argparse
import itertools
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
LOCK = "/tmp/digitnet-heavy.lock"

GROUPS = {
    "seed": [],
    "seed-augment": ["--recipe", "best", "--model", "seed"],
    "best": ["--recipe", "best"],
    "best-24": ["--recipe", "best", "--epochs", "24"],
    "fashion-seed": ["--dataset", "fashion-mnist"],
    "fashion-best": ["--recipe", "best", "--dataset", "fashion-mnist"],
    "fashion-flip": ["--recipe", "best", "--dataset", "fashion-mnist", "--augment", "flip"],
    "fashion-shift-flip": ["--recipe", "best", "--dataset", "fashion-mnist", "--augment", "shift+flip"],
    "fashion-flip-24": ["--recipe", "best", "--dataset", "fashion-mnist", "--augment", "flip", "--epochs", "24"],
    "fashion-flip-36": ["--recipe", "best", "--dataset", "fashion-mnist", "--augment", "flip", "--epochs", "36"],
    "fashion-wide-flip-24": ["--recipe", "best", "--dataset", "fashion-mnist", "--augment", "flip", "--model", "wide",
                             "--epochs", "24"],
    "fashion-flip-erase-24": ["--recipe", "best", "--dataset", "fashion-mnist", "--augment", "flip+erase",
                              "--epochs", "24"],
    "elastic": ["--recipe", "best", "--augment", "affine+elastic"],
    "wide": ["--recipe", "best", "--model", "wide"],
    "seed-augment-ink": ["--recipe", "best", "--model", "seed", "--augment", "affine+ink"],
}
# Ensembles across groups, fixed before any test score was seen: every augmented MNIST run.
COMMITTEES = {"committee (seed-augment + best)": ["seed-augment", "best"],
              # Fixed on 2026-11-25 while best-24 trained, before any of its test scores existed.
              "committee (seed-augment + best + best-24)": ["seed-augment", "best", "best-24"],
              # Fixed on 2026-11-30 before any wide run's test score existed: the three networks,
              # each in its longest-trained form (best-24's hold-out beat best's, 99.61% to 99.50%).
              "committee (seed-augment + best-24 + wide)": ["seed-augment", "best-24", "wide"]}
# 2026-11-30 14:05 UTC, before they trained: best-24 and wide get seeds 3-5 as well (6 runs each,
# as seed-augment has), so the last committee is 18 runs; with 3 seeds each it scored 99.73%.


def train(group: str, seeds: list[int], out: Path, extra: list[str], lock: bool = True) -> None:
    """One `digitnet train` per seed, each waiting for the shared lock so timings are not contended."""
    for seed in seeds:
        name = f"{group}-s{seed}"
        if (out / name / "model.json").exists():
            print(f"accuracy: {name} exists, skipped", file=sys.stderr)
            continue
        cmd = (["flock", LOCK] if lock else []) + [
            str(ROOT / ".venv/bin/digitnet"), "train", *GROUPS[group], *extra, "--seed", str(seed),
            "--out-dir", str(out), "--name", name, "--jsonl", "--no-plots"]
        print(f"accuracy: {shlex.join(cmd)}", file=sys.stderr, flush=True)
        with open(out / f"{name}.log", "w") as log:
            subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


def holdout_accuracy(run: Path) -> tuple[float, float]:
    """(plain, with TTA) accuracy on the run's own hold-out split: what may choose, the test set unseen."""
    import torch

    from digitnet.config import TrainConfig
    from digitnet.ensemble import PLAIN, run_probabilities, tta_views
    from digitnet.model import load_model
    from digitnet.train import load_splits

    cpu = torch.device("cpu")
    model, meta = load_model(run, cpu)
    if not meta["config"].get("val_size"):
        sys.exit(f"{run} was validated on the test set (val_size 0): it has no hold-out to choose on")
    splits = load_splits(TrainConfig(**meta["config"]))
    y = splits.y_val.numpy()
    plain, tta = (run_probabilities(model, splits.x_val, cpu, views)
                  for views in (PLAIN, tta_views(meta)))
    return float((plain.argmax(1).numpy() == y).mean()), float((tta.argmax(1).numpy() == y).mean())


def holdout(out: Path, group: str) -> None:
    """Print each run's hold-out accuracy with and without test-time augmentation."""
    runs = sorted(p.parent for p in out.glob(f"{group}-s*/model.json"))
    rows = [(run.name, *holdout_accuracy(run)) for run in runs]
    for name, plain, tta in rows:
        print(f"{name}: hold-out {plain:.2%}, with TTA {tta:.2%}")
    if rows:
        print(f"mean: hold-out {np.mean([r[1] for r in rows]):.2%}, with TTA {np.mean([r[2] for r in rows]):.2%}")


def holdout_committees(out: Path, groups: list[str], seeds: list[int]) -> None:
    """Every committee of `groups` on the hold-out, seed by seed: a choice made without the test set.

    Runs of one seed hold out the same 5,000 images whatever their group (the split follows the
    seed), so for each seed the groups' runs of that seed are scored together on their shared
    hold-out; errors are summed over the seeds. A committee that wins here may then be fixed in
    COMMITTEES before its test score is read."""
    import torch

    from digitnet.config import TrainConfig
    from digitnet.ensemble import PLAIN, run_probabilities
    from digitnet.model import load_model
    from digitnet.train import load_splits

    def wrong(probs) -> int:
        return int((probs.argmax(1) != y).sum())

    cpu = torch.device("cpu")
    errors: dict[tuple[str, ...], int] = {}
    total = 0
    for seed in seeds:
        runs = [out / f"{group}-s{seed}" for group in groups]
        if missing := [r.name for r in runs if not (r / "model.json").exists()]:
            print(f"seed {seed}: skipped, {', '.join(missing)} not trained", file=sys.stderr)
            continue
        probs, y = {}, None
        for group, run in zip(groups, runs):
            model, meta = load_model(run, cpu)
            if not meta["config"].get("val_size"):
                sys.exit(f"{run} has no hold-out (val_size 0)")
            splits = load_splits(TrainConfig(**meta["config"]))
            if y is not None and not torch.equal(splits.y_val, y):
                sys.exit(f"{run} holds out other images than {runs[0]}")  # a different val_size
            y = splits.y_val
            probs[group] = run_probabilities(model, splits.x_val, cpu, PLAIN)
        total += len(y)
        for size in range(1, len(groups) + 1):
            for combo in itertools.combinations(groups, size):
                errors[combo] = errors.get(combo, 0) + wrong(torch.stack([probs[g] for g in combo]).mean(0))
        print(f"seed {seed}: " + ", ".join(f"{g} {len(y) - wrong(probs[g])}/{len(y)}" for g in groups))
    for combo, n in sorted(errors.items(), key=lambda kv: (kv[1], len(kv[0]))):
        print(f"{n:4d} errors of {total} ({1 - n / total:.2%}): {' + '.join(combo)}")


def report(out: Path, results_file: Path, only: str | None = None) -> dict:
    """Score every finished run on the test set once; group, ensemble, print and save.

    With `only`, just that group's runs are scored (scoring all takes ~12 minutes on 2 cores); the
    other groups keep the entries already in results_file."""
    from digitnet.ensemble import evaluate_ensemble
    from digitnet.evaluate import evaluate_run
    from digitnet.files import atomic_write_json

    table = json.loads(results_file.read_text()) if only and results_file.exists() else {}
    for group in GROUPS:
        if only and group != only:
            continue
        runs = sorted(p.parent for p in out.glob(f"{group}-s*/model.json"))
        if not runs:
            continue
        rows = []
        for run in runs:
            meta = json.loads((run / "model.json").read_text())
            history = json.loads((run / "history.json").read_text())
            test = evaluate_run(run, plots=False)
            rows.append({"run": run.name, "seed": meta["seed"], "test_accuracy": test["accuracy"],
                         "val_split": meta["dataset"]["val_split"],
                         "val_accuracy": history["val_accuracy"][-1],
                         "best_val_epoch": int(np.argmax(history["val_accuracy"])) + 1,
                         "epochs": meta["config"]["epochs"],
                         "train_seconds": meta["metrics"]["train_seconds"],
                         "seconds_per_epoch": history["seconds"],
                         "params": meta["architecture"]["params"],
                         "macs": meta["architecture"]["macs_per_image"],
                         "precision": meta["training"]["precision"],
                         "test_tta_accuracy": evaluate_ensemble([run], tta=True)["accuracy"]})
        acc = [r["test_accuracy"] for r in rows]
        entry = {"command": "digitnet train " + shlex.join(GROUPS[group]), "runs": rows,
                 "mean": float(np.mean(acc)), "min": float(np.min(acc)), "max": float(np.max(acc)),
                 "train_seconds_mean": float(np.mean([r["train_seconds"] for r in rows]))}
        entry["tta"] = rows[0]["test_tta_accuracy"]
        tta = [r["test_tta_accuracy"] for r in rows]
        entry["tta_mean"], entry["tta_min"] = float(np.mean(tta)), float(np.min(tta))
        if len(runs) > 1:
            entry["ensemble"] = evaluate_ensemble(runs)["accuracy"]
            entry["ensemble_tta"] = evaluate_ensemble(runs, tta=True)["accuracy"]
        table[group] = entry
    for name, groups in COMMITTEES.items():
        if only and only not in groups:
            continue
        runs = [out / r["run"] for g in groups if g in table for r in table[g]["runs"]]
        if missing := [r.name for r in runs if not (r / "model.json").exists()]:
            # /tmp loses runs across machines; a committee is only scored whole (its old entry stays)
            print(f"accuracy: {name} not re-scored: {', '.join(missing)} not in {out}", file=sys.stderr)
            continue
        if len(runs) > 1 and all(g in table for g in groups):
            table[name] = {"command": " + ".join(table[g]["command"] for g in groups), "runs": [],
                           "members": [r.name for r in runs],
                           "ensemble": evaluate_ensemble(runs)["accuracy"],
                           "ensemble_tta": evaluate_ensemble(runs, tta=True)["accuracy"]}
    table = {name: table[name] for name in [*GROUPS, *COMMITTEES] if name in table}  # the usual order
    results_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(results_file, table)
    print(format_table(table))
    return table


def pct(value) -> str:
    """A share as a percentage; '-' where there is none (a one-run group has no ensemble)."""
    return "-" if value is None else f"{value:.2%}"


def format_table(table: dict) -> str:
    lines = ["| group | runs | test acc. mean | min | max | 1st run + TTA | ensemble | ensemble + TTA "
             "| train time/run | params | MACs |", "| --- " * 11 + "|"]
    for group, e in table.items():
        if not e["runs"]:  # a committee: only its ensemble
            lines.append(f"| {group} | {len(e['members'])} | - | - | - | - | {e['ensemble']:.2%} | "
                         f"{e['ensemble_tta']:.2%} | - | - | - |")
            continue
        first = e["runs"][0]
        lines.append(f"| {group} | {len(e['runs'])} | {e['mean']:.2%} | {e['min']:.2%} | {e['max']:.2%} | "
                     f"{e['tta']:.2%} | {pct(e.get('ensemble'))} | "
                     f"{pct(e.get('ensemble_tta'))} | {e['train_seconds_mean'] / 60:.1f} min | "
                     f"{first['params']:,} | {first['macs'] / 1e6:.1f} M |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["train", "report", "holdout", "committees"])
    parser.add_argument("group", nargs="?", choices=list(GROUPS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--groups", nargs="+", choices=list(GROUPS), help="committees: the groups to combine")
    parser.add_argument("--out", type=Path, default=Path("/tmp/g/accuracy"), help="parent of the run dirs")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks/results/accuracy.json")
    parser.add_argument("--lock-held", action="store_true",
                        help="the caller already holds the heavy lock (flock LOCK python accuracy.py ...)")
    args, extra = parser.parse_known_args()  # anything else goes to `digitnet train` (e.g. --epochs 2)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.action == "train":
        if not args.group:
            parser.error("train needs a group: " + ", ".join(GROUPS))
        train(args.group, args.seeds, args.out, extra, lock=not args.lock_held)
    elif args.action == "holdout":
        if not args.group:
            parser.error("holdout needs a group: " + ", ".join(GROUPS))
        holdout(args.out, args.group)
    elif args.action == "committees":
        if not args.groups:
            parser.error("committees needs --groups")
        holdout_committees(args.out, args.groups, args.seeds)
    else:
        report(args.out, args.results, args.group)


if __name__ == "__main__":
    main()
