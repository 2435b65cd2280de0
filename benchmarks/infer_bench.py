"""Inference speed of a trained run under one runtime, through digitnet's predict().

    .venv/bin/python benchmarks/infer_bench.py runs/NAME --runtime openvino-int8   # prints one JSON line

Every runtime takes what a user passes to predict(): uint8 (N, 28, 28) arrays, and returns
probabilities, so the numbers include pixel scaling and the softmax. The run is exported first
(fp32 or int8, as the runtime needs) if it has not been. The runtime's accuracy on the same test
images is reported beside its speed. bench.py runs each runtime in its own process, as it does
each training contender: thread pools of one library left spinning beside another's skew both.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common import ROOT, emit, infer_result, limit, mnist

# --runtime -> row name. OpenVINO fp32 is left out: slower than ONNX Runtime fp32 here (README, Speed).
ROWS = {"torch": "digitnet predict, PyTorch eager fp32", "onnx": "digitnet predict, ONNX Runtime",
        "onnx-int8": "digitnet predict, ONNX Runtime int8", "openvino-int8": "digitnet predict, OpenVINO int8"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="run directory")
    parser.add_argument("--runtime", default="torch", choices=list(ROWS))
    parser.add_argument("--limit", type=int, default=0, help="first N test images (0: all 10,000)")
    parser.add_argument("--latency-calls", type=int, default=1000)
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    import torch

    import digitnet
    from digitnet.errors import DigitnetError
    from digitnet.export import INT8_FILE, RUNTIMES, OnnxClassifier, export_int8, export_onnx

    _, _, x, y = limit(mnist(), args.limit)
    run, report = Path(args.run), {}
    try:
        if args.runtime == "torch":
            predict = digitnet.load(run).predict
        else:
            file = RUNTIMES[args.runtime][1]
            if not (run / file).exists():
                # a barely trained run (--limit) can fail the int8 check: then this row is skipped
                report = export_int8(run) if file == INT8_FILE else export_onnx(run)
            predict = OnnxClassifier(run, runtime=args.runtime).predict
    except DigitnetError as e:  # OpenVINO not installed, or the int8 check failed
        emit({"infer": [], "skipped": [f"{ROWS[args.runtime]}: {e}"]})
        return
    emit({"infer": [infer_result(ROWS[args.runtime], predict, x, calls=args.latency_calls, y=y)],
          "threads": torch.get_num_threads(), "export": report})


if __name__ == "__main__":
    main()
