import pytest
import torch

import digitnet
from digitnet.augment import MODES, NONE, AugmentSettings, augment_batch
from digitnet.data import load_split
from digitnet.errors import DigitnetError
from digitnet.preprocess import scale_pixels


@pytest.fixture(scope="module")
def batch():
    x, y = load_split("mnist", "train")
    return scale_pixels(torch.from_numpy(x[:64])).unsqueeze(1), torch.from_numpy(y[:64])  # (64, 1, 28, 28)


def rng(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("mode", [m for m in MODES if m != "none"])
def test_shape_dtype_range_and_change(batch, mode):
    x, _ = batch
    out = augment_batch(x, mode, rng())
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1
    # Every image moves (a typical distortion changes ~10% of the mean pixel mass), ink survives.
    per_image = (out - x).abs().mean(dim=(1, 2, 3))
    if mode in ("ink", "flip", "flip+erase"):  # each hits a random share of images (a pen change: 3 in 4)
        assert (per_image > 0.01).float().mean() > 0.3
    else:
        assert (per_image > 0.01).all()
    # Thinning plus fading may take most of a thin digit's ink, never all of it.
    kept = 0.1 if "ink" in mode else 0.5
    assert (out.sum(dim=(1, 2, 3)) > kept * x.sum(dim=(1, 2, 3))).all()


@pytest.mark.parametrize("mode", MODES)
def test_seeded_determinism(batch, mode):
    x, _ = batch
    a = augment_batch(x, mode, rng(7))
    b = augment_batch(x, mode, rng(7))
    assert torch.equal(a, b)
    if mode != "none":
        assert not torch.equal(a, augment_batch(x, mode, rng(8)))


def test_identity_at_zero_strength(batch):
    x, _ = batch
    for mode in MODES:
        torch.testing.assert_close(augment_batch(x, mode, rng(), NONE), x, atol=1e-5, rtol=0)


def test_erase_replaces_one_rectangle_in_half_the_images():
    x = torch.zeros(2000, 1, 28, 28)  # black images: whatever is not black was erased
    out = augment_batch(x, "erase", rng())
    hit = (out != 0).flatten(1).any(1)
    assert 0.45 < hit.float().mean() < 0.55  # AugmentSettings.erase = 0.5
    share = (out != 0).flatten(1).float().mean(1)[hit]
    assert share.min() > 0.01 and share.max() < 0.45 and 0.15 < share.mean() < 0.25  # area 2-40%
    for image in out[hit][:100, 0]:
        rows, cols = torch.nonzero(image.any(1)).flatten(), torch.nonzero(image.any(0)).flatten()
        box = image[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        assert (box != 0).float().mean() > 0.99  # one solid rectangle of noise (0 has probability ~0)
        assert len(rows) == rows[-1] - rows[0] + 1 and len(cols) == cols[-1] - cols[0] + 1


def test_pure_shift_moves_pixels_exactly():
    # A +1-pixel shift in grid units is 2/28; output(x) samples input(x + shift) -> content moves left.
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 10, 10] = 1.0
    settings = AugmentSettings(rotation=0, scale=0, shear=0, alpha=0, translate=1 / 28)
    g = rng()
    out = augment_batch(x.repeat(200, 1, 1, 1), "affine", g, settings)
    # Shifts are uniform in [-1, 1] px: the dot's mass is conserved while it moves inside the image.
    torch.testing.assert_close(out.sum(dim=(1, 2, 3)), torch.ones(200), atol=1e-4, rtol=0)
    assert not torch.equal(out[0], x[0])


def test_digits_keep_their_class(tiny_run):
    # The distortions must keep a digit readable as its label. The fixture's net saw 2,000 centred,
    # undistorted digits (89% on clean test images); shifts of up to 2.8 px cost it most, yet it stays
    # far above chance (10%) on every kind of distortion (measured: 49-69%).
    from digitnet.model import predict_logits

    x, y = load_split("mnist", "test")
    x, y = torch.from_numpy(x[:500]), torch.from_numpy(y[:500])
    model = tiny_run.model.float()
    clean = (predict_logits(model, x).argmax(1) == y).float().mean()
    for mode in ("affine", "elastic", "affine+elastic", "ink", "affine+ink"):
        xa = augment_batch(scale_pixels(x).unsqueeze(1), mode, rng(3))
        distorted = (model.eval()(xa).argmax(1) == y).float().mean()
        assert clean > 0.8 and distorted > 0.4, (mode, float(clean), float(distorted))


def test_bad_mode_is_refused(batch):
    for bad in ("rotate", "affine+affine", "affine+", "ink+blur"):
        with pytest.raises(DigitnetError, match="augment must be"):
            augment_batch(batch[0], bad, rng())
    with pytest.raises(DigitnetError, match="augment must be"):
        digitnet.train(augment="rotate")


def test_short_augmented_run_learns(tmp_path):
    run = digitnet.train(epochs=1, limit_train=2000, limit_test=500, augment="affine+elastic",
                         out_dir=str(tmp_path), name="aug", log="quiet", plots=False)
    assert run.history["val_accuracy"][-1] > 0.75  # chance is 0.10
    kw = dict(epochs=1, limit_train=300, limit_test=100, out_dir=str(tmp_path), log="quiet",
              plots=False, precision="fp32", seed=1)
    plain = digitnet.train(name="plain", **kw)
    distorted = digitnet.train(name="distorted", augment="affine", **kw)
    assert plain.history["loss"] != distorted.history["loss"]  # the flag reaches the training loop


def test_ink_changes_the_pen_not_the_place(batch):
    """`ink` thickens, thins, fades and breaks strokes; the digit stays where it was, peak ink stays 1."""
    x, _ = batch
    out = augment_batch(x, "ink", rng(5))
    mass = lambda t: t.sum(dim=(1, 2, 3))  # noqa: E731
    ratio = mass(out) / mass(x)
    assert (ratio > 1.1).any() and (ratio < 0.9).any()  # some strokes got thicker, some thinner or fainter
    torch.testing.assert_close(out.amax(dim=(1, 2, 3)), torch.ones(len(x)))  # rescaled as preprocessing does
    ys = torch.arange(28.0).view(1, 1, 28, 1)
    centre = lambda t: (t * ys).sum(dim=(1, 2, 3)) / mass(t)  # noqa: E731
    assert (centre(out) - centre(x)).abs().max() < 2.0  # no geometric change: rows of mass barely move
    # Every part of it happens somewhere in a batch of 64: dilation pushes ink onto background pixels.
    assert ((out > 0.5) & (x < 0.05)).any()


def test_pool_max_matches_max_pool2d():
    import torch.nn.functional as F

    from digitnet.augment import _pool_max
    x = torch.rand(4, 1, 28, 28, generator=rng(2))
    assert torch.equal(_pool_max(x), F.max_pool2d(x, 3, stride=1, padding=1))


def test_flip_mirrors_about_half():
    x = torch.zeros(200, 1, 28, 28)
    x[:, :, 10:18, 2:6] = 1.0  # a bar at the left
    out = augment_batch(x, "flip", rng(4))
    mirrored = out[:, 0, 12, 22:26].sum(dim=1) == 4  # ... now at the right
    assert 60 < int(mirrored.sum()) < 140
    assert torch.equal(out[~mirrored], x[~mirrored])


def test_shift_moves_whole_pixels_without_blurring():
    x = torch.zeros(64, 1, 28, 28)
    x[:, 0, 10:14, 12:15] = 1.0
    y = augment_batch(x, "shift", torch.Generator().manual_seed(0))
    assert torch.equal(y.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)))  # nothing lost or smeared
    assert set(y.unique().tolist()) == {0.0, 1.0}  # exact copies: no interpolated values
    rows = torch.stack([torch.nonzero(img[0])[:, 0].min() for img in y]) - 10
    cols = torch.stack([torch.nonzero(img[0])[:, 1].min() for img in y]) - 12
    assert rows.abs().max() <= 2 and cols.abs().max() <= 2 and len(set(zip(rows.tolist(), cols.tolist()))) > 10
