"""Ruled and squared notebook lines: finding their angle and taking them out of an ink map.

    remove_lines(ink) -> ink     the ink map (white ink on black) without straight lines across it
    line_angle(ink) -> degrees   the rotation that makes the page's lines horizontal

preprocess.ink_map calls remove_lines after the paper and its light are divided out.
"""
from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from digitnet.images import enlarged, small_copy


# Line finding needs pixels: a line must stand out of its neighbours' profile. Smaller ink maps
# (a small crop of a squared page) are searched on an enlarged copy.
MIN_SIDE = 48
SEARCH_SIDE = 96


def remove_lines(ink: np.ndarray) -> np.ndarray:
    """`find_and_remove` on the ink map, or for a small one on an enlarged copy: what that removed,
    reduced back, is taken from the original, so a map without lines comes back untouched."""
    h, w = ink.shape
    if min(h, w) >= MIN_SIDE:
        return find_and_remove(ink)
    if min(h, w) < 8:
        return ink
    big = enlarged(ink, SEARCH_SIDE)
    removed = big - find_and_remove(big)
    if not removed.any():
        return ink
    back = np.asarray(Image.fromarray(removed, "F").resize((w, h), Image.BOX), dtype=np.float32)
    return np.clip(ink - back, 0, 1).astype(np.float32)


def find_and_remove(ink: np.ndarray) -> np.ndarray:
    """Subtract ruled or squared notebook lines: thin straight ink running across most of the image.

    The page may be rotated, so the lines' angle is found first (the one giving the sharpest row
    profile). A long 1-D opening then keeps only straight runs across 70% of the image, which no
    digit stroke is; that needs two or more parallel lines, while a lone line (a margin) must run
    across 90%, so that a long straight stroke of a tightly cropped 1 or 7 survives. In a tight crop
    the digit's own strokes can be that long (the stem of a 1, the sides of a 0), so one or two runs
    are kept as strokes when they look like the rest of the writing (`beyond_writing`).
    """
    angle = line_angle(ink)
    # Nearest-neighbour rotation keeps a thin line at full strength (a linear one halves it in places).
    # The rotated frame is enlarged to hold the whole image (reshape): cropped to the input's size, it
    # would lose the corners, and lines there would survive as dotted streaks along the edges.
    rot = ndimage.rotate(ink, angle, reshape=True, order=0) if angle else ink
    sets = []
    for axis in (0, 1):  # 0: horizontal lines (runs along x), 1: vertical lines
        length = ink.shape[1 - axis]
        thick = ndimage.maximum_filter1d(rot, 3, axis=axis)  # tolerate a pixel of waviness
        lines = opening1d(thick, int(0.7 * length), 1 - axis)
        profile = lines.mean(axis=1 - axis)
        top = float(profile.max())
        if top < 0.02:
            continue
        peaks = ndimage.label(profile > 0.4 * top)[1]
        if peaks < 2:
            lines = opening1d(thick, int(0.9 * length), 1 - axis)
            if lines.mean(axis=1 - axis).max() < 0.5 * top:
                continue
        # Widen to the line's full width (the opening keeps only its straightest core), and take
        # both sets from the same map, so crossings stay intact for the second set.
        sets.append((axis, ndimage.maximum_filter1d(lines, 5, axis=axis)))
    if not sets:
        return ink
    found = beyond_writing(rot, sets, min(ink.shape))
    if not found.any():
        return ink
    if angle:  # back, and the enlarged frame's centre is the input
        back = ndimage.rotate(found, -angle, reshape=True, order=0)
        top, left = (back.shape[0] - ink.shape[0]) // 2, (back.shape[1] - ink.shape[1]) // 2
        found = back[top:top + ink.shape[0], left:left + ink.shape[1]]
    return subtract(ink, found)


def beyond_writing(rot: np.ndarray, sets: list, side: int) -> np.ndarray:
    """The candidate lines that are ruling, not strokes, merged into one map.

    Three or more parallel runs across the image make a ruled or squared page (three upright ones
    only beside horizontal ones), and all candidates are lines. Otherwise they may be the straight
    strokes of a tightly cropped digit or number (the stem of a 1 or a 4, the sides of a 0). Such a
    candidate is a stroke when it is as wide as the digit's other strokes (ruling is printed finer
    than a pen writes) and ends where the rest of the writing does at one end at least (a line runs
    on across the page). The writing is what is left once the candidates are taken out
    (its pieces of at least a tenth of the largest, so dust and stubs of lines do not count). A
    candidate found to be a stroke joins the writing, and the others are tested again against it.
    With no writing left at all, the candidates are all there is, and they are lines.
    """
    pieces, ruled = [], False  # pieces: (its pixels, axis, its run along the lines, its band)
    for axis, lines in sets:
        # One line per peak of the profile across the lines, so a line broken by a gap is one line;
        # its band takes in the widening (2 pixels each side) and the anti-aliased rim.
        on = lines > 0.02
        profile = lines.mean(axis=1 - axis)
        bands, count = ndimage.label(profile > 0.4 * profile.max())
        # Vertical lines alone are not a page (squared paper has both sets; a ruled page turned on its
        # side has its digits turned too): three upright runs there are the stems of a number's digits.
        ruled |= count >= 3 and (axis == 0 or any(a == 0 for a, _ in sets))
        for band, in ndimage.find_objects(bands):
            band = slice(max(0, band.start - 3), band.stop + 3)
            region = np.zeros_like(on)
            if axis == 0:
                region[band] = True
            else:
                region[:, band] = True
            along = np.flatnonzero((on & region).any(axis=axis))
            if along.size:
                pieces.append((on & region, axis, slice(along[0], along[-1] + 1), region))
    if ruled:
        return merge(sets, pieces, list(range(len(pieces))))
    keep = list(range(len(pieces)))
    while keep:
        labels, n = ndimage.label(subtract(rot, merge(sets, pieces, keep)) > 0.2, structure=np.ones((3, 3)))
        if n == 0:
            break
        areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
        writing = np.isin(labels, np.flatnonzero(areas >= 0.1 * areas.max()) + 1)
        pen = 4 * float(ndimage.distance_transform_edt(writing)[writing].mean())  # a strip w wide: mean w/4

        def crosses(k: int) -> bool:
            mask, axis, run, region = pieces[k]
            along = np.flatnonzero(writing.any(axis=axis))  # the writing along the lines' direction
            # Ruled lines are printed finer than a pen writes; a digit's straight stroke is as wide
            # as its other strokes. The median cross-section: strokes crossing a line do not widen it.
            across = ((rot > 0.2) & region).sum(axis=axis)[run]
            width = float(np.median(across))
            if width < 0.6 * pen:
                return True
            # Where a stroke meets the candidate at a slant, taking the candidate out cuts the stroke
            # back by a few of its widths, so the margin grows with the candidate's width.
            margin = max(3, 0.02 * side, 1.5 * mask.sum() / (run.stop - run.start))
            return along[0] - run.start > margin and run.stop - 1 - along[-1] > margin

        still = [k for k in keep if crosses(k)]
        if still == keep:
            break
        keep = still
    return merge(sets, pieces, keep)


def merge(sets: list, pieces: list, chosen: list[int]) -> np.ndarray:
    """One map of the chosen lines (a whole set at once when all of its lines are chosen).

    Where the two sets of squared paper cross, the printed lines lie one over the other and each
    lets through its share of the light: the crossing is darker than either line (1 - (1-a)(1-b)),
    and taking out only the stronger left a dot at every crossing, a lattice the network reads
    as strokes.
    """
    found = np.zeros_like(sets[0][1])
    for axis, lines in sets:
        mine = [k for k in range(len(pieces)) if pieces[k][1] == axis]
        if all(k in chosen for k in mine):
            found = 1 - (1 - found) * (1 - lines)  # the whole set, its faintest fringes included
            continue
        region = np.zeros(found.shape, bool)
        for k in set(mine) & set(chosen):
            region |= pieces[k][3]
        found = np.where(region, 1 - (1 - found) * (1 - lines), found)
    return found.astype(np.float32)


def subtract(ink: np.ndarray, found: np.ndarray) -> np.ndarray:
    """The ink without the lines: a pixel up to 1.5x the line's strength is line and goes; a stronger
    one is ink crossing the line and keeps what the line did not darken. Darkness is 1 - the light
    let through, and layers of ink multiply the light: a stroke over a line is 1 - (1-s)(1-a), so
    its own darkness s is (ink - a) / (1 - a), more than ink - a."""
    on_line = (found > 0.02) & (ink <= 1.5 * found)
    own = (ink - found) / np.maximum(1 - found, 1e-3)
    return np.where(on_line, 0, np.clip(own, 0, 1)).astype(np.float32)


def opening1d(a: np.ndarray, run: int, axis: int) -> np.ndarray:
    """What survives of `a` along runs of `run` pixels: grey opening with a 1-D line."""
    return ndimage.maximum_filter1d(ndimage.minimum_filter1d(a, run, axis=axis), run, axis=axis)


def line_angle(ink: np.ndarray) -> float:
    """Rotation (degrees) that makes notebook lines horizontal, searched over +-10 degrees.

    The angle is the one whose row and column profiles are sharpest. A profile at an angle is the
    ink projected onto the rotated axes, splatted linearly between neighbouring bins (a Radon
    transform): the same profile a rotated image would give, without rotating the image. Coarse
    steps run on a small copy; the last step runs at full size, in steps fine enough that a line
    across the whole image drifts by under a pixel (remove_lines needs it straight to the pixel).
    """
    small = small_copy(ink, 256)
    angle = 0.0
    for a, step, span in ((small, 1.0, 10.0), (small, 0.25, 0.75), (ink, None, 0.25)):
        if step is None:
            step = float(np.clip(np.degrees(0.7 / max(a.shape)), 0.02, 0.25))
        sharpness = profile_sharpness(a)
        angle = max(angle + np.arange(-span, span + step / 2, step), key=sharpness)
    return round(float(angle), 3)


def profile_sharpness(a: np.ndarray):
    """angle -> how sharp the ink's row and column profiles are, the axes rotated by that angle."""
    h, w = a.shape
    ys, xs = np.nonzero(a > 0.02)
    weight = a[ys, xs].astype(np.float64)
    yc, xc = ys - (h - 1) / 2, xs - (w - 1) / 2
    n = h + w  # offset that keeps every projected coordinate positive

    def profile(coord: np.ndarray) -> np.ndarray:
        c = coord + n
        lo = np.floor(c)
        frac = c - lo
        lo = lo.astype(np.int64)
        return np.bincount(lo, weight * (1 - frac), 2 * n + 2) + np.bincount(lo + 1, weight * frac, 2 * n + 2)

    def sharpness(angle: float) -> float:
        t = np.deg2rad(angle)
        rows = profile(np.cos(t) * yc - np.sin(t) * xc)
        cols = profile(np.sin(t) * yc + np.cos(t) * xc)
        return float((np.diff(rows) ** 2).sum() + (np.diff(cols) ** 2).sum())

    return sharpness
