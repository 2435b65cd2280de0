"""Images -> MNIST-like 28x28 arrays, and the single pixel-scaling function every path uses.

A photo of a digit is turned into what MNIST was made of, in three steps:

    load_image(path or bytes)   safe opening (digitnet/images.py): bad files, bombs, animations refused
    ink_map(image)              float32 (H, W) in [0, 1], white ink on black: an image made for
                                display taken back to what it shows (digitnet/display.py), a sheet
                                on a desk found (digitnet/sheet.py), polarity decided (digitnet/polarity.py),
                                background and uneven light divided out, ruled lines removed
                                (digitnet/lines.py), then paper noise, specks and edges left out
                                (digitnet/clean.py)
    ink_to_mnist(ink)           uint8 (28, 28): crop to the ink, fit 20x20 keeping the aspect ratio,
                                anti-aliased, centred by centre of mass (as MNIST was made)

`to_mnist(image)` runs the last two. Images that already look like MNIST pass essentially unchanged.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from digitnet.clean import INK_LEVEL, PHOTO_SIDE, normalise
from digitnet.display import panel, unblock
from digitnet.errors import DigitnetError
from digitnet.images import enlarged, small_copy
from digitnet.lines import remove_lines
from digitnet.polarity import dark_ink, flat_ground, light_patch
from digitnet.sheet import paper_only

# Larger images are reduced to this longest side before any analysis: digits need far fewer pixels,
# and it bounds time and memory per image.
WORK_SIDE = 1200
# A small piece of ink whose darkest pixel is under half the strong ink's level (ink maps stretch
# that to 1) is paper grain or a shadow's fringe, not part of the digit.
FAINT = 0.5
# A clean image this small (scikit-learn's 8x8 digits, USPS's 16x16) is a dataset's digit, smaller
# than any photo worth reading: it is taken as it is.
TINY_SIDE = 16
MNIST_BOX = 20  # MNIST digits fit a 20x20 box ...
MNIST_CENTRE = 14.0  # ... whose centre of mass sits at (14, 14): the MNIST test set's mean is 13.99, 14.01


def scale_pixels(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (..., 28, 28) -> float32 in [0, 1]; white ink on black, as MNIST.

    Training, predict, the server and the ONNX check all call this, so they cannot disagree. The
    notebook fed raw 0-255 values; that trains under TensorFlow but diverges under other backends.
    """
    return x.to(torch.float32).div_(255.0)


# ---------------------------------------------------------------------------------------------
# Grey levels from any mode


def to_grey(image) -> np.ndarray:
    """Any PIL image or array -> float32 (H, W) brightness in [0, 1] (transparent parts read as white)."""
    if isinstance(image, np.ndarray):
        return array_grey(image)
    if not isinstance(image, Image.Image):
        raise DigitnetError(f"expected a PIL image or a NumPy array, got {type(image).__name__}")
    if image.width == 0 or image.height == 0:
        raise DigitnetError(f"the image has zero size ({image.width}x{image.height})")
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(image, dtype=np.float64)
        top = 255.0 if a.max() <= 255 else 65535.0 if a.max() <= 65535 else a.max()
        return np.clip(a / top, 0, 1).astype(np.float32)
    if image.mode == "LAB":  # a CIELAB TIFF: its L channel is the lightness (Pillow converts LAB to nothing)
        return np.asarray(image.getchannel("L"), dtype=np.float32) / 255.0
    if image.mode in ("La", "RGBa"):  # premultiplied alpha: Pillow converts these only to plain alpha
        image = image.convert(image.mode[:-1] + "A")
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    try:
        if not has_alpha:
            return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
    except ValueError as e:  # a mode Pillow cannot turn into grey or RGBA
        raise DigitnetError(f"images of mode {image.mode} are not supported ({e})") from None
    alpha = rgba[..., 3]
    grey = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    on_white = grey * alpha + (1 - alpha)
    # Strokes drawn only in the alpha channel (white or any colour on transparent) vanish on white;
    # then the alpha channel itself is the ink.
    if np.ptp(on_white) < 0.05 and np.ptp(alpha) > 0.2:
        return 1 - alpha
    return on_white


def array_grey(a: np.ndarray) -> np.ndarray:
    """A NumPy image (H, W), (H, W, 3) or (H, W, 4) of uint8, uint16 or float -> float32 [0, 1]."""
    if a.ndim == 3 and a.shape[2] in (3, 4):
        mode = "RGBA" if a.shape[2] == 4 else "RGB"
        return to_grey(Image.fromarray(np.ascontiguousarray(a.astype(np.uint8) if a.dtype != np.uint8 else a), mode))
    if a.ndim != 2 or a.size == 0:
        raise DigitnetError(f"expected an image array (H, W) or (H, W, 3|4), got shape {a.shape}")
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype == np.uint16:
        return a.astype(np.float32) / 65535.0
    a = np.nan_to_num(a.astype(np.float32))
    return np.clip(a / 255.0 if a.max() > 1.0 else a, 0, 1)


# ---------------------------------------------------------------------------------------------
# The ink map


def ink_map(image) -> np.ndarray:
    """Any image -> float32 (H', W') in [0, 1], white ink on black, background and lines removed.

    Images with a side over WORK_SIDE are reduced first and small photos enlarged, so H', W' may
    differ from the input's; scale boxes by image size / ink size to map back.
    """
    grey = to_grey(image)
    if max(grey.shape) <= WORK_SIDE:  # larger ones are photos; each factor tried costs a pass
        grey = unblock(grey)
    grey, sheet = paper_only(panel(small_copy(grey, WORK_SIDE)))
    light_ground = flat_ground(grey) if sheet is None else None
    # A sheet found on a desk is light paper with dark writing (the finder looks for just that),
    # and so is a light patch with writing on a darker surround, a slip it missed: a dark ring
    # round a light middle would otherwise read as a board, and the whole slip become the "digit".
    if sheet is None and not (dark_ink(grey) if light_ground is None else light_ground) and not (
            light_ground is None and light_patch(grey)):
        grey = 1 - grey  # chalk on a board: make it dark ink on light, one path for both
    if light_ground is not None and max(grey.shape) <= TINY_SIDE:
        # No paper, light or lines to take out, and at 8 pixels the photo steps' windows (3 pixels
        # at least) take a stroke for paper: its ink is its distance from the ground.
        ink = darkness(grey, np.full_like(grey, grey.max()))
        return (ink / float(ink.max())).astype(np.float32)
    if light_ground is None and sheet is None and TINY_SIDE < min(grey.shape) < PHOTO_SIDE:
        # A small photo (a thumbnail, a digit cut small out of a distant shot) is enlarged to
        # photo size first: the steps below smooth, measure paper grain and grow faint strokes at
        # a photo's scale, and at 30 pixels a side the grain of pencil on paper is read as strokes.
        grey = enlarged(grey, PHOTO_SIDE)
    bg = background(grey)
    ink = darkness(grey, bg)
    ink = fill_thick_strokes(grey, ink)
    page = (slice(None), slice(None))
    if sheet is not None:
        ink = np.where(sheet, ink, 0).astype(np.float32)
        page = ndimage.find_objects(sheet.astype(np.int8))[0]  # ruled lines end at the sheet's edges
    lined = ink[page].copy()
    ink[page] = remove_lines(lined)
    # The paper under a line goes with the line: on fine squared paper a third of the map is then 0,
    # and measured with it the paper's noise comes out a fifth of its size, so the grain of every
    # square reads as strokes. The paper's statistics take only the paper still seen. (Printed lines
    # are 10% darker than their paper or more; line removal also zeroes the faintest grain, a few %.)
    taken = np.zeros(ink.shape, bool)
    taken[page] = (ink[page] == 0) & (lined > 0.1)
    seen = ~taken if sheet is None else sheet & ~taken
    return normalise(ink, seen if taken.any() else sheet, sheet)


def darkness(grey: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """How much darker than its paper each pixel is, 0 to 1; the division undoes shadows and uneven light."""
    return np.clip((bg - grey) / np.maximum(bg, 0.05), 0, 1)


def fill_thick_strokes(grey: np.ndarray, ink: np.ndarray) -> np.ndarray:
    """Give back the inside of strokes wider than the background's window (a fat marker, a close-up).

    background() takes anything dark and wider than its square for paper, so such a stroke keeps only
    its thin parts, or its outline. A second background from a square three times as wide sees the
    stroke as ink again; of its dark areas, those as dark as the ink already found and touching it are
    the missing insides, unless they reach the photo's edge as shadows and ruled lines do. Nothing is
    added when no strong ink was found (faint pencil is never that wide).
    """
    strong = ink[ink > 0.15]
    if min(ink.shape) < 16 or strong.size < 20:
        return ink
    level = float(np.percentile(strong, 90))
    if level < 0.35:
        return ink
    h, w = grey.shape
    k = max(3, int(0.75 * min(h, w)))
    wide = darkness(grey, ndimage.minimum_filter(ndimage.maximum_filter(grey, size=k), size=k))
    dark = wide > 0.7 * level
    found = ink > 0.7 * level
    extra = dark & ~found
    if extra.sum() < 0.05 * found.sum():
        return ink
    labels, n = ndimage.label(dark, structure=np.ones((3, 3)))
    touching = set(np.unique(labels[found & dark]).tolist())
    # A shadow or a ruled line runs off the photo; a digit, even a fat one, has paper around it.
    border = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])).tolist())
    keep = sorted(touching - border - {0})
    if not keep:
        return ink
    inside = np.isin(labels, keep)
    inside = ndimage.binary_dilation(inside, iterations=1)  # the anti-aliased rim
    return np.where(inside, np.maximum(ink, wide), ink).astype(np.float32)


def background(grey: np.ndarray) -> np.ndarray:
    """Paper brightness at every pixel, for dark ink: a morphological closing wider than any stroke.

    Closing (max then min over a square a quarter of the short side) erases dark strokes narrower
    than the square but keeps large dark areas, edges included: a hard shadow stays background instead
    of becoming a band of "ink". Light smoothing first keeps noise from lifting the maximum (both
    filters are separable, so this costs little).
    """
    h, w = grey.shape
    # A quarter of the side is wider than any pen stroke in a photo; small images (a tight crop,
    # an MNIST digit) have relatively wider strokes, so there the square takes 40%.
    k = max(3, int((0.25 if min(h, w) >= PHOTO_SIDE else 0.4) * min(h, w)))
    smooth = ndimage.gaussian_filter(grey, 1.0)
    bg = ndimage.minimum_filter(ndimage.maximum_filter(smooth, size=k), size=k)
    # Smoothing softens a hard shadow edge by a pixel, which would leave a thin line of "ink" along
    # it; the closing of the raw image keeps the edge, so take the lower of the two.
    return np.minimum(bg, ndimage.minimum_filter(ndimage.maximum_filter(grey, size=k), size=k))


# ---------------------------------------------------------------------------------------------
# Ink map -> MNIST


def ink_to_mnist(ink: np.ndarray, cut: bool = False) -> np.ndarray:
    """Crop to the ink, fit 20x20 keeping aspect, anti-alias, centre by mass in 28x28 -> uint8.

    `cut`: the map was cut around one digit (read_number's segments), so pieces reach its edges
    because the cut parted them, not as a photo's shadow wedges and line ends do.
    """
    ink = np.asarray(ink, dtype=np.float32)
    labels, n = ndimage.label(ink > INK_LEVEL, structure=np.ones((3, 3)))
    if n == 0:
        raise DigitnetError("no digit found in the image (it looks blank)")
    index = np.arange(1, n + 1)
    mass = ndimage.sum(ink, labels, index=index)
    boxes = ndimage.find_objects(labels)
    faint = np.asarray(ndimage.maximum(ink, labels, index=index)) < FAINT
    parts = digit_parts(mass, boxes, *seed_choice(mass, boxes, ink.shape), faint=faint,
                        border_reach=0.6 if cut else 0.0)
    y0, y1, x0, x1 = bounds([boxes[i] for i in parts])
    grown = ndimage.binary_dilation(np.isin(labels, np.array(parts) + 1), iterations=2)
    crop = np.where(grown, ink, 0)[y0:y1, x0:x1]
    if mass.sum() < 2.0:
        raise DigitnetError("no digit found in the image (only a few faint specks)")
    return place_in_28(thicken(crop))


def seed_choice(mass: np.ndarray, boxes: list, shape: tuple[int, int]) -> tuple[int, np.ndarray]:
    """Where the digit is grown from: the heaviest component, but in a photo not one at its border.

    Where a hard shadow's edge meets the photo's border, the background estimate leaves a solid
    wedge of "ink" there, often heavier than a small digit. A digit in a photo rarely touches the
    border; when the heaviest piece does, the heaviest piece clear of the border is taken instead,
    if it has at least a fifth of the mass (a tightly cropped digit keeps its own heaviest piece).
    Returns that index and which pieces are at the border (none, for small images).
    """
    best = int(np.argmax(mass))
    h, w = shape
    if min(h, w) < PHOTO_SIDE:
        return best, np.zeros(len(mass), bool)
    border = np.array([ys.start == 0 or xs.start == 0 or ys.stop == h or xs.stop == w for ys, xs in boxes])
    if not border[best] or border.all():
        return best, border
    clear = int(np.argmax(np.where(border, -1, mass)))
    return (clear if mass[clear] >= 0.2 * mass[best] else best), border


def digit_parts(mass: np.ndarray, boxes: list, start: int | None = None, border=None, faint=None,
                border_reach: float = 0.0) -> list[int]:
    """Which components make the digit: `start` (default: the heaviest), and every piece near the group.

    Pieces marked in `border` (touching a photo's border: a shadow's wedge, a line's end) reach at
    most `border_reach` group sizes; at 0 they join only as light pieces do, lying wholly close to
    the group. Light pieces marked `faint` never join.

    Growing from the heaviest component keeps a broken stroke or a 5's detached bar (they lie close),
    while leftover line pieces, dust or a shadow's edge elsewhere in the photo stay out: they would
    otherwise stretch the crop and shrink the digit within it.
    """
    parts = [int(np.argmax(mass)) if start is None else start]
    rest = set(range(len(mass))) - set(parts)
    # How far a piece may lie from the group, in group sizes, by its mass: pieces as heavy as the
    # first (the dots of a chalk stroke) reach far, lesser ones less.
    ref = mass[parts[0]]
    reach = np.where(mass >= 0.5 * ref, 1.5, np.where(mass >= 0.15 * ref, 0.6, 0.0))
    if border is not None:
        reach = np.where(border, np.minimum(reach, border_reach), reach)
    while rest:
        y0, y1, x0, x1 = bounds([boxes[i] for i in parts])
        far = reach * max(y1 - y0, x1 - x0) + 2

        def touches(i: int) -> bool:  # the piece's box overlaps the group's, grown by its reach
            (ys, xs), d = boxes[i], far[i]
            return ys.start < y1 + d and ys.stop > y0 - d and xs.start < x1 + d and xs.stop > x0 - d

        near = [i for i in rest if reach[i] > 0 and touches(i)]
        if not near:
            break
        parts += near
        rest -= set(near)
    # A light piece must lie wholly within a quarter of the group's size (a shadow's edge beside the
    # digit must not join), measured once from the heavy pieces' box: were each light piece to widen
    # the box the next is measured from, a small photo's paper grain would join speck by speck.
    # A light piece that is also faint is grain or a fringe wherever it lies.
    y0, y1, x0, x1 = bounds([boxes[i] for i in parts])
    m = 0.25 * max(y1 - y0, x1 - x0) + 2

    def inside(i: int) -> bool:
        ys, xs = boxes[i]
        return ys.start >= y0 - m and ys.stop <= y1 + m and xs.start >= x0 - m and xs.stop <= x1 + m

    return parts + [i for i in sorted(rest) if not (faint is not None and faint[i]) and inside(i)]


def bounds(boxes) -> tuple[int, int, int, int]:
    return (min(b[0].start for b in boxes), max(b[0].stop for b in boxes),
            min(b[1].start for b in boxes), max(b[1].stop for b in boxes))


def thicken(crop: np.ndarray) -> np.ndarray:
    """Widen hairline strokes so they are about 2 pixels wide at MNIST scale, as MNIST's pens were."""
    h, w = crop.shape
    scale = MNIST_BOX / max(h, w)
    mask = crop > INK_LEVEL
    width = 4 * float(ndimage.distance_transform_edt(mask)[mask].mean()) - 1  # a strip of width w: mean w/4
    want = 1.6 / scale  # pixels in the crop that become 1.6 MNIST pixels
    if width >= want:
        return crop
    k = int(round(want - width))
    return ndimage.grey_dilation(crop, footprint=disk(k)) if k >= 1 else crop


def disk(k: int) -> np.ndarray:
    r = k / 2
    yy, xx = np.mgrid[:k + 1, :k + 1] - r
    return (yy ** 2 + xx ** 2) <= r ** 2 + 0.5


def place_in_28(crop: np.ndarray) -> np.ndarray:
    """Resize the crop to fit 20x20 (anti-aliased) and put its centre of mass at (14, 14)."""
    h, w = crop.shape
    scale = MNIST_BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # PIL order: (width, height)
    small = np.asarray(Image.fromarray(crop.astype(np.float32), "F").resize(size, Image.LANCZOS), dtype=np.float32)
    small = np.clip(small, 0, None)
    if small.max() <= 0:
        raise DigitnetError("no digit found in the image (the ink is too faint)")
    small /= small.max()
    sh, sw = small.shape
    cy, cx = ndimage.center_of_mass(small)
    top = int(np.clip(round(MNIST_CENTRE - cy), 0, 28 - sh))
    left = int(np.clip(round(MNIST_CENTRE - cx), 0, 28 - sw))
    canvas = np.zeros((28, 28), np.float32)
    canvas[top:top + sh, left:left + sw] = small
    return np.round(canvas * 255).astype(np.uint8)


def to_mnist(image) -> np.ndarray:
    """Any image (PIL or array) -> uint8 (28, 28), white ink on black, the digit centred by mass."""
    return ink_to_mnist(ink_map(image))


def moment_slant(w: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> tuple[float, float]:
    """The second-moment slant mu11 / mu02 (how far x moves per row) of ink weights `w` at pixel
    rows `ys` and columns `xs`, and the ink's centre row. `w` must hold some ink."""
    mass = w.sum()
    cy, cx = (w * ys).sum() / mass, (w * xs).sum() / mass
    mu02 = (w * (ys - cy) ** 2).sum() / mass
    return float((w * (ys - cy) * (xs - cx)).sum() / mass / max(mu02, 1e-6)), float(cy)


def deslant(x: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) digits with their slant taken out: the classic MNIST deskew.

    The slant is the ink's second-moment ratio mu11 / mu02 (how far x moves per row); each row is
    shifted back by it (capped at 1 pixel per row), and the digit recentred by mass. The reader
    shows the network both the digit and this view (read.read_digits).
    """
    x = np.asarray(x)
    out = np.empty_like(x)
    ys, xs = np.mgrid[:28, :28].astype(np.float64)
    for i, im in enumerate(x.astype(np.float64)):
        mass = im.sum()
        if mass <= 0:
            out[i] = x[i]
            continue
        slant, cy = moment_slant(im, ys, xs)
        slant = float(np.clip(slant, -1, 1))
        # Output pixel (y, x) samples the input at (y, x + slant * (y - cy)).
        upright = ndimage.affine_transform(im, np.array([[1.0, 0.0], [slant, 1.0]]),
                                           offset=(0.0, -slant * cy), order=1)
        m = upright.sum()
        if m <= 0:
            out[i] = x[i]
            continue
        shift = (14 - (upright * ys).sum() / m, 14 - (upright * xs).sum() / m)
        out[i] = np.clip(ndimage.shift(upright, shift, order=1), 0, 255).round().astype(np.uint8)
    return out


def ink_slant(ink: np.ndarray) -> float:
    """The slant of the writing in an ink map (x per row, as `deslant` measures it): the median,
    weighted by ink, of its pieces' own `moment_slant`s. Dust and flat pieces do not count."""
    labels, n = ndimage.label(ink > 0.25 * float(ink.max(initial=0)), structure=np.ones((3, 3)))
    if n == 0:
        return 0.0
    boxes = ndimage.find_objects(labels)
    tallest = max(b[0].stop - b[0].start for b in boxes)
    slants, masses = [], []
    for k, (ys_, xs_) in enumerate(boxes, start=1):
        if ys_.stop - ys_.start < 0.5 * tallest:
            continue
        w = np.where(labels[ys_, xs_] == k, ink[ys_, xs_], 0).astype(np.float64)
        ys, xs = np.mgrid[ys_, xs_]
        slants.append(moment_slant(w, ys, xs)[0])
        masses.append(w.sum())
    if not slants:
        return 0.0
    order = np.argsort(slants)
    cumulative = np.cumsum(np.asarray(masses)[order])
    return float(np.clip(np.asarray(slants)[order][np.searchsorted(cumulative, cumulative[-1] / 2)], -1, 1))


def unslant(ink: np.ndarray, slant: float) -> tuple[np.ndarray, int]:
    """The ink map sheared upright: output (y, u) shows input (y, u - pad + slant * (y - h/2)), on a
    canvas widened by `pad` on each side so nothing is cut off; returns (map, pad)."""
    h, w = ink.shape
    pad = int(np.ceil(abs(slant) * h / 2)) + 1
    out = ndimage.affine_transform(ink, np.array([[1.0, 0.0], [slant, 1.0]]), offset=(0.0, -pad - slant * h / 2),
                                   output_shape=(h, w + 2 * pad), order=1)
    return np.clip(out, 0, 1).astype(np.float32), pad


def slanted_box(box: tuple[int, int, int, int], slant: float, pad: int, height: int,
                width: int) -> tuple[float, int, float, int]:
    """A box (left, top, right, bottom) in `unslant`'s upright map -> the box holding it in the
    slanted map it came from (`width` wide): its corners taken back, as unslant maps them."""
    left, top, right, bottom = box
    xs = [u - pad + slant * (y - height / 2) for u in (left, right) for y in (top, bottom)]
    return max(0.0, min(xs)), top, min(float(width), max(xs)), bottom
