"""The benchmark harness on tiny data (correctness of its fields, not speed), and the fast recipe."""
import json
import subprocess
import sys
from pathlib import Path


import digitnet
from digitnet.config import RECIPES, TrainConfig, make_config

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402


def test_flops_match_the_model_summary():
    from digitnet.model import build_model, macs_per_image

    assert common.MACS_PER_IMAGE == macs_per_image(build_model("seed")) == 3_237_248
    assert round(common.FLOP_TRAIN / 1e6, 1) == 19.4


def test_time_to_target_and_result_fields():
    nan = float("nan")
    assert common.time_to_target([5.0, 10.0, 15.0], [0.985, 0.9901, 0.992]) == 10.0
    assert common.time_to_target([5.0, 10.0], [0.98, 0.989]) is None
    assert common.time_to_target([5.0, 10.0], [nan, 0.991]) == 10.0  # unevaluated epochs are skipped
    r = common.train_result("x", 1000, [2.0, 2.0], [2.5, 5.0], [nan, 0.991], 5.0, batch_size=32)
    assert r["images_per_second"] == 500.0 and r["seconds_per_epoch"] == 2.0
    assert r["final_accuracy"] == 0.991 and r["seconds_to_99"] == 5.0
    assert r["test_accuracy_per_epoch"] == [None, 0.991]


def test_keras_is_skipped_with_a_message_when_absent(monkeypatch):
    import bench

    monkeypatch.setattr(bench.importlib.util, "find_spec", lambda name: None)
    assert "pip install -e '.[bench]'" in bench.have_keras()


def test_harness_on_tiny_data(tmp_path):
    """One epoch on 300 images for the tutorial loop and the seed recipe, then inference: every field is there.

    (The fast recipe runs through the same script as the seed recipe; its own test is below.)"""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "bench.py"), "--limit", "300", "--epochs", "1", "--fast-seeds", "1",
         "--latency-calls", "20", "--only", "tutorial,seed,infer", "--out", str(out),
         "--runs-dir", str(tmp_path / "runs")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    names = [r["name"] for r in report["train"]]
    assert names == ["pytorch tutorial loop", "digitnet seed"]
    for r in report["train"]:
        assert r["train_images"] == 300 and r["epochs"] == 1
        assert r["images_per_second"] > 0 and r["peak_rss_mb"] > 50
        assert 0.0 <= r["final_accuracy"] <= 1.0 and "seconds_to_99" in r
    names = [r["name"] for r in report["infer"]]
    assert names[:2] == ["digitnet predict, PyTorch eager fp32", "digitnet predict, ONNX Runtime"]
    # int8 rows when the barely trained run passed the int8 check, else a note says why not
    int8 = ["digitnet predict, ONNX Runtime int8", "digitnet predict, OpenVINO int8"]
    assert names[2:] == int8 or any("int8" in note for note in report["skipped"])
    for r in report["infer"]:
        assert r["images_per_second_b1"] > 0 and r["images_per_second_b256"] > 0
        assert 0 < r["p50_ms"] <= r["p99_ms"]
        assert 0.0 <= r["test_accuracy"] <= 1.0
    assert report["exports"]["onnx"]["max_abs_diff"] < 1e-4
    assert report["cpu"]["cores"] >= 1 and report["cpu"]["gemm_gflops_fp32"] > 0
    assert "Training on" in proc.stdout and "Inference" in proc.stdout


def test_fast_recipe_keeps_the_network_and_is_sane():
    cfg = make_config("fast")
    assert cfg.model == "seed" and cfg.recipe == "fast"
    assert set(RECIPES["fast"]) <= set(TrainConfig.__dataclass_fields__)
    assert cfg.batch_size > TrainConfig.batch_size and cfg.schedule == "onecycle"
    seed = make_config("seed")  # the notebook's hyper-parameters stay the default
    assert (seed.epochs, seed.batch_size, seed.lr, seed.schedule, seed.label_smoothing) == \
        (3, 32, 1e-3, "constant", 0.0)


def test_fast_recipe_short_run_learns(tmp_path):
    run = digitnet.train(recipe="fast", epochs=2, limit_train=4000, limit_test=500, out_dir=str(tmp_path),
                         name="fast", log="quiet", plots=False)
    assert run.config.recipe == "fast" and run.config.batch_size == RECIPES["fast"]["batch_size"]
    assert run.history["loss"][1] < run.history["loss"][0]
    assert run.history["val_accuracy"][-1] > 0.8  # chance is 0.10


def test_bench_command_passes_its_flags_to_the_harness(monkeypatch):
    import subprocess as sp

    from digitnet.cli import main

    calls = []
    monkeypatch.setattr(sp, "run", lambda cmd, **kw: calls.append(cmd) or sp.CompletedProcess(cmd, 0))
    assert main(["bench", "--limit", "500", "--epochs", "1", "--only", "seed,infer", "--out", "x.json"]) == 0
    (cmd,) = calls
    assert cmd[1].endswith("benchmarks/bench.py")
    assert cmd[cmd.index("--limit") + 1] == "500" and cmd[cmd.index("--only") + 1] == "seed,infer"
    assert cmd[cmd.index("--epochs") + 1] == "1" and cmd[cmd.index("--out") + 1] == "x.json"


def _load_test(tmp_path, client: str) -> dict:
    import load_test

    out = tmp_path / f"load-{client}.json"
    rc = load_test.main(["--payload", "pixels", "--requests", "40", "--concurrency", "4", "--warmup", "8",
                         "--max-seconds", "120", "--client", client, "--out", str(out)])
    result = json.loads(out.read_text())
    assert rc == 0 and result["errors"] == 0 and result["requests"] >= 40 and result["client"] == client
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"] and result["throughput_rps"] > 0
    return result


def test_load_test_python_client_checks_answers(tmp_path):
    result = _load_test(tmp_path, "python")
    assert result["accuracy"] >= 0.9  # MNIST test digits through the shipped model, every answer checked


def test_load_test_hey_client(tmp_path):
    import shutil

    import pytest

    if not shutil.which("hey"):
        pytest.skip("the hey load generator is not installed (Debian package hey)")
    result = _load_test(tmp_path, "hey")
    assert result["requests"] == 40 and result["accuracy"] is None  # one digit over and over: no accuracy


def test_load_test_refuses_other_hosts():
    import load_test

    import pytest

    with pytest.raises(SystemExit):
        load_test.main(["--url", "http://example.com:8000", "--requests", "1"])


def test_accuracy_report_of_one_group_keeps_the_others(tiny_run, tmp_path):
    """`accuracy.py report GROUP` scores only that group's runs and keeps the other entries."""
    import shutil

    import accuracy

    shutil.copytree(tiny_run.run_dir, tmp_path / "runs" / "seed-s0")
    results = tmp_path / "accuracy.json"
    kept = {"command": "digitnet train --recipe best", "runs": [{"run": "best-s0", "params": 1, "macs": 1}],
            "mean": 0.5, "min": 0.5, "max": 0.5, "tta": 0.5, "train_seconds_mean": 60.0}
    results.write_text(json.dumps({"best": kept}))
    table = accuracy.report(tmp_path / "runs", results, only="seed")
    assert list(table) == ["seed", "best"]  # the usual order, the old entry untouched
    assert table["best"] == kept
    entry = table["seed"]
    assert [r["run"] for r in entry["runs"]] == ["seed-s0"]
    assert 0.5 < entry["mean"] == entry["min"] == entry["runs"][0]["test_accuracy"] <= 1
    assert 0.5 < entry["tta"] == entry["tta_mean"] == entry["runs"][0]["test_tta_accuracy"] <= 1
    assert json.loads(results.read_text()) == table


def test_committees_are_scored_on_the_hold_out_their_seed_shares(tmp_path, capsys):
    """`accuracy.py committees`: per seed, the groups' runs scored together on their common hold-out;
    each group alone gives the errors its own hold-out accuracy says, and a committee is counted too."""
    import re

    import accuracy

    runs = tmp_path / "runs"
    for group, epochs in (("seed", 1), ("seed-augment", 2)):
        digitnet.train(epochs=epochs, limit_train=1500, val_size=300, out_dir=str(runs), name=f"{group}-s0",
                       log="quiet", seed=0)
    accuracy.holdout_committees(runs, ["seed", "seed-augment"], [0, 1])  # seed 1 has no runs: skipped
    printed = capsys.readouterr()
    assert "seed 1: skipped" in printed.err
    lines = re.findall(r"^ *(\d+) errors of (\d+) \(.*\): (.*)$", printed.out, re.M)
    assert {total for _, total, _ in lines} == {"300"}  # seed 0's hold-out only
    counts = {tuple(combo.split(" + ")): int(n) for n, _, combo in lines}
    assert set(counts) == {("seed",), ("seed-augment",), ("seed", "seed-augment")}
    for group in ("seed", "seed-augment"):
        plain, _ = accuracy.holdout_accuracy(runs / f"{group}-s0")
        assert counts[(group,)] == round((1 - plain) * 300)
    assert 0 <= counts[("seed", "seed-augment")] < 300 * 0.5  # two trained runs: far better than chance
