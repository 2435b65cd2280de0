"""Reading digits: a Classifier wraps a loaded run and turns images into probabilities."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from digitnet.errors import DigitnetError
from digitnet.model import load_model, pick_device, predict_logits, probabilities
from digitnet.preprocess import to_mnist

DEFAULT_MODEL = Path(__file__).resolve().parent / "weights" / "default"


class Classifier:
    """A trained network plus its model.json; predict() takes arrays or PIL images."""

    def __init__(self, model: torch.nn.Module, meta: dict, device: torch.device):
        self.model, self.meta, self.device = model, meta, device
        self.class_names = meta["class_names"]
        self.temperature = float(meta.get("calibration", {}).get("temperature", 1.0))

    def prepare(self, images) -> np.ndarray:
        """Images -> uint8 (N, 28, 28), white ink on black; MNIST-like arrays pass through unchanged."""
        if isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.shape[-2:] == (28, 28):
            return images.reshape(-1, 28, 28)
        if not isinstance(images, (list, tuple)):
            images = [images]
        return np.stack([to_mnist(im) for im in images]) if images else np.zeros((0, 28, 28), np.uint8)

    def predict(self, images) -> np.ndarray:
        """Probabilities (N, classes) for uint8 arrays (N, 28, 28) / (28, 28) or PIL images."""
        x = torch.from_numpy(np.ascontiguousarray(self.prepare(images)))
        logits = predict_logits(self.model, x, 1000, self.device, "fp32")
        return probabilities(logits, self.temperature).cpu().numpy()


def load_classifier(run=None, device: str = "cpu") -> Classifier:
    run_dir = Path(run) if run is not None else DEFAULT_MODEL
    if run is None and not (run_dir / "model.json").exists():
        raise DigitnetError(f"no default model at {run_dir}; pass a run directory (--model RUN)")
    dev = pick_device(device)
    model, meta = load_model(run_dir, dev)
    return Classifier(model, meta, dev)
