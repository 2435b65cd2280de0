"""Bounded load test of `digitnet serve` on this machine: throughput, p50/p99 latency, error count.

    flock /tmp/digitnet-heavy.lock .venv/bin/python benchmarks/load_test.py --model runs/NAME
    .venv/bin/python benchmarks/load_test.py --url http://127.0.0.1:8000 --requests 2000 --concurrency 8

Starts `digitnet serve` on a free 127.0.0.1 port (or uses --url, which must be a loopback address),
sends MNIST test digits from --concurrency clients at once, and stops by itself after --requests
requests or --max-seconds, whichever comes first. Payloads: `canvas` (default) uploads each digit as a
140x140 PNG like the web page sends (its 280x280 canvas at half size); `pixels` posts the 28x28 array
as JSON (no image decoding).
Prints a table and, with --out, writes the numbers as JSON. Exit status 1 if any request failed.

Two load generators: `--client python` (httpx, asyncio) sends 1,000 different digits and checks
every answer, but on a 2-core machine it spends more CPU per request than the server does, so it
measures itself as much as the server. `--client hey` (Debian package `hey`, written in Go) sends one
digit over and over at a fraction of that cost; its per-request log gives the latencies. The default
is hey when it is installed.
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import io
import ipaddress
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
from PIL import Image


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def payloads(kind: str, count: int) -> tuple[list[dict], np.ndarray]:
    """httpx request arguments for `count` MNIST test digits, and their labels."""
    from digitnet.data import load_split

    x, y = load_split("mnist", "test")
    out = []
    for a in x[:count]:
        if kind == "pixels":
            out.append({"json": {"pixels": a.tolist()}})
        else:  # white ink on black, drawn on the 280x280 canvas and sent at 140x140, as the page does
            buf = io.BytesIO()
            big = Image.fromarray(a).resize((280, 280), Image.BILINEAR)
            big.resize((140, 140), Image.BOX).save(buf, "PNG")
            out.append({"files": {"file": ("canvas.png", buf.getvalue(), "image/png")}})
    return out, y[:count]


def start_server(model: str | None, workers: int, threads: int, runtime: str = "auto"):
    """`digitnet serve` on a free loopback port: (process, url), once /healthz answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "digitnet", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(workers), "--runtime", runtime] + (["--model", model] if model else [])
    env = dict(os.environ, OMP_NUM_THREADS=str(threads)) if threads else None  # torch threads per worker
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            sys.exit(f"load_test: the server did not start: {proc.stdout.read()}")
        time.sleep(0.2)


async def hammer(url: str, requests: list[dict], labels: np.ndarray, total: int, concurrency: int,
                 max_seconds: float) -> dict:
    """Send `total` requests from `concurrency` clients; return latencies (s), errors and accuracy."""
    latencies, errors, correct = [], [], 0
    next_index = 0
    stop_at = time.perf_counter() + max_seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client(c: httpx.AsyncClient):
        nonlocal next_index, correct
        while next_index < total and time.perf_counter() < stop_at:
            i = next_index % len(requests)
            next_index += 1
            t0 = time.perf_counter()
            try:
                r = await c.post("/api/predict", **requests[i])
            except httpx.HTTPError as e:
                errors.append(f"{type(e).__name__}: {e}")
                continue
            latencies.append(time.perf_counter() - t0)
            if r.status_code != 200:
                errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
            elif r.json()["best_guess"] == str(labels[i]):
                correct += 1

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as c:
        start = time.perf_counter()
        await asyncio.gather(*[client(c) for _ in range(concurrency)])
        seconds = time.perf_counter() - start
    return {"latencies": latencies, "errors": errors, "seconds": seconds, "correct": correct}


def hey(url: str, request: dict, total: int, concurrency: int, max_seconds: float) -> dict:
    """The same measurement with the `hey` load generator: one request body, sent `total` times."""
    if "json" in request:
        body, kind = json.dumps(request["json"]).encode(), "application/json"
    else:  # the PNG itself as the body: the API takes image/* bodies as well as multipart
        _, body, kind = request["files"]["file"]
    with tempfile.NamedTemporaryFile(suffix=".body") as f:
        f.write(body)
        f.flush()
        # hey runs `concurrency` workers of n // concurrency requests each: round up to reach `total`.
        n = -(-total // concurrency) * concurrency
        cmd = ["hey", "-n", str(n), "-c", str(concurrency), "-m", "POST", "-T", kind, "-D", f.name,
               "-t", "30", "-o", "csv", f"{url}/api/predict"]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=max_seconds)
        except subprocess.TimeoutExpired:
            sys.exit(f"load_test: hey did not finish {n} requests within --max-seconds {max_seconds}")
    if out.returncode:
        sys.exit(f"load_test: hey failed: {out.stderr.strip() or out.stdout[-500:]}")
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    latencies = [float(r["response-time"]) for r in rows]
    errors = [f"HTTP {r['status-code']}" for r in rows if r["status-code"] != "200"]
    errors += [f"{n - len(rows)} requests got no response"] if len(rows) < n else []
    seconds = max((float(r["offset"]) + float(r["response-time"]) for r in rows), default=0.0)
    return {"latencies": latencies, "errors": errors, "seconds": seconds, "correct": None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="run directory for the server it starts (default: the shipped model)")
    ap.add_argument("--url", help="an already running server; must be a loopback address")
    ap.add_argument("--requests", type=int, default=5000, help="requests to send, at most (default 5000)")
    ap.add_argument("--concurrency", type=int, default=32, help="requests in flight at once (default 32)")
    ap.add_argument("--max-seconds", type=float, default=300, help="stop sending after this long (default 300)")
    ap.add_argument("--payload", choices=["canvas", "pixels"], default="canvas")
    ap.add_argument("--workers", type=int, default=1, help="server worker processes (default 1)")
    ap.add_argument("--runtime", choices=["auto", "onnx", "torch"], default="auto",
                    help="the server's --runtime for batched predictions (default: auto)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per worker (default: torch's own)")
    ap.add_argument("--warmup", type=int, default=200, help="requests sent first and not counted")
    ap.add_argument("--client", choices=["hey", "python"], default="hey" if shutil.which("hey") else "python",
                    help="load generator: hey (Go, cheap; the default when installed) or python (httpx; "
                         "checks every answer)")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)
    if not 0 < args.requests <= 100_000 or not 0 < args.concurrency <= 256 or not 0 < args.max_seconds <= 1800:
        ap.error("keep it bounded: --requests 1-100000, --concurrency 1-256, --max-seconds up to 1800")
    if args.url and not is_loopback(args.url):
        ap.error(f"--url {args.url}: only loopback addresses (127.0.0.0/8, localhost, [::1]) are allowed")

    requests, labels = payloads(args.payload, 1000)
    proc = None
    url = args.url
    if not url:
        proc, url = start_server(args.model, args.workers, args.threads, args.runtime)
    try:
        # The Python client also warms up for hey: the same server, the same digits, every answer checked.
        asyncio.run(hammer(url, requests, labels, args.warmup, args.concurrency, 60))
        before = httpx.get(f"{url}/healthz").json()
        if args.client == "hey":
            res = hey(url, requests[0], args.requests, args.concurrency, args.max_seconds)
        else:
            res = asyncio.run(hammer(url, requests, labels, args.requests, args.concurrency, args.max_seconds))
        after = httpx.get(f"{url}/healthz").json()
    finally:
        if proc:
            proc.terminate()
            proc.wait(timeout=30)

    lat = np.array(res["latencies"]) * 1000
    done = len(lat)
    batches = after["batches"] - before["batches"]  # one worker's counts when --workers > 1
    result = {
        "payload": args.payload, "client": args.client, "runtime": after.get("runtime"), "requests": done,
        "concurrency": args.concurrency, "workers": args.workers,
        "seconds": round(res["seconds"], 3), "throughput_rps": round(done / res["seconds"], 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 2) if done else None,
        "p90_ms": round(float(np.percentile(lat, 90)), 2) if done else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 2) if done else None,
        "max_ms": round(float(lat.max()), 2) if done else None,
        "errors": len(res["errors"]),
        "accuracy": round(res["correct"] / done, 4) if done and res["correct"] is not None else None,
        "mean_batch": round((after["images"] - before["images"]) / batches, 2) if batches else None,
        "cpus": len(os.sched_getaffinity(0)), "machine": platform.processor() or platform.machine(),
    }
    print(f"{'payload':<8} {'requests':>8} {'conc':>5} {'req/s':>8} {'p50 ms':>8} {'p90 ms':>8} "
          f"{'p99 ms':>8} {'max ms':>8} {'errors':>6} {'batch':>6} {'acc':>7}")
    print(f"{result['payload']:<8} {done:>8} {args.concurrency:>5} {result['throughput_rps']:>8} "
          f"{result['p50_ms']:>8} {result['p90_ms']:>8} {result['p99_ms']:>8} {result['max_ms']:>8} "
          f"{result['errors']:>6} {result['mean_batch']!s:>6} {result['accuracy']!s:>7}")
    for e in res["errors"][:5]:
        print(f"  error: {e}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 1 if res["errors"] or done < args.requests else 0


if __name__ == "__main__":
    sys.exit(main())
