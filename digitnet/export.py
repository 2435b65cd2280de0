"""ONNX export of a run, checked against PyTorch, and ONNX Runtime / OpenVINO classifiers for predict.

    digitnet export runs/NAME --format onnx           # writes runs/NAME/model.onnx
    digitnet export runs/NAME --format onnx --int8    # ... and runs/NAME/model.int8.onnx

The exported graph takes what `Classifier.predict` takes and returns what it returns:

    input  "pixels"         uint8 (N, 28, 28), white ink on black, N free (dynamic batch axis)
    output "probabilities"  float32 (N, classes), softmax(logits / temperature)

Pixel scaling (`preprocess.scale_pixels`) and the softmax (`model.probabilities`) are traced into the
graph from the same functions PyTorch uses, so an ONNX consumer needs no digitnet code and cannot
scale differently. Every export is checked: ONNX Runtime's probabilities must match PyTorch's
within 1e-4 (fp32) on real test digits, or nothing is written.

The int8 model is the same graph statically quantized by ONNX Runtime's tooling (QDQ: int8 weights
per output channel, uint8 activations with ranges calibrated on training images, never test ones).
It is checked too: its answers must equal fp32 PyTorch's on at least 99% of the check digits. Int8
convolutions use the CPU's VNNI dot-product instructions; under OpenVINO they are the fastest way to
run this network on a CPU (README, Speed), under ONNX Runtime they pay less.
"""
from __future__ import annotations

import io
import math
import tempfile
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
INT8_FILE = "model.int8.onnx"
OPSET = 17
PARITY_TOLERANCE = 1e-4  # max abs difference of probabilities, fp32
# int8 probabilities differ from fp32 by up to a few hundredths, so the int8 check is on answers.
INT8_AGREEMENT = 0.99  # share of check digits whose int8 answer must be fp32 PyTorch's
CALIBRATION_IMAGES = 2000  # training images whose activations set the int8 ranges
# --runtime name -> (engine, file in the run directory)
RUNTIMES = {"onnx": ("onnxruntime", ONNX_FILE), "onnx-int8": ("onnxruntime", INT8_FILE),
            "openvino": ("openvino", ONNX_FILE), "openvino-int8": ("openvino", INT8_FILE)}


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
    try:
        return ort.InferenceSession(src, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # ONNX Runtime raises its own exception types for a corrupt model
        raise DigitnetError(f"{_name(model_bytes_or_path)}: not a usable ONNX model ({_first_line(e)})") from None


def openvino_runner(path: Path, threads: int = 0):
    """A function running an ONNX file under OpenVINO on the CPU: uint8 (N, 28, 28) -> probabilities."""
    try:
        import openvino
    except ImportError:
        raise DigitnetError("the openvino runtimes need OpenVINO: pip install 'digitnet[export]' "
                            "(or .venv/bin/pip install openvino)") from None
    # f32 keeps OpenVINO from running fp32 models in bf16 on CPUs that have it, unasked.
    # One chunk runs as a LATENCY request (every core on it). Many chunks go to a queue of requests
    # on THROUGHPUT's streams (one per core), each running whole chunks: no core waits for another
    # inside a chunk. A single LATENCY request per chunk ran 45-50k images/s at batch 10,000, the
    # queue 64-69k (/tmp script, an int8 seed model); a caller waiting on one THROUGHPUT request at a
    # time gets one core, half the speed (README Speed).
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    core = openvino.Core()

    def compiled(hint: str):
        try:
            return core.compile_model(str(path), "CPU", {**config, "PERFORMANCE_HINT": hint})
        except Exception as e:  # OpenVINO's errors are RuntimeErrors with the whole C++ context
            raise DigitnetError(f"{path}: not a usable ONNX model for OpenVINO ({_first_line(e)})") from None

    request = compiled("LATENCY").create_infer_request()
    queues = []  # the queue is compiled (~40 ms) at the first batch that needs it, not for single images

    def run(pixels: np.ndarray) -> np.ndarray:
        if len(pixels) <= CHUNK:
            return request.infer({0: pixels})[0].copy()  # the output buffer is reused
        if not queues:
            many = compiled("THROUGHPUT")
            queues.append(openvino.AsyncInferQueue(many, many.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        queue = queues[0]
        out = [None] * math.ceil(len(pixels) / CHUNK)
        queue.set_callback(lambda done, k: out.__setitem__(k, done.get_output_tensor(0).data.copy()))
        for k in range(len(out)):
            queue.start_async({0: pixels[k * CHUNK:(k + 1) * CHUNK]}, k)
        queue.wait_all()
        return np.concatenate(out)

    return run


def _name(src) -> str:
    return str(src) if isinstance(src, (str, Path)) else "the ONNX model"


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def export_onnx(run_dir: str | Path, check_images: np.ndarray | None = None) -> dict:
    """Write run_dir/model.onnx (atomically) after checking it against PyTorch; returns the check."""
    run_dir = Path(run_dir)
    payload, check = onnx_bytes(run_dir, check_images)
    atomic_write_bytes(run_dir / ONNX_FILE, payload)
    return {"path": str(run_dir / ONNX_FILE), "bytes": len(payload), "opset": OPSET, **check}


def onnx_bytes(run_dir: str | Path, check_images: np.ndarray | None = None) -> tuple[bytes, dict]:
    """The run's network as ONNX, in memory, checked against PyTorch: (model bytes, the check)."""
    _require_onnx()
    wrapper, meta = _wrapped(run_dir)
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


def export_int8(run_dir: str | Path, check_images: np.ndarray | None = None) -> dict:
    """Write run_dir/model.int8.onnx (atomically) after checking it against PyTorch; returns the check."""
    run_dir = Path(run_dir)
    payload, check = int8_bytes(run_dir, onnx_bytes(run_dir, check_images)[0], check_images)
    atomic_write_bytes(run_dir / INT8_FILE, payload)
    return {"path": str(run_dir / INT8_FILE), "bytes": len(payload), **check}


def int8_bytes(run_dir: Path, fp32_model: bytes, check_images: np.ndarray | None = None) -> tuple[bytes, dict]:
    """The fp32 ONNX model statically quantized to int8, checked against fp32 PyTorch."""
    import onnx  # onnx_bytes made sure these are there
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    wrapper, meta = _wrapped(run_dir)
    calibration = _training_digits(meta)

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(np.array_split(calibration, max(1, len(calibration) // 250)))

        def get_next(self):
            return next(({"pixels": b} for b in self.batches), None)

    with tempfile.TemporaryDirectory() as tmp:
        fp32, pre, out = (Path(tmp) / name for name in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        fp32.write_bytes(fp32_model)
        quant_pre_process(str(fp32), str(pre))  # shape inference and folding, as the tooling asks
        # The last layer and the softmax stay fp32: quantized, the probabilities came in steps of
        # 1/255 and did not sum to 1, and the calibrated confidence was lost. It costs no speed.
        nodes = onnx.load(str(pre)).graph.node
        last = max(i for i, node in enumerate(nodes) if node.op_type in ("Gemm", "MatMul"))
        # reduce_range: 7-bit weights. On x86 CPUs without VNNI (AVX2 only) ONNX Runtime's u8 x s8
        # kernels saturate with full 8-bit weights: there the int8 model agreed with PyTorch on 97.9%
        # of the check digits (99% needed) and was refused.
        quantize_static(str(pre), str(out), Batches(), quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=[node.name for node in nodes[last:]])
        payload = out.read_bytes()
    if check_images is None:
        check_images = _test_digits(meta)
    check = check_parity(wrapper, onnx_session(payload), check_images)
    if check["same_argmax"] < INT8_AGREEMENT:
        raise DigitnetError(f"int8 export of {run_dir} disagrees with PyTorch: the same answer on "
                            f"{check['same_argmax']:.1%} of {len(check_images)} digits (< {INT8_AGREEMENT:.0%}); "
                            f"{INT8_FILE} not written")
    return payload, {**check, "calibration_images": len(calibration)}


def _training_digits(meta: dict, n: int = CALIBRATION_IMAGES) -> np.ndarray:
    """A fixed random sample of the run's training images, for the int8 activation ranges."""
    from digitnet.data import load_split

    x, _ = load_split(meta.get("dataset", {}).get("name", "mnist"), "train")
    pick = np.random.default_rng(0).choice(len(x), size=min(n, len(x)), replace=False)
    return np.ascontiguousarray(x[np.sort(pick)])


def _wrapped(run_dir: str | Path) -> tuple[PixelsToProbabilities, dict]:
    """The run's network in fp32 with its scaling and calibrated softmax, and its model.json."""
    net, meta = load_model(run_dir, "cpu")
    temperature = float(meta.get("calibration", {}).get("temperature", 1.0))
    return PixelsToProbabilities(net.float().eval(), temperature).eval(), meta


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


CHUNK = 256  # images per call in OnnxClassifier.predict


class OnnxClassifier:
    """An exported model under ONNX Runtime or OpenVINO, with the same predict(images) as read.Classifier.

    `runtime` is a RUNTIMES name: which engine runs which file of `digitnet export`. `model` is an
    fp32 ONNX model's bytes (onnx_bytes) for ONNX Runtime, used instead of the file.
    """

    def __init__(self, run_dir: str | Path, threads: int = 0, model: bytes | None = None, runtime: str = "onnx"):
        from digitnet.model import read_meta

        if runtime not in RUNTIMES:
            raise DigitnetError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
        engine, file = RUNTIMES[runtime]
        self.run_dir, self.runtime = Path(run_dir), runtime
        self.meta = read_meta(self.run_dir)
        self.class_names = self.meta["class_names"]
        path = self.run_dir / file
        if model is None and not path.exists():
            flags = " --int8" if file == INT8_FILE else ""
            raise DigitnetError(f"{path}: missing; run `digitnet export {self.run_dir} --format onnx{flags}` first")
        if engine == "openvino":
            self._run = openvino_runner(path, threads)
        else:
            session = onnx_session(path if model is None else model, threads)
            self._run = lambda pixels: np.concatenate([session.run(None, {"pixels": pixels[i:i + CHUNK]})[0]
                                                       for i in range(0, len(pixels), CHUNK)])

    def prepare(self, images) -> np.ndarray:
        from digitnet.read import Classifier

        return Classifier.prepare(self, images)

    def predict(self, images) -> np.ndarray:
        """Probabilities (N, classes) for uint8 arrays (N, 28, 28) / (28, 28) or PIL images."""
        x = np.ascontiguousarray(self.prepare(images), dtype=np.uint8)
        if len(x) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        # Each runtime runs chunks of CHUNK, as predict_logits does for PyTorch: one run over 10,000
        # images holds ~0.9 GB per activation and ran 5x slower per image (benchmarks/infer_bench.py).
        return self._run(x)
