"""Finding the digits of a written number in an ink map: one box (and stroke mask) per digit.

The ink map comes from digitnet.preprocess.ink_map: (H, W) float32 in [0, 1], white ink on black,
paper, lines and shadows already removed. Steps, all relative to the digit height so that they
work at any resolution:

1. label the stroke's 8-connected components (scipy.ndimage.label) and drop dust;
2. merge the pieces of one digit: a broken stroke (pieces stacked over one another) and a short
   piece right beside a digit (a 5's detached flag, a dot);
3. split touching digits: a piece wider than one digit is cut at the thinnest columns of its
   vertical projection. Width alone is ambiguous (a wide 0 is as wide as two narrow digits), so
   when a `score` function is given (read_number passes the classifier's confidence) each
   plausible number of digits is tried and the best-recognised cut wins.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

INK_LEVEL = 0.25      # fraction of the strongest ink that counts as stroke when labelling
SPECK = 0.12          # pieces smaller than this fraction of the digit height, both ways, are dust
MERGE_OVERLAP = 0.5   # broken strokes: pieces sharing this much of the narrower one's width
SHORT = 0.75          # ... of which one is shorter than this fraction of the digit height
DOT = 0.55            # a piece shorter than this fraction of the digit height...
DOT_INK = 0.4         # ... with less than this fraction of its neighbour's ink...
DOT_GAP = 0.25        # ... this close to a neighbour (same fraction) joins it, if the two fit one digit
SPLIT_RATIO = 1.6     # wider than this times the usual digit width: touching digits, to be cut apart
PAIR_RATIO = 1.25     # wider than this times the usual width: maybe two narrow digits touching (scored)
WIDTH_CAP = 0.75      # the usual digit width is at most this fraction of the height
# MNIST digits are 0.35-1.1 times as wide as tall (5th-95th percentile; 1.4 at the 99th), so a
# piece narrower than 0.9 heights holds one digit and each digit in a cut is 0.3-1.5 heights wide.
ONE_DIGIT = 0.9
MIN_WIDTH, MAX_WIDTH = 0.3, 1.5
FLAT = 0.3            # groups lower than this fraction of the digit height are not digits
TALL = 0.6            # each digit of a cut spans at least this fraction of its group's height
BRIDGE = 0.04         # gaps in a stroke up to this fraction of the ink's height are closed
SHEARS = (0.0, 0.3, -0.15)  # cut slants tried when a score can judge them (italic writing leans right)
PAD = 2               # pixels of anti-aliased edge kept around each digit's stroke
FAINT = 0.7           # a group at the photo's edge this much weaker (90th percentile of its ink)...
FAINT_MASS = 0.35     # ... and lighter (total ink) than the number's median group is a line's remnant
SPLIT_COST = 0.05     # a cut into n digits is scored this much lower per extra digit (mean log-confidence)
JOIN_GAIN = 0.1       # two neighbours become one digit when that reads this much better (mean log-confidence)


@dataclass
class Piece:
    """One digit in the ink map: its tight box and which pixels of its padded region are its ink."""
    box: tuple[int, int, int, int]     # (left, top, right, bottom), right/bottom exclusive, as PIL
    region: tuple[int, int, int, int]  # box plus PAD, clipped to the image
    mask: np.ndarray                   # bool (region height, region width)

    def crop(self, ink: np.ndarray) -> np.ndarray:
        """This digit's ink alone: float32 (region height, region width), other digits blanked."""
        left, top, right, bottom = self.region
        return np.where(self.mask, ink[top:bottom, left:right], 0).astype(np.float32)


Score = Callable[[list[np.ndarray]], np.ndarray]  # ink crops -> confidence per crop, in (0, 1]


def segment_digits(ink: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Boxes (left, top, right, bottom) of the digits in an ink map, left to right."""
    return [p.box for p in find_digits(ink)]


def find_digits(ink: np.ndarray, score: Score | None = None) -> list[Piece]:
    """Digits in an ink map (H, W) float in [0, 1], white ink on black, ordered left to right."""
    from scipy import ndimage

    ink = np.asarray(ink, dtype=np.float32)
    if ink.ndim != 2 or ink.size == 0 or not ink.max() > 0:
        return []
    stroke = ink > INK_LEVEL * float(ink.max())
    # Pencil and weak pens leave a stroke in fragments: bridge gaps up to BRIDGE of the ink's height
    # before labelling, then keep the labels on the stroke pixels only.
    rows = np.flatnonzero(stroke.any(1))
    if not len(rows):
        return []
    reach = round(BRIDGE * (rows[-1] - rows[0] + 1) / 2)
    bridged = ndimage.binary_dilation(stroke, np.ones((3, 3)), iterations=reach) if reach else stroke
    labels, count = ndimage.label(bridged, structure=np.ones((3, 3)))  # 8-connected, as a pen line
    labels[~stroke] = 0
    comps = [(i + 1, (s[1].start, s[0].start, s[1].stop, s[0].stop))
             for i, s in enumerate(ndimage.find_objects(labels)) if s is not None]
    if not comps:
        return []
    areas = ndimage.sum_labels(stroke, labels, range(1, count + 1))
    # The digit height: the tallest of the substantial pieces (a third of the largest's ink or more);
    # the median would be fooled by a flat 5 or 2 in a short number.
    height = float(max(b[3] - b[1] for lab, b in comps if areas[lab - 1] >= areas.max() / 3))
    comps = [(lab, box) for lab, box in comps if max(box[2] - box[0], box[3] - box[1]) >= SPECK * height]
    groups = merge_broken([([lab], box) for lab, box in sorted(comps, key=lambda c: c[1][0])], height, areas)
    # What is still flat after merging is no digit: a dash, a line's remnant, a smudge.
    groups = [(labs, box) for labs, box in groups if box[3] - box[1] >= FLAT * height]
    groups = drop_faint(groups, labels, ink)
    # The usual width of one digit: the median group leaving out 1s (narrow), unless the groups are
    # themselves touching pairs (then WIDTH_CAP of the height).
    widths = [box[2] - box[0] for _, box in groups if box[2] - box[0] >= 0.4 * height]
    usual = min(float(np.median(widths)) if widths else WIDTH_CAP * height, WIDTH_CAP * height)
    # Each group's candidate cuts (one per plausible digit count, the width rule's guess first).
    options = [split_options(labels, labs, box, usual, height, score is not None) for labs, box in groups]
    typical = float(np.median([box[3] - box[1] for _, box in groups])) if groups else height
    if score is not None and any(len(o) > 1 for o in options):
        # One call scores every candidate piece of every group: far cheaper than one call each.
        crops = [p.crop(ink) for o in options if len(o) > 1 for cut in o for p in cut]
        confidence = iter(np.log(np.clip(np.asarray(score(crops), dtype=float), 1e-6, 1.0)))
        for k, o in enumerate(options):
            if len(o) > 1:
                # Mean log-confidence: a wrong cut leaves parts of digits the network is unsure of.
                values = [np.mean([next(confidence) for _ in cut]) if cut else -math.inf for cut in o]
                # ... but a corner cut off a wide digit (the bar of a 7, the tail of a 2) can look like
                # a digit to the network; digits written side by side are about equally tall.
                # Against the number's usual height when the group is shorter: a 7 written small and
                # wide would otherwise be cut into two short pieces that each pass for a digit.
                group_height = max(groups[k][1][3] - groups[k][1][1], typical)
                tall = [len(cut) == 1 or bool(cut) and all(p.box[3] - p.box[1] >= TALL * group_height
                                                          for p in cut) for cut in o]
                if any(tall):
                    values = [v if t else -math.inf for v, t in zip(values, tall)]
                # The network reads half of a wide 3 or 8 as a digit with high confidence, while
                # touching digits are rarer than wide ones: each extra digit must earn its place,
                # beyond the count the width rule gave (o[0]): a group twice a digit's width is two
                # touching digits, though the network may read "17" as a 7 as surely as 1 and 7.
                guess = max(1, len(o[0]))
                values = [v - SPLIT_COST * max(0, len(cut) - guess) for v, cut in zip(values, o)]
                options[k] = [o[int(np.argmax(values))]]
    # A cut can leave a flat end of a ruled line that ran through a digit: not a digit either.
    pieces = [p for o in options for p in o[0] if p.box[3] - p.box[1] >= FLAT * height]
    pieces = sorted(pieces, key=lambda p: (p.box[0] + p.box[2]) / 2)
    return rejoin(pieces, ink, height, score) if score is not None else pieces


def drop_faint(groups: list, labels: np.ndarray, ink: np.ndarray) -> list:
    """Leave out groups at the photo's edge that are far fainter and lighter than the number's digits.

    What survives of a ruled or margin line running off the photo, or of a shadow's edge, is weak ink
    at the border. Faintness alone is no test: a thin 1 in a blurred photo never reaches the
    strength of the thicker strokes and looks as weak as a line's remnant, but it is written among
    the other digits, not at the photo's edge.
    """
    if len(groups) < 2:
        return groups
    h, w = ink.shape
    strength, mass = [], []
    for labs, (left, top, right, bottom) in groups:
        values = ink[top:bottom, left:right][np.isin(labels[top:bottom, left:right], labs)]
        strength.append(float(np.percentile(values, 90)))
        mass.append(float(values.sum()))
    s0, m0 = float(np.median(strength)), float(np.median(mass))

    def remnant(box, s: float, m: float) -> bool:
        at_edge = box[0] == 0 or box[1] == 0 or box[2] == w or box[3] == h
        return at_edge and s < FAINT * s0 and m < FAINT_MASS * m0

    return [g for g, s, m in zip(groups, strength, mass) if not remnant(g[1], s, m)]


def rejoin(pieces: list[Piece], ink: np.ndarray, height: float, score: Score) -> list[Piece]:
    """Join neighbours that the network reads far better as one digit than as two.

    A stroke broken down its length (a 0 as "( )", a 2 whose bend faded) leaves two narrow pieces
    side by side, which merge_broken cannot tell from two digits. Two neighbours close together that
    would fit one digit are read both ways; they become one when the joined reading's log-confidence
    beats the mean of the two separate ones by JOIN_GAIN. Two clear digits (1 1) are each read at
    ~99%, which no joined reading can beat by that much.
    """
    pairs = []
    for i in range(len(pieces) - 1):
        a, b = pieces[i].box, pieces[i + 1].box
        union = _union(a, b)
        side_by_side = min(a[3], b[3]) - max(a[1], b[1]) >= 0.5 * min(a[3] - a[1], b[3] - b[1])
        if side_by_side and b[0] - a[2] <= DOT_GAP * height and union[2] - union[0] <= ONE_DIGIT * height:
            pairs.append(i)
    if not pairs:
        return pieces
    joined = {i: _join(pieces[i], pieces[i + 1]) for i in pairs}
    crops = [c for i in pairs for c in (pieces[i].crop(ink), pieces[i + 1].crop(ink), joined[i].crop(ink))]
    logs = np.log(np.clip(np.asarray(score(crops), dtype=float), 1e-6, 1.0)).reshape(-1, 3)
    gain = {i: g for i, g in zip(pairs, logs[:, 2] - logs[:, :2].mean(axis=1)) if g > JOIN_GAIN}
    out, i = [], 0
    while i < len(pieces):
        # Of two overlapping candidate joins (pieces i, i+1, i+2), the larger gain is taken.
        if i in gain and not gain.get(i + 1, -math.inf) > gain[i]:
            out.append(joined[i])
            i += 2
        else:
            out.append(pieces[i])
            i += 1
    return out


def _join(a: Piece, b: Piece) -> Piece:
    """One Piece holding both pieces' ink."""
    region = _union(a.region, b.region)
    mask = np.zeros((region[3] - region[1], region[2] - region[0]), bool)
    for p in (a, b):
        top, left = p.region[1] - region[1], p.region[0] - region[0]
        mask[top:top + p.mask.shape[0], left:left + p.mask.shape[1]] |= p.mask
    return Piece(_union(a.box, b.box), region, mask)


def _union(a, b):
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def _gap(a, b) -> int:
    """Chebyshev distance between two boxes (0 when they touch or overlap)."""
    return max(a[0] - b[2], b[0] - a[2], a[1] - b[3], b[1] - a[3], 0)


def merge_broken(groups: list, height: float, areas: np.ndarray) -> list:
    """Join the pieces of one digit: stacked pieces of a broken stroke, and short pieces beside one.

    areas[label - 1] is each component's stroke pixel count: a detached flag or dot carries far less
    ink than the digit beside it, a small digit (an old-style 0 next to a 7) about as much.
    """
    merged = True
    while merged:
        merged = False
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                a, b = groups[i][1], groups[j][1]
                overlap = min(a[2], b[2]) - max(a[0], b[0])
                narrower = min(a[2] - a[0], b[2] - b[0])
                shorter = min(a[3] - a[1], b[3] - b[1])
                both = _union(a, b)
                stacked = overlap >= MERGE_OVERLAP * narrower and shorter < SHORT * height
                ink_a, ink_b = (sum(areas[lab - 1] for lab in g[0]) for g in (groups[i], groups[j]))
                dot = (shorter < DOT * height and _gap(a, b) <= DOT_GAP * height
                       and both[2] - both[0] <= 1.1 * height and min(ink_a, ink_b) < DOT_INK * max(ink_a, ink_b))
                if stacked or dot:
                    groups[i] = (groups[i][0] + groups[j][0], both)
                    del groups[j]
                    merged = True
                    break
            if merged:
                break
    return groups


def digit_counts(width: int, height: float, usual: float, scored: bool) -> list[int]:
    """How many digits a piece this wide may hold: the width rule's guess first, then the others."""
    guess = max(2, round(width / usual)) if width > SPLIT_RATIO * usual and width > 1.1 * height else 1
    # A piece narrower than a wide digit may still be two narrow ones that touch (a 7 leaning into a
    # 9): if it is also much wider than the number's usual digit, the network judges the cuts too.
    if not scored or (width <= ONE_DIGIT * height and width <= PAIR_RATIO * usual):
        return [guess]
    lowest = max(1, math.ceil(width / (MAX_WIDTH * height)))
    highest = max(lowest, math.floor(width / (MIN_WIDTH * height)))
    return [guess] + [n for n in range(lowest, min(highest, guess + 2) + 1) if n != guess]


def split_options(labels, labs: list[int], box, usual: float, height: float,
                  scored: bool) -> list[list[Piece]]:
    """One merged group -> the ways to cut it into digits, at the thinnest columns, best guess first."""
    left, top, right, bottom = box
    mask = np.isin(labels[top:bottom, left:right], labs)  # (h, w) this group's stroke only
    counts = digit_counts(right - left, max(height, bottom - top), usual, scored)
    # Slanted writing touches along a slanted line: with a score, also cut along SHEARS.
    return [_cut(labels.shape, mask, left, top, n, shear) for n in counts
            for shear in (SHEARS if scored and n > 1 else (0.0,))]


def _cut(shape, mask: np.ndarray, left: int, top: int, n: int, shear: float = 0.0) -> list[Piece]:
    """Cut a group's mask into n parts where the least ink crosses, near each 1/n of its width.

    Cuts run along x + shear * (y - middle) = constant: vertical for shear 0, leaning right for shear > 0.
    """
    ys, xs = np.nonzero(mask)
    along = np.round(xs + shear * (ys - mask.shape[0] / 2)).astype(int)
    along -= along.min()
    width = int(along.max()) + 1
    columns = np.bincount(along, minlength=width).astype(float)
    step = width / n
    cuts = [0]
    for k in range(1, n):
        lo, hi = max(int(k * step - 0.3 * step), cuts[-1] + 1), min(int(k * step + 0.3 * step) + 1, width - 1)
        if lo >= hi:
            continue
        window = columns[lo:hi]
        # Among equally thin columns take the one nearest the expected boundary.
        candidates = np.flatnonzero(window == window.min()) + lo
        cuts.append(int(candidates[np.argmin(abs(candidates - k * step))]))
    part_of = np.searchsorted(np.array(cuts[1:]), along, side="right")  # which part each pixel is in
    pieces = []
    for k in range(len(cuts)):
        chosen = part_of == k
        if chosen.any():
            part = np.zeros_like(mask)
            part[ys[chosen], xs[chosen]] = True
            pieces.append(_piece(shape, part, left, top))
    return pieces


def _piece(shape, part: np.ndarray, left: int, top: int) -> Piece:
    """A Piece from a part mask given at (left, top): tight box, then padded so anti-aliasing comes along."""
    from scipy import ndimage

    rows, cols = np.flatnonzero(part.any(1)), np.flatnonzero(part.any(0))
    tight = (left + int(cols[0]), top + int(rows[0]), left + int(cols[-1]) + 1, top + int(rows[-1]) + 1)
    region = (max(0, tight[0] - PAD), max(0, tight[1] - PAD), min(shape[1], tight[2] + PAD),
              min(shape[0], tight[3] + PAD))
    mask = np.zeros((region[3] - region[1], region[2] - region[0]), bool)
    ys, xs = np.nonzero(part)
    mask[ys + top - region[1], xs + left - region[0]] = True
    return Piece(tight, region, ndimage.binary_dilation(mask, iterations=PAD))
