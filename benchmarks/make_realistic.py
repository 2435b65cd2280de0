"""A realistic test set: photos of handwritten digits on paper, as people take them. Fixed seed.

    python benchmarks/make_realistic.py                      # -> benchmarks/realistic/ (gitignored)
    python benchmarks/make_realistic.py /tmp/real --singles 500 --fonts 200 --numbers 100 --crops 200

Real handwriting is MNIST *test* digits (never training images), drawn large as pen, pencil or chalk
strokes; the fonts are the handwriting fonts Debian ships (fonts-dkg-handwriting, fonts-humor-sans,
fonts-comic-neue). Each photo gets a random mix of: paper colour and texture, ruled or squared notebook
lines at a slight angle, a margin line, shadows and uneven light, ballpoint blue or black, pencil grey,
weak strokes, thick and thin strokes, rotation and shear, off-centre placement, small and large digits,
chalk on a board (light on dark), blur, sensor noise and JPEG compression.

Also tight crops of single digits from scans and screens, with no paper or lines around them, and
photos of a sheet lying on a desk (wood, grey, black, fabric) with the desk in the picture around it,
and of a number written on a slip lying on a desk.

Written: singles/*.png|jpg with singles.csv (file, label, source, style), numbers/* with numbers.csv
(file, text, source, style), crops/* with crops.csv and desks/* with desks.csv (as singles.csv),
desk-numbers/* with desk-numbers.csv (as numbers.csv).
Every item has its own seeded generator, so any subset is reproducible.
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

FONT_DIRS = ["/usr/share/fonts/truetype/fifthhorseman", "/usr/share/fonts/truetype/humor-sans",
             "/usr/share/fonts/opentype/comic-neue"]
STYLES = ["ballpoint-blue", "ballpoint-black", "pencil", "marker", "chalk"]
STYLE_WEIGHTS = [0.3, 0.25, 0.2, 0.1, 0.15]


def handwriting_fonts() -> list[Path]:
    fonts = sorted(p for d in FONT_DIRS for p in Path(d).glob("*") if p.suffix in (".ttf", ".otf"))
    if not fonts:
        sys.exit("no handwriting fonts found; install fonts-dkg-handwriting fonts-humor-sans fonts-comic-neue")
    return fonts


# ---------------------------------------------------------------------------------------------
# Glyphs: ink coverage in [0, 1], at the size they will be drawn


def mnist_glyph(digit28: np.ndarray, height: int, rng: np.random.Generator) -> np.ndarray:
    """An MNIST digit drawn `height` pixels tall as a pen stroke: upscaled smoothly, then thresholded.

    The threshold sets the stroke width: low gives a fat marker, high a thin pen.
    """
    ys, xs = np.nonzero(digit28 > 30)
    crop = digit28[ys.min():ys.max() + 1, xs.min():xs.max() + 1].astype(np.float32) / 255
    crop = np.pad(crop, 2)
    f = height / (crop.shape[0] - 4)
    size = (max(4, round(crop.shape[1] * f)), max(4, round(crop.shape[0] * f)))
    up = np.asarray(Image.fromarray(crop, "F").resize(size, Image.BICUBIC), dtype=np.float32)
    up = ndimage.gaussian_filter(up, max(0.5, f / 3))
    t = rng.uniform(0.2, 0.7)
    edge = max(0.04, 0.6 / f)  # about one output pixel of anti-aliasing
    return np.clip((up - t) / edge + 0.5, 0, 1)


def font_glyph(text: str, font: Path, height: int, rng: np.random.Generator) -> np.ndarray:
    """Text rendered in a font so that its digits are about `height` pixels tall."""
    pt = max(8, int(height * 1.4))
    face = ImageFont.truetype(str(font), pt)
    box = face.getbbox(text)
    im = Image.new("L", (box[2] - box[0] + 8, box[3] - box[1] + 8), 0)
    ImageDraw.Draw(im).text((4 - box[0], 4 - box[1]), text, font=face, fill=255)
    a = np.asarray(im, dtype=np.float32) / 255
    w = int(rng.choice([0, 0, 0, 1, 2]))  # sometimes a heavier pen than the font's
    if w and height > 30:
        a = ndimage.grey_dilation(a, size=(w + 1, w + 1))
    return a


def number_glyph(digits28: list[np.ndarray], height: int, rng: np.random.Generator) -> np.ndarray:
    """MNIST digits written side by side with uneven gaps and baseline, sometimes touching."""
    pieces = [mnist_glyph(d, int(height * rng.uniform(0.85, 1.1)), rng) for d in digits28]
    gaps = [int(height * rng.choice([rng.uniform(0.08, 0.4), rng.uniform(-0.04, 0.02)], p=[0.85, 0.15]))
            for _ in pieces[1:]]
    width = sum(p.shape[1] for p in pieces) + sum(gaps)
    tall = max(p.shape[0] for p in pieces) + height // 5
    out = np.zeros((tall, width + 2), np.float32)
    x = 0
    for i, p in enumerate(pieces):
        y = int(rng.integers(0, tall - p.shape[0] + 1))
        out[y:y + p.shape[0], x:x + p.shape[1]] = np.maximum(out[y:y + p.shape[0], x:x + p.shape[1]], p)
        x += p.shape[1] + (gaps[i] if i < len(gaps) else 0)
    return out


def warp(glyph: np.ndarray, rng: np.random.Generator, rotate: float = 15, shear: float = 0.3) -> np.ndarray:
    """Random rotation and shear about the centre, on a canvas large enough to hold the result."""
    a = np.deg2rad(rng.uniform(-rotate, rotate))
    s = rng.uniform(-shear, shear)
    m = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ np.array([[1, 0], [s, 1]])  # (y, x)
    h, w = glyph.shape
    corners = np.array([[0, 0], [0, w], [h, 0], [h, w]]) - [h / 2, w / 2]
    span = np.abs(corners @ m.T).max(0) * 2 + 4
    out_shape = (int(span[0]), int(span[1]))
    inv = np.linalg.inv(m)
    offset = np.array([h / 2, w / 2]) - inv @ (np.array(out_shape) / 2)
    out = ndimage.affine_transform(glyph, inv, offset=offset, output_shape=out_shape, order=1)
    ys, xs = np.nonzero(out > 0.02)
    return out[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


# ---------------------------------------------------------------------------------------------
# The photo: paper, lines, ink, light, camera


def photo(glyph: np.ndarray, rng: np.random.Generator, style: str, wide: bool = False) -> Image.Image:
    """Compose one photo of `glyph` (ink coverage) on paper or a board; returns an RGB image."""
    gh, gw = glyph.shape
    fill = rng.uniform(0.25, 0.85) if rng.random() < 0.8 else rng.uniform(0.1, 0.25)  # digit height / image
    H = int(np.clip(gh / fill, gh + 6, 1000))
    W = int(max(gw + 6, H * rng.uniform(0.8, 1.3))) if not wide else int(gw * rng.uniform(1.1, 1.6) + 10)
    if wide:
        H = int(max(gh + 6, gh * rng.uniform(1.2, 2.0)))
    m = max(3, int(0.04 * gh))  # people do not cut their digits off at the photo's edge
    H, W = max(H, gh + 2 * m), max(W, gw + 2 * m)
    y0 = int(rng.integers(m, H - gh - m + 1))
    x0 = int(rng.integers(m, W - gw - m + 1))
    cover = np.zeros((H, W), np.float32)
    cover[y0:y0 + gh, x0:x0 + gw] = glyph
    yy, xx = np.mgrid[:H, :W].astype(np.float32)

    chalk = style == "chalk"
    if chalk:
        paper = np.array(rng.choice([[40, 60, 50], [30, 32, 35], [45, 55, 70]]), np.float32) / 255
    else:
        paper = np.array([rng.uniform(0.85, 1.0), rng.uniform(0.83, 0.98), rng.uniform(0.75, 0.96)], np.float32)
    img = np.ones((H, W, 3), np.float32) * paper
    grain = ndimage.gaussian_filter(rng.normal(0, 1, (H, W)).astype(np.float32), rng.uniform(0.5, 2))
    img *= (1 + rng.uniform(0.01, 0.05) * grain / (grain.std() + 1e-6))[..., None]

    # Notebook lines, under the ink, at the page's slight angle.
    angle = np.deg2rad(rng.uniform(-4, 4))
    kind = rng.choice(["none", "ruled", "squared"], p=[0.3, 0.4, 0.3]) if not chalk else "none"
    if kind != "none":
        spacing = gh * (rng.uniform(0.5, 1.2) if kind == "ruled" else rng.uniform(0.25, 0.6))
        spacing = max(spacing, 6.0)
        thick = rng.uniform(0.6, 2.0) * max(1.0, H / 300)
        colour = np.array(rng.choice([[0.55, 0.7, 0.9], [0.6, 0.6, 0.65], [0.45, 0.6, 0.85]]), np.float32)
        strength = rng.uniform(0.4, 1.0)
        rows = yy * np.cos(angle) - xx * np.sin(angle) + rng.uniform(0, spacing)
        line = np.clip(thick / 2 + 0.5 - np.abs(((rows + spacing / 2) % spacing) - spacing / 2), 0, 1)
        if kind == "squared":
            cols = xx * np.cos(angle) + yy * np.sin(angle) + rng.uniform(0, spacing)
            line = np.maximum(line, np.clip(thick / 2 + 0.5 - np.abs(((cols + spacing / 2) % spacing) - spacing / 2), 0, 1))
        img = img * (1 - strength * line[..., None]) + strength * line[..., None] * colour * paper
        if kind == "ruled" and rng.random() < 0.3:  # a red margin line
            margin = np.clip(thick / 2 + 0.5 - np.abs(xx * np.cos(angle) + yy * np.sin(angle) - rng.uniform(0, W)), 0, 1)
            img = img * (1 - margin[..., None]) + margin[..., None] * np.array([0.85, 0.35, 0.4], np.float32)

    # The ink.
    weak = rng.uniform(0.35, 0.7) if rng.random() < 0.2 else rng.uniform(0.8, 1.0)
    if style == "pencil":
        colour = np.full(3, rng.uniform(0.25, 0.5), np.float32)
        tooth = np.clip(1 + 0.35 * rng.normal(0, 1, (H, W)), 0.3, 1.3).astype(np.float32)
        alpha = cover * tooth * weak * rng.uniform(0.6, 0.9)
    elif chalk:
        colour = np.array([0.92, 0.92, 0.88], np.float32)
        dust = ndimage.gaussian_filter(rng.random((H, W)).astype(np.float32), 0.7)
        alpha = cover * np.clip(0.5 + 1.5 * (dust - 0.5) + 0.4, 0.2, 1) * weak
    else:
        colour = {"ballpoint-blue": np.array([0.12, 0.15, 0.5]), "ballpoint-black": np.array([0.08, 0.08, 0.1]),
                  "marker": np.array(rng.choice([[0.05, 0.05, 0.05], [0.1, 0.2, 0.6], [0.6, 0.1, 0.1]]))}[style]
        colour = colour.astype(np.float32)
        alpha = cover * weak
    alpha = np.clip(alpha, 0, 1)[..., None]
    img = img * (1 - alpha) + colour * alpha

    # Light: a gradient across the page, a vignette, and sometimes a hard-edged shadow (hand, phone).
    light = 1 + rng.uniform(-0.35, 0.1) * ((xx / W - 0.5) * np.cos(rng.uniform(0, 6.3)) + (yy / H - 0.5) * np.sin(rng.uniform(0, 6.3)))
    r2 = ((xx - W * rng.uniform(0.2, 0.8)) / W) ** 2 + ((yy - H * rng.uniform(0.2, 0.8)) / H) ** 2
    light *= 1 - rng.uniform(0, 0.35) * r2
    if rng.random() < 0.35:
        edge = xx * np.cos(rng.uniform(0, 6.3)) + yy * np.sin(rng.uniform(0, 6.3))
        cut = np.quantile(edge, rng.uniform(0.3, 0.8))
        soft = max(2.0, H * rng.uniform(0.01, 0.08))
        light *= 1 - rng.uniform(0.25, 0.55) / (1 + np.exp(-(edge - cut) / soft))
    img *= np.clip(light, 0.2, 1.2)[..., None]

    # The camera: blur, sensor noise, JPEG.
    blur = rng.choice([0, rng.uniform(0.5, 1.2), rng.uniform(1.2, 2.5)], p=[0.3, 0.5, 0.2]) * max(1.0, H / 400)
    if blur:
        img = ndimage.gaussian_filter(img, (blur, blur, 0))
    img += rng.normal(0, rng.uniform(0.005, 0.04), img.shape).astype(np.float32)
    out = Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8), "RGB")
    if rng.random() < 0.6:
        buf = io.BytesIO()
        out.save(buf, "JPEG", quality=int(rng.integers(35, 95)))
        out = Image.open(io.BytesIO(buf.getvalue()))
        out.load()
    return out


# ---------------------------------------------------------------------------------------------
# Items


def digit_height(rng: np.random.Generator) -> int:
    """Digit height in pixels: mostly phone-photo sizes, some tiny and some very large."""
    return int(rng.choice([rng.uniform(16, 40), rng.uniform(40, 160), rng.uniform(160, 400)], p=[0.2, 0.6, 0.2]))


def make_single(i: int, seed: int, x_test: np.ndarray, y_test: np.ndarray, fonts: list[Path] | None = None):
    """Item i: (RGB image, label, source, style). Even i draw MNIST test digits, odd i fonts if given."""
    rng = np.random.default_rng([seed, 1, i])
    style = str(rng.choice(STYLES, p=STYLE_WEIGHTS))
    glyph, label, source = single_glyph(digit_height(rng), rng, x_test, y_test, fonts)
    return photo(warp(glyph, rng), rng, style), label, source, style


def single_glyph(h: int, rng: np.random.Generator, x_test: np.ndarray, y_test: np.ndarray,
                 fonts: list[Path] | None = None):
    """(glyph, label, source): a random font digit if fonts are given, else a random MNIST test digit."""
    if fonts:
        font = fonts[int(rng.integers(len(fonts)))]
        label = int(rng.integers(10))
        return font_glyph(str(label), font, h, rng), label, f"font:{font.stem}"
    k = int(rng.integers(len(x_test)))
    return mnist_glyph(x_test[k], h, rng), int(y_test[k]), f"mnist-test:{k}"


def make_number(i: int, seed: int, x_test: np.ndarray, y_test: np.ndarray, fonts: list[Path] | None = None):
    """Number i: (RGB image, digit string, source, style) with 2-6 digits."""
    rng = np.random.default_rng([seed, 2, i])
    style = str(rng.choice(STYLES, p=STYLE_WEIGHTS))
    return (*number_photo(rng, style, x_test, y_test, fonts), style)


def number_photo(rng: np.random.Generator, style: str, x_test: np.ndarray, y_test: np.ndarray,
                 fonts: list[Path] | None = None):
    """(photo, digit string, source): 2-6 digits written in one style, MNIST test digits or a font."""
    n = int(rng.integers(2, 7))
    h = int(rng.choice([rng.uniform(24, 60), rng.uniform(60, 160)], p=[0.4, 0.6]))
    if fonts:
        font = fonts[int(rng.integers(len(fonts)))]
        text = "".join(str(d) for d in rng.integers(0, 10, n))
        glyph, source = font_glyph(text, font, h, rng), f"font:{font.stem}"
    else:
        ks = rng.integers(0, len(x_test), n)
        text = "".join(str(int(y_test[k])) for k in ks)
        glyph, source = number_glyph([x_test[k] for k in ks], h, rng), "mnist-test:" + "+".join(map(str, ks))
    return photo(warp(glyph, rng, rotate=5, shear=0.2), rng, style, wide=True), text, source


def make_crop(i: int, seed: int, x_test: np.ndarray, y_test: np.ndarray, fonts: list[Path]):
    """Crop i: (image, label, source, style), a digit cut out tightly from a scan or a screen.

    No paper texture or ruled lines: what these test is that a digit filling its image keeps its
    straight strokes (a 1's stem, a 4's, a 0's sides). Even i are MNIST test digits, odd i fonts.
    """
    rng = np.random.default_rng([seed, 3, i])
    h = int(rng.uniform(28, 200))
    glyph, label, source = single_glyph(h, rng, x_test, y_test, fonts if i % 2 else None)
    glyph = warp(glyph, rng, rotate=4, shear=0.1)
    # As people crop: from touching the ink to a tenth of the digit's height, each side its own.
    top, bottom, left, right = (int(rng.uniform(0, 0.1) * h) for _ in range(4))
    glyph = np.pad(glyph, ((top, bottom), (left, right)))
    style = str(rng.choice(["scan", "screen", "screen-dark"], p=[0.5, 0.3, 0.2]))
    paper, ink = (rng.uniform(0.85, 1.0), rng.uniform(0.0, 0.35)) if style != "screen-dark" else \
        (rng.uniform(0.0, 0.2), rng.uniform(0.8, 1.0))
    grey = paper + glyph * (ink - paper)
    if style == "scan":
        grey = ndimage.gaussian_filter(grey, rng.uniform(0.3, 1.0))
        grey = grey + rng.normal(0, rng.uniform(0, 0.03), grey.shape)
    im = Image.fromarray((np.clip(grey, 0, 1) * 255).astype(np.uint8)).convert("RGB")
    return im, label, source, style


DESKS = {"dark wood": (92, 62, 40), "light wood": (160, 125, 90), "grey": (70, 72, 76),
         "black": (22, 22, 26), "blue fabric": (40, 55, 90)}


def make_desk(i: int, seed: int, x_test: np.ndarray, y_test: np.ndarray, fonts: list[Path]):
    """Desk photo i: (image, label, source, style), a photo of one digit on a sheet lying on a desk.

    The sheet (made as a single photo, without chalk) is turned a little and lies anywhere on the
    desk, sometimes running off the frame; the desk has grain along one direction and the whole
    picture is blurred, noisy and compressed once more, as one photo. Even i MNIST test digits, odd i fonts.
    """
    rng = np.random.default_rng([seed, 4, i])
    style = str(rng.choice(STYLES[:-1], p=np.array(STYLE_WEIGHTS[:-1]) / sum(STYLE_WEIGHTS[:-1])))
    glyph, label, source = single_glyph(int(rng.uniform(40, 200)), rng, x_test, y_test, fonts if i % 2 else None)
    im, desk_name = on_desk(photo(warp(glyph, rng), rng, style), rng)
    return im, label, source, f"{style} on {desk_name}"


def make_desk_number(i: int, seed: int, x_test: np.ndarray, y_test: np.ndarray, fonts: list[Path]):
    """Desk number i: (image, digit string, source, style), a number on a slip lying on a desk, as
    make_desk lays a single digit. Even i MNIST test digits, odd i fonts."""
    rng = np.random.default_rng([seed, 5, i])
    style = str(rng.choice(STYLES[:-1], p=np.array(STYLE_WEIGHTS[:-1]) / sum(STYLE_WEIGHTS[:-1])))
    sheet, text, source = number_photo(rng, style, x_test, y_test, fonts if i % 2 else None)
    im, desk_name = on_desk(sheet, rng)
    return im, text, source, f"{style} on {desk_name}"


def on_desk(sheet: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    """(photo, desk name): the sheet turned a little, lying anywhere on a grained desk, photographed."""
    sheet = sheet.convert("RGBA").rotate(float(rng.uniform(-12, 12)), resample=Image.BICUBIC, expand=True)
    desk_name = str(rng.choice(list(DESKS)))
    scale = rng.uniform(1.25, 2.2)
    W, H = int(sheet.width * scale * rng.uniform(0.9, 1.2)), int(sheet.height * scale)
    across, along = rng.uniform(0.5, 2), rng.uniform(4, 30)  # grain runs across the picture or down it
    noise = rng.normal(0, 1, (H, W))
    grain = ndimage.gaussian_filter(noise, (across, along) if rng.random() < 0.5 else (along, across))
    grain = grain / (grain.std() + 1e-6) * rng.uniform(3, 12)
    desk = np.clip(np.array(DESKS[desk_name], np.float32) * rng.uniform(0.8, 1.2) + grain[..., None], 0, 255)
    canvas = Image.fromarray(desk.astype(np.uint8), "RGB")
    # Anywhere on the desk; one time in four partly off the frame.
    spread = 1.3 if rng.random() < 0.25 else 1.0
    x = int(rng.uniform(0, 1) * (W - sheet.width) * spread - (spread - 1) / 2 * (W - sheet.width))
    y = int(rng.uniform(0, 1) * (H - sheet.height) * spread - (spread - 1) / 2 * (H - sheet.height))
    canvas.paste(sheet, (x, y), sheet)
    img = np.asarray(canvas, dtype=np.float32) / 255
    img = ndimage.gaussian_filter(img, (rng.uniform(0.3, 1.2), rng.uniform(0.3, 1.2), 0))
    img += rng.normal(0, rng.uniform(0.005, 0.02), img.shape)
    return Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8), "RGB"), desk_name


def save(im: Image.Image, path_stem: Path, rng_bit: int) -> str:
    """PNG or JPEG (the photo may already carry JPEG artefacts either way)."""
    path = path_stem.with_suffix(".jpg" if rng_bit else ".png")
    im.save(path, quality=92) if rng_bit else im.save(path)
    return path.name


def write_set(out: Path, folder: str, answer: str, items) -> None:
    """Items (image, answer, source, style) -> out/folder/00000.png|jpg ... and out/folder.csv."""
    (out / folder).mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (im, value, source, style) in enumerate(items):
        name = save(im, out / folder / f"{i:05d}", i % 3 == 0)
        rows.append([name, value, source.split(":")[0], style])
    with open(out / f"{folder}.csv", "w", newline="") as f:
        csv.writer(f).writerows([["file", answer, "source", "style"], *rows])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", nargs="?", default=str(Path(__file__).parent / "realistic"))
    p.add_argument("--singles", type=int, default=2000, help="photos of single MNIST test digits")
    p.add_argument("--fonts", type=int, default=1000, help="photos of single font digits")
    p.add_argument("--numbers", type=int, default=400, help="photos of numbers (half MNIST, half fonts)")
    p.add_argument("--crops", type=int, default=400, help="tight crops from scans and screens (half fonts)")
    p.add_argument("--desks", type=int, default=200, help="photos of a sheet on a desk (half fonts)")
    p.add_argument("--desk-numbers", type=int, default=100, help="photos of a number on a slip on a desk (half fonts)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from digitnet.data import load_split

    x_test, y_test = load_split("mnist", "test")
    fonts = handwriting_fonts()
    out = Path(args.out)
    write_set(out, "singles", "label", (make_single(i, args.seed, x_test, y_test, fonts if i >= args.singles else None)
                                        for i in range(args.singles + args.fonts)))
    write_set(out, "numbers", "text", (make_number(i, args.seed, x_test, y_test, fonts if i % 2 else None)
                                       for i in range(args.numbers)))
    write_set(out, "crops", "label", (make_crop(i, args.seed, x_test, y_test, fonts) for i in range(args.crops)))
    write_set(out, "desks", "label", (make_desk(i, args.seed, x_test, y_test, fonts) for i in range(args.desks)))
    write_set(out, "desk-numbers", "text", (make_desk_number(i, args.seed, x_test, y_test, fonts)
                                            for i in range(args.desk_numbers)))
    print(f"wrote {args.singles + args.fonts} singles, {args.numbers} numbers, {args.crops} crops, "
          f"{args.desks} desk photos and {args.desk_numbers} numbers on desks to {out}")


if __name__ == "__main__":
    main()
