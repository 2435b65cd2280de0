"""Images -> MNIST-like 28x28 arrays, and the single pixel-scaling function every path uses."""
from __future__ import annotations

import torch


def scale_pixels(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (..., 28, 28) -> float32 in [0, 1]; white ink on black, as MNIST.

    Training, predict, the server and the ONNX check all call this, so they cannot disagree. The
    notebook fed raw 0-255 values; that trains under TensorFlow but diverges under other backends.
    """
    return x.to(torch.float32).div_(255.0)


def to_mnist(image) -> "np.ndarray":
    """Any image (PIL or array) -> uint8 (28, 28), white ink on black, the digit centred.

    A plain version: grey, invert dark-on-light, crop to the ink, fit 20x20, centre by mass.
    """
    import numpy as np
    from PIL import Image, ImageOps

    from digitnet.errors import DigitnetError

    if isinstance(image, np.ndarray):
        image = Image.fromarray(image.astype(np.uint8) if image.dtype != np.uint8 else image)
    if not isinstance(image, Image.Image):
        raise DigitnetError(f"expected a PIL image or a NumPy array, got {type(image).__name__}")
    grey = np.asarray(ImageOps.exif_transpose(image).convert("L"), dtype=np.float32)
    if np.median(grey) > 127:  # dark ink on light paper
        grey = 255 - grey
    grey = np.clip(grey - np.median(grey), 0, None)
    if grey.max() <= 0:
        raise DigitnetError("no ink found in the image (it is blank)")
    ys, xs = np.nonzero(grey > grey.max() * 0.2)
    crop = grey[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    h, w = crop.shape
    scale = 20.0 / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(Image.fromarray(crop / crop.max() * 255).convert("L").resize(size, Image.LANCZOS),
                       dtype=np.float32)
    canvas = np.zeros((28, 28), np.float32)
    top, left = (28 - size[1]) // 2, (28 - size[0]) // 2
    canvas[top:top + size[1], left:left + size[0]] = small
    total = canvas.sum()
    cy = (canvas.sum(1) * np.arange(28)).sum() / total
    cx = (canvas.sum(0) * np.arange(28)).sum() / total
    canvas = np.roll(canvas, (round(13.5 - cy), round(13.5 - cx)), axis=(0, 1))
    return np.clip(canvas, 0, 255).astype(np.uint8)
