"""Inference speed of a trained run: PyTorch eager and ONNX Runtime, through digitnet's predict().

    .venv/bin/python benchmarks/infer_bench.py runs/NAME   # prints one JSON line

Both take what a user passes to predict(): uint8 (N, 28, 28) arrays, and return probabilities, so
the numbers include pixel scaling and the softmax. The run is exported to ONNX first if needed.
"""
from __future__ import annotations

import argparse
import sys

from common import ROOT, emit, infer_result, limit, mnist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="run directory")
    parser.add_argument("--limit", type=int, default=0, help="first N test images (0: all 10,000)")
    parser.add_argument("--latency-calls", type=int, default=1000)
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    import torch

    import digitnet
    from digitnet.export import ONNX_FILE, OnnxClassifier, export_onnx

    x = limit(mnist(), args.limit)[2]
    from pathlib import Path

    report = None if (Path(args.run) / ONNX_FILE).exists() else export_onnx(args.run)
    torch_model, onnx_model = digitnet.load(args.run), OnnxClassifier(args.run)
    results = [infer_result("digitnet predict, PyTorch eager fp32", torch_model.predict, x,
                            calls=args.latency_calls),
               infer_result("digitnet predict, ONNX Runtime", onnx_model.predict, x,
                            calls=args.latency_calls)]
    emit({"infer": results, "threads": torch.get_num_threads(), "export": report})


if __name__ == "__main__":
    main()
