"""Inference speed of a trained run: PyTorch eager, ONNX Runtime and OpenVINO, through digitnet's predict().

    .venv/bin/python benchmarks/infer_bench.py runs/NAME   # prints one JSON line

All take what a user passes to predict(): uint8 (N, 28, 28) arrays, and return probabilities, so
the numbers include pixel scaling and the softmax. The run is exported first (fp32 and int8) if
needed. Each runtime's accuracy on the same test images is reported beside its speed. OpenVINO is
skipped with a message if it is not installed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common import ROOT, emit, infer_result, limit, mnist

# (row name, --runtime); OpenVINO fp32 is left out: slower than ONNX Runtime fp32 here (README, Speed).
RUNTIMES = [("digitnet predict, ONNX Runtime", "onnx"), ("digitnet predict, ONNX Runtime int8", "onnx-int8"),
            ("digitnet predict, OpenVINO int8", "openvino-int8")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="run directory")
    parser.add_argument("--limit", type=int, default=0, help="first N test images (0: all 10,000)")
    parser.add_argument("--latency-calls", type=int, default=1000)
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    import torch

    import digitnet
    from digitnet.errors import DigitnetError
    from digitnet.export import INT8_FILE, ONNX_FILE, OnnxClassifier, export_int8, export_onnx

    _, _, x, y = limit(mnist(), args.limit)
    run = Path(args.run)
    report = {} if (run / ONNX_FILE).exists() else export_onnx(run)
    skipped = []
    if not (run / INT8_FILE).exists():
        try:
            report["int8"] = export_int8(run)
        except DigitnetError as e:  # a barely trained run (--limit) can fail the int8 check
            skipped.append(f"int8 export: {e}")
    results = [infer_result("digitnet predict, PyTorch eager fp32", digitnet.load(run).predict, x,
                            calls=args.latency_calls, y=y)]
    for name, runtime in RUNTIMES:
        try:
            model = OnnxClassifier(args.run, runtime=runtime)
        except DigitnetError as e:  # OpenVINO not installed
            skipped.append(f"{name}: {e}")
            continue
        results.append(infer_result(name, model.predict, x, calls=args.latency_calls, y=y))
    emit({"infer": results, "skipped": skipped, "threads": torch.get_num_threads(), "export": report})


if __name__ == "__main__":
    main()
