"""Digits in images made for display, not photographed: back to what they show.

    unblock(grey) -> grey   an image enlarged by repeating pixels, at its own size again
    panel(grey)   -> grey   the panel of a digit shown in a figure (plt.imshow saved, with or without
                            axes), or what a printed box holds

preprocess.ink_map runs both first; any other image comes back as it is.
"""
from __future__ import annotations

import numpy as np

from digitnet.polarity import flat_ground

SPAN = 0.3  # panel: rows and columns crossed by far-from-ground pixels for this much of the image...
RIM = 0.75  # ... and what they bound is dark on this much of its rim (a dataset's digit may touch it)


def panel(grey: np.ndarray) -> np.ndarray:
    """A digit image shown in a figure (matplotlib's imshow saved with its white margin, with or
    without axes), or written in a printed box: what the panel or box holds, cut out; any other
    image as it is.

    On the figure's flat margin a panel shown dark (cmap "gray", or matplotlib's default colours) is
    one large dark rectangle, which the steps below took for the ink; with axes, the tick labels are
    digits too. The panel is what the rows and columns crossed by far-from-ground pixels for SPAN of
    the image bound, if it is dark on RIM of its rim with square corners (a drawn square 0's are
    rounded) and the figure's margin lies around it (around the dark core of a digit drawn in blocks
    lies the rest of the digit). A dark panel with some light inside is cut out at its edges. A
    thin frame (the axes' lines round a light panel, cmap "gray_r", or a form's box) holding a
    little ink clear of its lines is cut inside them; a 0's outline has nothing inside, or its
    strokes run into the outline. (In a photo, whose ground is not flat, a box's lines are left out
    of the ink map later: clean.drop_specks_and_borders.)
    """
    light = flat_ground(grey)
    if light is None:
        return grey
    far = np.abs(grey - (grey.max() if light else grey.min())) > 0.5
    h, w = grey.shape
    rows, cols = np.flatnonzero(far.mean(1) >= SPAN), np.flatnonzero(far.mean(0) >= SPAN)
    if not len(rows) or not len(cols):
        return grey
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    if bottom - top < 0.3 * h or right - left < 0.3 * w or min(bottom - top, right - left) < 8 or \
            (bottom - top, right - left) == (h, w):
        return grey
    box = far[top:bottom, left:right]
    # A panel's or frame's corners are square to the pixel; a drawn square 0's are rounded.
    rim_dark = _rim(box).mean()
    if rim_dark < RIM or not box[[0, 0, -1, -1], [0, -1, 0, -1]].all():
        return grey
    # Around a panel lies the figure's margin (tick marks and labels are sparse); around the dark
    # core of a digit drawn in blocks, the rest of the digit.
    k = max(2, round(0.03 * max(h, w)))
    ring = far[max(0, top - k):bottom + k, max(0, left - k):right + k].sum() - box.sum()
    ring_area = (min(h, bottom + k) - max(0, top - k)) * (min(w, right + k) - max(0, left - k)) - box.size
    if ring_area and ring / ring_area > 0.1:
        return grey
    inside = box[1:-1, 1:-1]
    if inside.mean() >= 0.5 and (~inside).mean() >= 0.02:  # a dark panel, the digit light in it
        shown = grey[top:bottom, left:right]
        # A margin only where the digit reaches the rim: a thick square 0 taken for a panel would
        # become a hole in a dark ground.
        return _margin(shown) if rim_dark < 0.95 else np.ascontiguousarray(shown)
    # A frame: step inside its lines (rows and columns of the box dark nearly end to end).
    solid_rows, solid_cols = box.mean(1) >= 0.95, box.mean(0) >= 0.95
    t, b = _run(solid_rows), _run(solid_rows[::-1])
    l, r = _run(solid_cols), _run(solid_cols[::-1])
    inner = box[t + 1:len(box) - b - 1, l + 1:box.shape[1] - r - 1]  # a pixel more: anti-aliasing
    thin = max(t, b, l, r) <= max(3, 0.04 * max(box.shape))  # a frame line, not a digit's block stroke
    # What a frame holds stands clear of it; a digit's own strokes run into its outline.
    if thin and min(inner.shape) > 2 and 0.002 <= inner.mean() <= 0.3 and _rim(inner).mean() <= 0.05:
        return _margin(grey[top + t + 1:bottom - b - 1, left + l + 1:right - r - 1])
    return grey


def _margin(shown: np.ndarray) -> np.ndarray:
    """A panel with a margin of its own ground all round: a dataset's digit shown whole (scikit-learn's
    8x8 fill their frame) touches the panel's edges, where the photo steps look for the paper's edge."""
    pad = max(2, round(max(shown.shape) / 8))
    return np.pad(shown, pad, constant_values=float(np.median(_rim(shown))))


def _rim(a: np.ndarray) -> np.ndarray:
    """The outermost pixels of a 2-D array, side by side."""
    return np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])


def _run(flags: np.ndarray) -> int:
    """How many of the first flags are True in a row."""
    return int(np.argmin(flags)) if not flags.all() else len(flags)


def unblock(grey: np.ndarray) -> np.ndarray:
    """An image enlarged by repeating each pixel (k rows by m columns: a small digit blown up for
    display) back at its own size; any other image as it is.

    Such an enlargement adds nothing but blocks, and at its size the photo steps see a small digit's
    strokes as wide as a marker's: scikit-learn's 8x8 digits shown at 32x32 read 91.7%, at 8x8
    97.1%. No photo is made of exactly equal blocks.
    """
    if min(grey.shape) < 4:
        return grey
    rows, cols = repeat_factor(grey), repeat_factor(grey.T)
    return np.ascontiguousarray(grey[::rows, ::cols]) if rows > 1 and cols > 1 else grey


def repeat_factor(a: np.ndarray) -> int:
    """The largest k such that a's rows come in runs of k equal rows (1 if none)."""
    h = a.shape[0]
    if not np.array_equal(a[0], a[1]):
        return 1  # the first two rows of any such enlargement are equal
    for k in range(h // 2, 1, -1):  # the largest first: 10x is also 5x and 2x
        if h % k == 0:
            runs = a.reshape(h // k, k, -1)
            if np.array_equal(runs.max(axis=1), runs.min(axis=1)):
                return k
    return 1
