"""Checkpoints and resume: a run killed with SIGKILL resumes to the same bits; a kill during a checkpoint
write never leaves a damaged checkpoint as the newest; bad or mismatched checkpoints are refused clearly."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import digitnet
from digitnet.checkpoint import checkpoint_files, latest_checkpoint, load_checkpoint, save_checkpoint
from digitnet.cli import main
from digitnet.errors import DigitnetError

# Deterministic CPU fp32 with one thread: the setting in which bitwise equality is promised.
EXACT = dict(epochs=2, limit_train=1000, limit_test=200, precision="fp32", seed=5, threads=1,
             deterministic=True, checkpoint_every=3, keep_checkpoints=3)


def cli_flags(settings: dict) -> list[str]:
    flags = []
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        flags += [flag] if value is True else [flag, str(value)]
    return flags


def wait_for(predicate, timeout: float, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return predicate()
        time.sleep(0.005)
    return False


def newest_step(run_dir: Path) -> int:
    files = checkpoint_files(run_dir)
    return int(files[-1].stem.split("-")[1]) if files else -1


def test_sigkill_then_resume_is_bitwise_identical(tmp_path):
    reference = digitnet.train(out_dir=str(tmp_path), name="reference", log="quiet", plots=False, **EXACT)

    steps = 2 * 32  # 1000 images at batch 32: 32 steps per epoch
    # A different step on every run of the test; at least 16 steps before the end, so a busy machine
    # still kills it mid-run.
    kill_after = random.Random().randrange(3, steps - 16)
    run_dir = tmp_path / "killed"
    cmd = [sys.executable, "-m", "digitnet", "train", "--out-dir", str(tmp_path), "--name", "killed",
           "--quiet", "--no-plots", *cli_flags(EXACT)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        reached = wait_for(lambda: newest_step(run_dir) >= kill_after, 120, proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        _, err = proc.communicate()
    assert reached, f"the run never reached step {kill_after}: {err.decode()[-2000:]}"
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "model.json").exists(), "the run finished before it was killed"

    resumed = digitnet.train(resume=str(run_dir), log="quiet", plots=False)
    assert (run_dir / "model.safetensors").read_bytes() == \
        (reference.run_dir / "model.safetensors").read_bytes(), f"weights differ after a kill at step {kill_after}"
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        assert resumed.history[key] == reference.history[key], key


# A writer that checkpoints in a loop (4 MB of tensors each time), for the kill-during-write test.
WRITER = """
import sys, torch
from digitnet.checkpoint import save_checkpoint, checkpoint_files
run = sys.argv[1]
step = len(checkpoint_files(run)) and int(checkpoint_files(run)[-1].stem.split("-")[1])
while True:
    step += 1
    t = {"model.w": torch.full((1 << 20,), float(step))}
    save_checkpoint(run, t, {"position": {"global_step": step}, "marker": step}, keep=2)
"""


def test_kill_during_checkpoint_writes_never_leaves_a_bad_latest(tmp_path):
    run = tmp_path / "run"
    rng = random.Random()
    for attempt in range(3):
        before = newest_step(run)
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(run)], stderr=subprocess.PIPE)
        try:
            assert wait_for(lambda: newest_step(run) >= before + 2, 60, proc), proc.stderr.read().decode()
            time.sleep(rng.uniform(0, 0.2))  # somewhere inside a write, most of the time
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.communicate()
        ckpt = latest_checkpoint(run)  # verifies both checksums, or raises
        step = ckpt.meta["marker"]
        assert torch.equal(ckpt.tensors["model.w"], torch.full((1 << 20,), float(step)))
        assert len(checkpoint_files(run)) <= 3  # keep=2, plus at most one written before the cleanup


def test_crash_between_temp_write_and_rename(tmp_path, monkeypatch):
    t = {"model.w": torch.arange(10.0)}
    save_checkpoint(tmp_path, t, {"position": {"global_step": 1}}, keep=2)
    real_replace = os.replace

    def crash_on_json(src, dst):
        if str(dst).endswith(".json"):
            raise OSError("simulated crash before the rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_json)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(tmp_path, {"model.w": torch.zeros(10)}, {"position": {"global_step": 2}}, keep=2)
    monkeypatch.undo()
    ckpt = latest_checkpoint(tmp_path)  # step 2's tensors may be on disk, but without its JSON it is not used
    assert ckpt.meta["position"]["global_step"] == 1 and torch.equal(ckpt.tensors["model.w"], torch.arange(10.0))


def test_damaged_checkpoints_are_refused(tmp_path):
    path = save_checkpoint(tmp_path, {"model.w": torch.arange(10.0)}, {"position": {"global_step": 7}}, keep=2)
    tensors = path.with_suffix(".safetensors")
    payload = bytearray(tensors.read_bytes())
    payload[-3] ^= 0xFF
    tensors.write_bytes(bytes(payload))
    with pytest.raises(DigitnetError, match="SHA-256 does not match"):
        load_checkpoint(path)
    meta = json.loads(path.read_text())
    meta["position"]["global_step"] = 8
    path.write_text(json.dumps(meta))
    with pytest.raises(DigitnetError, match="edited or damaged"):
        load_checkpoint(path)
    path.write_text('{"format_version": 1, ')
    with pytest.raises(DigitnetError, match="not valid JSON"):
        load_checkpoint(path)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A one-epoch run that checkpointed mid-epoch, made to look interrupted (its final files removed)."""
    out = tmp_path_factory.mktemp("runs")
    run = digitnet.train(epochs=1, limit_train=320, limit_test=100, checkpoint_every=4, keep_checkpoints=5,
                         out_dir=str(out), name="cut", log="quiet", plots=False, seed=1)
    for name in ("model.json", "model.safetensors", "metrics.json"):
        (run.run_dir / name).unlink()
    files = checkpoint_files(run.run_dir)
    files[-1].unlink()  # the end-of-epoch checkpoint: resume from step 8 instead
    return run.run_dir


def test_resume_refuses_conflicting_flags(interrupted, capsys):
    with pytest.raises(DigitnetError, match=r"--batch-size 64 \(checkpoint: 32\)"):
        digitnet.train(resume=str(interrupted), batch_size=64, log="quiet", plots=False)
    with pytest.raises(DigitnetError, match="--recipe fast"):
        digitnet.train(resume=str(interrupted), recipe="fast", log="quiet", plots=False)
    assert main(["train", "--resume", str(interrupted), "--lr", "0.5", "--quiet"]) == 1
    assert "digitnet: error: cannot resume" in capsys.readouterr().err


def test_resume_refuses_a_checkpoint_of_another_network(interrupted, tmp_path):
    ckpt = latest_checkpoint(interrupted)
    tensors = dict(ckpt.tensors)
    tensors["model.9.weight"] = torch.zeros(64, 1152)  # a dense layer of another width
    meta = {k: v for k, v in ckpt.meta.items() if k not in ("meta_sha256", "tensors_sha256", "tensors_file")}
    save_checkpoint(tmp_path, tensors, meta, keep=1)
    with pytest.raises(DigitnetError, match="weights for another network"):
        digitnet.train(resume=str(tmp_path), log="quiet", plots=False)
    meta["config"]["momentum"] = 0.9  # a setting this digitnet does not know
    save_checkpoint(tmp_path, tensors, meta, keep=1)
    with pytest.raises(DigitnetError, match="another digitnet version"):
        digitnet.train(resume=str(tmp_path), log="quiet", plots=False)


def test_resume_errors_for_missing_or_finished_runs(tmp_path, tiny_run):
    with pytest.raises(DigitnetError, match="no such run directory"):
        digitnet.train(resume=str(tmp_path / "nope"), log="quiet", plots=False)
    with pytest.raises(DigitnetError, match="no checkpoint"):
        digitnet.train(resume=str(tmp_path), log="quiet", plots=False)
    with pytest.raises(DigitnetError, match="finished training"):
        digitnet.train(resume=str(tiny_run.run_dir), log="quiet", plots=False)


def test_resumed_run_finishes_and_keeps_history(interrupted):
    run = digitnet.train(resume=str(interrupted), threads=1, log="quiet", plots=False)
    assert run.history["epoch"] == [1] and run.history["val_accuracy"][0] > 0.5
    meta = json.loads((interrupted / "model.json").read_text())
    assert meta["config"]["checkpoint_every"] == 4
    assert len(checkpoint_files(interrupted)) <= 5
