"""Which way round the ink is: dark on light paper, or light on a dark board or ground.

    flat_ground(grey) -> True / False for a clean image (its ground of one exact value decides), None for a photo
    dark_ink(grey)    -> True / False from the photo's ring and its ink's excess over the paper
    light_patch(grey) -> True for a slip of paper with writing on a darker desk (not a board)

preprocess.ink_map asks flat_ground first, then dark_ink, and before turning a photo round as chalk
on a board, light_patch; a sheet found on a desk settles it before any.
"""
from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from digitnet.images import enlarged, small_copy
from digitnet.sheet import otsu_level, rectangle_fit

# A clean digit image (a dataset's digit, a screenshot, a drawing) has a ground of one exact value:
# it holds this share of the image and of its outer ring, at one end of the grey range.
FLAT_SHARE, FLAT_RING = 0.15, 0.25
# Photos are judged against a local paper level, measured on a copy of this many pixels a side.
LOCAL_SIDE = 48


def flat_ground(grey: np.ndarray) -> bool | None:
    """For a clean digit image, whether its ground is light (dark ink); None for a photo.

    A scan, a screenshot or a dataset's digit lies on a ground of one exact value at one end of
    its grey range (a photo's paper is noisy). That ground fills much of the image and of its outer
    ring, even when the digit is cut out to its edges, as USPS and scikit-learn's digits are: there
    the digit touches the frame all round, and the photo rules of dark_ink misjudge white ink
    on black as often as not (411 of 1,000 MNIST test digits cut to their edges, resized to 16x16).
    A photo whose paper is blown out to white passes too, rightly: its ground is light.
    """
    lo, hi = float(grey.min()), float(grey.max())
    if hi - lo < 0.2:
        return None
    r = max(1, min(grey.shape) // 20)
    ring = np.ones(grey.shape, bool)
    ring[r:-r, r:-r] = False
    at_lo, at_hi = grey <= lo + 1 / 255, grey >= hi - 1 / 255
    for ground, other, light in ((at_lo, at_hi, False), (at_hi, at_lo, True)):
        if (ground.mean() >= FLAT_SHARE and ground[ring].mean() >= FLAT_RING
                and ground[ring].mean() >= 3 * other[ring].mean()):
            return light
    return None


def dark_ink(grey: np.ndarray) -> bool:
    """True for dark ink on light paper.

    The photo's outer ring is nearly always paper or board: when it is even and differs clearly
    from the image's median (the ink covers much of the image), it decides. Otherwise the side with the larger
    excess beyond the noise, around a local paper level, is the ink.
    """
    s = small_copy(grey, 256)
    if min(s.shape) < LOCAL_SIDE:
        # A small photo (a thumbnail, a digit cut small out of a shot) is looked at enlarged: the
        # paper level below follows a shadow only from LOCAL_SIDE pixels up; under it, one median
        # for the whole photo made its lit part "light ink" whenever a shadow covered half of it.
        s = enlarged(s, LOCAL_SIDE)
    ring = max(1, min(s.shape) // 20)
    border = np.concatenate([s[:ring].ravel(), s[-ring:].ravel(), s[:, :ring].ravel(), s[:, -ring:].ravel()])
    lean = float(np.median(border) - np.median(s))
    q25, q75 = np.percentile(border, [25, 75])
    if q75 - q25 < 0.1:  # an even ring: not split by a shadow
        if abs(lean) > 0.08:
            return lean > 0
        # The ink covers little of the image (a digit drawn on a canvas, a small digit on even
        # paper): it is what departs from the ring's level, clearly more to one side than the other.
        level, spread = float(np.median(border)), max(0.05, 3 * (q75 - q25))
        dark = float(np.clip(level - s - spread, 0, None).sum())
        light = float(np.clip(s - level - spread, 0, None).sum())
        if dark > 4 * light or light > 4 * dark:
            return dark > light
    elif lean > 0.12:
        # A shadow splits the ring, but the middle is far darker than it: fat dark strokes fill the
        # photo. The test below would fail here, as its local paper level follows such strokes.
        return True
    # The paper level: a median over 40% of the side, taken on a LOCAL_SIDE-pixel copy.
    coarse = small_copy(s, LOCAL_SIDE)
    level = ndimage.median_filter(coarse, size=max(3, int(0.4 * min(coarse.shape))), mode="reflect")
    paper = np.asarray(Image.fromarray(level, "F").resize(s.shape[::-1], Image.BILINEAR))
    res = s - paper
    sigma = 1.4826 * np.median(np.abs(res - np.median(res))) + 1e-3
    dark = np.clip(-res - 3 * sigma, 0, None).sum()
    light = np.clip(res - 3 * sigma, 0, None).sum()
    if max(dark, light) < 1.5 * min(dark, light):
        # Too close to call: fat strokes fill the photo and the local paper level follows them.
        # Strokes touching the frame split its ring, but most of the ring is still paper. Only a
        # light ring decides: a dark one may be a desk around a sheet that was not found.
        if (border > otsu_level(s)).mean() >= 0.8:
            return True
    if q75 - q25 >= 0.1:
        # A shadow splits the ring. Along its edge the local level lags on both sides, and lit
        # paper beside a shadow covering half the photo came out as light excess: only pixels
        # where the level is steady (it changes by under 0.1 across 5% of the side) vote. Even so
        # a light digit must clearly outweigh the dark side, and with next to no excess either way
        # (faint pencil), paper with dark writing is the far likelier photo.
        k = max(3, int(0.05 * min(s.shape)))
        steady = ndimage.maximum_filter(paper, k) - ndimage.minimum_filter(paper, k) < 0.1
        dark = np.clip(-res[steady] - 3 * sigma, 0, None).sum()
        light = np.clip(res[steady] - 3 * sigma, 0, None).sum()
        return bool(light < 2 * dark + 1e-3 * s.size)
    return bool(dark >= light)


def light_patch(grey: np.ndarray) -> bool:
    """A light patch with writing in it on a darker surround: a slip or a sheet on a desk that
    `sheet.paper_only` did not take (a hard shadow cuts its lit part into no clean quadrilateral,
    or the photo is too small to look for one), not chalk on a board, whose polarity it shares.

    The largest light region (Otsu's level, its holes filled) covers 5-70% of the photo and
    little of its frame, is nearly all light, compact (it fills 60% of its smallest rectangle) and
    holds dark marks of some 4% of it or more that are strokes: a fat chalk 0, 8 or 9 also holds
    dark marks, but they are its loops, holes far wider than any pen's line.
    """
    s = ndimage.gaussian_filter(small_copy(grey, 256), 1.0)
    light = ndimage.binary_opening(s > otsu_level(s), np.ones((3, 3)), iterations=2)
    labels, n = ndimage.label(light)
    if n == 0:
        return False
    patch = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    filled = ndimage.binary_fill_holes(patch)
    marks = filled & ~light  # the paper inside a written 0 or 8 is light, not a mark
    ring = np.ones(s.shape, bool)
    ring[2:-2, 2:-2] = False
    if not (0.05 <= filled.mean() <= 0.7 and filled[ring].mean() <= 0.25
            and patch.sum() >= 0.8 * filled.sum() and marks.sum() >= 0.04 * filled.sum()):
        return False
    if float(ndimage.distance_transform_edt(marks).max()) > 0.1 * np.sqrt(filled.sum()):
        return False
    fill, aspect = rectangle_fit(filled)
    return fill >= 0.6 and aspect <= 6.0
