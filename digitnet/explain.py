"""Looking inside a trained network: what each layer made of one digit, and which pixels decided it.

`feature_maps` is the one place activations are computed: `digitnet explain`, the notebook and the
web page's layer panel all call it, so they show the same numbers under the same layer names as
`digitnet summary`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from digitnet.errors import DigitnetError
from digitnet.model import summarize
from digitnet.images import load_image
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

    `maps` is float32 (C, H, W), after the layer's ReLU when one follows it directly ("relu": True;
    in a conv -> batch-norm -> ReLU stack the conv's maps are its raw output). With dense=True the
    Linear layers follow, with shape [N] and maps (N,) (the last one holds the logits).
    """
    model.eval()
    device = next(model.parameters()).device
    wanted = MAP_TYPES + (DENSE_TYPES if dense else ())
    show = {end: (name, layer, isinstance(model[end], nn.ReLU))
            for name, layer, end in _layer_groups(model) if isinstance(layer, wanted)}
    out = []
    x = to_input(x28, device)
    for i, layer in enumerate(model):
        x = layer(x)
        if i in show:
            name, kind, relu = show[i]
            maps = x[0].detach().float().cpu().numpy().astype(np.float32)
            out.append({"name": name, "type": type(kind).__name__, "relu": relu, "shape": list(maps.shape),
                        "maps": maps})
    return out


def saliency(model: nn.Sequential, x28: np.ndarray, target: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """|d logit[target] / d pixel| (28, 28) float32 and the logits (classes,); target: the winning class.

    The plain input gradient: how much a small change of each pixel would move the class's score.
    Unlike gradient x input it is not forced to zero off the ink, so where it lands is a real finding.
    """
    model.eval()
    device = next(model.parameters()).device
    x = to_input(x28, device).requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)[0]
        cls = int(logits.argmax()) if target is None else int(target)
        if not 0 <= cls < logits.numel():
            raise DigitnetError(f"target class {cls} out of range 0..{logits.numel() - 1}")
        (grad,) = torch.autograd.grad(logits[cls], x)
    return grad[0, 0].abs().cpu().numpy().astype(np.float32), logits.detach().float().cpu().numpy()


def ink_box(x28: np.ndarray, level: int = 64) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the pixels brighter than `level`, bottom/right exclusive."""
    ys, xs = np.nonzero(x28 > level)
    if len(ys) == 0:
        raise DigitnetError("no ink in the 28x28 image; nothing to explain")
    return int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1


def saliency_stats(sal: np.ndarray, x28: np.ndarray) -> dict:
    """Where the saliency mass lies: inside the ink's bounding box vs outside, in total and per pixel."""
    top, left, bottom, right = ink_box(x28)
    inside = np.zeros(sal.shape, bool)
    inside[top:bottom, left:right] = True
    total = float(sal.sum())
    mass_in = float(sal[inside].sum())
    density_in = mass_in / inside.sum()
    density_out = (total - mass_in) / max(1, (~inside).sum())
    peak = np.unravel_index(int(sal.argmax()), sal.shape)
    return {"method": "input gradient |d logit / d pixel|", "ink_box": [top, left, bottom, right],
            "box_area_fraction": float(inside.mean()),
            "mass_inside_box": mass_in / total if total > 0 else 0.0,
            "mass_on_ink": float(sal[x28 > 64].sum()) / total if total > 0 else 0.0,
            # None when nothing at all lies outside the box (JSON has no infinity)
            "density_ratio_inside_outside": float(density_in / density_out) if density_out > 0 else None,
            "peak": [int(peak[0]), int(peak[1])], "max": float(sal.max())}


# ---------------------------------------------------------------------------------------------
# `digitnet explain`: the numbers for one image, and one picture of them.


def layer_stats(layer: dict) -> dict:
    """Shape and activation statistics of one feature_maps() entry (no arrays: fit for JSON)."""
    maps = layer["maps"]
    flat = maps.reshape(maps.shape[0], -1) if maps.ndim == 3 else maps.reshape(-1, 1)
    strongest = np.argsort(-flat.mean(1))[:5] if maps.ndim == 3 else []
    return {"name": layer["name"], "type": layer["type"], "relu": layer["relu"], "shape": layer["shape"],
            "mean": float(maps.mean()), "max": float(maps.max()),
            "active_fraction": float((maps > 0).mean()),  # share of units the ReLU let through
            "dead_channels": int((flat.max(1) <= 0).sum()) if maps.ndim == 3 else None,
            "strongest_channels": [int(c) for c in strongest]}


def explain_image(classifier, image) -> dict:
    """Everything `digitnet explain` shows for one PIL image or array, as arrays and numbers."""
    from digitnet.model import probabilities
    from digitnet.preprocess import to_mnist

    mnist_like = isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.shape == (28, 28)
    x28 = image if mnist_like else to_mnist(image)  # (28, 28) uint8, white ink on black: what the model sees

    layers = feature_maps(classifier.model, x28)
    sal, logits = saliency(classifier.model, x28)
    probs = probabilities(torch.from_numpy(logits), classifier.temperature).numpy()
    names = classifier.class_names
    best = int(probs.argmax())
    return {"x28": x28, "layers": layers, "saliency": sal, "probabilities": probs,
            "report": {"prediction": names[best], "confidence": float(probs[best]),
                       "probabilities": {n: float(p) for n, p in zip(names, probs)},
                       "layers": [layer_stats(layer) for layer in layers],
                       "saliency": saliency_stats(sal, x28)}}


def tile(maps: np.ndarray, cols: int = 16) -> np.ndarray:
    """(C, H, W) -> one 2-D mosaic, each map scaled to its own [0, 1], NaN gaps between maps."""
    c, h, w = maps.shape
    cols = min(cols, c)
    rows = -(-c // cols)
    mosaic = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan, np.float32)
    peak = maps.reshape(c, -1).max(1)
    for i in range(c):
        r, k = divmod(i, cols)
        scaled = maps[i] / peak[i] if peak[i] > 0 else np.zeros_like(maps[i])
        mosaic[r * (h + 1):r * (h + 1) + h, k * (w + 1):k * (w + 1) + w] = scaled
    return mosaic


def plot_explanation(result: dict, image, class_names: list[str], title: str = ""):
    """One matplotlib figure: input, the 28x28 seen, saliency, probabilities, then every layer's maps."""
    from matplotlib.patches import Rectangle

    from digitnet.evaluate import new_figure

    layers = result["layers"]
    # Wide mosaics (at least 16 maps a row, at most 4 rows) fill the page width at a readable size.
    mosaics = [tile(layer["maps"], max(16, layer["shape"][0] // 4)) for layer in layers]
    # Laid out in inches, top to bottom: the top row of panels, then one titled row per layer.
    width, panel, title_room = 11.0, 2.4, 0.45
    rows = [(panel, title_room + 0.1)] + [((width - 0.2) * m.shape[0] / m.shape[1], title_room) for m in mosaics]
    height = sum(h + room for h, room in rows) + 0.1
    fig = new_figure(figsize=(width, height))
    boxes, y = [], height
    for h, room in rows:
        y -= room + h
        boxes.append((y / height, h / height))  # (bottom, height) as figure fractions
    top_row = [fig.add_axes([0.02 + k * 0.25, boxes[0][0], 0.21, boxes[0][1]]) for k in range(4)]

    ax = top_row[0]
    shown = image if isinstance(image, np.ndarray) else np.asarray(image.convert("RGB"))
    ax.imshow(shown, cmap="gray" if shown.ndim == 2 else None)
    ax.set_title(f"input as given\n{shown.shape[1]}x{shown.shape[0]} px", fontsize=9)
    x28 = result["x28"]
    ax = top_row[1]
    ax.imshow(x28, cmap="gray", vmin=0, vmax=255)
    ax.set_title("what the model sees\n28x28, white ink on black", fontsize=9)
    ax = top_row[2]
    ax.imshow(x28, cmap="gray", vmin=0, vmax=255)
    ax.imshow(result["saliency"], cmap="inferno", alpha=0.6)
    top, left, bottom, right = result["report"]["saliency"]["ink_box"]
    ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False,
                               ec="cyan", lw=0.8, ls="--"))
    share = result["report"]["saliency"]["mass_inside_box"]
    ax.set_title(f"saliency |d score / d pixel|\n{share:.0%} inside the ink's box", fontsize=9)
    for a in top_row[:3]:
        a.set_xticks([])
        a.set_yticks([])

    ax = top_row[3]
    probs = result["probabilities"]
    best = int(probs.argmax())
    ax.barh(range(len(probs)), probs, color=["tab:orange" if i == best else "tab:blue" for i in range(len(probs))])
    ax.set(yticks=range(len(probs)), xlim=(0, 1), title=f"probabilities: {class_names[best]} {probs[best]:.1%}")
    ax.set_yticklabels(class_names, fontsize=7)
    ax.invert_yaxis()
    ax.title.set_fontsize(9)

    for (bottom, h), layer, mosaic in zip(boxes[1:], layers, mosaics):
        ax = fig.add_axes([0.01, bottom, 0.98, h])
        ax.imshow(np.ma.masked_invalid(mosaic), cmap="viridis", vmin=0, vmax=1, interpolation="nearest",
                  aspect="auto")  # the box was sized to the mosaic's shape above
        ax.set_facecolor("white")
        c, h, w = layer["shape"]
        ax.set_title(f"{layer['name']} ({layer['type']}{' + ReLU' if layer['relu'] else ''}): "
                     f"{c} maps of {h}x{w}  [C, H, W] = {layer['shape']}", fontsize=9, loc="left")
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10, y=1.0, va="bottom")
    return fig


def explain(image_path: str | Path, run=None, out: str | Path | None = None) -> dict:
    """Explain one image file with a run (default: the shipped model); write the picture to `out`."""
    from digitnet.evaluate import save_figure
    from digitnet.read import load_classifier

    if out is not None and Path(out).suffix.lower() != ".png":
        raise DigitnetError(f"--out {out}: the picture is written as PNG; name it *.png")
    image = load_image(image_path)  # before the model, so a mistyped path is named first
    classifier = load_classifier(run)
    result = explain_image(classifier, image)
    report = {"image": str(image_path), "model": str(run) if run else "default", **result["report"]}
    if out is not None:
        fig = plot_explanation(result, image, classifier.class_names, title=f"digitnet explain {Path(image_path).name}")
        save_figure(fig, Path(out))
        report["out"] = str(out)
    return report


def format_report(report: dict) -> str:
    """A few readable lines: the answer, the runner-up, each layer's shape, where the saliency lies."""
    probs = sorted(report["probabilities"].items(), key=lambda kv: -kv[1])
    sal = report["saliency"]
    lines = [f"{report['image']}: {report['prediction']} ({report['confidence']:.1%}); "
             f"next {probs[1][0]} ({probs[1][1]:.1%})", "",
             f"{'layer':<18}{'[C, H, W]':<16}{'mean':>8}{'max':>8}{'active':>8}{'dead':>6}"]
    for layer in report["layers"]:
        shape = "[" + ", ".join(str(d) for d in layer["shape"]) + "]"
        dead = "" if layer["dead_channels"] is None else str(layer["dead_channels"])
        lines.append(f"{layer['name']:<18}{shape:<16}{layer['mean']:>8.3f}{layer['max']:>8.2f}"
                     f"{layer['active_fraction']:>8.0%}{dead:>6}")
    ratio = sal["density_ratio_inside_outside"]
    lines += ["", f"saliency: {sal['mass_inside_box']:.0%} of the mass inside the ink's bounding box "
              f"({sal['box_area_fraction']:.0%} of the image); "
              + (f"{ratio:.1f}x denser inside than outside" if ratio is not None else "none outside it")]
    if "out" in report:
        lines.append(f"picture: {report['out']}")
    return "\n".join(lines)
