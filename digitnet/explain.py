"""Looking inside a trained network: what each layer made of one digit, and which pixels decided it.

`feature_maps` is the one place activations are computed: `digitnet explain`, the notebook and the
web page's layer panel all call it, so they show the same numbers under the same layer names as
`digitnet summary`.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from digitnet.errors import DigitnetError
from digitnet.model import summarize
from digitnet.preprocess import scale_pixels

# Layers whose outputs are shown as pictures; dense layers are added on request.
MAP_TYPES = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
DENSE_TYPES = (nn.Linear,)


def to_input(x28: np.ndarray, device: torch.device | None = None) -> torch.Tensor:
    """uint8 (28, 28), white ink on black -> (1, 1, 28, 28) float32 in [0, 1], as the model was trained."""
    if not isinstance(x28, np.ndarray) or x28.dtype != np.uint8 or x28.shape != (28, 28):
        got = f"{x28.dtype} {x28.shape}" if isinstance(x28, np.ndarray) else type(x28).__name__
        raise DigitnetError(f"expected a uint8 (28, 28) array (see preprocess.to_mnist), got {got}")
    x = scale_pixels(torch.from_numpy(np.ascontiguousarray(x28)))
    return x.reshape(1, 1, 28, 28).to(device or "cpu")


def _layer_groups(model: nn.Sequential) -> list[tuple[str, nn.Module, int]]:
    """(name, layer, index of the module whose output to show) per summary row.

    A ReLU right after a layer belongs to it (as summarize() folds Keras' activation='relu'), so a
    conv's maps are shown after its ReLU, as the notebook's Conv2D(..., activation='relu') outputs.
    """
    names = [row["name"] for row in summarize(model)]
    groups = []
    for i, layer in enumerate(model):
        if isinstance(layer, nn.ReLU) and groups:
            groups[-1] = (groups[-1][0], groups[-1][1], i)
            continue
        groups.append((names[len(groups)], layer, i))
    if len(groups) != len(names):
        raise RuntimeError("explain and model.summarize disagree on the layer list")  # a bug, not user error
    return groups


@torch.no_grad()
def feature_maps(model: nn.Sequential, x28: np.ndarray, dense: bool = False) -> list[dict]:
    """Each conv and pool layer's output for one image: {"name", "type", "shape": [C, H, W], "maps"}.

    `maps` is float32 (C, H, W) after the layer's ReLU. With dense=True the Linear layers follow,
    with shape [N] and maps (N,) (the last one holds the logits).
    """
    model.eval()
    device = next(model.parameters()).device
    wanted = MAP_TYPES + (DENSE_TYPES if dense else ())
    show = {end: (name, layer) for name, layer, end in _layer_groups(model) if isinstance(layer, wanted)}
    out = []
    x = to_input(x28, device)
    for i, layer in enumerate(model):
        x = layer(x)
        if i in show:
            name, kind = show[i]
            maps = x[0].detach().float().cpu().numpy().astype(np.float32)
            out.append({"name": name, "type": type(kind).__name__, "shape": list(maps.shape), "maps": maps})
    return out
