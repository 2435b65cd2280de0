"""Segmentation decisions (digitnet/segment.py) on drawn ink maps, with stand-in scores: which cuts
are taken, which neighbours are joined, what is no digit."""
import numpy as np

from digitnet.segment import find_digits


def test_a_cut_that_leaves_a_short_corner_is_not_taken():
    """A 7 whose bar runs far right is wide enough to be two digits; cutting it leaves the bar's curled
    end, a short piece. Even when the network would be surer of the pieces, digits side by side are about
    equally tall, so the uncut 7 wins."""
    ink = np.zeros((80, 100), np.float32)
    ink[10:16, 10:90] = 1.0  # the bar, reaching far right ...
    ink[10:35, 84:90] = 1.0  # ... where it curls down a little
    for y in range(16, 70):  # the stem, from the middle of the bar down to the left
        x = int(50 - (y - 16) * 0.5)
        ink[y, x - 3:x + 3] = 1.0

    def keen_on_pieces(crops):  # sure of any small crop, unsure of the whole
        return [0.99 if c.shape[1] < 50 else 0.5 for c in crops]

    assert len(find_digits(ink, keen_on_pieces)) == 1
    two = np.zeros_like(ink)  # two equally tall 0s that touch are still cut apart
    for left in (15, 49):
        two[10:70, left:left + 36] = 1.0
        two[16:64, left + 6:left + 30] = 0.0
    assert len(find_digits(two, keen_on_pieces)) == 2


def test_a_short_wide_digit_is_not_cut_into_two_short_ones():
    ink = np.zeros((80, 200), np.float32)
    for left in (10, 45):  # two digits of the number's usual height (60)
        ink[10:70, left:left + 28] = 1.0
        ink[16:64, left + 6:left + 22] = 0.0
    ink[30:62, 90:150] = 1.0  # a digit written half as tall and wide: each half would pass for a digit
    ink[36:56, 96:144] = 0.0

    def keen_on_pieces(crops):
        return [0.99 if c.shape[1] < 40 else 0.5 for c in crops]

    assert len(find_digits(ink, keen_on_pieces)) == 3


def test_a_narrow_touching_pair_is_still_tried_as_two_digits():
    """Two narrow digits that touch (a 7 leaning into a 9) can be narrower than a wide 0; when the pair
    is much wider than the number's other digits, the cut is tried and the network judges it."""
    ink = np.zeros((80, 160), np.float32)
    for left in (10, 45, 80, 106):  # two digits alone, then two that touch (each 28 wide, 60 tall)
        ink[10:70, left:left + 28] = 1.0
        ink[16:64, left + 6:left + 22] = 0.0

    def sure_of_single_digits(crops):
        return [0.99 if c.shape[1] < 40 else 0.9 for c in crops]

    assert len(find_digits(ink, sure_of_single_digits)) == 4


def test_a_wide_digit_read_well_whole_is_not_cut():
    """The network reads each half of a wide 3 or 8 as a digit, often a little more surely than the
    whole; a cut must read clearly better than the uncut digit, since touching digits are rarer."""
    ink = np.zeros((80, 200), np.float32)
    for left, width in ((10, 28), (45, 28), (85, 58)):  # two usual digits, then a wide one
        ink[10:70, left:left + width] = 1.0
        ink[16:64, left + 6:left + width - 6] = 0.0

    def a_little_surer_of_halves(crops):
        return [0.99 if c.shape[1] < 40 else 0.96 for c in crops]

    assert len(find_digits(ink, a_little_surer_of_halves)) == 3


def test_two_touching_digits_as_wide_as_two_pay_no_cost_for_the_second():
    """A group twice the number's digit width is two touching digits by the width rule; the network
    may read the pair whole as one digit ("17" as a 7) fairly surely, but reads the two halves better."""
    ink = np.zeros((80, 200), np.float32)
    for left, width in ((10, 36), (55, 36), (100, 72)):  # two digits alone, then two that touch
        ink[10:70, left:left + width] = 1.0
        for inner in range(left, left + width, 36):
            ink[16:64, inner + 6:inner + 30] = 0.0

    def surer_of_halves(crops):
        return [0.99 if c.shape[1] < 50 else 0.97 for c in crops]

    assert len(find_digits(ink, surer_of_halves)) == 4  # 3 when the width rule's cut paid SPLIT_COST


def test_a_faint_1_beside_a_digit_is_not_joined_into_it():
    """A faint pencil 1 close to a 4 reads less surely alone (0.83) than the pair read as one 4
    (0.94): a small gain, where a 0 broken in two gains far more (0.31, in test_read.py)."""
    ink = np.zeros((80, 120), np.float32)
    ink[10:70, 20:25] = 0.6  # the 1
    ink[10:50, 34:39] = 1.0  # a 4: its left stroke, its bar and its stem
    ink[45:50, 34:70] = 1.0
    ink[10:70, 58:63] = 1.0

    def by_width(crops):
        return [0.83 if c.shape[1] < 15 else 0.93 if c.shape[1] < 45 else 0.94 for c in crops]

    assert len(find_digits(ink, by_width)) == 2


def test_a_faint_line_remnant_at_the_edge_is_no_digit():
    """What is left of a margin line where it leaves the photo is faint, light ink at the border: not a
    digit. The same faint stroke among the digits is a thin 1 and stays."""
    def zeros(lefts, width=200):
        ink = np.zeros((80, width), np.float32)
        for left in lefts:  # digits 28 wide, 60 tall, strong ink
            ink[10:70, left:left + 28] = 1.0
            ink[16:64, left + 6:left + 22] = 0.0
        return ink

    edge = zeros((10, 50, 90))
    edge[5:55, 196:200] = 0.45  # a faint thin line at the right border
    assert len(find_digits(edge)) == 3
    among = zeros((10, 50, 130))
    among[12:68, 100:104] = 0.45  # the same stroke between the digits
    assert len(find_digits(among)) == 4
