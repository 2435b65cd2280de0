"""Cleaning an ink map: what is writing, and what is the paper's noise, dust, edges or a printed box.

    normalise(ink) -> ink     soft threshold above the paper's noise, strong ink stretched to 1,
                              faint strokes grown back from what was found, specks and borders dropped

preprocess.ink_map calls it last, after lines.remove_lines.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

# Pixel classes of an ink map (values in [0, 1]).
INK_LEVEL = 0.2  # above this a pixel counts as ink when cropping and finding components
# A photo has at least this many pixels a side; smaller maps are a tight crop or a dataset's digit.
PHOTO_SIDE = 64
# How far above the paper's noise (in sigmas of the smoothed map) faint strokes are grown, step by
# step: each step only from what the one before found (clean.grow_faint_strokes).
LEVELS = (4.0, 3.0, 2.5)


def normalise(ink: np.ndarray, region: np.ndarray | None = None, frame: np.ndarray | None = None) -> np.ndarray:
    """Soft threshold above the paper's noise, stretch so strong ink reaches 1; drop specks and borders.

    `region` (bool, ink's shape) limits the paper statistics to the paper still seen: the sheet when a
    desk was painted over, less what ruled lines took with them (preprocess.ink_map). `frame` (bool)
    is the sheet, when one was found on a desk: its edges are the picture's edges for the writing.
    """
    raw = ink
    photo = min(ink.shape) >= PHOTO_SIDE
    if photo:
        # Photos: paper grain is clumpy and one-sided, so smooth a little, then median and MAD.
        ink = ndimage.gaussian_filter(ink, 0.7)
    paper = ink[region] if region is not None and region.sum() >= 64 else ink.ravel()
    if photo:
        base = float(np.median(paper))
        sigma = 1.4826 * float(np.median(np.abs(paper - base)))
    # Small, often tightly cropped images, and fat strokes filling a photo or a crop: ink may cover a
    # third of them or more (pixels above half the ink's level), and then the median and its spread
    # are partly the ink's, so the paper level and its noise come from the darker pixels only.
    if not photo or base > 0.25 or float(np.mean(paper > 0.5 * np.percentile(paper, 99))) > 0.3:
        base = float(np.percentile(paper, 30))
        below = paper[paper <= base]
        sigma = 1.4826 * float(np.median(base - below)) if below.size else 0.0
    strong = ink[ink > base + max(4 * sigma, 0.05)]
    if strong.size == 0:
        return np.zeros_like(ink, dtype=np.float32)
    peak = float(np.percentile(strong, 90))
    low = base + max(4 * sigma, 0.06 * (peak - base))
    out = np.clip((ink - low) / max(peak - low, 1e-6), 0, 1).astype(np.float32)
    out = drop_specks_and_borders(out)
    if photo:
        out = drop_specks_and_borders(grow_faint_strokes(raw, out, peak, region, frame))
    return out


def grow_faint_strokes(raw: np.ndarray, out: np.ndarray, peak: float, region: np.ndarray | None,
                       frame: np.ndarray | None = None) -> np.ndarray:
    """Give back the rest of strokes of which the noise threshold kept only the strongest specks.

    Faint pencil in a noisy photo lies within a few sigma of the paper pixel by pixel, but a stroke
    is wide and the noise is not: smoothed more, the stroke stands clear. Where the smoothed map is
    above its own noise and touches ink already found (hysteresis, as edge detectors do), the
    stroke is kept at its own strength. `peak` is the strong ink's level in the map normalise
    thresholds.

    The smoothed map is read at falling levels (LEVELS): where pencil is lightest a stroke stands
    only 3 sigma clear of coarse grain, and grown from the 4-sigma specks alone a 7 came back as its
    darkest third. Each level only adds regions holding what the level above found, and none that
    run off the photo, so a lower level cannot bring in a shadow's edge the higher one kept out.
    """
    def smoothed(s: float) -> tuple[np.ndarray, float, float]:
        m = ndimage.gaussian_filter(raw, s)
        return (m, *paper_level(m[region] if region is not None and region.sum() >= 64 else m.ravel()))

    coarse, cbase, csigma = smoothed(2.0)
    # Shadows' edges and the ends of lines run off the photo, or off the sheet; a faint stroke lies within.
    edge = np.zeros(coarse.shape, bool)
    edge[[0, -1], :] = edge[:, [0, -1]] = True
    if frame is not None:
        edge |= ndimage.binary_dilation(~frame, iterations=2)
    support = np.zeros(coarse.shape, bool)
    for k in LEVELS:
        above = coarse > cbase + max(k * csigma, 0.02)
        labels, _ = ndimage.label(above, structure=np.ones((3, 3)))
        seeded = set(np.unique(labels[((out > 0.5) | support) & above]).tolist()) - {0}
        seeded -= set(np.unique(labels[edge]).tolist())
        if seeded:
            support |= np.isin(labels, sorted(seeded))
    if not support.any():
        return out
    # Within those regions, a pixel is stroke 2 sigma above the paper (on noiseless paper, 3% of the
    # ink's level: a stroke's blurred rim is not a faint stroke). The stroke's pixels are read a
    # little smoothed, so grainy pencil comes back whole, not in specks.
    medium, mbase, msigma = smoothed(1.0)
    grown = support & (medium > mbase + max(2 * msigma, 0.03 * (peak - mbase)))
    fine = np.clip((medium - mbase) / max(peak - mbase, 1e-6), 0, 1)
    return np.where(grown, np.maximum(out, fine), out).astype(np.float32)


def paper_level(values: np.ndarray, k: float = 3.0) -> tuple[float, float]:
    """The paper's level and noise (median, and sigma from the median absolute deviation) with ink
    clipped away: values above k sigma are set aside and the two measured again until none is.

    A broad faint stroke can cover a fifth of a photo; left in, it doubles the measured noise, and
    a 4-sigma floor then sits on the stroke itself (astronomy's sigma-clipped sky level)."""
    keep = values
    for _ in range(10):
        base = float(np.median(keep))
        sigma = 1.4826 * float(np.median(np.abs(keep - base)))
        inside = values[values <= base + k * sigma]
        if inside.size == keep.size or inside.size < 16:
            break
        keep = inside
    return base, sigma


def drop_specks_and_borders(ink: np.ndarray) -> np.ndarray:
    """Zero tiny components, and bands along an image edge (a paper edge, the table, a frame)."""
    labels, n = ndimage.label(ink > INK_LEVEL, structure=np.ones((3, 3)))
    if n == 0:
        return np.zeros_like(ink)
    index = np.arange(1, n + 1)
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    keep = areas >= max(3, 0.02 * areas[1:].max())  # paper grain and dust, not a broken stroke
    h, w = ink.shape
    cy, cx = np.array(ndimage.center_of_mass(np.ones_like(ink), labels, index)).reshape(-1, 2).T
    # A band covers half an edge and has its centre of mass near it; a tightly cropped digit that
    # touches the edge has its centre further in.
    sides = ((labels[0], w, cy < 0.2 * h), (labels[-1], w, cy > 0.8 * h),
             (labels[:, 0], h, cx < 0.2 * w), (labels[:, -1], h, cx > 0.8 * w))
    for edge, length, near in sides:
        along = np.bincount(edge, minlength=n + 1)[1:]
        keep[1:] &= ~((along > 0.5 * length) & near)
    # A piece lying wholly in a thin strip along an edge is the paper's edge, the end of a ruled line
    # that leaves the picture at a slant (too short inside it to be found as a line), or in a small
    # photo a line along its border; a digit reaches further in.
    strip = max(2, round(0.02 * min(h, w)))
    for i, (ys, xs) in enumerate(ndimage.find_objects(labels), start=1):
        if ys.stop <= strip or ys.start >= h - strip or xs.stop <= strip or xs.start >= w - strip:
            keep[i] = False
    keep[1:] &= ~printed_boxes(labels, areas)
    keep[0] = True  # background pixels below INK_LEVEL keep their faint anti-aliased values ...
    mask = keep[labels]
    # ... unless they only fringe a dropped component.
    dropped = ndimage.binary_dilation(~mask & (labels > 0), iterations=2)
    return np.where(mask & ~(dropped & (labels == 0)), ink, 0).astype(np.float32)


def printed_boxes(labels: np.ndarray, areas: np.ndarray) -> np.ndarray:
    """Which components (bool per label 1..n) are a box drawn around other ink: a form's field.

    A box's ink lies in a thin band along its own bounding rectangle, on three sides or four,
    and it holds a substantial piece of other ink (the digit). A written 0 is round, so much of its
    ink lies inside that band's inner edge, and it holds nothing but, at most, a dot.
    """
    found = np.zeros(len(areas) - 1, bool)
    for i, (ys, xs) in enumerate(ndimage.find_objects(labels), start=1):
        h, w = ys.stop - ys.start, xs.stop - xs.start
        if min(h, w) < 12:
            continue
        own = labels[ys, xs] == i
        band = max(2, round(0.08 * min(h, w)))
        if own[band:-band, band:-band].sum() > 0.1 * areas[i]:
            continue
        covered = [own[:band].any(0).mean(), own[-band:].any(0).mean(), own[:, :band].any(1).mean(),
                   own[:, -band:].any(1).mean()]
        if sum(c > 0.6 for c in covered) < 3:
            continue
        inside = np.unique(labels[ys, xs][band:-band, band:-band])
        inside = inside[(inside != 0) & (inside != i)]
        found[i - 1] = bool(inside.size) and areas[inside].sum() >= 0.2 * areas[i]
    return found

