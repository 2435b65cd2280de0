"""predict and read: files in, answers out, bad files refused clearly; segmentation of numbers.

Images are MNIST *test* digits drawn as dark ink on light paper, large, so every test goes through
the real pipeline (load_image -> ink_map -> segmentation -> ink_to_mnist -> network). Which digits a
test uses is decided by the model itself on the original 28x28 (confidently right), so the tests
check the reading pipeline, not how good the small test model is.
"""
import csv
import io
import json
import struct
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from digitnet.cli import main
from digitnet.read import predict_image, read_digits, read_number
from digitnet.segment import segment_digits
from test_preprocess import seven

SCALE = 4  # MNIST pixels -> photo pixels


@pytest.fixture(scope="module")
def sure(classifier, mnist_test):
    """Per class, test digits the model gets right on the plain 28x28, most confident first."""
    x, y = mnist_test
    probs = classifier.predict(x[:2000])
    confidence = probs.max(1)
    good = [i for i in np.argsort(-confidence) if probs[i].argmax() == y[i] and confidence[i] >= 0.6]
    by_class = {d: [int(i) for i in good if y[i] == d] for d in range(10)}
    assert all(by_class.values()), "the test model should know every class"
    return by_class


def paper(ink: np.ndarray, margin: int = 24) -> Image.Image:
    """White-on-black float ink (H, W) in [0, 1] -> dark blue-black pen on light grey paper, enlarged."""
    big = np.asarray(Image.fromarray((ink * 255).astype(np.uint8)).resize(
        (ink.shape[1] * SCALE, ink.shape[0] * SCALE), Image.BILINEAR), np.float32) / 255
    big = np.pad(big, margin)
    rng = np.random.default_rng(0)
    page = 225 + rng.normal(0, 3, big.shape) - 175 * big
    rgb = np.stack([page, page, page + 12 * big], -1)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def digit_ink(x: np.ndarray, i: int) -> np.ndarray:
    """One MNIST digit as float ink, cropped to its columns (so a strip's spacing is what we set)."""
    d = x[i].astype(np.float32) / 255
    cols = np.flatnonzero(d.max(0) > 0.1)
    return d[:, cols[0]:cols[-1] + 1]


def strip(digits: list[np.ndarray], gap: int) -> np.ndarray:
    """Digits side by side, gap columns apart (negative: overlapping, i.e. touching)."""
    width = sum(d.shape[1] for d in digits) + gap * (len(digits) - 1)
    out = np.zeros((28, width), np.float32)
    pos = 0
    for d in digits:
        out[:, pos:pos + d.shape[1]] = np.maximum(out[:, pos:pos + d.shape[1]], d)
        pos += d.shape[1] + gap
    return out


@pytest.fixture(scope="module")
def singles(tmp_path_factory, mnist_test, sure):
    """Three single-digit photos in a folder, and their labels."""
    x, y = mnist_test
    folder = tmp_path_factory.mktemp("singles")
    labels = {}
    for name, d in (("a", 3), ("b", 7), ("c", 0)):
        i = sure[d][0]
        paper(digit_ink(x, i)).save(folder / f"{name}.png")
        labels[f"{name}.png"] = str(d)
    return folder, labels


def test_predict_reads_photos_as_text_json_and_csv(singles, model_dir, capsys):
    folder, labels = singles
    assert main(["predict", str(folder), "--model", model_dir]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all("top-3:" in line for line in lines)

    assert main(["predict", str(folder), "--model", model_dir, "--json", "--top-k", "2"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["source"].split("/")[-1] for r in rows] == ["a.png", "b.png", "c.png"]
    for r in rows:
        assert r["status"] == "ok" and r["digit"] == labels[r["source"].split("/")[-1]]
        assert len(r["top_k"]) == 2 and r["top_k"][0]["digit"] == r["digit"]
        assert r["top_k"][0]["probability"] >= r["top_k"][1]["probability"]
        assert len(r["probs"]) == 10 and abs(sum(r["probs"]) - 1) < 1e-4

    assert main(["predict", str(folder / "*.png"), "--model", model_dir, "--csv"]) == 0
    table = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert table[0] == ["source", "digit", "confidence", "status", "top_k", "error"]
    assert [row[1] for row in table[1:]] == [labels[n] for n in ("a.png", "b.png", "c.png")]
    assert all(0 < float(row[2]) <= 1 and row[3] == "ok" for row in table[1:])


def test_predict_from_stdin_and_saves_what_the_model_saw(singles, model_dir, classifier, tmp_path,
                                                         capsys, monkeypatch):
    folder, labels = singles
    data = (folder / "b.png").read_bytes()
    monkeypatch.setattr(sys, "stdin", type("Stdin", (), {"buffer": io.BytesIO(data)})())
    out = tmp_path / "seen"
    assert main(["predict", "-", "--model", model_dir, "--json", "--save-preprocessed", str(out)]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["source"] == "-" and row["digit"] == labels["b.png"]
    seen = np.asarray(Image.open(out / "stdin.png"))
    assert seen.shape == (28, 28) and seen.dtype == np.uint8 and seen.max() > 200
    # What was saved is exactly what the network was given (with its deslanted view).
    probs = read_digits(classifier, seen[None])[0]
    assert np.allclose(probs, row["probs"], atol=1e-5)


def test_one_bad_file_among_good_ones(singles, model_dir, tmp_path, capsys):
    folder, labels = singles
    (tmp_path / "notes.png").write_text("this is not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    good = folder / "a.png"
    code = main(["predict", str(tmp_path / "notes.png"), str(good), str(tmp_path / "empty.png"),
                 str(tmp_path / "missing.png"), "--model", model_dir])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out.strip().splitlines() == [line for line in captured.out.strip().splitlines()
                                                 if line.startswith(str(good))]
    assert f": {labels['a.png']} (" in captured.out
    errors = captured.err.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith("digitnet: error: ") for e in errors)
    assert "notes.png" in errors[0] and "empty.png" in errors[1] and "missing.png" in errors[2]
    assert "Traceback" not in captured.err


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bad_files() -> dict[str, bytes]:
    """Files people really send by mistake, and hostile ones."""
    good = png(Image.new("L", (40, 40), 255))
    bomb = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0))
            + _png_chunk(b"IDAT", zlib.compress(b"")) + _png_chunk(b"IEND", b""))
    zero = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 0, 8, 0, 0, 0, 0))
            + _png_chunk(b"IEND", b""))
    frames = [Image.new("L", (40, 40), v) for v in (0, 255)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return {"text.png": b"hello", "empty.jpg": b"", "truncated.png": good[: len(good) // 2],
            "bomb.png": bomb, "zero.png": zero, "animated.gif": gif.getvalue()}


@pytest.mark.parametrize("name", list(bad_files()))
def test_bad_input_gives_a_clear_error(name, model_dir, tmp_path, capsys):
    path = tmp_path / name
    path.write_bytes(bad_files()[name])
    for command in ("predict", "read"):
        assert main([command, str(path), "--model", model_dir]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"digitnet: error: {path}: ") and err.count("\n") == 1, err
        assert err.count(name) == 1, err  # the file named once, then what is wrong with it


def test_a_small_faint_pencil_photo_is_read(classifier):
    """A faint pencil 7 photographed small (36x42 and 45x52 pixels) on grainy paper: read at that
    size, the grain came out as strokes and 2 of these 20 were 7s; enlarged to photo size first,
    the photo steps smooth the grain away."""
    read = []
    for size, ink, noise in (((36, 42), 170, 12), ((45, 52), 165, 18)):
        for seed in range(10):
            grain = np.random.default_rng(seed).normal(0, noise, size[::-1])
            photo = np.asarray(seven(ink=ink, paper=215, width=8).resize(size, Image.LANCZOS), np.float32) + grain
            read.append(predict_image(Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)), classifier)["digit"])
    assert read.count("7") >= 18, read


def test_blank_image_says_no_digit_found(model_dir, classifier, tmp_path, capsys):
    blank = Image.new("RGB", (300, 200), (236, 232, 220))
    assert predict_image(blank, classifier)["status"] == "no digit found"
    assert read_number(blank, classifier)["text"] == ""
    blank.save(tmp_path / "blank.png")
    assert main(["predict", str(tmp_path / "blank.png"), "--model", model_dir]) == 0
    assert capsys.readouterr().out.strip().endswith("blank.png: no digit found")


def test_min_confidence_answers_unknown(mnist_test, sure, classifier, model_dir, tmp_path, capsys):
    x, _ = mnist_test
    # A 3 written over an 8: no honest model is sure of that.
    blend = np.maximum(x[sure[3][0]], x[sure[8][0]]).astype(np.float32) / 255
    paper(blend).save(tmp_path / "blend.png")
    assert main(["predict", str(tmp_path / "blend.png"), "--model", model_dir, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["status"] == "ok" and row["confidence"] < 1.0
    threshold = (row["confidence"] + 1) / 2
    assert main(["predict", str(tmp_path / "blend.png"), "--model", model_dir, "--json",
                 "--min-confidence", str(threshold)]) == 0
    (row2,) = json.loads(capsys.readouterr().out)
    assert row2["digit"] == "unknown" and row2["status"] == "unknown"
    assert row2["best_guess"] == row["digit"]
    assert main(["predict", str(tmp_path / "blend.png"), "--model", model_dir,
                 "--min-confidence", "1.5"]) == 1
    assert "between 0 and 1" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Segmentation


def test_segment_digits_finds_each_digit_in_order(mnist_test):
    x, y = mnist_test
    idx = [0, 1, 2, 3, 4, 5]
    ink = np.pad(strip([digit_ink(x, i) for i in idx], gap=5), 8)
    boxes = segment_digits(ink)
    assert len(boxes) == len(idx)
    lefts = [b[0] for b in boxes]
    assert lefts == sorted(lefts)
    # Each box lies within the columns where its digit was placed.
    pos = 8
    for box, i in zip(boxes, idx):
        w = digit_ink(x, i).shape[1]
        assert pos - 1 <= box[0] and box[2] <= pos + w + 1
        pos += w + 5


def _wide(x, labels_or_sure, count=2):
    """Digits at least 0.75 times as wide as tall: two of them touching are clearly two."""
    out = []
    for i in labels_or_sure:
        d = x[i] > 25
        rows, cols = np.flatnonzero(d.any(1)), np.flatnonzero(d.any(0))
        if (cols[-1] - cols[0] + 1) >= 0.75 * (rows[-1] - rows[0] + 1):
            out.append(i)
        if len(out) == count:
            return out
    raise AssertionError("no wide digits")


def test_touching_digits_are_split(mnist_test, sure):
    x, y = mnist_test
    from scipy import ndimage

    # A wide 0 and a wide 8 whose strokes really touch: one piece of ink.
    pairs = ((a, b) for a in _wide(x, sure[0], 5) for b in _wide(x, sure[8], 5))
    ink = next(ink for a, b in pairs
               if ndimage.label((ink := np.pad(strip([digit_ink(x, a), digit_ink(x, b)], gap=-1), 8)) > 0.25,
                                structure=np.ones((3, 3)))[1] == 1)
    boxes = segment_digits(ink)
    assert len(boxes) == 2 and boxes[0][2] <= boxes[1][0] + 2


def test_broken_stroke_and_detached_piece_are_merged(mnist_test, sure):
    x, y = mnist_test
    d = x[sure[7][0]].astype(np.float32) / 255
    broken = d.copy()
    rows = np.flatnonzero(d.max(1) > 0.1)
    cut = (rows[0] + rows[-1]) // 2
    broken[cut - 1:cut + 1] = 0  # a pen lifted half-way down the 7
    from scipy import ndimage

    assert ndimage.label(broken > 0.25, structure=np.ones((3, 3)))[1] >= 2
    ink = np.pad(np.concatenate([broken, np.zeros((28, 6)), digit_ink(x, sure[1][0])], 1), 8)
    assert len(segment_digits(ink)) == 2
    # A dot-like piece right beside a digit joins it; a tiny speck far away is dust.
    ink = np.pad(digit_ink(x, sure[2][0]), ((8, 8), (8, 40)))
    right = np.flatnonzero(ink.max(0) > 0.25)[-1]
    ink[20:23, right + 2:right + 5] = 1.0
    ink[5, -5] = 1.0
    assert len(segment_digits(ink)) == 1
    assert segment_digits(np.zeros((30, 30), np.float32)) == []


def test_read_number_on_a_photo_of_a_written_number(mnist_test, sure, classifier, model_dir, tmp_path,
                                                    capsys):
    x, y = mnist_test
    digits = [4, 0, 7, 1, 9]
    idx = [sure[d][1] for d in digits]
    image = paper(strip([digit_ink(x, i) for i in idx], gap=4))
    result = read_number(image, classifier)
    assert result["text"] == "40719"
    assert [d["digit"] for d in result["digits"]] == ["4", "0", "7", "1", "9"]
    for d in result["digits"]:
        left, top, right, bottom = d["box"]
        assert 0 <= left < right <= image.width and 0 <= top < bottom <= image.height
        assert len(d["probs"]) == 10 and 0 < d["confidence"] <= 1
    image.save(tmp_path / "number.png")
    out = tmp_path / "boxes.png"
    assert main(["read", str(tmp_path / "number.png"), "--model", model_dir, "--json",
                 "--annotate", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["text"] == "40719"
    assert Image.open(out).size == image.size
    assert main(["read", str(tmp_path / "number.png"), "--model", model_dir]) == 0
    assert capsys.readouterr().out.startswith(f"{tmp_path / 'number.png'}: 40719  (5 digits:")


def test_read_number_splits_touching_digits_with_the_classifier(mnist_test, sure, classifier):
    x, y = mnist_test
    a, b = _wide(x, sure[2], 1)[0], _wide(x, sure[5], 1)[0]
    image = paper(np.pad(strip([digit_ink(x, a), digit_ink(x, b), digit_ink(x, sure[3][0])], gap=-1), 2))
    assert read_number(image, classifier)["text"] == "253"


def test_a_zero_broken_down_its_length_reads_as_one_digit(classifier):
    # A 0 drawn as two arcs with gaps at top and bottom is two narrow pieces side by side; read one
    # by one they are "1" "1" (the answer before rejoin), read together a clear 0.
    from PIL import ImageDraw

    im = Image.new("L", (260, 140), 235)
    draw = ImageDraw.Draw(im)
    draw.arc([40, 20, 110, 120], 100, 260, fill=30, width=8)
    draw.arc([40, 20, 110, 120], 280, 80, fill=30, width=8)
    draw.line([(150, 25), (215, 27), (175, 118)], fill=30, width=8, joint="curve")  # a 7
    assert read_number(im, classifier)["text"] == "07"


def test_cuts_are_scored_on_the_uncalibrated_softmax():
    from digitnet.read import uncalibrated

    logits = np.random.default_rng(0).normal(0, 4, (50, 10))

    def softmax(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    for t in (0.5, 1.0, 2.0):
        calibrated = softmax(logits / t).astype(np.float32)
        assert np.allclose(uncalibrated(calibrated, t), softmax(logits), atol=1e-5)
    assert not np.allclose(softmax(logits / 0.5), softmax(logits), atol=1e-3)  # the test can fail


def slant(x: np.ndarray) -> float:
    """The ink's second-moment slant (x shift per row) of one 28x28 image."""
    ys, xs = np.mgrid[:28, :28]
    w = x.astype(float) / x.sum()
    cy, cx = (w * ys).sum(), (w * xs).sum()
    return float((w * (ys - cy) * (xs - cx)).sum() / (w * (ys - cy) ** 2).sum())


def test_deslant_takes_the_slant_out_and_recentres(mnist_test):
    from scipy import ndimage

    from digitnet.preprocess import deslant

    x, _ = mnist_test
    sheared = []
    for i, shear in ((0, 0.4), (1, -0.4), (2, -0.3)):
        sheared.append(ndimage.affine_transform(x[i].astype(float), [[1, 0], [-shear, 1]],
                                                offset=(0, shear * 14), order=1).clip(0, 255).astype(np.uint8))
    sheared = np.stack(sheared)
    upright = deslant(sheared)
    assert upright.shape == sheared.shape and upright.dtype == np.uint8
    for before, after in zip(sheared, upright):
        assert abs(slant(before)) > 0.2 and abs(slant(after)) < 0.05
        cy, cx = ndimage.center_of_mass(after.astype(float))
        assert abs(cy - 14) < 0.6 and abs(cx - 14) < 0.6
        assert abs(int(after.sum()) - int(before.sum())) < 0.1 * before.sum()  # no ink lost at the edges
    blank = np.zeros((1, 28, 28), np.uint8)
    assert np.array_equal(deslant(blank), blank)


def test_read_digits_averages_the_two_views_logits(classifier, mnist_test):
    from digitnet.preprocess import deslant

    x, _ = mnist_test
    both = read_digits(classifier, x[:20])
    p, q = classifier.predict(x[:20]).astype(float), classifier.predict(deslant(x[:20])).astype(float)
    geometric = np.sqrt(p * q)
    assert np.allclose(both, geometric / geometric.sum(1, keepdims=True), atol=1e-5)
    assert np.allclose(both.sum(1), 1, atol=1e-5) and read_digits(classifier, x[:0]).shape == (0, 10)


def italic(ink: np.ndarray, lean: float) -> np.ndarray:
    """Ink (H, W) leaning right by `lean` (x per row upward), on a canvas wide enough to hold it."""
    from scipy import ndimage

    h, w = ink.shape
    pad = int(np.ceil(lean * h))
    # Output (y, x) shows input (y, x - lean * (h - 1 - y)): the top row moves right by lean * h.
    return ndimage.affine_transform(ink, [[1, 0], [lean, 1]], offset=(0, -lean * (h - 1)),
                                    output_shape=(h, w + pad), order=1).clip(0, 1)


def test_italic_numbers_are_cut_and_read_upright(mnist_test, sure, classifier):
    """Digits leaning as a fast hand or an italic font writes them overlap their neighbours' columns:
    no vertical cut parts them, and a wide slanted 8 reads better as two pieces than as itself. The
    number is set upright before it is cut; its boxes are given back in the slanted photo."""
    x, _ = mnist_test
    for k, text in enumerate(["2804", "5863", "9071", "8888", "4609"]):  # all but 5863 read wrong before
        ink = italic(strip([digit_ink(x, sure[int(d)][k]) for d in text], gap=0), 0.8)
        image = paper(np.pad(ink, 2))
        result = read_number(image, classifier)
        assert result["text"] == text
        lefts = [d["box"][0] for d in result["digits"]]
        assert lefts == sorted(lefts)
        for d in result["digits"]:
            left, top, right, bottom = d["box"]
            assert 0 <= left < right <= image.width and 0 <= top < bottom <= image.height
