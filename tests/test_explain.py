"""Looking inside: feature maps under summary's names, saliency on the ink, `digitnet explain` end to end."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import digitnet
from digitnet.cli import main
from digitnet.data import load_split
from digitnet.errors import DigitnetError
from digitnet.explain import feature_maps, saliency, saliency_stats, to_input
from digitnet.model import build_model, summarize



@pytest.fixture(scope="module")
def realistic(make_realistic):
    """realistic(i, folder) -> (path, label): item i of the repo's realistic test set, saved as a file.

    benchmarks/make_realistic.py draws MNIST *test* digits as pen, pencil or chalk strokes and
    "photographs" them (paper, lines, light, blur, noise, JPEG); every item has its own seed.
    """
    x_test, y_test = load_split("mnist", "test")

    def make(i, folder):
        image, label, _, _ = make_realistic.make_single(i, 0, x_test, y_test)
        path = Path(folder) / f"realistic-{i:05d}.png"
        image.save(path)
        return path, label
    return make


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


def test_saliency_lies_on_the_ink(tiny_run, test_digits, realistic, tmp_path):
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
        assert (stats["density_ratio_inside_outside"] or np.inf) > 2, stats  # None: nothing outside
        shares.append(stats["mass_inside_box"])
    assert np.mean(shares) > 0.7 and np.min(shares) > 0.5
    # and on photos from the realistic test set, through the CLI's preprocessing
    from digitnet.images import load_image
    from digitnet.preprocess import to_mnist

    for i in range(12):
        x28 = to_mnist(load_image(realistic(i, tmp_path)[0]))
        stats = saliency_stats(saliency(model, x28)[0], x28)
        assert stats["mass_inside_box"] > 0.5 and (stats["density_ratio_inside_outside"] or np.inf) > 2, (i, stats)


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


def test_explain_command_writes_picture_and_numbers(tiny_run, realistic, tmp_path, capsys):
    image, _ = realistic(0, tmp_path)  # chalk on a board, 100x118 pixels
    out = tmp_path / "pictures" / "explained.png"
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


def test_explain_uses_the_shipped_model_by_default(realistic, tmp_path, capsys):
    image, label = realistic(4, tmp_path)
    out = tmp_path / "default.png"
    assert main(["explain", str(image), "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "default" and out.stat().st_size > 10_000
    assert len(report["probabilities"]) == 10 and report["prediction"] in report["probabilities"]


def test_explain_command_errors(tiny_run, realistic, tmp_path, capsys):
    run = str(tiny_run.run_dir)
    not_image = tmp_path / "notes.png"
    not_image.write_text("not a picture")
    blank = tmp_path / "blank.png"
    Image.new("L", (50, 50), 255).save(blank)
    photo, _ = realistic(1, tmp_path)
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
