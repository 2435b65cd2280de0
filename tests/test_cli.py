"""The command line: smoke tests of each subcommand and clear errors for bad input."""
import json
import subprocess
import sys

import pytest

from digitnet.cli import main


def run_cli(*args):
    """Run `python -m digitnet` in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "digitnet", *args], capture_output=True, text=True,
                          timeout=300)


def test_summary(capsys):
    assert main(["summary"]) == 0
    out = capsys.readouterr().out
    assert "Total params: 241,546" in out
    for shape in ["(None, 26, 26, 32)", "(None, 13, 13, 32)", "(None, 11, 11, 64)", "(None, 5, 5, 64)",
                  "(None, 3, 3, 128)", "(None, 1152)", "(None, 128)", "(None, 10)"]:
        assert shape in out
    assert "3,237,248" in out


def test_summary_json(capsys):
    assert main(["summary", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sum(r["params"] for r in rows) == 241_546


def test_train_evaluate_cycle(tmp_path):
    result = run_cli("train", "--epochs", "1", "--limit-train", "1000", "--limit-test", "300",
                     "--out-dir", str(tmp_path), "--name", "cli", "--jsonl")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [e["event"] for e in events] == ["start", "epoch", "end"]
    assert events[1]["val_accuracy"] > 0.5
    result = run_cli("evaluate", str(tmp_path / "cli"), "--limit", "300")
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout and "confusion matrix" in result.stdout
    assert (tmp_path / "cli" / "plots" / "confusion_matrix.png").exists()


def test_evaluate_never_writes_into_the_package(tmp_path, monkeypatch, capsys):
    """The shipped default model lives in the package: its evaluation goes to runs/default-evaluation
    (or --out), never into digitnet/weights/default."""
    from digitnet.read import DEFAULT_MODEL

    before = sorted(p.name for p in DEFAULT_MODEL.iterdir())
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", str(DEFAULT_MODEL), "--limit", "200", "--no-plots"]) == 0
    assert "runs/default-evaluation" in capsys.readouterr().err
    assert json.loads((tmp_path / "runs/default-evaluation/evaluation.json").read_text())["accuracy"] > 0.9
    assert main(["evaluate", str(DEFAULT_MODEL), "--limit", "200", "--out", "elsewhere"]) == 0
    assert (tmp_path / "elsewhere" / "evaluation.json").exists()
    assert (tmp_path / "elsewhere" / "plots" / "confusion_matrix.png").exists()
    assert sorted(p.name for p in DEFAULT_MODEL.iterdir()) == before


def test_keras_like_progress(tmp_path):
    result = run_cli("train", "--epochs", "1", "--limit-train", "300", "--limit-test", "100",
                     "--out-dir", str(tmp_path), "--name", "bar", "--no-plots")
    assert result.returncode == 0, result.stderr
    assert "Epoch 1/1" in result.stdout
    assert "10/10 - " in result.stdout and "val_accuracy: " in result.stdout


def test_quiet_prints_nothing(tmp_path, capsys):
    assert main(["train", "--epochs", "1", "--limit-train", "200", "--limit-test", "100", "--quiet",
                 "--no-plots", "--out-dir", str(tmp_path), "--name", "q"]) == 0
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("args, message", [
    (["evaluate", "/nonexistent/run"], "not a run directory"),
    (["train", "--epochs", "0"], "epochs must be at least 1"),
    (["train", "--data-dir", "/nonexistent"], "not found; looked in: /nonexistent (--data-dir)"),
    (["train", "--device", "cuda:0"], "CUDA is not available"),
    (["train", "--schedule", "cosine"], "schedule must be constant or onecycle"),
    (["data", "verify", "mnist", "--data-dir", "/nonexistent"], "not found"),
])
def test_clear_errors(capsys, args, message):
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("digitnet: error: ")
    assert message in err
    assert "Traceback" not in err


def test_mistyped_flag_suggests_the_closest():
    result = run_cli("train", "--bach-size", "64")
    assert result.returncode == 2
    assert "did you mean --batch-size" in result.stderr
    assert "Traceback" not in result.stderr


def test_data_show_and_verify(capsys):
    assert main(["data", "show"]) == 0
    out = capsys.readouterr().out
    assert "shipped with digitnet" in out and "ba891046e6505d7a" in out
    assert main(["data", "verify", "mnist", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert all(r["ok"] for r in rows) and len(rows) == 4
    assert main(["data", "locate"]) == 0
    assert capsys.readouterr().out.strip().endswith("data/mnist")


def test_corrupt_run_directory(tmp_path, capsys, tiny_run):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_run.run_dir, bad)
    (bad / "model.safetensors").write_bytes(b"garbage")
    assert main(["evaluate", str(bad)]) == 1
    assert "SHA-256" in capsys.readouterr().err
