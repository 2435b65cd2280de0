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
    assert (per_image > 0.01).all()
    assert (out.sum(dim=(1, 2, 3)) > 0.5 * x.sum(dim=(1, 2, 3))).all()


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
    for mode in ("affine", "elastic", "affine+elastic"):
        xa = augment_batch(scale_pixels(x).unsqueeze(1), mode, rng(3))
        distorted = (model.eval()(xa).argmax(1) == y).float().mean()
        assert clean > 0.8 and distorted > 0.4, (mode, float(clean), float(distorted))


def test_bad_mode_is_refused(batch):
    with pytest.raises(DigitnetError, match="augment must be"):
        augment_batch(batch[0], "rotate", rng())
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
