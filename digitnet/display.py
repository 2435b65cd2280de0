"""Digits in images made for display, not photographed: back to what they show.

    unblock(grey) -> grey   an image enlarged by repeating pixels, at its own size again
    panel(grey)   -> grey   the panel of a digit shown in a figure (plt.imshow saved with its margin)

preprocess.ink_map runs both first; any other image comes back as it is.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from digitnet.polarity import flat_ground


def panel(grey: np.ndarray) -> np.ndarray:
    """A digit image shown in a figure (matplotlib's imshow saved with its white margin): the panel,
    cut out; any other image as it is.

    On the figure's flat margin the panel (white digit on black, as MNIST is shown) is one large dark
    rectangle, which the steps below took for the ink: 9 of 100 such figures were read right. A
    panel fills its bounding box (the digit's strokes inside are holes in it), and its edges are
    straight to the pixel, where a hand-drawn or printed square 0 is neither.
    """
    light = flat_ground(grey)
    if light is None:
        return grey
    far = np.abs(grey - (grey.max() if light else grey.min())) > 0.5
    labels, n = ndimage.label(far)
    if n == 0:
        return grey
    biggest = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    ys, xs = ndimage.find_objects(biggest.astype(np.int8))[0]
    box, h, w = biggest[ys, xs], ys.stop - ys.start, xs.stop - xs.start
    if h < 0.3 * grey.shape[0] or w < 0.3 * grey.shape[1] or min(h, w) < 8 or (h, w) == grey.shape:
        return grey
    edges = np.concatenate([box[0], box[-1], box[:, 0], box[:, -1]])
    inside = box[1:-1, 1:-1]
    if edges.mean() >= 0.95 and inside.mean() >= 0.5 and (~inside).mean() >= 0.02:
        return np.ascontiguousarray(grey[ys, xs])
    return grey


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
