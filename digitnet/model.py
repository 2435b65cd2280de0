"""The networks, their summary, and the only code that reads or writes model files.

`seed` is the teaching notebook's Keras Sequential CNN (Conv2D 32-64-128, Dense 128, Dense 10,
'valid' padding), here in PyTorch's (C, H, W) layout. Networks return logits; `probabilities`
adds the softmax for predict, serve and export.

A model on disk is a folder with model.safetensors (weights only: loading runs no code) and
model.json (what rebuilds the network, how to scale its input, and where it came from).
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn

from digitnet.errors import DigitnetError
from digitnet.files import atomic_write_bytes, atomic_write_json, read_json, sha256_bytes, sha256_file
from digitnet.preprocess import scale_pixels

INPUT_SHAPE = (1, 28, 28)  # (C, H, W): one grey channel, 28x28 pixels
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
FORMAT_VERSION = 1


def seed_layers(num_classes: int = 10) -> list[nn.Module]:
    """The notebook's network, layer for layer (Keras activation='relu' becomes a ReLU module)."""
    return [
        nn.Conv2d(1, 32, 3), nn.ReLU(),      # (B, 32, 26, 26)
        nn.MaxPool2d(2),                     # (B, 32, 13, 13)
        nn.Conv2d(32, 64, 3), nn.ReLU(),     # (B, 64, 11, 11)
        nn.MaxPool2d(2),                     # (B, 64, 5, 5)
        nn.Conv2d(64, 128, 3), nn.ReLU(),    # (B, 128, 3, 3)
        nn.Flatten(),                        # (B, 1152)
        nn.LazyLinear(128), nn.ReLU(),       # in_features derived from the shapes above
        nn.Linear(128, num_classes),         # logits; the softmax is applied by probabilities()
    ]


def _conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    """3x3 'valid' convolution, batch norm, ReLU (no conv bias: batch norm's shift replaces it)."""
    return [nn.Conv2d(c_in, c_out, 3, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


def strong_layers(num_classes: int = 10, width: int = 32) -> list[nn.Module]:
    """Batch-norm conv blocks 32-32-pool-64-64-pool, dropout, dense 256: the plain CNN of the
    published 99.6-99.7% MNIST recipes, at about 3x the seed network's multiply-adds. Shapes below
    are for the default width 32."""
    w1, w2 = width, 2 * width
    return [
        *_conv_bn(1, w1), *_conv_bn(w1, w1),    # (B, 32, 24, 24)
        nn.MaxPool2d(2), nn.Dropout(0.1),       # (B, 32, 12, 12)
        *_conv_bn(w1, w2), *_conv_bn(w2, w2),   # (B, 64, 8, 8)
        nn.MaxPool2d(2), nn.Dropout(0.1),       # (B, 64, 4, 4)
        nn.Flatten(),                           # (B, 1024 = 64 x 4 x 4)
        nn.Linear(w2 * 16, 256, bias=False), nn.BatchNorm1d(256), nn.ReLU(),
        nn.Dropout(0.4),                        # the dense layer holds most weights: drop most here
        nn.Linear(256, num_classes),            # logits
    ]


def wide_layers(num_classes: int = 10) -> list[nn.Module]:
    """`strong` with half as many channels again (48-48-pool-96-96-pool), about 2.2x its
    multiply-adds: more filters for Fashion-MNIST's textures and outlines (README, Accuracy)."""
    return strong_layers(num_classes, width=48)


# Name -> function returning the layer list. Each network takes (B, 1, 28, 28) in [0, 1].
MODELS = {"seed": seed_layers, "strong": strong_layers, "wide": wide_layers}


def build_model(name: str = "seed", num_classes: int = 10) -> nn.Sequential:
    """A freshly initialised network, with Keras' default initialisation."""
    if name not in MODELS:
        from difflib import get_close_matches

        close = get_close_matches(name, list(MODELS), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise DigitnetError(f"unknown model {name!r} (known: {', '.join(MODELS)}){hint}")
    model = nn.Sequential(*MODELS[name](num_classes))
    with torch.no_grad():
        # eval(): batch norm must neither see a batch of 1 nor fold these zeros into its statistics.
        model.eval()(torch.zeros(1, *INPUT_SHAPE))  # materialises LazyLinear's in_features
        model.train()
    keras_init(model)
    return model


def keras_init(model: nn.Module) -> None:
    """Glorot-uniform kernels and zero biases, Keras' defaults, so the net trains like the notebook."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def probabilities(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Softmax over classes; temperature > 1 softens over-confident logits (calibration)."""
    return torch.softmax(logits.float() / temperature, dim=-1)


# ---------------------------------------------------------------------------------------------
# Devices and precision: one helper each, used by training and inference alike.


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DigitnetError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DigitnetError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise DigitnetError(f"device type {device.type!r} is not supported; use cpu or cuda")
    return device


def cpu_has_bf16() -> bool:
    """True where the CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in ("auto", "fp32", "bf16"):
        raise DigitnetError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"


def autocast(device: torch.device, precision: str):
    """bf16 autocast for the forward pass, or a no-op for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 256,
                   device: torch.device | None = None, precision: str = "fp32") -> torch.Tensor:
    """Logits (N, classes) float32 for uint8 images (N, 28, 28), white ink on black."""
    device = device or next(model.parameters()).device
    model.eval()
    out = []
    for start in range(0, len(x), batch_size):
        xb = scale_pixels(x[start:start + batch_size].to(device)).unsqueeze(1)  # (B, 1, 28, 28)
        xb = xb.contiguous(memory_format=torch.channels_last)  # as load_model's and training's weights
        with autocast(device, precision):
            out.append(model(xb).float())
    return torch.cat(out) if out else torch.zeros(0, 10)


# ---------------------------------------------------------------------------------------------
# Summary


def summarize(model: nn.Sequential, input_shape=INPUT_SHAPE) -> list[dict]:
    """One row per layer: Keras-style name, output shape (H, W, C as Keras prints it), params, MACs."""
    rows, counts = [], {}
    x = torch.zeros(1, *input_shape)
    keras_names = {nn.Conv2d: "conv2d", nn.MaxPool2d: "max_pooling2d", nn.Flatten: "flatten",
                   nn.Linear: "dense", nn.BatchNorm2d: "batch_normalization", nn.BatchNorm1d:
                   "batch_normalization", nn.Dropout: "dropout", nn.AvgPool2d: "average_pooling2d",
                   nn.AdaptiveAvgPool2d: "global_average_pooling2d"}
    was_training = model.training
    model.eval()  # batch norm: use running statistics, leave them untouched
    with torch.no_grad():
        for layer in model:
            y = layer(x)
            if isinstance(layer, nn.ReLU) and rows:
                rows[-1]["activation"] = "relu"  # Keras folds the activation into the layer
                x = y
                continue
            kind = keras_names.get(type(layer), type(layer).__name__.lower())
            n = counts.get(kind, 0)
            counts[kind] = n + 1
            params = sum(p.numel() for p in layer.parameters())
            if isinstance(layer, nn.Conv2d):
                k = layer.kernel_size[0] * layer.kernel_size[1] * layer.in_channels // layer.groups
                macs = y[0].numel() * k
            elif isinstance(layer, nn.Linear):
                macs = layer.in_features * layer.out_features
            else:
                macs = 0
            shape = tuple(y.shape[1:])
            keras_shape = (shape[1], shape[2], shape[0]) if len(shape) == 3 else shape
            rows.append({"name": kind if n == 0 else f"{kind}_{n}", "type": type(layer).__name__,
                         "output_shape": list(keras_shape), "params": params, "macs": macs,
                         "activation": None})
            x = y
    model.train(was_training)
    return rows


def format_summary(model: nn.Sequential, title: str = "seed") -> str:
    rows = summarize(model)
    labels = [f"{r['name']} ({r['type']}{', ' + r['activation'] if r['activation'] else ''})" for r in rows]
    width = max([32] + [len(label) + 1 for label in labels])  # 32 as Keras; wider for batch-norm names
    rule = width + 46
    lines = [f'Model: "{title}"', "-" * rule,
             f"{'Layer (type)':<{width}}{'Output Shape':<22}{'Param #':>10}{'Mult-adds':>14}", "=" * rule]
    for r, label in zip(rows, labels):
        shape = "(None, " + ", ".join(str(d) for d in r["output_shape"]) + ")"
        lines.append(f"{label:<{width}}{shape:<22}{r['params']:>10,}{r['macs']:>14,}")
    total = sum(r["params"] for r in rows)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    macs = sum(r["macs"] for r in rows)
    lines += ["=" * rule, f"Total params: {total:,}", f"Trainable params: {trainable:,}",
              f"Non-trainable params: {total - trainable:,}",
              f"Multiply-adds per image (forward): {macs:,} ({macs / 1e6:.2f} M); "
              f"about {6 * macs / 1e6:.1f} MFLOP per trained image (forward + backward)"]
    return "\n".join(lines)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------------
# Saving and loading: safetensors + JSON, never pickles.


def save_model(run_dir: str | Path, model: nn.Module, meta: dict) -> Path:
    """Write model.safetensors then model.json (which records the weights' SHA-256), atomically."""
    from safetensors.torch import save

    run_dir = Path(run_dir)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()
             if v.dtype.is_floating_point}
    state.update({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
                  if not v.dtype.is_floating_point})
    payload = save(state)
    atomic_write_bytes(run_dir / WEIGHTS_FILE, payload)
    meta = {**meta, "format_version": FORMAT_VERSION, "weights_file": WEIGHTS_FILE,
            "weights_sha256": sha256_bytes(payload),
            "tensors": {k: list(v.shape) for k, v in state.items()}}
    atomic_write_json(run_dir / META_FILE, meta)
    return run_dir


def update_meta(run_dir: str | Path, **entries) -> dict:
    """Set top-level entries of model.json (e.g. calibration), atomically; the weights stay untouched."""
    meta = {**read_meta(run_dir), **entries}
    atomic_write_json(Path(run_dir) / META_FILE, meta)
    return meta


def read_meta(run_dir: str | Path) -> dict:
    path = Path(run_dir) / META_FILE
    if not Path(run_dir).is_dir():
        raise DigitnetError(f"{run_dir}: not a run directory (expected a folder with {META_FILE} "
                            f"and {WEIGHTS_FILE})")
    meta = read_json(path, f"missing; is {run_dir} a run directory?")
    if not isinstance(meta, dict) or "architecture" not in meta:
        raise DigitnetError(f"{path}: no 'architecture' entry; not a digitnet model file")
    return meta


def read_tensors(path: Path, sha256: str | None, recorded_in: str) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors, read only after its SHA-256 matches the one `recorded_in` holds."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        payload = path.read_bytes()
    except FileNotFoundError:
        raise DigitnetError(f"{path}: missing, though {recorded_in} names it") from None
    if sha256 and sha256_bytes(payload) != sha256:
        raise DigitnetError(f"{path}: SHA-256 does not match {recorded_in} ({sha256_bytes(payload)[:16]}... "
                            f"instead of {sha256[:16]}...); the file is damaged or replaced")
    try:
        return load(payload)
    except (SafetensorError, ValueError) as e:
        raise DigitnetError(f"{path}: not a valid safetensors file ({e})") from None


def load_model(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Sequential, dict]:
    """Rebuild the network from model.json and fill it from model.safetensors, checking both agree."""
    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    arch = meta["architecture"]
    weights = run_dir / meta.get("weights_file", WEIGHTS_FILE)
    state = read_tensors(weights, meta.get("weights_sha256"), META_FILE)
    model = build_model(arch.get("name", "seed"), int(arch.get("num_classes", 10)))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k}: file {list(state[k].shape)} vs network {list(v.shape)}"
             for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + \
                ([f"unexpected {', '.join(unexpected)}"] if unexpected else []) + wrong
        raise DigitnetError(f"{weights} does not match the {arch.get('name')!r} network in "
                            f"{META_FILE}: {'; '.join(parts)}")
    model.load_state_dict(state)
    model.eval()
    # channels_last weights: with them a CPU runs this network in fp32 2.7-3.7x faster than in the
    # default layout (digitnet predict: 18,100 against 4,400 images/s on 10,000 images, 2 cores).
    return model.to(device=device, memory_format=torch.channels_last), meta


def weights_digest(run_dir: str | Path) -> str:
    return sha256_file(Path(run_dir) / WEIGHTS_FILE)


def macs_per_image(model: nn.Sequential) -> int:
    return sum(r["macs"] for r in summarize(model))

