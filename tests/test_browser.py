"""The draw-a-digit page in a real browser: Debian's Chromium, headless, driven by Playwright.

A `digitnet serve` process listens on a free loopback port; the test draws 1, 0 and 7 with mouse
strokes, checks the digit the page shows, uploads and drops an image file, and saves screenshots.
"""
import base64
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                       "(scripts/setup.sh --test installs it)"),
]

# Hand-scripted strokes in canvas units (0-1, y down), drawn as a person would with a mouse. Even the
# conftest's tiny run (one epoch on 2,000 images) reads them with over 95% confidence.
t = np.linspace(0, 2 * np.pi, 48)
STROKES = {
    "1": [[(0.52, 0.18), (0.50, 0.50), (0.48, 0.82)]],
    "0": [list(zip(0.5 + 0.2 * np.sin(t), 0.5 - 0.3 * np.cos(t)))],
    "7": [[(0.28, 0.22), (0.72, 0.22), (0.56, 0.50), (0.44, 0.82)]],
}


@pytest.fixture(scope="module")
def server(tiny_run):
    """`digitnet serve` on a free 127.0.0.1 port, stopped after the module's tests."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "digitnet", "serve", "--model", str(tiny_run.run_dir),
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"digitnet serve did not start: {proc.stdout.read()}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1100, "height": 1000})
    pg = context.new_page()
    problems, outside = [], []
    # Chromium logs every 4xx reply as a console error; the page shows those itself.
    expected = "Failed to load resource: the server responded with a status of 4"
    pg.on("console", lambda m: problems.append(m.text) if m.type == "error" and
          not m.text.startswith(expected) else None)
    pg.on("pageerror", lambda e: problems.append(str(e)))
    pg.on("request", lambda r: None if r.url.startswith((server, "data:")) else outside.append(r.url))
    pg.goto(server)
    yield pg
    context.close()
    assert not problems, f"browser console errors: {problems}"
    assert not outside, f"the page fetched from outside the server: {outside}"


def updates(pg) -> int:
    return int(pg.get_attribute("#answer", "data-updates") or 0)


def wait_for_answer(pg, before: int) -> None:
    """Wait until the page has shown an answer newer than `before` and has nothing in flight."""
    pg.wait_for_function(f"""() => {{
        const a = document.getElementById('answer');
        return Number(a.dataset.updates || 0) > {before} && a.dataset.state !== 'busy'; }}""", timeout=60000)


def draw(pg, strokes) -> None:
    box = pg.locator("#canvas").bounding_box()
    for line in strokes:
        points = [(box["x"] + u * box["width"], box["y"] + v * box["height"]) for u, v in line]
        pg.mouse.move(*points[0])
        pg.mouse.down()
        for x, y in points[1:]:
            pg.mouse.move(x, y, steps=6)
        pg.mouse.up()


def shown(pg) -> dict:
    return pg.evaluate("""() => ({
        digit: document.getElementById('digit').textContent,
        message: document.getElementById('message').textContent,
        state: document.getElementById('answer').dataset.state,
        bars: [...document.querySelectorAll('#bars .fill')].map(e => parseFloat(e.style.width) || 0),
        seenInk: (() => { const d = document.getElementById('seen').getContext('2d').getImageData(0, 0, 28, 28).data;
                          let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i]; return s; })(),
        mapTiles: document.querySelectorAll('#layers canvas').length,
    })""")


def test_draw_one_zero_seven(page, tmp_path):
    assert shown(page)["message"] == "draw a digit"  # a blank canvas asks for a digit
    for expected, strokes in STROKES.items():
        page.click("#clear")
        assert shown(page)["message"] == "draw a digit"
        before = updates(page)
        draw(page, strokes)
        wait_for_answer(page, before)
        got = shown(page)
        page.screenshot(path=str(tmp_path / f"drawn-{expected}.png"), full_page=True)
        assert got["digit"] == expected, f"drew {expected}, page shows {got}"
        assert got["state"] in ("done", "unsure") and len(got["bars"]) == 10
        assert got["bars"].index(max(got["bars"])) == int(expected)  # the longest bar is the shown digit
        assert got["seenInk"] > 0  # the 28x28 the model saw is drawn
        assert got["mapTiles"] == 32 + 32 + 64 + 64 + 128  # a tile per feature map of each conv/pool layer


def mnist_png(index: int) -> tuple[bytes, int]:
    from digitnet.data import load_split

    x, y = load_split("mnist", "test")
    buf = io.BytesIO()
    Image.fromarray(255 - x[index]).resize((280, 280), Image.BILINEAR).save(buf, "PNG")  # dark on white
    return buf.getvalue(), int(y[index])


def test_upload_and_drop_show_the_servers_answer(page, server, tmp_path):
    data, _ = mnist_png(0)
    api = httpx.post(f"{server}/api/predict", files={"file": ("d.png", data, "image/png")}, timeout=60).json()
    path = tmp_path / "digit.png"
    path.write_bytes(data)
    before = updates(page)
    page.set_input_files("#file", str(path))
    wait_for_answer(page, before)
    page.screenshot(path=str(tmp_path / "uploaded.png"), full_page=True)
    assert shown(page)["digit"] == api["best_guess"]

    page.click("#clear")
    other, _ = mnist_png(1)
    api = httpx.post(f"{server}/api/predict", files={"file": ("d.png", other, "image/png")}, timeout=60).json()
    before = updates(page)
    page.evaluate("""(b64) => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], 'dropped.png', {type: 'image/png'}));
        document.getElementById('dropzone').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true}));
    }""", base64.b64encode(other).decode())
    wait_for_answer(page, before)
    assert shown(page)["digit"] == api["best_guess"]


def test_bad_upload_shows_the_error(page, tmp_path):
    path = tmp_path / "notes.png"
    path.write_bytes(b"this is not an image")
    before = updates(page)
    page.set_input_files("#file", str(path))
    wait_for_answer(page, before)
    got = shown(page)
    assert got["state"] == "error" and "not an image" in got["message"]


def test_phone_layout_draws_without_scrolling(browser, server, tmp_path):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
                                  device_scale_factor=2)
    pg = context.new_page()
    pg.goto(server)
    info = pg.evaluate("""() => {
        const c = document.getElementById('canvas');
        const r = c.getBoundingClientRect();
        return {touch: getComputedStyle(c).touchAction, left: r.left, right: r.right,
                pageWidth: document.documentElement.scrollWidth, viewport: window.innerWidth};
    }""")
    assert info["touch"] == "none"  # a finger on the canvas draws instead of scrolling
    assert 0 <= info["left"] and info["right"] <= info["viewport"] and info["pageWidth"] <= info["viewport"]
    before = updates(pg)
    draw(pg, STROKES["7"])
    wait_for_answer(pg, before)
    assert pg.evaluate("window.scrollY") == 0
    pg.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
    shots = os.environ.get("DIGITNET_SCREENSHOTS")
    if shots:  # keep the pictures for a person to look at
        for png in tmp_path.glob("*.png"):
            Path(shots).mkdir(parents=True, exist_ok=True)
            (Path(shots) / png.name).write_bytes(png.read_bytes())
    context.close()
