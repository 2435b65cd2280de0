"""ONNX export of a run, checked against PyTorch, and an ONNX Runtime classifier for predict.

    digitnet export runs/NAME --format onnx     # writes runs/NAME/model.onnx

The exported graph takes what `Classifier.predict` takes and returns what it returns:

    input  "pixels"         uint8 (N, 28, 28), white ink on black, N free (dynamic batch axis)
    output "probabilities"  float32 (N, classes), softmax(logits / temperature)

Pixel scaling (`preprocess.scale_pixels`) and the softmax (`model.probabilities`) are traced into the
graph from the same functions PyTorch uses, so an ONNX consumer needs no digitnet code and cannot
scale differently. Every export is checked: ONNX Runtime's probabilities must match PyTorch's
within 1e-4 (fp32) on real test digits, or nothing is written.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from digitnet.errors import DigitnetError
from digitnet.files import atomic_write_bytes
from digitnet.model import load_model, probabilities
from digitnet.preprocess import scale_pixels

ONNX_FILE = "model.onnx"
OPSET = 17
PARITY_TOLERANCE = 1e-4  # max abs difference of probabilities, fp32


class PixelsToProbabilities(nn.Module):
    """The network with its input scaling and softmax: uint8 (N, 28, 28) -> probabilities (N, C)."""

    def __init__(self, net: nn.Module, temperature: float = 1.0):
        super().__init__()
        self.net, self.temperature = net, temperature

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = scale_pixels(pixels).unsqueeze(1)  # (N, 1, 28, 28) float32 in [0, 1]
        return probabilities(self.net(x), self.temperature)


def _require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError:
        raise DigitnetError("ONNX export needs onnx and onnxruntime: "
                            "pip install 'digitnet[export]' (or .venv/bin/pip install onnx onnxruntime)") from None
    return onnxruntime


def onnx_session(model_bytes_or_path, threads: int = 0):
    """An ONNX Runtime CPU session; threads 0 lets ONNX Runtime use one per core."""
    ort = _require_onnx()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    src = str(model_bytes_or_path) if isinstance(model_bytes_or_path, Path) else model_bytes_or_path
    return ort.InferenceSession(src, options, providers=["CPUExecutionProvider"])


def export_onnx(run_dir: str | Path, check_images: np.ndarray | None = None) -> dict:
    """Write run_dir/model.onnx (atomically) after checking it against PyTorch; returns the check."""
    run_dir = Path(run_dir)
    payload, check = onnx_bytes(run_dir, check_images)
    atomic_write_bytes(run_dir / ONNX_FILE, payload)
    return {"path": str(run_dir / ONNX_FILE), "bytes": len(payload), "opset": OPSET, **check}


def onnx_bytes(run_dir: str | Path, check_images: np.ndarray | None = None) -> tuple[bytes, dict]:
    """The run's network as ONNX, in memory, checked against PyTorch: (model bytes, the check)."""
    _require_onnx()
    net, meta = load_model(run_dir, "cpu")
    temperature = float(meta.get("calibration", {}).get("temperature", 1.0))
    wrapper = PixelsToProbabilities(net.float().eval(), temperature).eval()
    example = torch.zeros(2, 28, 28, dtype=torch.uint8)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript-based exporter warns that it is legacy; it needs no onnxscript and
        # handles this all-standard network fully.
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (example,), buf, dynamo=False, opset_version=OPSET,
                          input_names=["pixels"], output_names=["probabilities"],
                          dynamic_axes={"pixels": {0: "batch"}, "probabilities": {0: "batch"}})
    payload = buf.getvalue()
    if check_images is None:
        check_images = _test_digits(meta)
    check = check_parity(wrapper, onnx_session(payload), check_images)
    if check["max_abs_diff"] >= PARITY_TOLERANCE:
        raise DigitnetError(f"ONNX export of {run_dir} disagrees with PyTorch: max abs difference of "
                            f"probabilities {check['max_abs_diff']:.2e} >= {PARITY_TOLERANCE:g}; nothing written")
    return payload, check


def _test_digits(meta: dict, n: int = 1000) -> np.ndarray:
    """Real test images for the parity check; random pixels if the dataset is not at hand."""
    from digitnet.data import load_split

    try:
        x, _ = load_split(meta.get("dataset", {}).get("name", "mnist"), "test")
        return np.ascontiguousarray(x[:n])
    except DigitnetError:
        return np.random.default_rng(0).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def check_parity(wrapper: nn.Module, session, images: np.ndarray) -> dict:
    """Probabilities from PyTorch (fp32) and ONNX Runtime on the same uint8 images."""
    with torch.no_grad():
        expected = wrapper(torch.from_numpy(images)).numpy()
    got = session.run(None, {"pixels": images})[0]
    return {"checked_images": len(images), "max_abs_diff": float(np.abs(got - expected).max()),
            "same_argmax": float((got.argmax(1) == expected.argmax(1)).mean())}


CHUNK = 256  # images per ONNX Runtime call in OnnxClassifier.predict


class OnnxClassifier:
    """model.onnx under ONNX Runtime, with the same predict(images) as read.Classifier.

    `model` is the ONNX model's bytes (onnx_bytes); without it, RUN/model.onnx from `digitnet export`.
    """

    def __init__(self, run_dir: str | Path, threads: int = 0, model: bytes | None = None):
        from digitnet.model import read_meta

        self.run_dir = Path(run_dir)
        self.meta = read_meta(self.run_dir)
        self.class_names = self.meta["class_names"]
        path = self.run_dir / ONNX_FILE
        if model is None and not path.exists():
            raise DigitnetError(f"{path}: missing; run `digitnet export {self.run_dir} --format onnx` first")
        self.session = onnx_session(path if model is None else model, threads)

    def prepare(self, images) -> np.ndarray:
        from digitnet.read import Classifier

        return Classifier.prepare(self, images)

    def predict(self, images) -> np.ndarray:
        """Probabilities (N, classes) for uint8 arrays (N, 28, 28) / (28, 28) or PIL images."""
        x = np.ascontiguousarray(self.prepare(images), dtype=np.uint8)
        if len(x) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        # In chunks, as predict_logits does for PyTorch: one run over 10,000 images holds ~0.9 GB per
        # activation and ran 5x slower per image than chunks of 256 (benchmarks/infer_bench.py).
        return np.concatenate([self.session.run(None, {"pixels": x[i:i + CHUNK]})[0]
                               for i in range(0, len(x), CHUNK)])
