"""Images made for display rather than photographed (digitnet/display.py): a digit enlarged pixel by
pixel, shown in a matplotlib figure (with or without axes), or written in a printed box."""
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from digitnet.display import panel, unblock
from digitnet.images import load_image
from digitnet.preprocess import to_grey, to_mnist
from test_preprocess import seven, similar


def test_a_digit_enlarged_pixel_by_pixel_is_read_at_its_own_size(mnist_test):
    x, _ = mnist_test
    small = np.asarray(Image.fromarray(x[0]).resize((8, 8), Image.BOX))
    big = np.asarray(Image.fromarray(small).resize((32, 40), Image.NEAREST))  # 4x and 5x
    assert unblock(to_grey(big)).shape == (8, 8)
    assert np.array_equal(to_mnist(big), to_mnist(small))
    assert unblock(to_grey(np.kron(x[0], np.ones((10, 10), np.uint8)))).shape == (28, 28)  # 10x, not 5x or 2x
    # Anything not made of equal blocks, a flat-ground drawing included, is left as it is.
    assert unblock(to_grey(np.asarray(seven()))).shape == (140, 120)
    noisy = np.kron(x[0], np.ones((4, 4), np.uint8)).astype(int)
    noisy[50, 50] += 1
    assert unblock(to_grey(noisy.astype(np.uint8))).shape == (112, 112)


def test_a_digit_shown_in_a_figure_is_read_from_its_panel(mnist_test):
    # plt.imshow(digit, cmap="gray") saved with the figure's white margin: the black panel was read as
    # the ink (9 of 100 such MNIST figures right, a /tmp probe with matplotlib; 100 of 100 now).
    x, _ = mnist_test
    for digit in x[:30]:
        figure = np.full((240, 250), 255, np.uint8)
        figure[30:210, 40:220] = np.asarray(Image.fromarray(digit).resize((180, 180), Image.BILINEAR))
        assert panel(to_grey(figure)).shape == (180, 180)
        assert similar(to_mnist(figure), to_mnist(figure[30:210, 40:220])) > 0.99  # read as the panel alone
    # A digit on a plain ground, or a square 0 (rounded, or sharp and thin), is no panel.
    assert panel(to_grey(np.asarray(seven()))).shape == (140, 120)
    for radius, width in ((12, 14), (12, 6), (0, 6)):
        zero = Image.new("L", (120, 120), 255)
        ImageDraw.Draw(zero).rounded_rectangle([20, 15, 100, 105], radius=radius, outline=0, width=width)
        assert panel(to_grey(np.asarray(zero))).shape == (120, 120)


@pytest.mark.parametrize("cmap", [None, "gray", "gray_r"])
def test_a_digit_in_a_matplotlib_figure_with_axes_is_read(cmap, mnist_test):
    """A learner's plt.imshow(digit) saved with plt.savefig: axes, ticks and tick labels (digits too)
    around the panel, in matplotlib's default colours or grey either way (/tmp probe, 100 MNIST test
    digits: 10%, 9% and 100% read right before the panel was found by its rows and columns; now
    100% each). The panel or the frame of its axes is cut out, the labels left behind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, _ = mnist_test
    for digit in x[:5]:
        fig = plt.figure(figsize=(3, 3))
        plt.imshow(digit, cmap=cmap)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        plt.close(fig)
        shown = load_image(buf.getvalue())
        inner = panel(to_grey(shown))
        assert 0.5 * 240 < inner.shape[0] < 240 and 0.5 * 240 < inner.shape[1] < 240
        assert similar(to_mnist(shown), to_mnist(digit)) > 0.8


def test_a_digit_written_in_a_printed_box_is_read_inside_it(mnist_test):
    """Forms print a box for each digit; its lines are no ink of the digit (a /tmp probe of 200 MNIST
    test digits in thin boxes: 87.5% read right before, 100% cut inside the frame)."""
    x, _ = mnist_test
    for digit in x[:5]:
        big = 255 - np.asarray(Image.fromarray(digit).resize((112, 112), Image.BICUBIC))
        form = np.full((200, 200), 255, np.uint8)
        form[20:180, 20:180] = 0
        form[22:178, 22:178] = 255
        form[44:156, 44:156] = big
        assert panel(to_grey(form)).shape != form.shape
        assert similar(to_mnist(form), to_mnist(255 - digit)) > 0.8
    empty = np.full((200, 200), 255, np.uint8)  # an empty box is a drawn 0's outline, not a frame
    empty[20:180, 20:180] = 0
    empty[22:178, 22:178] = 255
    assert panel(to_grey(empty)).shape == empty.shape
