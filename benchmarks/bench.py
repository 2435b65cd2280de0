"""The side-by-side benchmark: the notebook on Keras/TensorFlow against digitnet, on this machine.

    .venv/bin/pip install -e '.[bench]'                       # tensorflow-cpu + keras (optional)
    flock /tmp/digitnet-heavy.lock .venv/bin/digitnet bench   # or: .venv/bin/python benchmarks/bench.py

Training contenders, each in its own process, one after another:
  keras-notebook         the notebook as written (Keras 3 + TensorFlow CPU, raw 0-255 pixels)
  pytorch tutorial loop  DataLoader, batch 32, fp32: what a newcomer writes first
  digitnet seed          `digitnet train`: the notebook's hyper-parameters, digitnet's speed choices
  digitnet fast          `digitnet train --recipe fast` (over --fast-seeds seeds)
For each: images/s, seconds per epoch, wall time to 99.0% test accuracy, final accuracy, peak memory.
Inference: images/s at batch 1, 256 and 10,000 and single-image latency p50/p99 for Keras predict,
PyTorch eager and ONNX Runtime. Prints two tables; writes everything to benchmarks/results/*.json.
Ratios are against the Keras run. Timings are only comparable within one run on one quiet machine.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from common import FLOP_FORWARD, FLOP_TRAIN, MACS_PER_IMAGE, ROOT

HERE = Path(__file__).resolve().parent


def run_contender(script: str, *args: str) -> dict:
    """Run one benchmark script in a fresh process; its last stdout line is its JSON result."""
    cmd = [sys.executable, str(HERE / script), *args]
    print(f"bench: running {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        return {"error": f"{script} exited {proc.returncode}", "stderr_tail": tail}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_seconds"] = round(time.perf_counter() - t0, 2)
    return result


def have_keras() -> str | None:
    """None if TensorFlow and Keras import, else why the Keras run is skipped."""
    missing = [m for m in ("tensorflow", "keras") if importlib.util.find_spec(m) is None]
    if missing:
        return (f"{' and '.join(missing)} not installed: the Keras reference is skipped "
                f"(install with: .venv/bin/pip install -e '.[bench]')")
    return None


def cpu_info(gemm_seconds: float = 1.0) -> dict:
    """Cores, clock and an estimated peak in GFLOP/s, plus a measured large-GEMM rate for scale.

    The estimate is cores x clock x FLOP per cycle per core. x86 cores with two FMA pipes do
    2 pipes x 2 FLOP x lanes per cycle: AMD Zen 4 runs AVX-512 on 256-bit pipes (8 fp32 lanes ->
    32 FLOP/cycle) and its VDPBF16PS doubles that for bf16 (64); Intel server cores with two 512-bit
    FMA units do 64 fp32 (AVX-512 BF16 128). The clock is the base clock /proc/cpuinfo reports;
    boost clocks would raise it. The GEMM number (2048x2048 matmul) shows what PyTorch reaches.
    """
    import torch

    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    mhz = next((float(ln.split(":")[1]) for ln in text.splitlines() if ln.startswith("cpu MHz")), 0.0)
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")),
                 platform.processor())
    amd = "AuthenticAMD" in text
    cores = len(os.sched_getaffinity(0))
    if "avx512f" in flags:
        fp32 = 32 if amd else 64
    elif "avx2" in flags:
        fp32 = 32 if "fma" in flags else 16
    else:
        fp32 = 8
    bf16 = 1024 if "amx_bf16" in flags else 2 * fp32 if "avx512_bf16" in flags else None
    info = {"model": model, "cores": cores, "mhz": mhz, "avx512_bf16": "avx512_bf16" in flags,
            "amx": "amx_bf16" in flags, "fp32_flop_per_cycle": fp32, "bf16_flop_per_cycle": bf16,
            "peak_gflops_fp32": round(cores * mhz / 1e3 * fp32, 1),
            "peak_gflops_bf16": round(cores * mhz / 1e3 * bf16, 1) if bf16 else None}
    torch.set_num_threads(cores)
    for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
        a @ b
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < gemm_seconds:
            a @ b
            n += 1
        info[f"gemm_gflops_{name}"] = round(n * 2 * 2048**3 / (time.perf_counter() - t0) / 1e9, 1)
    return info


def ratio(a, b) -> float | None:
    """a / b rounded, or None when either is missing."""
    return round(a / b, 2) if a and b else None


def print_tables(report: dict) -> None:
    """Training and inference tables, ratios against the Keras run."""
    train = [r for r in report["train"] if "error" not in r]
    keras = next((r for r in train if r["name"].startswith("keras")), None)
    print(f"\nTraining on {report['cpu']['cores']} cores of {report['cpu']['model']} "
          f"(MNIST, 60,000 train / 10,000 test images unless --limit); load average at start "
          f"{report['load_average_start'][0]:.1f}, at end {report['load_average_end'][0]:.1f}")
    head = (f"{'contender':<26}{'epochs':>6}{'batch':>6}{'img/s':>9}{'s/epoch':>9}{'fit s':>8}"
            f"{'to 99.0%':>10}{'test acc':>9}{'peak MB':>9}{'GFLOP/s':>9}{'x Keras':>9}")
    print(head + "\n" + "-" * len(head))
    for r in train:
        to99 = f"{r['seconds_to_99']:.1f}s" if r["seconds_to_99"] is not None else "never"
        print(f"{r['name']:<26}{r['epochs']:>6}{r['batch_size']:>6}{r['images_per_second']:>9,.0f}"
              f"{r['seconds_per_epoch']:>9.2f}{r['fit_seconds']:>8.1f}{to99:>10}{r['final_accuracy']:>9.4f}"
              f"{r['peak_rss_mb']:>9,.0f}{r['gflops']:>9.1f}"
              f"{(ratio(r['images_per_second'], keras and keras['images_per_second']) or '-'):>9}")
    for r in report["train"]:
        if "error" in r:
            print(f"  error: {r['error']}\n{r.get('stderr_tail', '')}")
    for note in report["skipped"]:
        print(f"  skipped: {note}")
    if report.get("fast_seeds"):
        s = report["fast_seeds"]
        print(f"fast recipe over seeds {s['seeds']}: test accuracy mean {s['mean_accuracy']:.4f}, "
              f"min {s['min_accuracy']:.4f}; training seconds mean {s['mean_train_seconds']:.1f}, "
              f"max {s['max_train_seconds']:.1f}")

    infer = report["infer"]
    keras_p = next((r for r in infer if r["name"] == "keras predict"), None)
    print("\nInference (uint8 images in, probabilities out; batch 1 = one call per image)")
    head = (f"{'runtime':<38}{'b1 img/s':>10}{'b256 img/s':>12}{'b10000 img/s':>14}{'p50 ms':>9}"
            f"{'p99 ms':>9}{'test acc':>9}{'x Keras':>9}")
    print(head + "\n" + "-" * len(head))
    for r in infer:
        big, acc = r.get("images_per_second_b10000"), r.get("test_accuracy")
        print(f"{r['name']:<38}{r['images_per_second_b1']:>10,.0f}{r['images_per_second_b256']:>12,.0f}"
              f"{(f'{big:,.0f}' if big else '-'):>14}{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}"
              f"{(f'{acc:.4f}' if acc is not None else '-'):>9}"
              f"{(ratio(big, keras_p and keras_p['images_per_second_b10000']) or '-'):>9}")
    c = report["cpu"]
    print(f"\nFLOPs: {MACS_PER_IMAGE / 1e6:.2f} M multiply-adds forward per image = {FLOP_FORWARD / 1e6:.2f} MFLOP; "
          f"~{FLOP_TRAIN / 1e6:.1f} MFLOP per trained image (forward + backward = 3x forward).")
    print(f"CPU peak (estimate: {c['cores']} cores x {c['mhz'] / 1e3:.2f} GHz x FLOP/cycle): "
          f"fp32 {c['peak_gflops_fp32']} GFLOP/s, bf16 {c['peak_gflops_bf16']} GFLOP/s; "
          f"measured 2048x2048 matmul: fp32 {c['gemm_gflops_fp32']}, bf16 {c['gemm_gflops_bf16']} GFLOP/s.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=0, help="first N train and test images (0: all)")
    parser.add_argument("--epochs", type=int, default=None, help="override every contender's epochs")
    parser.add_argument("--only", default="keras,tutorial,seed,fast,infer",
                        help="comma-separated subset of keras,tutorial,seed,fast,infer")
    parser.add_argument("--fast-seeds", type=int, default=3, help="seeds for the fast recipe")
    parser.add_argument("--latency-calls", type=int, default=1000)
    parser.add_argument("--out", help="JSON to write (default: benchmarks/results/bench-<time>.json)")
    parser.add_argument("--runs-dir", default="runs/bench", help="where digitnet runs go")
    args = parser.parse_args()
    only = set(args.only.split(","))
    common = (["--limit", str(args.limit)] + (["--epochs", str(args.epochs)] if args.epochs else []))
    report = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv),
              "host": platform.node(), "python": platform.python_version(), "cpu": cpu_info(0.2 if args.limit else 1.0),
              "limit": args.limit, "train": [], "infer": [], "skipped": [],
              # Other work on the machine skews every timing: the load average says how quiet it was.
              "load_average_start": os.getloadavg()}

    if "keras" in only:
        why = have_keras()
        if why:
            report["skipped"].append(why)
            print(f"bench: {why}", file=sys.stderr)
        else:
            keras = run_contender("keras_notebook.py", *common, "--latency-calls",
                                  str(min(args.latency_calls, 200)))
            report["train"].append({**keras.get("train", keras), "peak_rss_mb": keras.get("peak_rss_mb")})
            report["infer"] += keras.get("infer", [])
    if "tutorial" in only:
        r = run_contender("torch_tutorial.py", *common)
        report["train"].append({**r.get("train", r), "peak_rss_mb": r.get("peak_rss_mb")})
    seed_run = None
    if "seed" in only:
        r = run_contender("digitnet_recipe.py", "--recipe", "seed", "--out-dir", args.runs_dir, *common)
        report["train"].append({**r.get("train", r), "peak_rss_mb": r.get("peak_rss_mb")})
        seed_run = r.get("train", {}).get("run_dir")
    if "fast" in only:
        fast = []
        for seed in range(args.fast_seeds):
            r = run_contender("digitnet_recipe.py", "--recipe", "fast", "--seed", str(seed),
                              "--out-dir", args.runs_dir, *common)
            row = {**r.get("train", r), "peak_rss_mb": r.get("peak_rss_mb")}
            if "error" not in row:
                row["name"] += f" (seed {seed})"
            report["train"].append(row)
            fast.append(row)
        ok = [r for r in fast if "error" not in r]
        if ok:
            accs, secs = [r["final_accuracy"] for r in ok], [r["train_seconds"] for r in ok]
            report["fast_seeds"] = {"seeds": list(range(len(ok))), "mean_accuracy": round(sum(accs) / len(accs), 4),
                                    "min_accuracy": min(accs), "mean_train_seconds": round(sum(secs) / len(secs), 2),
                                    "max_train_seconds": max(secs)}
    if "infer" in only and seed_run:
        limit = ["--limit", str(args.limit)] if args.limit else []
        report["exports"] = {}
        for runtime in ("torch", "onnx", "onnx-int8", "openvino-int8"):  # each in its own process
            r = run_contender("infer_bench.py", seed_run, "--runtime", runtime, *limit,
                              "--latency-calls", str(args.latency_calls))
            report["infer"] += r.get("infer", [])
            report["skipped"] += r.get("skipped", [])
            if "error" in r:
                report["skipped"].append(f"inference ({runtime}): {r['error']}: {r.get('stderr_tail', '')}")
            if r.get("export"):
                report["exports"][runtime] = r["export"]

    report["load_average_end"] = os.getloadavg()
    sys.path.insert(0, str(ROOT))
    from digitnet.files import atomic_write_json

    out = Path(args.out) if args.out else HERE / "results" / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    atomic_write_json(out, report)
    print_tables(report)
    print(f"\nwrote {out}")
    return 1 if any("error" in r for r in report["train"]) else 0


if __name__ == "__main__":
    sys.exit(main())
