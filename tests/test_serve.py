"""The HTTP API through an in-process client: every route, every error path, batching, and the limits."""
import asyncio
import base64
import io
import json
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from digitnet import serve  # noqa: E402
from digitnet.data import load_split  # noqa: E402
from digitnet.errors import DigitnetError  # noqa: E402
from digitnet.explain import feature_maps  # noqa: E402
from digitnet.images import load_image  # noqa: E402
from digitnet.read import digit_input, load_classifier, read_digits, read_number  # noqa: E402


@pytest.fixture(scope="module")
def classifier(tiny_run):
    return load_classifier(tiny_run.run_dir)


@pytest.fixture(scope="module")
def client(classifier):
    with TestClient(serve.create_app(classifier=classifier)) as c:
        yield c


@pytest.fixture(scope="module")
def digits():
    x, y = load_split("mnist", "test")
    return x[:40], y[:40]


def png(a: np.ndarray, scale: int = 8, dark_on_light: bool = True) -> bytes:
    """An MNIST digit as a PNG, enlarged and (by default) dark ink on white, like a scan or canvas."""
    im = Image.fromarray(255 - a if dark_on_light else a).resize((28 * scale, 28 * scale), Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def error_of(reply, status: int) -> str:
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert body["status"] == status and isinstance(body["error"], str) and body["error"]
    return body["error"]


# ---------------------------------------------------------------------------------------------
# Success paths


def test_predict_upload_matches_the_library(client, classifier, digits):
    data = png(digits[0][3])
    reply = client.post("/api/predict", files={"file": ("d.png", data, "image/png")})
    assert reply.status_code == 200, reply.text
    out = reply.json()
    x28 = digit_input(load_image(data))  # what `digitnet predict` would feed the network
    assert np.array_equal(np.array(out["image28"], dtype=np.uint8), x28)
    expected = read_digits(classifier, x28[None])[0]
    np.testing.assert_allclose(out["probs"], expected, atol=1e-5)
    assert len(out["probs"]) == 10 and abs(sum(out["probs"]) - 1) < 1e-4
    assert out["digit"] == out["best_guess"] == str(int(np.argmax(expected)))
    assert out["confidence"] == pytest.approx(float(expected.max()), abs=1e-6)
    assert out["unsure"] == (out["confidence"] < serve.UNSURE_BELOW)
    assert [t["digit"] for t in out["top_k"]][0] == out["digit"] and len(out["top_k"]) == 3
    assert "layers" not in out


def test_predict_json_base64_data_url_raw_body_and_polarity_agree(client, digits):
    a = digits[0][5]
    answers = [
        client.post("/api/predict", json={"image": base64.b64encode(png(a)).decode()}),
        client.post("/api/predict", json={"image": "data:image/png;base64," + base64.b64encode(png(a)).decode()}),
        client.post("/api/predict", content=png(a), headers={"content-type": "image/png"}),
        client.post("/api/predict", files={"file": ("w.png", png(a, dark_on_light=False), "image/png")}),
    ]
    for r in answers:
        assert r.status_code == 200, r.text
    first = answers[0].json()
    for r in answers[1:3]:
        assert r.json()["probs"] == first["probs"]
    # White ink on black gives the same 28x28 as dark on white: preprocessing handles both.
    assert np.abs(np.array(answers[3].json()["image28"]) - np.array(first["image28"])).max() <= 2


def test_predict_pixels_are_used_as_is(client, classifier, digits):
    x, _ = digits
    reply = client.post("/api/predict", json={"pixels": x[7].tolist()})
    assert reply.status_code == 200, reply.text
    out = reply.json()
    assert out["image28"] == x[7].tolist()
    np.testing.assert_allclose(out["probs"], read_digits(classifier, x[7:8])[0], atol=1e-5)


def test_min_confidence_gives_unknown_with_best_guess(client, digits):
    out = client.post("/api/predict?min_confidence=1.01", json={"pixels": digits[0][0].tolist()}).json()
    assert out["digit"] == "unknown" and out["status"] == "unknown" and out["best_guess"] in "0123456789"


def test_features_match_explain(client, classifier, digits):
    a = digits[0][2]
    reply = client.post("/api/predict?features=true", json={"pixels": a.tolist()})
    assert reply.status_code == 200, reply.text
    layers = reply.json()["layers"]
    expected = feature_maps(classifier.model, a)
    assert [layer["name"] for layer in layers] == [e["name"] for e in expected]
    assert [layer["shape"] for layer in layers] == [list(e["maps"].shape) for e in expected]
    for layer, e in zip(layers, expected):
        maps = np.frombuffer(base64.b64decode(layer["maps_f32"]), "<f4").reshape(layer["shape"])
        np.testing.assert_allclose(maps, e["maps"], atol=1e-5)


def test_read_whole_number(client, classifier, digits):
    x, _ = digits
    strip = np.concatenate([np.pad(x[i], ((6, 6), (4, 4))) for i in (1, 2, 3)], axis=1)  # three digits
    data = png(strip, scale=4)
    reply = client.post("/api/read", files={"file": ("n.png", data, "image/png")})
    assert reply.status_code == 200, reply.text
    out = reply.json()
    expected = read_number(load_image(data), classifier)
    assert out["text"] == expected["text"] and len(out["digits"]) == len(expected["digits"]) == 3
    for got, want in zip(out["digits"], expected["digits"]):
        assert got["box"] == list(want["box"]) and got["digit"] == want["digit"]
        assert len(got["probs"]) == 10


def test_model_health_page_static_and_docs(client, tiny_run):
    meta = json.loads((Path(tiny_run.run_dir) / "model.json").read_text())
    assert client.get("/api/model").json() == meta
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["images"] >= 0
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert '<canvas id="canvas"' in page.text
    for asset, kind in (("/static/draw.js", "javascript"), ("/static/style.css", "text/css")):
        r = client.get(asset)
        assert r.status_code == 200 and kind in r.headers["content-type"]
    assert "touch-action: none" in client.get("/static/style.css").text
    spec = client.get("/openapi.json").json()
    assert {"/api/predict", "/api/read", "/api/model", "/healthz"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/api/predict"]["post"]["requestBody"]["content"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text


def test_no_asset_comes_from_outside():
    """Every src/href/url() in the page's files points at this server (the machines have no internet)."""
    for path in sorted(serve.STATIC_DIR.iterdir()):
        text = path.read_text()
        refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url\(\s*["']?([^"')]+)""", text)
        for ref in (a or b for a, b in refs):
            assert ref.startswith(("/", "#", "data:")), f"{path.name}: external reference {ref!r}"
        for url in re.findall(r"https?://[^\s'\"<>)]+", text):
            assert url.startswith("http://127.0.0.1"), f"{path.name}: {url}"


def test_static_files_come_only_from_the_package(client, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a static/ folder in the cwd must not be served
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "evil.js").write_text("alert(1)")
    assert client.get("/static/evil.js").status_code == 404
    for probe in ("/static/../serve.py", "/static/%2e%2e/serve.py", "/static/..%2fserve.py"):
        assert client.get(probe).status_code == 404


def test_concurrent_requests_share_a_forward_pass(classifier, digits):
    """Requests that arrive together are answered from one batch, with the same numbers as alone."""
    x, _ = digits
    app = serve.create_app(classifier=classifier, window_s=0.05)

    async def run():
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                replies = await asyncio.gather(*[c.post("/api/predict", json={"pixels": x[i].tolist()})
                                                 for i in range(24)])
                return replies, (await c.get("/healthz")).json()

    replies, health = asyncio.run(run())
    expected = read_digits(classifier, x[:24])
    for r, e in zip(replies, expected):
        assert r.status_code == 200
        np.testing.assert_allclose(r.json()["probs"], e, atol=1e-5)
    assert health["images"] == 24 and health["batches"] < 24 and health["mean_batch"] > 1


# ---------------------------------------------------------------------------------------------
# Error paths: each a clear 4xx JSON reply, and the server keeps serving


def truncated_png(digits) -> bytes:
    return png(digits[0][0])[:200]


@pytest.mark.parametrize("case, status, words", [
    ("malformed json", 400, "malformed JSON"),
    ("json list", 400, "must be an object"),
    ("json without image", 400, "must be an object"),
    ("image not a string", 400, "base64 string"),
    ("bad base64", 400, "not valid base64"),
    ("pixels wrong shape", 400, "28x28"),
    ("pixels ragged", 400, "28 rows of 28"),
    ("pixels out of range", 400, "0 to 255"),
    ("pixels not numbers", 400, "28 rows of 28"),
    ("empty body", 400, "empty request body"),
    ("multipart without file", 400, "no file"),
    ("multipart without boundary", 400, "malformed multipart"),
    ("unsupported type", 415, "unsupported content type"),
    ("not an image", 422, "not an image"),
    ("truncated image", 422, "truncated"),
    ("blank image", 422, "no digit found"),
])
def test_bad_requests_get_clear_json_errors(client, digits, case, status, words):
    blank = io.BytesIO()
    Image.new("L", (200, 200), 255).save(blank, "PNG")
    ragged = [[0] * 28] * 27 + [[0] * 27]
    requests = {
        "malformed json": dict(content=b'{"image": ', headers={"content-type": "application/json"}),
        "json list": dict(json=[1, 2, 3]),
        "json without image": dict(json={"picture": "x"}),
        "image not a string": dict(json={"image": 12}),
        "bad base64": dict(json={"image": "not base64 at all!"}),
        "pixels wrong shape": dict(json={"pixels": [[0] * 28] * 27}),
        "pixels ragged": dict(json={"pixels": ragged}),
        "pixels out of range": dict(json={"pixels": [[300] * 28] * 28}),
        "pixels not numbers": dict(json={"pixels": [["a"] * 28] * 28}),
        "empty body": dict(content=b"", headers={"content-type": "application/json"}),
        "multipart without file": dict(data={"note": "hi"}, files={"other": (None, "x")}),
        "multipart without boundary": dict(content=b"--x\r\n", headers={"content-type": "multipart/form-data"}),
        "unsupported type": dict(content=b"hello", headers={"content-type": "text/plain"}),
        "not an image": dict(files={"file": ("a.png", b"this is text, not a PNG", "image/png")}),
        "truncated image": dict(files={"file": ("t.png", truncated_png(digits), "image/png")}),
        "blank image": dict(files={"file": ("b.png", blank.getvalue(), "image/png")}),
    }
    message = error_of(client.post("/api/predict", **requests[case]), status)
    assert words.lower() in message.lower(), message
    # The server keeps serving after every malformed request.
    assert client.post("/api/predict", json={"pixels": digits[0][0].tolist()}).status_code == 200


def test_body_limit_413_declared_and_streamed(classifier, digits):
    with TestClient(serve.create_app(classifier=classifier, max_body_bytes=50_000)) as c:
        big = b"\x00" * 60_000
        assert "limit" in error_of(c.post("/api/predict", content=big, headers={"content-type": "image/png"}), 413)

        def chunks():  # no Content-Length: the limit is enforced while the body streams in
            for _ in range(10):
                yield b"\x00" * 10_000

        assert "limit" in error_of(c.post("/api/predict", content=chunks(), headers={"content-type": "image/png"}), 413)
        assert c.post("/api/predict", files={"file": ("d.png", png(digits[0][0]), "image/png")}).status_code == 200


def test_pixel_limit_413_before_decoding(classifier):
    huge = io.BytesIO()
    Image.new("L", (400, 400), 255).save(huge, "PNG")  # 160,000 pixels, a few hundred bytes
    with TestClient(serve.create_app(classifier=classifier, max_pixels=100_000)) as c:
        assert "pixels" in error_of(c.post("/api/predict", content=huge.getvalue(),
                                           headers={"content-type": "image/png"}), 413)


def test_read_refuses_pixels_and_routes_give_json_404_405(client):
    assert "image" in error_of(client.post("/api/read", json={"pixels": [[0] * 28] * 28}), 400)
    error_of(client.get("/api/nothing"), 404)
    error_of(client.get("/api/predict"), 405)


def test_uploads_never_touch_the_file_system(client, digits, monkeypatch):
    """A 3 MB upload (over Starlette's 1 MB spool) is parsed in memory: no temporary file is made."""
    def no_files(*args, **kwargs):
        raise AssertionError("a request tried to create a temporary file")

    for name in ("TemporaryFile", "NamedTemporaryFile", "mkstemp"):  # what a spooled file rolls over to
        monkeypatch.setattr(tempfile, name, no_files, raising=False)
    rng = np.random.default_rng(0)
    big = np.asarray(Image.fromarray(255 - digits[0][0]).resize((1000, 1000)).convert("RGB"), dtype=np.int16)
    noisy = np.clip(big + rng.integers(-12, 13, big.shape), 0, 255).astype(np.uint8)  # defeats compression
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, "PNG")
    assert 1_100_000 < len(buf.getvalue()) < serve.MAX_BODY_BYTES
    reply = client.post("/api/predict", files={"file": ("big.png", buf.getvalue(), "image/png")})
    assert reply.status_code == 200, reply.text


# ---------------------------------------------------------------------------------------------
# Starting: the CLI and the worker factory


def test_serve_without_a_model_says_what_to_do(tmp_path, monkeypatch, capsys):
    from digitnet import read
    from digitnet.cli import main

    monkeypatch.setattr(read, "DEFAULT_MODEL", tmp_path / "missing")
    with pytest.raises(DigitnetError, match="--model"):
        serve.create_app()
    assert main(["serve", "--model", str(tmp_path / "nope"), "--port", "8123"]) == 1
    assert "not a run directory" in capsys.readouterr().err


def test_worker_factory_reads_the_model_from_the_environment(tiny_run, monkeypatch):
    monkeypatch.setenv(serve.MODEL_ENV, str(tiny_run.run_dir))
    app = serve.app_from_env()
    with TestClient(app) as c:
        assert c.get("/api/model").json()["weights_sha256"] == app.state.classifier.meta["weights_sha256"]


def test_onnx_runtime_serves_the_same_answers():
    """--runtime onnx: batches run under ONNX Runtime (built in memory, nothing written) and agree."""
    pytest.importorskip("onnxruntime")
    from digitnet.read import DEFAULT_MODEL

    before = sorted(p.name for p in DEFAULT_MODEL.iterdir())
    x, y = load_split("mnist", "test")
    answers = {}
    for runtime in ("torch", "onnx"):
        with TestClient(serve.create_app(runtime=runtime)) as client:
            assert client.get("/healthz").json()["runtime"] == runtime
            answers[runtime] = [client.post("/api/predict", json={"pixels": a.tolist()}).json() for a in x[:20]]
    assert sorted(p.name for p in DEFAULT_MODEL.iterdir()) == before  # no model.onnx written
    for t, o, label in zip(answers["torch"], answers["onnx"], y[:20]):
        assert t["digit"] == o["digit"] and abs(t["confidence"] - o["confidence"]) < 1e-4
    assert sum(o["digit"] == str(label) for o, label in zip(answers["onnx"], y[:20])) >= 19


def test_unknown_runtime_is_refused():
    with pytest.raises(DigitnetError, match="--runtime"):
        serve.create_app(runtime="tensorrt")
