"""Looking inside: feature maps under summary's names, saliency on the ink, `digitnet explain` end to end."""
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter, ImageFont

import digitnet
from digitnet.cli import main
from digitnet.data import load_split
from digitnet.errors import DigitnetError
from digitnet.explain import feature_maps, saliency, saliency_stats, to_input
from digitnet.model import build_model, summarize

FONT = "/usr/share/fonts/truetype/fifthhorseman/dkg.ttf"  # Debian fonts-dkg-handwriting


def photo_of_digit(path, digit="7", seed=0):
    """A phone-photo-like digit: dark blurred ink on uneven light paper with noise, as a JPEG."""
    rng = np.random.default_rng(seed)
    ink = Image.new("L", (180, 220), 0)
    ImageDraw.Draw(ink).text((90, 110), digit, font=ImageFont.truetype(FONT, 150), fill=255, anchor="mm")
    ink = np.asarray(ink.filter(ImageFilter.GaussianBlur(1.5)), np.float32) / 255
    paper = 215 + 30 * np.linspace(0, 1, 180)[None, :] + rng.normal(0, 5, ink.shape)
    photo = np.clip(paper * (1 - 0.75 * ink), 0, 255).astype(np.uint8)
    Image.fromarray(photo).convert("RGB").save(path, quality=90)
    return path


@pytest.fixture(scope="module")
def test_digits():
    x, y = load_split("mnist", "test")
    return x[:100], y[:100]


def test_feature_maps_follow_the_summary():
    model = build_model("seed")
    x28 = np.zeros((28, 28), np.uint8)
    x28[6:22, 12:16] = 255  # a "1"
    layers = feature_maps(model, x28, dense=True)
    rows = {r["name"]: r for r in summarize(model)}
    assert [m["name"] for m in layers] == ["conv2d", "max_pooling2d", "conv2d_1", "max_pooling2d_1",
                                           "conv2d_2", "dense", "dense_1"]
    for m in layers:
        keras = rows[m["name"]]["output_shape"]  # (H, W, C) as Keras prints it
        assert m["shape"] == ([keras[2], keras[0], keras[1]] if len(keras) == 3 else keras)
        assert m["maps"].dtype == np.float32 and list(m["maps"].shape) == m["shape"]
    # conv2d's maps are its output after the ReLU, computed by hand here
    with torch.no_grad():
        expected = torch.relu(model[0](to_input(x28)))[0].numpy()
    np.testing.assert_allclose(layers[0]["maps"], expected, rtol=1e-6)
    assert (layers[0]["maps"] >= 0).all() and layers[0]["maps"].max() > 0
    # the last dense layer holds the logits the network returns
    with torch.no_grad():
        np.testing.assert_allclose(layers[-1]["maps"], model(to_input(x28))[0].numpy(), rtol=1e-5)
    assert [m["name"] for m in feature_maps(model, x28)][-1] == "conv2d_2"  # maps only by default


@pytest.mark.parametrize("bad", [np.zeros((28, 28)), np.zeros((28, 29), np.uint8), [[0] * 28] * 28])
def test_feature_maps_refuse_other_inputs(bad):
    with pytest.raises(DigitnetError, match=r"uint8 \(28, 28\)"):
        feature_maps(build_model("seed"), bad)


def test_saliency_lies_on_the_ink(tiny_run, test_digits, tmp_path):
    """More saliency mass inside the digit's bounding box than outside, in total and per pixel.

    Part of this is by construction (a ReLU network with little bias passes no gradient to blank
    background far from the ink), so an untrained network also passes; test_saliency_points_at_*
    below is the check that only a trained network passes.
    """
    model = digitnet.load(tiny_run.run_dir).model
    x, _ = test_digits
    shares = []
    for x28 in x[:50]:
        stats = saliency_stats(saliency(model, x28)[0], x28)
        assert stats["density_ratio_inside_outside"] > 2, stats
        shares.append(stats["mass_inside_box"])
    assert np.mean(shares) > 0.7 and np.min(shares) > 0.5
    # and on a photo: dark ink on light paper, through the CLI's preprocessing
    from digitnet.preprocess import to_mnist

    x28 = to_mnist(Image.open(photo_of_digit(tmp_path / "seven.jpg")))
    stats = saliency_stats(saliency(model, x28)[0], x28)
    assert stats["mass_inside_box"] > 0.5 and stats["density_ratio_inside_outside"] > 2, stats


def test_saliency_points_at_the_pixels_that_decide(tiny_run, test_digits):
    """Erasing the 20 most salient ink pixels hurts the winning class far more than 20 random ones."""
    model = digitnet.load(tiny_run.run_dir).model
    x, _ = test_digits
    rng = np.random.default_rng(0)

    def score_without(x28, pixels, cls):
        erased = x28.copy().reshape(-1)
        erased[pixels] = 0
        with torch.no_grad():
            logits = model(to_input(erased.reshape(28, 28)))[0]
        return float(logits[cls]), int(logits.argmax())

    wins, flips_top, flips_random = 0, 0, 0
    for x28 in x:
        sal, logits = saliency(model, x28)
        cls = int(logits.argmax())
        ink = np.flatnonzero(x28.reshape(-1) > 64)
        top = ink[np.argsort(-sal.reshape(-1)[ink])[:20]]
        score_top, pred_top = score_without(x28, top, cls)
        score_random, pred_random = score_without(x28, rng.choice(ink, 20, replace=False), cls)
        wins += score_top < score_random
        flips_top += pred_top != cls
        flips_random += pred_random != cls
    assert wins >= 75, wins  # measured 91 of 100
    assert flips_top > 3 * max(1, flips_random), (flips_top, flips_random)


def test_explain_command_writes_picture_and_numbers(tiny_run, tmp_path, capsys):
    image = photo_of_digit(tmp_path / "three.jpg", "3", seed=1)
    out = tmp_path / "pictures" / "three-explained.png"
    assert main(["explain", str(image), "--model", str(tiny_run.run_dir), "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert abs(sum(report["probabilities"].values()) - 1) < 1e-5
    assert report["prediction"] == max(report["probabilities"], key=report["probabilities"].get)
    assert [(m["name"], m["shape"]) for m in report["layers"]] == [
        ("conv2d", [32, 26, 26]), ("max_pooling2d", [32, 13, 13]), ("conv2d_1", [64, 11, 11]),
        ("max_pooling2d_1", [64, 5, 5]), ("conv2d_2", [128, 3, 3])]
    assert all(0 < m["active_fraction"] < 1 for m in report["layers"])
    assert report["saliency"]["mass_inside_box"] > 0.5
    with Image.open(out) as picture:
        assert picture.format == "PNG" and picture.width > 800 and picture.height > 800
        pixels = np.asarray(picture.convert("L"))
    assert pixels.std() > 20  # a picture, not a blank page
    assert not list(out.parent.glob(".*.tmp"))  # written atomically: no temp file left behind

    assert main(["explain", str(image), "--model", str(tiny_run.run_dir), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "conv2d_2" in text and "[128, 3, 3]" in text and "saliency" in text


def test_explain_command_errors(tiny_run, tmp_path, capsys):
    run = str(tiny_run.run_dir)
    not_image = tmp_path / "notes.png"
    not_image.write_text("not a picture")
    blank = tmp_path / "blank.png"
    Image.new("L", (50, 50), 255).save(blank)
    photo = photo_of_digit(tmp_path / "d.jpg")
    cases = [([str(tmp_path / "missing.png"), "--model", run, "--out", str(tmp_path / "o.png")], "no such file"),
             ([str(not_image), "--model", run, "--out", str(tmp_path / "o.png")], "not an image"),
             ([str(blank), "--model", run, "--out", str(tmp_path / "o.png")], "no digit"),
             ([str(photo), "--model", run, "--out", str(tmp_path / "o.jpg")], "PNG"),
             ([str(photo), "--model", str(tmp_path), "--out", str(tmp_path / "o.png")], "model.json")]
    for args, message in cases:
        assert main(["explain", *args]) == 1
        err = capsys.readouterr().err
        assert err.startswith("digitnet: error:") and re.search(message, err), (args, err)
        assert "Traceback" not in err
    assert not (tmp_path / "o.png").exists()
