"""Reading digits from image files: predict one digit per image, or read a written number.

    digitnet predict photo.jpg scans/ 'more/*.png' -      # one digit per image, with confidence
    digitnet read number.jpg --annotate boxes.png         # a written number, digit by digit

A Classifier wraps a loaded run. Files are opened by digitnet.images, the image maths (ink, 28x28)
lives in digitnet.preprocess, digitnet.segment finds the digits of a number in the ink map; this
module asks the network.
"""
from __future__ import annotations

import glob
import io
import sys
from pathlib import Path

import numpy as np
import torch

from digitnet import preprocess
from digitnet.errors import DigitnetError
from digitnet.images import load_image
from digitnet.model import load_model, pick_device, predict_logits, probabilities
from digitnet.preprocess import to_mnist
from digitnet.segment import find_digits, segment_digits  # noqa: F401 (segment_digits: API)

DEFAULT_MODEL = Path(__file__).resolve().parent / "weights" / "default"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm",
                  ".pbm", ".pnm", ".heic", ".heif", ".avif"}
MAX_STDIN_BYTES = 64 << 20  # a photo is a few MB; refuse to buffer an endless pipe
NO_DIGIT = "no digit found"


class Classifier:
    """A trained network plus its model.json; predict() takes arrays or PIL images.

    Everything below needs only `class_names` and `predict(uint8 (N, 28, 28)) -> (N, classes)`, so
    another runtime (ONNX Runtime) can stand in for this class; load_classifier is where to choose it.
    """

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
        x = np.ascontiguousarray(self.prepare(images))
        x = torch.from_numpy(x if x.flags.writeable else x.copy())  # e.g. np.asarray of a PIL image
        logits = predict_logits(self.model, x, device=self.device, precision="fp32")
        return probabilities(logits, self.temperature).cpu().numpy()


def load_classifier(run=None, device: str = "cpu") -> Classifier:
    """A Classifier from a run directory, or the model shipped in digitnet/weights/default."""
    run_dir = Path(run) if run is not None else DEFAULT_MODEL
    if run is None and not (run_dir / "model.json").exists():
        raise DigitnetError(f"no default model at {run_dir}; pass a run directory (--model RUN)")
    dev = pick_device(device)
    model, meta = load_model(run_dir, dev)
    return Classifier(model, meta, dev)


# ---------------------------------------------------------------------------------------------
# Finding the files: paths, folders, globs and '-' for standard input.


def expand_sources(args: list[str]) -> list[tuple[str, str | None]]:
    """Command-line arguments -> (source, error) pairs in order; error is None for a readable source."""
    out = []
    for arg in args:
        path = Path(arg)
        if arg == "-":
            out.append(("-", None))
        elif path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            out += [(str(p), None) for p in files]
            if not files:
                out.append((arg, f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder"))
        elif path.exists():
            out.append((arg, None))
        elif glob.has_magic(arg):
            matches = sorted(glob.glob(arg))
            out += [(m, None) for m in matches if Path(m).is_file()]
            if not matches:
                out.append((arg, "no files match this pattern"))
        else:
            out.append((arg, "no such file or folder"))
    return out


def open_source(source: str, stdin=None):
    """A PIL image from a path, or from standard input for '-' (bounded in size)."""
    if source == "-":
        stream = stdin or sys.stdin.buffer
        data = stream.read(MAX_STDIN_BYTES + 1)
        if len(data) > MAX_STDIN_BYTES:
            raise DigitnetError(f"standard input holds more than {MAX_STDIN_BYTES >> 20} MB; "
                                f"that is no single photo")
        return load_image(data)
    return load_image(Path(source))


# ---------------------------------------------------------------------------------------------
# One digit per image


def digit_input(image) -> np.ndarray | None:
    """The uint8 (28, 28) the network sees for this image, or None when it holds no digit."""
    ink = preprocess.ink_map(image)  # (H, W) float32 in [0, 1], white ink on black
    if not ink.size or not ink.max() > 0:
        return None
    try:
        return preprocess.ink_to_mnist(ink)
    except DigitnetError:
        return None  # ink_to_mnist's only refusal: nothing in the ink map that could be a digit


def describe(probs: np.ndarray, class_names: list[str], top_k: int = 3, min_confidence: float = 0.0) -> dict:
    """One image's answer: digit (or 'unknown' below min_confidence), confidence, top-k, probs."""
    order = np.argsort(-probs, kind="stable")
    best = int(order[0])
    confidence = float(probs[best])
    sure = confidence >= min_confidence
    return {"digit": class_names[best] if sure else "unknown", "status": "ok" if sure else "unknown",
            "confidence": confidence, "best_guess": class_names[best],
            "top_k": [{"digit": class_names[i], "probability": float(probs[i])} for i in order[:top_k]],
            "probs": [float(p) for p in probs]}


def no_digit_result() -> dict:
    return {"digit": None, "status": NO_DIGIT, "confidence": None, "best_guess": None, "top_k": [],
            "probs": []}


def predict_image(image, classifier, top_k: int = 3, min_confidence: float = 0.0) -> dict:
    """Read one digit from a PIL image: see describe(); 'no digit found' for a blank image."""
    x = digit_input(image)
    if x is None:
        return no_digit_result()
    return describe(read_digits(classifier, x[None])[0], classifier.class_names, top_k, min_confidence)


# ---------------------------------------------------------------------------------------------
# A written number: segment the ink map into digits, then read each.

SLANTED = 0.15  # writing leaning more than this (x per row) is set upright before it is cut


def read_number(image, classifier, min_confidence: float = 0.0) -> dict:
    """Read a written number: text ('?' for an unsure digit), and per digit its box and probabilities."""
    from PIL import Image, ImageOps

    ink = preprocess.ink_map(image)  # (H, W) float32 in [0, 1], white ink on black

    def inputs(crops: list[np.ndarray]) -> list[np.ndarray | None]:
        out = []
        for crop in crops:
            try:
                out.append(preprocess.ink_to_mnist(crop, cut=True))
            except DigitnetError:
                out.append(None)  # a fragment too faint to hold a digit once isolated
        return out

    # Cuts are judged on the network's own softmax, not the calibrated one: a calibration
    # temperature below 1 sharpens, and then half a digit and a whole one both read at 0.999.
    temperature = float(classifier.meta.get("calibration", {}).get("temperature", 1.0))

    def score(crops: list[np.ndarray]) -> np.ndarray:
        """The network's confidence in each crop: how segment.find_digits tells a good cut."""
        xs = inputs(crops)
        found = [x for x in xs if x is not None]
        if not found:
            return np.zeros(len(xs))
        probs = iter(uncalibrated(read_digits(classifier, np.stack(found)), temperature).max(1))
        return np.array([next(probs) if x is not None else 0.0 for x in xs])

    # Italic writing is cut and read upright: touching slanted digits part along a vertical, and a
    # wide slanted 8 is not taken for two digits. Boxes go back to the slanted image below.
    slant = preprocess.ink_slant(ink)
    pad = 0
    if abs(slant) > SLANTED:
        ink, pad = preprocess.unslant(ink, slant)
    pieces = find_digits(ink, score)
    xs = inputs([p.crop(ink) for p in pieces])
    kept = [(p, x) for p, x in zip(pieces, xs) if x is not None]
    if not kept:
        return {"text": "", "status": NO_DIGIT, "digits": [], "confidence": None}
    probs = read_digits(classifier, np.stack([x for _, x in kept]))
    # Boxes are reported in the image's pixels, whatever resolution the ink map was made at.
    width = ink.shape[1] - 2 * pad
    size = ImageOps.exif_transpose(image).size if isinstance(image, Image.Image) else (width, ink.shape[0])
    sx, sy = size[0] / width, size[1] / ink.shape[0]
    digits = []
    for (p, _), pr in zip(kept, probs):
        answer = describe(pr, classifier.class_names, 3, min_confidence)
        left, top, right, bottom = preprocess.slanted_box(p.box, slant, pad, ink.shape[0], width) if pad else p.box
        box = [round(left * sx), round(top * sy), round(right * sx), round(bottom * sy)]
        digits.append({"digit": answer["digit"], "confidence": answer["confidence"], "box": box,
                       "best_guess": answer["best_guess"], "probs": answer["probs"]})
    text = "".join(d["digit"] if d["digit"] != "unknown" else "?" for d in digits)
    return {"text": text, "status": "ok" if "?" not in text else "unknown", "digits": digits,
            "confidence": float(np.prod([d["confidence"] for d in digits]))}


def read_digits(classifier, x: np.ndarray) -> np.ndarray:
    """Probabilities (N, classes) for preprocessed digits uint8 (N, 28, 28): the network reads each
    twice, as it is and deslanted (preprocess.deslant), and the two readings' logits are averaged.

    Writers slant more than MNIST's digits do (italic fonts, fast hands); the upright view reads them
    better, the original reads upright writing as before. On photos not used to build it (a fresh
    seed of benchmarks/make_realistic.py): 570 -> 573 of 600 MNIST photos, 286 -> 289 of 300 font
    photos; MNIST test 99.62% -> 99.65%.
    """
    x = np.asarray(x, dtype=np.uint8).reshape(-1, 28, 28)
    if not len(x):
        return classifier.predict(x)
    probs = classifier.predict(np.concatenate([x, preprocess.deslant(x)])).astype(np.float64)
    # Calibrated probabilities are softmax(logits / T): the mean of two readings' log-probabilities,
    # renormalised, is the softmax of their mean logits / T, calibrated the same way.
    logs = np.log(np.maximum(probs, 1e-30))
    mean = (logs[:len(x)] + logs[len(x):]) / 2
    out = np.exp(mean - mean.max(axis=1, keepdims=True))
    return (out / out.sum(axis=1, keepdims=True)).astype(np.float32)


def uncalibrated(probs: np.ndarray, temperature: float) -> np.ndarray:
    """The softmax of the logits, from probabilities calibrated at `temperature`.

    Calibrated p is softmax(logits / T), so p ** T renormalised is softmax(logits): this works on
    any runtime's output (ONNX Runtime returns calibrated probabilities only).
    """
    raw = np.asarray(probs, dtype=np.float64) ** temperature
    return raw / raw.sum(axis=-1, keepdims=True)


def annotate(image, result: dict) -> bytes:
    """PNG bytes of the image with each digit's box and its label drawn on it."""
    from PIL import ImageDraw, ImageFont, ImageOps

    canvas = ImageOps.exif_transpose(image).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    line = max(2, round(min(canvas.size) / 200))
    font = ImageFont.load_default(size=max(12, round(min(canvas.size) / 14)))
    for d in result["digits"]:
        l, t, r, b = d["box"]
        colour = (0, 170, 0) if d["digit"] != "unknown" else (220, 120, 0)
        draw.rectangle((l, t, r - 1, b - 1), outline=colour, width=line)
        label = f"{d['best_guess']} {d['confidence']:.0%}"
        draw.text((l, max(0, t - font.size - line)), label, fill=colour, font=font)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Many files at once, for the CLI: one result per source, errors included, never an abort.

CSV_FIELDS = ["source", "digit", "confidence", "status", "top_k", "error"]


def predict_sources(args: list[str], classifier, top_k: int = 3, min_confidence: float = 0.0,
                    save_dir: str | Path | None = None, stdin=None):
    """Yield {'source', ...answer} per image, or {'source', 'error'} for one that cannot be read."""
    from digitnet.files import atomic_write_bytes

    names: set[str] = set()
    for source, error in expand_sources(args):
        if error is not None:
            yield {"source": source, "error": error}
            continue
        try:
            x = digit_input(open_source(source, stdin))
        except DigitnetError as e:
            yield {"source": source, "error": _message(source, e)}
            continue
        if x is None:
            yield {"source": source, **no_digit_result()}
            continue
        row = {"source": source, **describe(read_digits(classifier, x[None])[0], classifier.class_names,
                                            top_k, min_confidence)}
        if save_dir is not None:
            path = Path(save_dir) / _unique_name(source, names)
            atomic_write_bytes(path, png_bytes(x))
            row["preprocessed"] = str(path)
        yield row


def _message(source: str, error: DigitnetError) -> str:
    """The error without a leading '<source>: ' (the CLI puts the source in front once)."""
    text = str(error)
    return text[len(source) + 2:] if text.startswith(f"{source}: ") else text


def _unique_name(source: str, used: set[str]) -> str:
    """<stem>.png for the 28x28 of source, with -2, -3... when two sources share a stem."""
    stem = "stdin" if source == "-" else Path(source).stem
    name, n = f"{stem}.png", 1
    while name in used:
        n += 1
        name = f"{stem}-{n}.png"
    used.add(name)
    return name


def png_bytes(x: np.ndarray) -> bytes:
    """A uint8 array as PNG file content."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(x).save(buf, format="PNG")
    return buf.getvalue()


def format_prediction(row: dict) -> str:
    """One line of `digitnet predict` output."""
    if row["status"] == NO_DIGIT:
        return f"{row['source']}: {NO_DIGIT}"
    top = ", ".join(f"{t['digit']} {t['probability']:.1%}" for t in row["top_k"])
    if row["status"] == "unknown":
        return f"{row['source']}: unknown (best guess {row['best_guess']} at {row['confidence']:.1%})  top-{len(row['top_k'])}: {top}"
    return f"{row['source']}: {row['digit']} ({row['confidence']:.1%})  top-{len(row['top_k'])}: {top}"


def csv_row(row: dict) -> list:
    top = ";".join(f"{t['digit']}:{t['probability']:.4f}" for t in row.get("top_k", []))
    confidence = row.get("confidence")
    return [row["source"], row.get("digit") or "", "" if confidence is None else f"{confidence:.4f}",
            row.get("status", "error"), top, row.get("error", "")]


def read_sources(args: list[str], classifier, min_confidence: float = 0.0, stdin=None):
    """Yield (result with 'source', image) per source for `digitnet read`; image is None on error."""
    for source, error in expand_sources(args):
        if error is not None:
            yield {"source": source, "error": error}, None
            continue
        try:
            image = open_source(source, stdin)
            yield {"source": source, **read_number(image, classifier, min_confidence)}, image
        except DigitnetError as e:
            yield {"source": source, "error": _message(source, e)}, None


def format_reading(row: dict) -> str:
    """One line of `digitnet read` output."""
    if row["status"] == NO_DIGIT:
        return f"{row['source']}: {NO_DIGIT}"
    each = ", ".join(f"{d['best_guess']} {d['confidence']:.0%}" for d in row["digits"])
    return f"{row['source']}: {row['text']}  ({len(row['digits'])} digits: {each})"
