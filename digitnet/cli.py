"""The `digitnet` command: one subcommand per action, each a thin layer over the Python API.

    digitnet train [--recipe seed|fast|best] [--epochs N] [--batch-size N] ...   train and write runs/<name>/
    digitnet evaluate RUN                                                  test metrics and plots
    digitnet evaluate RUN1 RUN2 ... [--tta]                                ensemble (+ shifted views)
    digitnet summary [--model seed]                                        layers, shapes, parameters
    digitnet data show|verify|locate|download [NAME]                       datasets
    digitnet predict IMAGE... [--model RUN] [--json|--csv]                 one digit per image
    digitnet read IMAGE [--annotate OUT.png]                               a written number
    digitnet calibrate RUN                                                 honest confidences (model.json)
    digitnet serve [--model RUN] [--host 127.0.0.1] [--port 8000]          web page and HTTP API

Every TrainConfig field is a flag of `train` (batch_size -> --batch-size). Errors a user can fix
print `digitnet: error: ...` and exit 1; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import sys
from pathlib import Path

from digitnet.errors import DigitnetError


class Parser(argparse.ArgumentParser):
    """argparse, plus "did you mean" for a mistyped flag."""

    def error(self, message):
        if message.startswith("unrecognized arguments:"):
            known = sorted({s for p in _all_parsers(self) for a in p._actions for s in a.option_strings})
            hints = []
            for arg in message.split(":", 1)[1].split():
                close = difflib.get_close_matches(arg.split("=")[0], known, n=2)
                if close:
                    hints.append(f"{arg}: did you mean {' or '.join(close)}?")
            if hints:
                message += " (" + "; ".join(hints) + ")"
        super().error(message)


def _all_parsers(parser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _all_parsers(sub)


def add_reading_flags(parser: argparse.ArgumentParser) -> None:
    """Flags shared by predict and read: which model, where it runs, when to answer 'unknown'."""
    parser.add_argument("--model", metavar="RUN", help="run directory (default: the model shipped with digitnet)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    parser.add_argument("--runtime", default="torch",
                        choices=["torch", "onnx", "onnx-int8", "openvino", "openvino-int8"],
                        help="torch; onnx: ONNX Runtime on RUN/model.onnx from `digitnet export`; openvino: "
                        "OpenVINO on it; -int8: on RUN/model.int8.onnx from `digitnet export --int8` "
                        "(default: torch)")
    parser.add_argument("--min-confidence", type=float, default=0.0, metavar="P",
                        help="answer 'unknown' when the (calibrated) confidence is below P (default: 0)")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, with its type, default and help from the dataclass."""
    from digitnet.config import TrainConfig

    hints = {"int": int, "float": float, "str": str, "str | None": str, "bool": bool}
    for f in dataclasses.fields(TrainConfig):
        if f.name == "recipe":
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.type if isinstance(f.type, str) else f.type.__name__]
        help_text = f"{f.metadata['help']} (default: {f.default})"
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, type=kind, default=None, metavar=f.name.upper(), help=help_text)


def build_parser() -> Parser:
    from digitnet import __version__
    from digitnet.config import RECIPES
    from digitnet.data import DATASETS

    parser = Parser(prog="digitnet", description="Handwritten-digit recognition with a CNN.")
    parser.add_argument("--version", action="version", version=f"digitnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a network and write a run directory")
    p.add_argument("--recipe", default=None, choices=list(RECIPES),
                   help="starting set of values; flags override it (default: seed, the notebook)")
    add_config_flags(p)
    out = p.add_mutually_exclusive_group()
    out.add_argument("--quiet", action="store_true", help="print nothing while training")
    out.add_argument("--jsonl", action="store_true", help="print one JSON object per event, for scripts")
    p.add_argument("--no-plots", action="store_true", help="skip the evaluation and plots at the end")
    p.add_argument("--resume", metavar="RUN", help="continue RUN from its newest checkpoint (its config; "
                   "flags may only repeat it, or set device/threads/data-dir)")
    p.add_argument("--nproc", type=int, metavar="N", help="run N processes on this machine with DDP "
                   "(starts torchrun for you; the same as torchrun --nproc_per_node N -m digitnet train)")

    p = sub.add_parser("evaluate", help="test metrics, confusion matrix and plots of a run")
    p.add_argument("run", nargs="+", help="run directory (runs/<name>); several: an ensemble, "
                   "their probabilities averaged")
    p.add_argument("--tta", action="store_true", help="test-time augmentation: also average over "
                   "one-pixel shifts of each image")
    p.add_argument("--data-dir", help="folder with the dataset's IDX files")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--limit", type=int, default=0, help="score only the first N test images")
    p.add_argument("--no-plots", action="store_true", help="do not write plots")
    p.add_argument("--out", help="folder for evaluation.json and plots/ (default: the run directory; "
                   "for the shipped default model, runs/default-evaluation)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--coverage", action="store_true", help="also accuracy vs coverage: answering only "
                   "the most confident images, and the --min-confidence that does it (plots/coverage.png)")

    p = sub.add_parser("predict", help="read one digit per image: files, folders, globs, - for stdin")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image file, folder of images, glob, or -")
    add_reading_flags(p)
    p.add_argument("--top-k", type=int, default=3, help="show the K most likely digits (default: 3)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print a JSON list, one object per image")
    out.add_argument("--csv", action="store_true", help="print CSV: source,digit,confidence,status,top_k,error")
    p.add_argument("--save-preprocessed", metavar="DIR", help="write the 28x28 the model saw as DIR/<name>.png")

    p = sub.add_parser("read", help="read a written number (2 or more digits) from an image")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image file, folder of images, glob, or -")
    add_reading_flags(p)
    p.add_argument("--json", action="store_true", help="print JSON: text, and per digit box and probabilities")
    p.add_argument("--annotate", metavar="OUT.png", help="write the image with each digit's box and label")

    p = sub.add_parser("calibrate", help="fit the temperature that makes confidences honest, on held-out "
                       "training images; stored in model.json")
    p.add_argument("run", help="run directory trained with --val-size N > 0")
    p.add_argument("--data-dir", help="folder with the dataset's IDX files")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--json", action="store_true", help="print the calibration entry as JSON")

    p = sub.add_parser("summary", help="layers, output shapes, parameters and multiply-adds")
    p.add_argument("model", nargs="?", default="seed", help="model name or run directory (default: seed)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")

    p = sub.add_parser("data", help="show, verify, locate or download datasets")
    p.add_argument("action", choices=["show", "verify", "locate", "download"])
    p.add_argument("name", nargs="?", default="mnist", choices=list(DATASETS))
    p.add_argument("--data-dir", help="look here instead of the usual places")
    p.add_argument("--dest", help="download: folder to write to (default: the user cache)")
    p.add_argument("--mirror", action="append", help="download: base URL to try (repeatable, in order)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("explain", help="one picture of what the network did with one image")
    p.add_argument("image", help="image file (PNG, JPEG, ...): a photo, scan or drawing of one digit")
    p.add_argument("--model", help="run directory (default: the model shipped with digitnet)")
    p.add_argument("--out", required=True, help="PNG to write: input, 28x28 seen, feature maps, "
                   "probabilities, saliency")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON (probabilities, "
                   "layer shapes and statistics, saliency)")

    p = sub.add_parser("export", help="write RUN/model.onnx (and with --int8 model.int8.onnx), checked against PyTorch")
    p.add_argument("run", help="run directory (runs/<name>)")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="export format (default: onnx)")
    p.add_argument("--int8", action="store_true", help="also write RUN/model.int8.onnx: int8 weights and "
                   "activations (ranges from training images), checked to answer as PyTorch does on 99%% "
                   "of test digits; for --runtime onnx-int8 / openvino-int8")
    p.add_argument("--json", action="store_true", help="print the export report as JSON")

    p = sub.add_parser("bench", help="side-by-side speed benchmark (runs benchmarks/bench.py)",
                       description="Keras notebook vs PyTorch tutorial loop vs digitnet's recipes, training "
                       "and inference, on this machine (runs benchmarks/bench.py from the source checkout).")
    p.add_argument("--limit", type=int, default=0, help="first N train and test images (default: 0, all)")
    p.add_argument("--epochs", type=int, help="override every contender's epochs (for quick checks)")
    p.add_argument("--only", default="keras,tutorial,seed,fast,infer", help="comma-separated subset of "
                   "keras,tutorial,seed,fast,infer (default: all)")
    p.add_argument("--fast-seeds", type=int, default=3, help="seeds for the fast recipe (default: 3)")
    p.add_argument("--latency-calls", type=int, default=1000, help="single-image calls timed (default: 1000)")
    p.add_argument("--out", help="JSON to write (default: benchmarks/results/bench-<time>.json)")
    p.add_argument("--runs-dir", default="runs/bench", help="where the digitnet runs go (default: runs/bench)")

    p = sub.add_parser("serve", help="the draw-a-digit web page and the HTTP API (FastAPI + uvicorn)")
    p.add_argument("--model", help="run directory to serve (default: the model shipped with digitnet)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this "
                   "machine only; 0.0.0.0 opens it to the network)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--workers", type=int, default=1, help="worker processes, each with its own model and "
                   "batcher (default: 1)")
    p.add_argument("--runtime", default="auto", choices=["auto", "onnx", "torch"],
                   help="what runs batched predictions: onnx (ONNX Runtime, built in memory from the run and "
                        "checked against PyTorch; about 3x faster at small batches), torch, or auto: onnx when "
                        "onnxruntime is installed (default: auto)")
    return parser


def cmd_train(args) -> int:
    import digitnet
    from digitnet.config import field_names

    settings = {k: getattr(args, k) for k in field_names() if k != "recipe" and getattr(args, k, None) is not None}
    if args.nproc is not None:
        from digitnet.distributed import launch

        return launch(args.nproc, train_argv(args, settings))
    log = "quiet" if args.quiet else "jsonl" if args.jsonl else "bar"
    run = digitnet.train(recipe=args.recipe, log=log, plots=not args.no_plots, resume=args.resume, **settings)
    if log == "bar" and "test_accuracy" in run.metrics:
        print(f"test accuracy {run.metrics['test_accuracy']:.4f}; plots in {run.run_dir / 'plots'}")
    from digitnet import distributed

    if distributed.from_env().enabled:  # a torchrun worker, finished together with every other rank
        distributed.leave_worker()
    return 0


def train_argv(args, settings: dict) -> list[str]:
    """The `train` flags that were given, as a command line again (for --nproc to hand to torchrun)."""
    argv = [] if args.recipe is None else ["--recipe", args.recipe]
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        else:
            argv += [flag, str(value)]
    argv += [flag for flag, on in (("--quiet", args.quiet), ("--jsonl", args.jsonl),
                                   ("--no-plots", args.no_plots)) if on]
    return argv + (["--resume", args.resume] if args.resume else [])


def cmd_evaluate(args) -> int:
    from digitnet.evaluate import evaluate_run, format_report

    if len(args.run) > 1 or args.tta:
        from digitnet.ensemble import evaluate_ensemble, format_ensemble

        result = evaluate_ensemble(args.run, args.data_dir, args.device, args.limit, tta=args.tta)
        print(json.dumps(result, indent=2) if args.json else format_ensemble(result))
        return 0
    result = evaluate_run(args.run[0], args.data_dir, args.device, args.limit, plots=not args.no_plots,
                          coverage=args.coverage, out_dir=evaluation_dir(Path(args.run[0]), args.out))
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    return 0


def evaluation_dir(run_dir: Path, out: str | None) -> Path:
    """Where evaluate writes: --out, else the run directory, but never into the installed package
    (the shipped default model), and never silently into a folder it cannot write."""
    from digitnet.read import DEFAULT_MODEL

    if out is not None:
        return Path(out)
    if run_dir.resolve() == DEFAULT_MODEL.resolve():
        target = Path("runs") / "default-evaluation"
        print(f"digitnet: the shipped default model: evaluation.json and plots go to {target}/",
              file=sys.stderr)
        return target
    if run_dir.is_dir() and not os.access(run_dir, os.W_OK):
        raise DigitnetError(f"cannot write evaluation.json into {run_dir}; give --out DIR")
    return run_dir


def reading_classifier(args):
    """The classifier for predict and read: PyTorch, or an exported model (--runtime)."""
    from digitnet.read import load_classifier

    if not 0.0 <= args.min_confidence <= 1.0:
        raise DigitnetError(f"--min-confidence must be between 0 and 1, got {args.min_confidence}")
    if args.runtime != "torch":
        from digitnet.export import OnnxClassifier
        from digitnet.read import DEFAULT_MODEL

        return OnnxClassifier(args.model or DEFAULT_MODEL, runtime=args.runtime)
    return load_classifier(args.model, args.device)


def cmd_predict(args) -> int:
    import csv

    from digitnet.read import CSV_FIELDS, csv_row, format_prediction, predict_sources

    if args.top_k < 1:
        raise DigitnetError(f"--top-k must be at least 1, got {args.top_k}")
    classifier = reading_classifier(args)
    writer = csv.writer(sys.stdout) if args.csv else None
    if writer:
        writer.writerow(CSV_FIELDS)
    rows, failed = [], 0
    for row in predict_sources(args.images, classifier, args.top_k, args.min_confidence,
                               args.save_preprocessed):
        if "error" in row:
            failed += 1
            print(f"digitnet: error: {row['source']}: {row['error']}", file=sys.stderr, flush=True)
        if args.json:
            rows.append(row)
        elif writer:
            writer.writerow(csv_row(row))
        elif "error" not in row:
            print(format_prediction(row), flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
    return 1 if failed else 0


def cmd_read(args) -> int:
    from digitnet.files import atomic_write_bytes
    from digitnet.read import annotate, format_reading, read_sources

    if args.annotate and (len(args.images) > 1 or any(c in args.images[0] for c in "*?[")):
        raise DigitnetError("--annotate writes one picture: give one IMAGE")
    classifier = reading_classifier(args)
    rows, failed = [], 0
    for row, image in read_sources(args.images, classifier, args.min_confidence):
        if "error" in row:
            failed += 1
            print(f"digitnet: error: {row['source']}: {row['error']}", file=sys.stderr, flush=True)
        elif args.annotate:
            atomic_write_bytes(args.annotate, annotate(image, row))
        if args.json:
            rows.append(row)
        elif "error" not in row:
            print(format_reading(row), flush=True)
    if args.json:
        print(json.dumps(rows[0] if len(rows) == 1 else rows, indent=2))
    return 1 if failed else 0


def cmd_calibrate(args) -> int:
    from digitnet.calibration import calibrate_run

    result = calibrate_run(args.run, args.data_dir, args.device)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.run}: temperature {result['temperature']:.4f} fitted on {result['fitted_on']}\n"
          f"expected calibration error ({result['ece_bins']} bins): {result['ece_before']:.4f} before, "
          f"{result['ece_after']:.4f} after; stored in model.json (weights unchanged)")
    return 0


def cmd_summary(args) -> int:
    from pathlib import Path

    from digitnet.model import build_model, format_summary, load_model, summarize

    if Path(args.model).is_dir():
        model, meta = load_model(args.model)
        title = f"{meta['architecture']['name']} ({args.model})"
    else:
        model, title = build_model(args.model), args.model
    print(json.dumps(summarize(model), indent=2) if args.json else format_summary(model, title))
    return 0


def cmd_data(args) -> int:
    from digitnet import data

    if args.action == "download":
        folder = data.download(args.name, args.dest, args.mirror)
        print(f"{args.name}: downloaded and verified in {folder}")
        return 0
    if args.action == "locate":
        print(data.locate(args.name, args.data_dir))
        return 0
    if args.action == "verify":
        rows = data.verify(args.name, args.data_dir)
        if args.json:
            print(json.dumps(rows, indent=2))
        for row in rows if not args.json else []:
            print(f"ok  {row['file']}  {tuple(row['shape'])}  sha256 {row['sha256'][:16]}...")
        return 0
    spec = data.get_spec(args.name)
    places = []
    for label, folder in data.candidate_dirs(args.name, args.data_dir):
        present = all(data.file_in(folder, base) for base, _ in spec.files.values())
        places.append({"where": label, "folder": str(folder), "complete": present})
    info = {"name": spec.name, "classes": list(spec.class_names), "files": data.checksums(args.name),
            "lookup_order": places, "mirrors": list(spec.mirrors)}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{spec.name}: classes {', '.join(spec.class_names)}")
    print("files (SHA-256 of the uncompressed content):")
    for base, sha in info["files"].items():
        print(f"  {base:<26} {sha}")
    print("lookup order (the first complete folder is used):")
    for p in places:
        print(f"  [{'x' if p['complete'] else ' '}] {p['where']:<22} {p['folder']}")
    print("mirrors for `digitnet data download`: " + ", ".join(spec.mirrors))
    return 0


def cmd_explain(args) -> int:
    from digitnet.explain import explain, format_report

    report = explain(args.image, args.model, args.out)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def cmd_export(args) -> int:
    from digitnet.export import export_int8, export_onnx

    report = export_onnx(args.run)
    if args.int8:
        report["int8"] = export_int8(args.run)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"wrote {report['path']} ({report['bytes']:,} bytes, opset {report['opset']}); "
          f"max abs difference of probabilities vs PyTorch on {report['checked_images']} test images: "
          f"{report['max_abs_diff']:.1e}")
    if args.int8:
        q = report["int8"]
        print(f"wrote {q['path']} ({q['bytes']:,} bytes; ranges from {q['calibration_images']:,} training "
              f"images); the same answer as PyTorch fp32 on {q['same_argmax']:.2%} of {q['checked_images']} "
              f"test images, max abs difference of probabilities {q['max_abs_diff']:.1e}")
    return 0


def cmd_bench(args) -> int:
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py"
    if not script.exists():
        raise DigitnetError(f"{script} not found: `digitnet bench` needs the source checkout "
                            f"(git clone, then pip install -e .)")
    flags = ["--limit", str(args.limit), "--only", args.only, "--fast-seeds", str(args.fast_seeds),
             "--latency-calls", str(args.latency_calls), "--runs-dir", args.runs_dir]
    flags += (["--epochs", str(args.epochs)] if args.epochs else []) + (["--out", args.out] if args.out else [])
    return subprocess.run([sys.executable, str(script), *flags]).returncode


def cmd_serve(args) -> int:
    from digitnet.serve import serve

    if args.workers < 1 or not 0 < args.port < 65536:
        raise DigitnetError(f"--workers must be at least 1 and --port 1-65535, "
                            f"got {args.workers} and {args.port}")
    serve(args.model, args.host, args.port, args.workers, args.runtime)
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "summary": cmd_summary, "data": cmd_data,
            "explain": cmd_explain, "export": cmd_export, "bench": cmd_bench, "serve": cmd_serve,
            "predict": cmd_predict, "read": cmd_read, "calibrate": cmd_calibrate}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except DigitnetError as e:
        print(f"digitnet: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("digitnet: interrupted", file=sys.stderr)
        return 130
