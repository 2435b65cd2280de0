"""Checkpoints: everything a run needs to continue exactly where it stopped, and nothing unpickled.

    RUN/checkpoints/ckpt-000000120.safetensors   tensors: model.*, optim.*, rng.*, sums.*
    RUN/checkpoints/ckpt-000000120.json          the rest: config, position (epoch, step), history,
                                                 optimizer groups, scheduler, RNG scalars, SHA-256s

Each file is written atomically (temp file, fsync, rename, fsync of the folder) and the JSON goes
last: it records the SHA-256 of the tensors file and of its own content, so a checkpoint is either
complete and verified or ignored. Only the newest `keep_checkpoints` are kept.
"""
from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from digitnet.config import TrainConfig, field_names
from digitnet.errors import DigitnetError
from digitnet.files import atomic_write_bytes, read_json, sha256_bytes
from digitnet.model import read_tensors

FORMAT_VERSION = 1
CHECKPOINT_DIR = "checkpoints"
NAME = re.compile(r"^ckpt-(\d{9})\.json$")
# Settings that change how a run is executed, not what it computes; a resume may change these.
RUNTIME_FIELDS = {"device", "threads", "data_dir", "eval_batch_size", "out_dir", "name"}


@dataclass
class Checkpoint:
    path: Path  # the .json file
    meta: dict
    tensors: dict[str, torch.Tensor]

    @property
    def run_dir(self) -> Path:
        return self.path.parent.parent


def fsync_dir(folder: Path) -> None:
    """Make a rename durable: without this a power cut may forget it even though the data is on disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def meta_digest(meta: dict) -> str:
    """SHA-256 of the JSON content itself (without this field), so an edited JSON is caught too."""
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return sha256_bytes(json.dumps(body, sort_keys=True).encode())


def checkpoint_files(run_dir: str | Path) -> list[Path]:
    """The complete checkpoints (those with a JSON) of a run, oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if NAME.match(p.name))


def save_checkpoint(run_dir: str | Path, tensors: dict[str, torch.Tensor], meta: dict, keep: int) -> Path:
    """Write tensors then the JSON that vouches for them; drop all but the newest `keep`."""
    from safetensors.torch import save

    folder = Path(run_dir) / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"ckpt-{int(meta['position']['global_step']):09d}"
    payload = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    atomic_write_bytes(folder / f"{stem}.safetensors", payload)
    fsync_dir(folder)
    meta = {**meta, "format_version": FORMAT_VERSION, "tensors_file": f"{stem}.safetensors",
            "tensors_sha256": sha256_bytes(payload)}
    meta["meta_sha256"] = meta_digest(meta)
    atomic_write_bytes(folder / f"{stem}.json", (json.dumps(meta, indent=1) + "\n").encode())
    fsync_dir(folder)
    for old in checkpoint_files(run_dir)[:-max(keep, 1)]:
        old.unlink(missing_ok=True)  # the JSON first: a tensors file without it is never used
        (folder / f"{old.stem}.safetensors").unlink(missing_ok=True)
    for stale in folder.glob(".*.tmp"):  # temp files of a writer that was killed
        stale.unlink(missing_ok=True)
    return folder / f"{stem}.json"


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read one checkpoint and verify both checksums; a clear error for anything damaged."""
    path = Path(path)
    meta = read_json(path, invalid_hint="; delete it to resume from the one before")
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise DigitnetError(f"{path}: not a digitnet checkpoint of format {FORMAT_VERSION}")
    if meta.get("meta_sha256") != meta_digest(meta):
        raise DigitnetError(f"{path}: content does not match its recorded SHA-256; the file was edited or "
                            f"damaged; delete it to resume from the one before")
    try:
        tensors = read_tensors(path.parent / meta["tensors_file"], meta["tensors_sha256"], path.name)
    except DigitnetError as e:
        raise DigitnetError(f"{e}; delete both files to resume from the checkpoint before") from None
    return Checkpoint(path, meta, tensors)


def latest_checkpoint(run_dir: str | Path) -> Checkpoint:
    """The newest complete checkpoint of a run directory, verified."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DigitnetError(f"{run_dir}: no such run directory")
    files = checkpoint_files(run_dir)
    if not files:
        raise DigitnetError(f"{run_dir}: no checkpoint in {CHECKPOINT_DIR}/ to resume from "
                            f"(was it trained with --keep-checkpoints 0?)")
    return load_checkpoint(files[-1])


# ---------------------------------------------------------------------------------------------
# What goes in: model, optimizer, scheduler and random-number generators, flattened to tensors + JSON.


def model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"model.{k}": v for k, v in model.state_dict().items()}


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state as safetensors keys optim.<param>.<name>, plus its JSON-able rest."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entry in state["state"].items():
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def load_optimizer_state(optimizer: torch.optim.Optimizer, ckpt: Checkpoint) -> None:
    saved = ckpt.meta["optimizer"]
    state: dict[int, dict] = {}
    for key, value in ckpt.tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, entry in saved["scalars"].items():
        state.setdefault(int(index), {}).update(entry)
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in saved["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    # Give each state tensor its parameter's memory layout (channels_last weights have channels_last
    # moments): the fused Adam kernel walks both in memory order, and a layout mismatch changes results.
    for group in optimizer.param_groups:
        for p in group["params"]:
            for name, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    optimizer.state[p][name] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def rng_state(device: torch.device) -> tuple[dict[str, torch.Tensor], dict]:
    """This process's generators: torch CPU (and CUDA) as uint8 tensors; numpy and Python split into
    a uint8 tensor of their Mersenne-Twister words plus JSON scalars."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if device.type == "cuda":
        tensors["torch_cuda"] = torch.cuda.get_rng_state(device)
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["numpy"] = torch.from_numpy(keys.astype(np.uint32).view(np.uint8).copy())
    version, words, gauss_next = random.getstate()
    tensors["python"] = torch.from_numpy(np.array(words, dtype=np.uint32).view(np.uint8).copy())
    meta = {"numpy": [kind, int(pos), int(has_gauss), float(gauss)], "python": [version, gauss_next]}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict, device: torch.device) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    if device.type == "cuda" and "torch_cuda" in tensors:
        torch.cuda.set_rng_state(tensors["torch_cuda"], device)
    kind, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((kind, tensors["numpy"].numpy().view(np.uint32), pos, has_gauss, gauss))
    version, gauss_next = meta["python"]
    random.setstate((version, tuple(int(w) for w in tensors["python"].numpy().view(np.uint32)), gauss_next))


def capture(model, optimizer, scheduler, position: dict, sums: dict[str, torch.Tensor],
            augment_rng: torch.Generator, meta: dict, device: torch.device, dist) -> tuple[dict, dict] | None:
    """Everything a resume needs, as (tensors, meta) on rank 0 and None elsewhere. Every rank must
    call it: each rank's torch generators are gathered, and the running sums are summed over ranks."""
    from digitnet.distributed import all_gather_bytes, all_reduce_sum

    local = {"torch_cpu": torch.get_rng_state(), "augment": augment_rng.get_state()}
    if device.type == "cuda":
        local["torch_cuda"] = torch.cuda.get_rng_state(device)
    gathered = {name: all_gather_bytes(t, dist, device) for name, t in local.items()}
    sums = {k: all_reduce_sum(v.to(device), dist) for k, v in sums.items()}
    if not dist.main:
        return None
    tensors = model_tensors(model)
    optim_tensors, optim_meta = optimizer_state(optimizer)
    tensors.update(optim_tensors)
    for name, parts in gathered.items():
        tensors.update({f"rng.{rank}.{name}": t for rank, t in enumerate(parts)})
    host_tensors, host_meta = rng_state(torch.device("cpu"))  # numpy and Python: rank 0's, for all
    tensors.update({f"rng.{k}": v for k, v in host_tensors.items() if k in ("numpy", "python")})
    tensors.update({f"sums.{k}": v for k, v in sums.items()})
    meta = {**meta, "position": {**position, "world": dist.world}, "optimizer": optim_meta,
            "scheduler": scheduler.state_dict() if scheduler is not None else None, "rng": host_meta}
    return tensors, meta


def restore(ckpt: Checkpoint, model, optimizer, scheduler, augment_rng: torch.Generator,
            device: torch.device, dist) -> dict[str, torch.Tensor]:
    """Load weights, optimizer, schedule and this rank's generators from ckpt. Returns the epoch's running
    sums: the totals on rank 0 and zeros elsewhere, so the all-reduce at the epoch's end counts them once."""
    t = ckpt.tensors
    model.load_state_dict({k[len("model."):]: v for k, v in t.items() if k.startswith("model.")})
    load_optimizer_state(optimizer, ckpt)
    if scheduler is not None:
        scheduler.load_state_dict(ckpt.meta["scheduler"])
    # A rank the checkpoint did not have (more processes than before) takes rank 0's generators.
    rank = dist.rank if f"rng.{dist.rank}.torch_cpu" in t else 0
    host = {"torch_cpu": t[f"rng.{rank}.torch_cpu"], "numpy": t["rng.numpy"], "python": t["rng.python"]}
    if f"rng.{rank}.torch_cuda" in t:
        host["torch_cuda"] = t[f"rng.{rank}.torch_cuda"]
    set_rng_state(host, ckpt.meta["rng"], device)
    augment_rng.set_state(t[f"rng.{rank}.augment"])
    sums = {k[len("sums."):]: v.to(device) for k, v in t.items() if k.startswith("sums.")}
    return sums if dist.main else {k: torch.zeros_like(v) for k, v in sums.items()}


# ---------------------------------------------------------------------------------------------
# Resuming: which configuration, and is the checkpoint usable with it?


def resume_config(ckpt: Checkpoint, overrides: dict) -> TrainConfig:
    """The checkpoint's config; a flag that disagrees with it is refused, unless it only changes how
    the run executes (device, threads, data_dir, eval_batch_size)."""
    saved = dict(ckpt.meta["config"])
    unknown = sorted(set(saved) - set(field_names()))
    if unknown:
        raise DigitnetError(f"{ckpt.path}: written by another digitnet version (unknown settings "
                            f"{', '.join(unknown)}); resume it with that version")
    conflicts = []
    for key, value in overrides.items():
        if value is None or key in ("recipe",) and value == saved.get("recipe"):
            continue
        if key in RUNTIME_FIELDS - {"out_dir", "name"}:
            saved[key] = value
        elif saved.get(key) != value:
            conflicts.append(f"--{key.replace('_', '-')} {value} (checkpoint: {saved.get(key)})")
    if conflicts:
        raise DigitnetError(f"cannot resume {ckpt.run_dir}: {'; '.join(conflicts)}. A resumed run keeps "
                            f"the configuration it started with; drop these flags, or start a new run")
    return TrainConfig(**saved)


def check_compatible(ckpt: Checkpoint, cfg: TrainConfig, model: torch.nn.Module, dataset_sha: dict,
                     n_train: int) -> None:
    """Refuse a checkpoint whose network, data or shape of training does not match this run."""
    where = f"checkpoint {ckpt.path}"
    saved = {k: v for k, v in ckpt.meta["config"].items() if k not in RUNTIME_FIELDS}
    now = {k: v for k, v in vars(cfg).items() if k not in RUNTIME_FIELDS}
    # A setting the checkpoint lacks was added later; its default is what that run used.
    diff = [f"{k}: checkpoint {saved[k]!r}, this run {v!r}" for k, v in now.items() if saved.get(k, v) != v]
    if diff:
        raise DigitnetError(f"{where} comes from an incompatible configuration ({'; '.join(diff)})")
    expected = {k: tuple(v.shape) for k, v in model_tensors(model).items()}
    found = {k: tuple(v.shape) for k, v in ckpt.tensors.items() if k.startswith("model.")}
    if expected != found:
        bad = sorted(set(expected) ^ set(found)) or [k for k in expected if expected[k] != found[k]]
        raise DigitnetError(f"{where} holds weights for another network (mismatch at {', '.join(bad[:4])})")
    if ckpt.meta["dataset_sha256"] != dataset_sha or ckpt.meta["train_images"] != n_train:
        raise DigitnetError(f"{where} was trained on other data ({ckpt.meta['train_images']} images, "
                            f"different files); resume with the same dataset")
