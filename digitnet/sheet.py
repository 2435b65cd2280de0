"""A sheet of paper photographed lying on a desk: finding it, and painting the desk over.

    paper_only(grey) -> (grey, sheet mask or None)

preprocess.ink_map calls it first, before the polarity is decided: a dark desk around a light sheet
otherwise reads as a board with light ink on it.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from digitnet.images import small_copy


def paper_only(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """A sheet of paper photographed on a darker desk: (grey with the desk painted over, sheet mask).

    Otherwise the desk decides everything downstream: a dark ring around a light middle reads as
    light ink on a dark board, and the whole sheet becomes the "digit". The sheet is the largest
    light region (Otsu on a 256-pixel copy, holes such as the writing filled; with a shadow across
    the sheet, Otsu again on the darker part) if it has a sheet's shape (a quadrilateral, possibly
    cut by the photo's frame: it fills most of its smallest enclosing rectangle, which a filled
    chalk 0 or 8 does not, and is no tall bar as a chalk 1 is) and is the only large one, the desk
    is clearly darker and shows no writing (grain runs all over it), and the sheet does. The desk, with a margin
    for the sheet's shaded rim, takes the paper's mean brightness near the closest point of the
    sheet. Returns (grey, None) when no such sheet is found.
    """
    # A 256-pixel copy, at least 96 pixels across its short side: a slip with a number on it is
    # photographed wide, and its copy would be too thin to find the slip in.
    s = small_copy(grey, max(256, min(max(grey.shape), math.ceil(96 * max(grey.shape) / min(grey.shape)))))
    if min(s.shape) < 96:  # a tight crop or a small digit image, not a photo of a desk
        return grey, None
    smooth = ndimage.gaussian_filter(s, 1.0)
    # A shadow across the sheet splits it: its shaded part falls below Otsu's level with the desk,
    # and the lit part alone is no quadrilateral. Then the level that splits what lies below the
    # first (the desk from the shaded paper) is tried too.
    level = otsu_level(smooth)
    sheet, contrast = light_region(s, smooth, level)
    whole, whole_contrast = light_region(s, smooth, otsu_level(smooth[smooth <= level]))
    if sheet is None:
        sheet, contrast = whole, whole_contrast
    elif whole is not None and (whole & sheet).sum() >= 0.95 * sheet.sum():
        # The lit part alone passes for a sheet too. What the lower level adds to it is the shaded
        # rest of the sheet if it is clearly lighter than the desk, and the desk's lighter grain if not.
        added, desk = whole & ~sheet, float(np.median(s[~whole]))
        if added.sum() > 0.1 * sheet.sum() and np.median(s[added]) - desk >= 0.1 * (np.median(s[sheet]) - desk):
            sheet, contrast = whole, whole_contrast
    if sheet is None:
        return grey, None
    # A photographed desk has texture and noise; a ground of one flat value is a drawing or a
    # rendered digit (the draw page's canvas, an upscaled MNIST digit), where a light 0 or 8 with
    # its loops filled would pass every test below.
    ground = s[~ndimage.binary_dilation(sheet, iterations=3)]
    if ground.size and np.mean(np.abs(ground - np.median(ground)) < 0.5 / 255) > 0.95:
        return grey, None
    # A desk shows around the sheet (much of the photo's outer ring), and the sheet's edge is a
    # step, where uneven light or a vignette only darkens the paper gradually.
    ring = np.ones_like(sheet)
    ring[2:-2, 2:-2] = False
    edge = sheet & ~ndimage.binary_erosion(sheet) & ~ring
    slope = np.hypot(*np.gradient(smooth))
    if (~sheet)[ring].mean() < 0.3 or not edge.any() or float(np.median(slope[edge])) < 0.15 * contrast:
        return grey, None
    # A hard shadow across the page looks just like a desk; writing in the dark part tells them
    # apart (and painting over it would erase the digit). Strokes are what lies clearly below a
    # closing over a few percent of the side, taken within one part (the rest counting as black).
    k = max(3, int(0.06 * max(s.shape)))

    def strokes(region, size):
        around = np.where(region, smooth, 0.0)
        return ndimage.minimum_filter(ndimage.maximum_filter(around, size=size), size=size) - smooth

    # Off the sheet, a margin is left out (the sheet's bright rim is no stroke) and the square is
    # twice as wide, for a marker's stroke.
    off = ~ndimage.binary_dilation(sheet, iterations=3)
    on_sheet, off_sheet = strokes(sheet, k), strokes(off, 2 * k)[off]
    level = max(0.05, 0.15 * contrast, 0.4 * float(on_sheet[sheet].max()))
    marks = np.zeros_like(off)
    marks[off] = off_sheet > level
    if marks.sum() > max(4, 0.002 * off.sum()):  # a desk has next to none...
        # ... but a desk's grain or weave runs all over it, where writing that runs on into a
        # shadow lies by the lit part: marks much denser next to the sheet than away from it.
        near = off & ndimage.binary_dilation(sheet, iterations=3 + 2 * k)
        far = off & ~near
        if far.sum() < 0.25 * off.sum() or marks[near].mean() > 4 * marks[far].mean():
            return grey, None
    # Strokes wider than the square (a marker, a close-up) reaching into the dark part: much darker
    # than the rest of it, as a desk's grain is not.
    below = smooth[off] < float(np.median(smooth[off])) - max(0.08, 0.5 * contrast)
    if below.mean() > 0.02:
        return grey, None
    # And a sheet holds writing: a stroke, not scattered specks (a fat chalk 1 on a board is a light
    # rectangle too, with only dust in it).
    inner = ndimage.binary_erosion(sheet, iterations=3)  # the sheet's rim is blurred by the smoothing
    written, n = ndimage.label((on_sheet > level) & inner, structure=np.ones((3, 3)))
    if n == 0 or np.bincount(written.ravel())[1:].max() < max(20, 0.001 * sheet.sum()):
        return grey, None
    # The paper's local mean (writing is a small part of it), copied outwards from the nearest point.
    core = ndimage.binary_erosion(sheet, iterations=2)
    weight = ndimage.uniform_filter(core.astype(np.float32), size=k)
    paper = ndimage.uniform_filter(np.where(core, smooth, 0).astype(np.float32), size=k) / np.maximum(weight, 1e-6)
    known = weight > 0.2
    _, (iy, ix) = ndimage.distance_transform_edt(~known, return_indices=True)
    desk = ~core
    fill = paper[iy, ix]
    if s.shape != grey.shape:
        size = (grey.shape[1], grey.shape[0])
        desk = np.asarray(Image.fromarray(desk.astype(np.float32), "F").resize(size, Image.BILINEAR)) > 0.01
        fill = np.asarray(Image.fromarray(fill.astype(np.float32), "F").resize(size, Image.BILINEAR))
    return np.where(desk, fill, grey).astype(np.float32), ~desk


def light_region(s: np.ndarray, smooth: np.ndarray, level: float) -> tuple[np.ndarray | None, float]:
    """The largest region above `level` if it is shaped like a sheet: (its mask, its contrast with
    the rest), or (None, 0)."""
    light = ndimage.binary_opening(smooth > level, np.ones((3, 3)), iterations=2)
    labels, n = ndimage.label(light)
    if n == 0:
        return None, 0.0
    sizes = np.bincount(labels.ravel())[1:]
    sheet = ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))
    # One sheet, the only large light region: the chalk digits of a number on a board are several
    # of about equal size (and the others read as writing near the largest, as a grained desk's
    # marks do not).
    if n > 1 and np.sort(sizes)[-2] > 0.3 * sizes.max():
        return None, 0.0
    # Paper is most of a sheet (bold writing covers up to a quarter of a slip); a light digit with
    # its holes filled (a fat 0) is half hole.
    if not 0.05 <= sheet.mean() <= 0.95 or light[sheet].mean() < 0.7:
        return None, 0.0
    contrast = float(np.median(s[sheet]) - np.median(s[~sheet]))
    # A sheet is a quadrilateral (cut by the frame at most), not a tall thin bar as a chalk 1 is; a
    # wide strip (a number written on a slip of paper) is a sheet.
    fill, aspect = rectangle_fit(sheet)
    rows, cols = np.flatnonzero(sheet.any(1)), np.flatnonzero(sheet.any(0))
    tall = rows[-1] - rows[0] > cols[-1] - cols[0]
    if contrast < 0.15 or aspect > (2.5 if tall else 6.0):
        return None, 0.0
    # Writing or a fat stroke running into the sheet's edge leaves notches in it: the sheet is
    # convex, so its hull (less a rim of two pixels, the sheet's shaded edge) is paper too. Bold
    # digits notch a slip deeply (it filled 0.63-0.78 of its rectangle); then its hull must be a
    # clean rectangle, as a fat chalk 8's (0.90) and a notched chalk 4's or 7's are not.
    hull = convex_fill(sheet)
    if fill < 0.8 and (sheet.sum() < 0.75 * hull.sum() or rectangle_fit(hull)[0] < 0.93):
        return None, 0.0
    return sheet | ndimage.binary_erosion(hull, iterations=2), contrast


def otsu_level(a: np.ndarray) -> float:
    """Otsu's threshold of values in [0, 1] (256 bins): the level that best splits them in two classes."""
    hist = np.bincount(np.clip((a * 255).astype(int), 0, 255).ravel(), minlength=256).astype(float)
    w0 = np.cumsum(hist)
    m0 = np.cumsum(hist * np.arange(256))
    total, mean = w0[-1], m0[-1]
    w1 = total - w0
    between = (mean * w0 - m0 * total) ** 2 / np.maximum(w0 * w1, 1e-9)
    return (int(np.argmax(between[:-1])) + 0.5) / 255


def convex_fill(mask: np.ndarray) -> np.ndarray:
    """The region's convex hull as a mask."""
    from scipy.spatial import ConvexHull, QhullError

    ys, xs = np.nonzero(mask & ~ndimage.binary_erosion(mask))
    try:
        hull = ConvexHull(np.stack([xs, ys], 1).astype(float))
    except QhullError:
        return mask
    im = Image.new("1", (mask.shape[1], mask.shape[0]), 0)
    ImageDraw.Draw(im).polygon([tuple(p) for p in hull.points[hull.vertices]], fill=1, outline=1)
    return np.asarray(im) | mask


def rectangle_fit(mask: np.ndarray) -> tuple[float, float]:
    """(area of a region / its smallest enclosing rectangle's, that rectangle's long side / short side).

    The first is 1 for a rectangle and 0.79 for an ellipse.
    """
    from scipy.spatial import ConvexHull, QhullError

    ys, xs = np.nonzero(mask & ~ndimage.binary_erosion(mask))  # the outline holds the hull
    points = np.stack([xs, ys], 1).astype(float)
    # Pixel corners, so that a thin region has an area.
    points = np.concatenate([points + d for d in ((0, 0), (1, 0), (0, 1), (1, 1))])
    try:
        hull = points[ConvexHull(points).vertices]
    except QhullError:
        return 0.0, np.inf
    edges = np.diff(np.vstack([hull, hull[:1]]), axis=0)
    best, sides = np.inf, (1.0, 1.0)
    # The smallest enclosing rectangle has a side along one of the hull's edges.
    for angle in np.unique(np.round(np.arctan2(edges[:, 1], edges[:, 0]) % (np.pi / 2), 6)):
        c, s_ = np.cos(angle), np.sin(angle)
        u, v = np.ptp(hull @ np.array([c, s_])), np.ptp(hull @ np.array([-s_, c]))
        if u * v < best:
            best, sides = float(u * v), (max(u, v), max(min(u, v), 1.0))
    return float(mask.sum()) / max(best, 1.0), sides[0] / sides[1]
