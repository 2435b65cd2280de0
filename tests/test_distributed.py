"""DDP: two CPU processes over gloo on 127.0.0.1 train to the same weights as one process with the same
global batch and seed; shards cover each global batch once; the --nproc launcher and its errors."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import digitnet
from digitnet import distributed
from digitnet.checkpoint import checkpoint_files, load_checkpoint
from digitnet.distributed import Dist
from digitnet.errors import DigitnetError
from digitnet.model import build_model

# 653 images at batch 32: the last global batch has 13 images, split 7 + 6, so the loss scaling for
# uneven shards is exercised too. fp32: bf16 rounding would hide real differences.
SETTINGS = dict(epochs=2, limit_train=653, limit_test=300, precision="fp32", seed=4, batch_size=32,
                checkpoint_every=7)
TOL = 2e-5  # measured gaps are about 1e-6 (summation order); a wrong shard or scaling gives 1e-3 and more
# One process against two: a few steps only. Over SETTINGS' 42 Adam steps the summation-order
# differences grow chaotically, on CPUs whose kernels round otherwise (AVX2 only) to 6e-3.
# 77 images at batch 32: batches of 32, 32 and 13 (split 7 + 6), so uneven shards are still exercised.
MATCH = dict(SETTINGS, epochs=1, limit_train=77)


def load_weights(run_dir) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "model.safetensors"))


def train_two(out, settings: dict):
    """`digitnet train --nproc 2 ...`: torchrun, two gloo processes, rendezvous on 127.0.0.1."""
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1"}
    proc = subprocess.run([sys.executable, "-m", "digitnet", "train", "--nproc", "2", *flags, "--out-dir",
                           str(out), "--name", "two", "--jsonl", "--no-plots"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "two", proc.stdout


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    return train_two(tmp_path_factory.mktemp("ddp"), SETTINGS)


def test_two_processes_match_one(tmp_path):
    run_dir, stdout = train_two(tmp_path / "two-proc", MATCH)
    one = digitnet.train(out_dir=str(tmp_path), name="one", log="quiet", plots=False, threads=1, **MATCH)
    two, single = load_weights(run_dir), load_weights(one.run_dir)
    start = build_model().state_dict()
    for name, w in single.items():
        moved = (w - start[name]).abs().max().item()
        gap = (two[name] - w).abs().max().item()
        # Only float summation order differs (gradients all-reduced over 2 ranks); training moved the
        # weights by 1e-2..1e-1, so a wrong shard, order or loss scaling would be far outside TOL.
        assert gap < TOL, f"{name}: 2-process weights differ by {gap:.2e} (training moved them {moved:.2e})"
        assert moved > 100 * TOL or name.endswith("bias")
    history = json.loads((run_dir / "history.json").read_text())
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert history[key] == pytest.approx(one.history[key], abs=1e-4), key


def test_only_rank_zero_prints_and_writes(two_process_run):
    run_dir, stdout = two_process_run
    events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert [e["event"] for e in events] == ["start", "epoch", "epoch", "end"]  # once, not once per rank
    meta = json.loads((run_dir / "model.json").read_text())
    assert meta["training"]["processes"] == 2
    assert meta["architecture"]["params"] == 241_546  # the unwrapped network, no "module." prefix
    ckpt = load_checkpoint(checkpoint_files(run_dir)[-1])
    assert {"rng.0.torch_cpu", "rng.1.torch_cpu", "rng.0.augment", "rng.1.augment"} <= set(ckpt.tensors)
    assert ckpt.meta["position"]["world"] == 2


def test_two_process_run_resumes_mid_epoch(two_process_run, tmp_path):
    """Per-rank generators and the summed running totals come back: the resumed run ends where the
    uninterrupted one did."""
    run_dir, _ = two_process_run
    cut = tmp_path / "cut"
    shutil.copytree(run_dir, cut)
    for name in ("model.json", "model.safetensors", "metrics.json"):
        (cut / name).unlink()
    files = checkpoint_files(cut)
    files[-1].unlink()  # the end of the last epoch: resume from the one before, mid-epoch
    assert load_checkpoint(checkpoint_files(cut)[-1]).meta["position"]["step"] > 0
    proc = subprocess.run([sys.executable, "-m", "digitnet", "train", "--nproc", "2", "--resume", str(cut),
                           "--quiet", "--no-plots"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    before, after = load_weights(run_dir), load_weights(cut)
    for name, w in before.items():
        assert (after[name] - w).abs().max().item() < TOL, name
    history = json.loads((cut / "history.json").read_text())
    assert history["loss"] == pytest.approx(json.loads((run_dir / "history.json").read_text())["loss"], abs=1e-6)


def test_shards_cover_each_global_batch_once():
    batch = torch.randperm(1000)[:13]
    parts = [distributed.shard(batch, Dist(rank=r, world=3)) for r in range(3)]
    assert sorted(torch.cat(parts).tolist()) == sorted(batch.tolist())
    assert [len(p) for p in parts] == [5, 4, 4]
    assert torch.equal(distributed.shard(batch, Dist()), batch)


def test_environment_marks_a_distributed_run(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    assert distributed.from_env() == Dist()
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    d = distributed.from_env()
    assert (d.rank, d.world, d.local_rank, d.enabled, d.main) == (3, 4, 1, True, False)
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(DigitnetError, match="must be integers"):
        distributed.from_env()


def test_launcher_refuses_bad_requests(monkeypatch):
    with pytest.raises(DigitnetError, match="at least 1"):
        distributed.launch(0, [])
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(DigitnetError, match="inside a torchrun job"):
        distributed.launch(2, [])


def test_train_argv_round_trips_the_flags():
    from digitnet.cli import build_parser, train_argv
    from digitnet.config import field_names

    argv = ["train", "--recipe", "fast", "--epochs", "2", "--lr", "0.002", "--no-channels-last", "--quiet",
            "--nproc", "2"]
    args = build_parser().parse_args(argv)
    settings = {k: getattr(args, k) for k in field_names() if k != "recipe" and getattr(args, k, None) is not None}
    again = build_parser().parse_args(["train", *train_argv(args, settings)])
    assert again.nproc is None and again.recipe == "fast" and again.quiet
    assert (again.epochs, again.lr, again.channels_last) == (2, 0.002, False)
