"""The web app and HTTP API: FastAPI routes over read.py, with concurrent requests batched together.

    digitnet serve [--model RUN] [--host 127.0.0.1] [--port 8000] [--workers N]

Routes: GET / (the draw-a-digit page), POST /api/predict, POST /api/read, GET /api/model, GET /healthz,
GET /docs (offline API reference) and GET /openapi.json. The server does no image maths: images go
through preprocess.py, digits through read.py, feature maps through explain.py. Requests never write to
the file system (uploads are parsed in memory) and static files come only from the package's static/.

Inference runs off the event loop on one worker thread. Single-digit predictions queue up in a
`Batcher`, which hands every image waiting at that moment to one forward pass: under load, 32
concurrent requests cost about one batch of 32 instead of 32 separate passes.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import gc
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from digitnet.errors import DigitnetError
from digitnet.images import load_image
from digitnet.read import read_digits

STATIC_DIR = Path(__file__).resolve().parent / "static"  # beside this file, never the cwd
MAX_BODY_BYTES = 4 * 1024 * 1024  # a phone photo of a digit fits; anything larger is refused with 413
MAX_PIXELS = 16_000_000  # about 4000 x 4000; checked from the header before any pixel is decoded
UNSURE_BELOW = 0.6  # below this top probability the page and the API say the answer is unsure
MAX_BATCH = 64  # images per forward pass; the seed net runs 64 in a few milliseconds on one core
BATCH_WINDOW_S = 0.001  # after the first image, wait this long for companions before running
MODEL_ENV = "DIGITNET_SERVE_MODEL"  # how `--workers N` passes --model to each worker process
WORKERS_ENV = "DIGITNET_SERVE_WORKERS"  # ... and N, so that the workers share the cores out
RUNTIME_ENV = "DIGITNET_SERVE_RUNTIME"  # ... and --runtime
RUNTIMES = ("auto", "onnx", "torch")


class RequestError(DigitnetError):
    """A malformed request: the one exception handler answers with `status` instead of 422."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Batcher:
    """Collects single images from concurrent requests and classifies them in one forward pass.

    All model work (these batches, feature maps, whole-number reading) runs on one worker thread, so
    the event loop stays free and PyTorch never sees two forward passes competing for the cores.
    """

    def __init__(self, classifier, max_batch: int = MAX_BATCH, window_s: float = BATCH_WINDOW_S):
        self.classifier, self.max_batch, self.window_s = classifier, max_batch, window_s
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="digitnet-inference")
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None
        self.batches = self.images = 0

    def start(self) -> None:
        """Start the collecting task on the running event loop (again, if the loop changed)."""
        loop = asyncio.get_running_loop()
        if self.task is None or self.task.done() or self.task.get_loop() is not loop:
            self.queue = asyncio.Queue()
            self.task = loop.create_task(self._collect())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None

    async def predict(self, x28: np.ndarray) -> np.ndarray:
        """Probabilities (classes,) for one uint8 (28, 28) image, white ink on black."""
        self.start()
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((x28, future))
        return await future

    async def run(self, fn, *args):
        """Run other model work (feature maps, reading numbers) on the inference thread."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _collect(self) -> None:
        while True:
            items = [await self.queue.get()]
            # A short sleep rather than wait_for(queue.get()): on Python 3.11 a cancelled get can drop an item.
            if self.queue.empty() and self.window_s > 0:
                await asyncio.sleep(self.window_s)
            while len(items) < self.max_batch and not self.queue.empty():
                items.append(self.queue.get_nowait())
            items = [(x, f) for x, f in items if not f.done()]  # the client went away
            if not items:
                continue
            batch = np.stack([x for x, _ in items])  # (B, 28, 28) uint8
            try:
                probs = await self.run(read_digits, self.classifier, batch)
            except Exception as e:  # hand the failure to every waiting request; the loop lives on
                for _, f in items:
                    if not f.done():
                        f.set_exception(e)
                continue
            self.batches += 1
            self.images += len(items)
            for (_, f), p in zip(items, probs):
                if not f.done():
                    f.set_result(p)


# ---------------------------------------------------------------------------------------------
# Reading a request body into an image or a 28x28 array (no file system, no image maths here).


async def _body(request: Request) -> bytes:
    body = await request.body()
    if not body:
        raise RequestError("empty request body: send an image file (multipart field 'file') or JSON "
                           "{\"image\": \"<base64>\"} or {\"pixels\": [[...28 values...], ...28 rows]}")
    return body


async def _upload(request: Request, body: bytes, max_bytes: int) -> bytes:
    """The bytes of the one file in a multipart/form-data body, parsed in memory."""

    async def stream():
        yield body

    parser = MultiPartParser(request.headers, stream(), max_files=1, max_fields=8)
    parser.spool_max_size = max_bytes + 1  # keep every upload in memory: requests never write files
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise RequestError(f"malformed multipart upload: {e}") from None
    files = [v for _, v in form.multi_items() if not isinstance(v, str)]
    if not files:
        raise RequestError("multipart upload has no file; send the image in a field named 'file'")
    return await files[0].read()


def _decode_json(body: bytes) -> dict:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise RequestError(f"malformed JSON: {e}") from None
    if not isinstance(payload, dict) or not ({"image", "pixels"} & payload.keys()):
        raise RequestError("JSON body must be an object with \"image\" (base64 image file) or "
                           "\"pixels\" (28x28 array of 0-255, white ink on black)")
    return payload


def _decode_base64(text) -> bytes:
    if not isinstance(text, str):
        raise RequestError(f"\"image\" must be a base64 string, got {type(text).__name__}")
    if text.startswith("data:"):  # a data URL, as canvas.toDataURL() gives
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("\"image\" is not valid base64") from None


def pixels_to_array(pixels) -> np.ndarray:
    """A JSON 28x28 list of 0-255 numbers -> uint8 (28, 28); it is used as is, like an MNIST image."""
    try:
        x = np.asarray(pixels, dtype=np.float64)
    except (TypeError, ValueError):
        raise RequestError("\"pixels\" must be 28 rows of 28 numbers") from None
    if x.shape != (28, 28):
        raise RequestError(f"\"pixels\" must be 28x28, got shape {list(x.shape)}")
    if not np.all(np.isfinite(x)) or x.min() < 0 or x.max() > 255:
        raise RequestError("\"pixels\" values must be numbers from 0 to 255 (white ink on black)")
    return np.rint(x).astype(np.uint8)


def image_to_mnist(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Image file bytes -> uint8 (28, 28), white ink on black, as `digitnet predict` prepares it."""
    from digitnet.read import NO_DIGIT, digit_input

    x28 = digit_input(load_image(data, max_pixels))  # over the limit: 413, from the header
    if x28 is None:
        raise DigitnetError(f"{NO_DIGIT}: the image is blank or holds only specks; draw or send a digit")
    return x28


async def read_request(request: Request, max_bytes: int, max_pixels: int, allow_pixels: bool = True):
    """('x28', array) or ('image', bytes) from a multipart upload, JSON base64 image or JSON pixels."""
    body = await _body(request)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        return "image", await _upload(request, body, max_bytes)
    if kind in ("application/json", ""):
        payload = _decode_json(body)
        if "pixels" in payload:
            if not allow_pixels:
                raise RequestError("this route reads whole numbers from an image; send \"image\", "
                                   "not \"pixels\"")
            return "x28", pixels_to_array(payload["pixels"])
        return "image", _decode_base64(payload["image"])
    if kind.startswith("image/") or kind == "application/octet-stream":
        return "image", body  # raw image bytes, e.g. curl --data-binary @digit.png
    raise RequestError(f"unsupported content type {kind!r}; send multipart/form-data, application/json "
                       f"or an image/* body", status=415)


# ---------------------------------------------------------------------------------------------
# Responses


def prediction(probs: np.ndarray, x28: np.ndarray, class_names: list[str], min_confidence: float) -> dict:
    """`digitnet predict --json`'s answer (digit, confidence, top_k, probs) plus unsure and the 28x28."""
    from digitnet.read import describe

    result = describe(probs, class_names, top_k=3, min_confidence=min_confidence)
    result["unsure"] = result["confidence"] < UNSURE_BELOW
    result["image28"] = x28  # (28, 28) 0-255, white ink on black: what the network saw
    return result


def encode_maps(layers: list[dict]) -> list[dict]:
    """explain.feature_maps output -> JSON: each layer's float32 (C, H, W) maps as little-endian base64."""
    return [{"name": layer["name"], "type": layer["type"], "shape": layer["shape"],
             "maps_f32": base64.b64encode(np.ascontiguousarray(layer["maps"], "<f4").tobytes()).decode()}
            for layer in layers]


class FastJSON(JSONResponse):
    """JSON through orjson: several times faster than json.dumps, and it writes NumPy arrays itself."""

    def render(self, content) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


class BodyLimit:
    """ASGI middleware: a body over max_bytes gets 413 (by Content-Length at once, else while reading)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.max_bytes:
            reply = JSONResponse({"error": f"request body over the {self.max_bytes:,}-byte limit",
                                  "status": 413}, status_code=413)
            return await reply(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:  # chunked uploads have no Content-Length to check up front
                raise RequestError(f"request body over the {self.max_bytes:,}-byte limit", status=413)
            return message

        await self.app(scope, limited_receive, send)


# Request bodies both /api/predict and /api/read accept, for the OpenAPI document.
IMAGE_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "file": {"type": "string", "format": "binary", "description": "PNG, JPEG, ... of a digit"}}}},
    "application/json": {"schema": {"type": "object", "properties": {
        "image": {"type": "string", "description": "base64 image file (a data: URL is fine)"},
        "pixels": {"type": "array", "items": {"type": "array", "items": {"type": "number"}},
                   "description": "28x28 values 0-255, white ink on black, used as is (predict only)"}}}},
    "image/png": {"schema": {"type": "string", "format": "binary"}}}}}


def batch_classifier(classifier, model_dir: str | Path | None, runtime: str, threads: int = 0):
    """What runs the batched single-digit predictions: ONNX Runtime or the PyTorch classifier itself.

    ONNX Runtime runs this network's small batches about 3x faster than PyTorch eager (batch 16:
    0.5 ms against 1.7 ms on 2 cores). The ONNX model is built in memory from the run and checked
    against PyTorch (onnx_bytes), so serving writes nothing. Everything else (feature maps, whole
    numbers) keeps using PyTorch. "auto" is ONNX Runtime when it is installed, else PyTorch.
    """
    if runtime not in RUNTIMES:
        raise DigitnetError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "torch":
        return classifier
    from digitnet.read import DEFAULT_MODEL

    try:
        from digitnet.export import OnnxClassifier, onnx_bytes

        run_dir = Path(model_dir) if model_dir else DEFAULT_MODEL
        return OnnxClassifier(run_dir, threads, model=onnx_bytes(run_dir)[0])
    except DigitnetError as e:
        if runtime == "onnx":
            raise
        print(f"digitnet: serving with PyTorch ({e})", flush=True)
        return classifier


def create_app(model_dir: str | Path | None = None, classifier=None, max_body_bytes: int = MAX_BODY_BYTES,
               max_pixels: int = MAX_PIXELS, window_s: float = BATCH_WINDOW_S, runtime: str = "torch",
               threads: int = 0) -> FastAPI:
    """The FastAPI app serving a run directory (default: the shipped model) or a loaded Classifier.

    runtime (auto, onnx, torch) picks what runs the batched predictions; see batch_classifier.
    """
    from digitnet.read import load_classifier

    classifier = classifier or load_classifier(model_dir)
    batcher = Batcher(batch_classifier(classifier, model_dir, runtime, threads), window_s=window_s)

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        # Move everything loaded so far (torch, the model, FastAPI) out of the garbage collector's
        # sight: a full collection over it stalls every request in flight for about 0.1 s.
        gc.collect()
        gc.freeze()
        yield
        await batcher.stop()
        batcher.executor.shutdown(wait=False)

    app = FastAPI(title="digitnet", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Handwritten-digit recognition. Errors are JSON: {\"error\": ..., \"status\": ...}.")
    app.state.batcher, app.state.classifier = batcher, classifier
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(DigitnetError)
    async def digitnet_error(request: Request, exc: DigitnetError):
        status = getattr(exc, "status", 422)  # 422: a well-formed request whose image cannot be read
        return JSONResponse({"error": str(exc), "status": status}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail), "status": exc.status_code}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return FileResponse(STATIC_DIR / "docs.html")  # renders /openapi.json with no CDN assets

    @app.post("/api/predict", openapi_extra=IMAGE_BODY)
    async def predict(request: Request, features: bool = False, min_confidence: float = 0.0):
        """One digit: digit, confidence, top_k, probs (all classes), unsure, image28 (the 28x28 the
        network saw). Below min_confidence digit is "unknown" (best_guess keeps the guess), as
        `digitnet predict`. With features=true also each conv/pool layer's maps (float32 (C, H, W), base64)."""
        kind, value = await read_request(request, max_body_bytes, max_pixels)
        x28 = value if kind == "x28" else await run_in_threadpool(image_to_mnist, value, max_pixels)
        probs = await batcher.predict(x28)
        result = prediction(probs, x28, classifier.class_names, min_confidence)
        if features:
            from digitnet.explain import feature_maps

            result["layers"] = encode_maps(await batcher.run(feature_maps, classifier.model, x28))
        return FastJSON(result)

    @app.post("/api/read", openapi_extra=IMAGE_BODY)
    async def read(request: Request):
        """A whole number written in one image: text plus each digit's box, digit and confidence."""
        from digitnet.read import read_number

        _, data = await read_request(request, max_body_bytes, max_pixels, allow_pixels=False)
        image = await run_in_threadpool(load_image, data, max_pixels)
        return FastJSON(await batcher.run(read_number, image, classifier))

    @app.get("/api/model")
    async def model_info():
        """The loaded model's model.json: architecture, class names, metrics, versions."""
        return classifier.meta

    @app.get("/healthz")
    async def healthz():
        """Liveness, what runs the batches (onnx or torch), and how many batches and images it has run."""
        return {"status": "ok", "runtime": "torch" if batcher.classifier is classifier else "onnx",
                "batches": batcher.batches, "images": batcher.images,
                "mean_batch": round(batcher.images / batcher.batches, 2) if batcher.batches else 0.0}

    return app


def _version() -> str:
    from digitnet import __version__

    return __version__


def app_from_env() -> FastAPI:
    """App factory for uvicorn workers: the model comes from $DIGITNET_SERVE_MODEL (empty: default)."""
    import torch

    # N workers each running torch on every core would fight over them; give each its share.
    workers = max(1, int(os.environ.get(WORKERS_ENV) or 1))
    threads = max(1, (os.cpu_count() or 1) // workers)
    torch.set_num_threads(threads)
    return create_app(os.environ.get(MODEL_ENV) or None, runtime=os.environ.get(RUNTIME_ENV) or "auto",
                      threads=threads)


def serve(model_dir: str | Path | None = None, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          runtime: str = "auto", log_level: str = "warning") -> None:
    """Run the app under uvicorn; with workers > 1 each process loads the model and batches on its own."""
    import uvicorn

    from digitnet.read import load_classifier

    classifier = load_classifier(model_dir)  # fail here, with a clear message, not inside a worker
    name = classifier.meta.get("name") or classifier.meta.get("architecture", {}).get("name", "model")
    print(f"digitnet: serving {name} at http://{host}:{port}/ ({workers} worker{'s' * (workers > 1)}; "
          f"API docs at /docs; Ctrl-C stops)", flush=True)
    if workers > 1:
        os.environ[MODEL_ENV] = str(Path(model_dir).resolve()) if model_dir else ""
        os.environ[WORKERS_ENV] = str(workers)
        os.environ[RUNTIME_ENV] = runtime
        uvicorn.run("digitnet.serve:app_from_env", factory=True, host=host, port=port, workers=workers,
                    log_level=log_level)
    else:
        app = create_app(model_dir, classifier=classifier, runtime=runtime)
        uvicorn.run(app, host=host, port=port, log_level=log_level)
