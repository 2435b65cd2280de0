"""Reading accuracy on realistic images: digitnet's preprocessing against simpler pipelines.

    python benchmarks/make_realistic.py                        # once: writes benchmarks/realistic/
    python benchmarks/reading.py                               # default model; table + JSON + gallery
    python benchmarks/reading.py --model runs/NAME --data /tmp/real

Three ways to turn an image into the network's 28x28 input, on the same model:
  naive    grey, resize the whole image to 28x28, invert if the background is light
  simple   grey, invert if light, global threshold, crop, fit 20x20, centre of mass (the textbook recipe)
  digitnet digitnet.preprocess.to_mnist: background and lines removed, polarity decided, then as MNIST;
           read as `digitnet predict` reads (read.read_digits: also deslanted, the two readings averaged)

Sets: photos of MNIST *test* digits (real handwriting), photos of handwriting-font digits,
tight crops of both from scans and screens (no target in the issue; a digit filling its image),
photos of a sheet lying on a desk with the desk around it (both sources; no target in the issue),
scikit-learn's load_digits (1,797 8x8 digits by other writers, upscaled; evaluation only), the same
8x8 as distributed, MNIST test digits cut to their edges and resized to 16x16 as USPS's are (white on
black, touching the frame: a dataset's format, not a photo; no targets for these two), and
multi-digit numbers read with digitnet.read.read_number (exact match of the whole string). Writes
benchmarks/results/reading.json and a gallery of digitnet's failures, benchmarks/results/reading_failures.png.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from digitnet.errors import DigitnetError  # noqa: E402
from digitnet.images import load_image  # noqa: E402
from digitnet.preprocess import to_grey, to_mnist  # noqa: E402
from digitnet.read import read_digits  # noqa: E402

METHODS = ("naive", "simple", "digitnet")
TARGETS = {"mnist photos": 0.98, "font photos": 0.98, "load_digits": 0.95, "numbers (exact)": 0.90}


# ---------------------------------------------------------------------------------------------
# The two baselines


def light_background(grey: np.ndarray) -> bool:
    return float(np.median(grey)) > 0.5


def naive(image) -> np.ndarray:
    """The whole image, grey, resized to 28x28, inverted if the background is light."""
    grey = to_grey(image)
    if light_background(grey):
        grey = 1 - grey
    small = Image.fromarray(grey, "F").resize((28, 28), Image.BILINEAR)
    return np.clip(np.asarray(small) * 255, 0, 255).astype(np.uint8)


def simple(image) -> np.ndarray:
    """Global threshold (the mean between median and extreme), crop, 20x20 by aspect, centre of mass."""
    from scipy import ndimage

    grey = to_grey(image)
    if light_background(grey):
        grey = 1 - grey
    grey = np.clip(grey - np.median(grey), 0, None)
    if grey.max() <= 0:
        raise DigitnetError("blank")
    ys, xs = np.nonzero(grey > 0.5 * grey.max())
    crop = grey[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    h, w = crop.shape
    size = (max(1, round(w * 20 / max(h, w))), max(1, round(h * 20 / max(h, w))))
    small = np.asarray(Image.fromarray(crop / crop.max(), "F").resize(size, Image.LANCZOS)).clip(0, 1)
    canvas = np.zeros((28, 28), np.float32)
    cy, cx = ndimage.center_of_mass(small)
    top = int(np.clip(round(14 - cy), 0, 28 - size[1]))
    left = int(np.clip(round(14 - cx), 0, 28 - size[0]))
    canvas[top:top + size[1], left:left + size[0]] = small
    return (canvas * 255).astype(np.uint8)


def naive_number(image, classifier) -> str:
    """Global threshold, connected components left to right, each box resized to 28x28."""
    from scipy import ndimage

    grey = to_grey(image)
    if light_background(grey):
        grey = 1 - grey
    grey = np.clip(grey - np.median(grey), 0, None)
    mask = grey > 0.5 * max(grey.max(), 1e-6)
    labels, n = ndimage.label(mask)
    boxes = [b for b in ndimage.find_objects(labels) if b is not None]
    big = max(((b[0].stop - b[0].start) for b in boxes), default=0)
    boxes = sorted((b for b in boxes if b[0].stop - b[0].start > 0.3 * big), key=lambda b: b[1].start)
    if not boxes:
        return ""
    xs = [np.asarray(Image.fromarray(grey[b] / grey[b].max() * 255).convert("L").resize((28, 28))) for b in boxes]
    return "".join(str(int(p)) for p in classifier.predict(np.stack(xs)).argmax(1))


# ---------------------------------------------------------------------------------------------
# Running the sets


def inputs(images, method) -> tuple[np.ndarray, list[bool]]:
    """28x28 inputs for each image by one method; images it rejects become blanks marked failed."""
    fn = {"naive": naive, "simple": simple, "digitnet": to_mnist}[method]
    xs, ok = [], []
    for im in images:
        try:
            xs.append(fn(im))
            ok.append(True)
        except DigitnetError:
            xs.append(np.zeros((28, 28), np.uint8))
            ok.append(False)
    return np.stack(xs), ok


def score(images, labels, classifier) -> dict:
    """Accuracy per method, plus digitnet's 28x28 inputs and predictions for the gallery."""
    out = {}
    for method in METHODS:
        x, ok = inputs(images, method)
        # digitnet reads as `digitnet predict` does (each digit also deslanted); the baselines plainly.
        pred = (read_digits(classifier, x) if method == "digitnet" else classifier.predict(x)).argmax(1)
        correct = (pred == np.asarray(labels)) & np.asarray(ok)
        out[method] = {"accuracy": float(correct.mean()), "n": len(labels)}
        if method == "digitnet":
            out["_seen"], out["_pred"], out["_correct"] = x, pred, correct
    return out


def load_digits_images(raw: bool = False) -> tuple[list[np.ndarray], np.ndarray]:
    """scikit-learn's 8x8 digits (values 0-16, ink high): padded like a photo's margin and upscaled
    6x, or `raw` as distributed (8x8, white on black)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    if raw:
        return [(im / 16.0 * 255).round().astype(np.uint8) for im in d.images], d.target
    images = []
    for im in d.images:
        padded = np.pad(im / 16.0, 2).astype(np.float32)  # (12, 12)
        big = Image.fromarray(padded, "F").resize((72, 72), Image.BICUBIC)
        images.append((np.clip(np.asarray(big), 0, 1) * 255).astype(np.uint8))
    return images, d.target


def edge_cut_images(n: int = 2000) -> tuple[list[np.ndarray], np.ndarray]:
    """The first n MNIST test digits cut to their ink and stretched to 16x16, as USPS's digits are."""
    from digitnet.data import load_split

    x, y = load_split("mnist", "test")
    images = []
    for digit in x[:n]:
        ys, xs = np.nonzero(digit > 30)
        crop = Image.fromarray(digit[ys.min():ys.max() + 1, xs.min():xs.max() + 1])
        images.append(np.asarray(crop.resize((16, 16), Image.BILINEAR)))
    return images, y[:n]


def gallery(path: Path, failures: list[tuple[Image.Image, np.ndarray, str, str]], limit: int = 60) -> None:
    """Each failure: the photo, the 28x28 digitnet made of it, true -> predicted."""
    cell, cols = 120, 6
    rows = (min(len(failures), limit) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * 2 * cell, max(1, rows) * (cell + 16)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (im, seen, truth, pred) in enumerate(failures[:limit]):
        x, y = (i % cols) * 2 * cell, (i // cols) * (cell + 16)
        thumb = im.convert("RGB")
        thumb.thumbnail((cell - 4, cell - 4))
        sheet.paste(thumb, (x + 2, y + 2))
        sheet.paste(Image.fromarray(seen).resize((cell - 4, cell - 4), Image.NEAREST).convert("RGB"), (x + cell, y + 2))
        draw.text((x + 4, y + cell + 2), f"true {truth}  read {pred}", fill="red")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(ROOT / "benchmarks" / "realistic"), help="make_realistic.py output")
    p.add_argument("--model", default=None, help="run directory (default: the shipped model)")
    p.add_argument("--limit", type=int, default=0, help="use only the first N items of each set")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "reading.json"))
    p.add_argument("--gallery", default=str(ROOT / "benchmarks" / "results" / "reading_failures.png"))
    args = p.parse_args(argv)

    import digitnet
    from digitnet.files import atomic_write_json

    data = Path(args.data)
    if not (data / "singles.csv").exists():
        sys.exit(f"{data}: no singles.csv; run `python benchmarks/make_realistic.py {data}` first")
    classifier = digitnet.load(args.model)
    t0 = time.perf_counter()
    rows = [dict(r, folder="singles") for r in csv.DictReader(open(data / "singles.csv"))]
    sets = [("mnist photos", [r for r in rows if r["source"] == "mnist-test"]),
            ("font photos", [r for r in rows if r["source"] == "font"])]
    if (data / "crops.csv").exists():  # written by make_realistic.py since the crops were added
        crops = [dict(r, folder="crops") for r in csv.DictReader(open(data / "crops.csv"))]
        sets.append(("tight crops", crops))
    if (data / "desks.csv").exists():  # since the sheet-on-a-desk photos were added
        sets.append(("desk photos", [dict(r, folder="desks") for r in csv.DictReader(open(data / "desks.csv"))]))
    results, failures = {}, []
    for name, chosen in sets:
        chosen = chosen[:args.limit or None]
        images = [load_image(data / r["folder"] / r["file"]) for r in chosen]
        labels = [int(r["label"]) for r in chosen]
        res = score(images, labels, classifier)
        seen, pred, correct = res.pop("_seen"), res.pop("_pred"), res.pop("_correct")
        styles = sorted({r["style"] for r in chosen})
        res["digitnet"]["by_style"] = {s: round(float(np.mean([c for c, r in zip(correct, chosen) if r["style"] == s])), 4)
                                       for s in styles}
        failures += [(im, s, str(t), str(pr)) for im, s, t, pr, c in zip(images, seen, labels, pred, correct) if not c]
        results[name] = res

    for name, (images, labels) in (("load_digits", load_digits_images()),
                                   ("load_digits 8x8", load_digits_images(raw=True)),
                                   ("mnist cut, 16x16", edge_cut_images())):
        n = args.limit or len(labels)
        res = score(images[:n], labels[:n], classifier)
        for key in ("_seen", "_pred", "_correct"):
            res.pop(key)
        results[name] = res

    try:
        from digitnet.read import read_number
    except ImportError:
        read_number = None
    for name, folder in (("numbers (exact)", "numbers"), ("desk numbers (exact)", "desk-numbers")):
        if not (data / f"{folder}.csv").exists():  # desk-numbers: written since 2026-11-30
            continue
        numbers = list(csv.DictReader(open(data / f"{folder}.csv")))[:args.limit or None]
        if not numbers:
            continue
        exact = {"naive": [], "digitnet": []}
        for r in numbers:
            im = load_image(data / folder / r["file"])
            exact["naive"].append(naive_number(im, classifier) == r["text"])
            if read_number is not None:
                try:
                    exact["digitnet"].append(read_number(im, classifier)["text"] == r["text"])
                except DigitnetError:
                    exact["digitnet"].append(False)
        results[name] = {m: {"accuracy": float(np.mean(v)), "n": len(v)} for m, v in exact.items() if v}

    print(f"{'set':<22}{'n':>6}{'naive':>10}{'simple':>10}{'digitnet':>10}{'target':>9}")
    for name, res in results.items():
        cells = "".join(f"{100 * res[m]['accuracy']:>9.1f}%" if m in res else f"{'-':>10}" for m in METHODS)
        n = max(res[m]["n"] for m in METHODS if m in res)
        target = f"{100 * TARGETS[name]:>8.0f}%" if name in TARGETS else f"{'-':>9}"
        print(f"{name:<22}{n:>6}{cells}{target}")
    for name in ("mnist photos", "font photos", "tight crops", "desk photos"):
        if name not in results:
            continue
        print(f"{name} by style (digitnet): " + ", ".join(f"{s} {100 * a:.1f}%" for s, a in results[name]["digitnet"]["by_style"].items()))
    seconds = time.perf_counter() - t0
    print(f"{seconds:.0f} s; failures gallery: {args.gallery}")
    atomic_write_json(args.out, {"model": str(args.model or "digitnet/weights/default"), "data": str(data),
                                 "results": results, "targets": TARGETS, "seconds": round(seconds, 1)})
    gallery(Path(args.gallery), failures)


if __name__ == "__main__":
    main()
