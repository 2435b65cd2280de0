"""Running one training over several processes with torch.distributed (DDP): torchrun's environment,
the process group, per-rank shards, and the `--nproc` launcher.

    torchrun --nproc_per_node 2 -m digitnet train --recipe fast     # 2 processes on this machine
    digitnet train --nproc 2 --recipe fast                          # the same; digitnet starts torchrun

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE in each process; their presence marks a
distributed run. CPU processes talk over gloo, GPU processes over NCCL (one GPU per process, cuda:LOCAL_RANK).
batch_size stays the GLOBAL batch: every rank walks the same seeded permutation and takes every
world_size-th image of each global batch (as DistributedSampler does), so N processes take the same
optimizer steps as one process with the same batch size and seed.
"""
from __future__ import annotations

import logging
import os
import socket
import sys
import time
from dataclasses import dataclass

import torch
import torch.distributed as tdist

from digitnet.errors import DigitnetError
from digitnet.model import pick_device


@dataclass
class Dist:
    """Where this process sits in the job; world 1 and rank 0 for a plain single-process run."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    started: bool = False  # True when train() created the process group, so it also destroys it

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Only the main process (rank 0) prints and writes files."""
        return self.rank == 0


def from_env() -> Dist:
    """Read torchrun's variables; a run without RANK/WORLD_SIZE is a single process."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Dist()
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    except ValueError:
        raise DigitnetError("RANK, WORLD_SIZE, LOCAL_RANK must be integers (are they set by torchrun?)") from None
    return Dist(rank, world, local_rank, local_world)


def rank_device(name: str, dist: Dist) -> torch.device:
    """This rank's device: with CUDA, one GPU per local rank (cuda:LOCAL_RANK)."""
    device = pick_device(name)
    if device.type == "cuda" and (dist.enabled or device.index is None):
        device = torch.device("cuda", dist.local_rank if dist.enabled else 0)  # never 2 ranks on 1 GPU
    if device.type == "cuda":
        if device.index >= torch.cuda.device_count():
            raise DigitnetError(f"rank {dist.rank} wants {device} but this machine has "
                                f"{torch.cuda.device_count()} GPU(s); lower --nproc_per_node")
        torch.cuda.set_device(device)
    return device


def setup(dist: Dist, device: torch.device) -> None:
    """Join the process group (MASTER_ADDR/MASTER_PORT come from torchrun): NCCL on GPUs, gloo on CPUs."""
    if not dist.enabled or tdist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    tdist.init_process_group(backend=backend, rank=dist.rank, world_size=dist.world,
                             device_id=device if device.type == "cuda" else None)
    dist.started = True


_meetings = 0  # wait_for_all calls so far in this process


def wait_for_all(dist: Dist, timeout_s: float = 60.0) -> None:
    """Block until every rank gets here (after a successful run: leave together, see teardown)."""
    if not (dist.enabled and tdist.is_initialized()):
        return
    tdist.barrier()
    # gloo's barrier can return on one rank while the other is still in its last receive; tearing the
    # group down then aborted the other process ("terminate called without an active exception", seen
    # on a loaded 2-core machine after the run was saved). A second meeting through the rendezvous
    # store, plain TCP outside gloo, lets no rank tear down until all have left the barrier.
    global _meetings
    _meetings += 1  # every rank calls this in the same order, so the keys match across ranks
    key = f"digitnet/left-barrier/{_meetings}"
    store = tdist.distributed_c10d._get_default_store()
    store.add(key, 1)
    deadline = time.monotonic() + timeout_s
    while store.add(key, 0) < dist.world and time.monotonic() < deadline:
        time.sleep(0.01)


def leave_worker() -> None:
    """End a torchrun worker process now: its run is saved and every rank is past wait_for_all.

    The interpreter's exit, destroying gloo's threads, still aborted a rank now and then after a
    finished run ("terminate called without an active exception": 1 of about 6 two-process runs of
    the test suite on this 2-core machine, the run directory complete), and the launcher then
    reported a failure. Nothing is left to do, so the process ends without those destructors."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def teardown(dist: Dist) -> None:
    # After success, train() waits for all ranks first: a rank that tore down while rank 0 was still
    # writing files was seen to abort under gloo. Not on errors: a failing rank must exit, so that
    # torchrun stops the others, rather than wait in a barrier they never reach.
    if dist.started and tdist.is_initialized():
        tdist.destroy_process_group()
        dist.started = False


def default_threads(dist: Dist) -> int:
    """CPU threads per process: the CPUs we may use, shared by the processes on this machine."""
    return max(1, len(os.sched_getaffinity(0)) // max(1, dist.local_world))


def shard(idx: torch.Tensor, dist: Dist) -> torch.Tensor:
    """This rank's part of a global batch: every world-th index, starting at its rank."""
    return idx[dist.rank::dist.world] if dist.enabled else idx


def all_reduce_sum(t: torch.Tensor, dist: Dist) -> torch.Tensor:
    """Sum of t over all ranks (t itself when single-process); t is left unchanged."""
    if not dist.enabled:
        return t
    out = t.clone()
    tdist.all_reduce(out, op=tdist.ReduceOp.SUM)
    return out


def all_gather_bytes(t: torch.Tensor, dist: Dist, device: torch.device) -> list[torch.Tensor]:
    """Every rank's copy of a same-sized uint8 CPU tensor (e.g. an RNG state), in rank order, on CPU."""
    if not dist.enabled:
        return [t]
    local = t.to(device)  # NCCL only moves GPU tensors
    parts = [torch.empty_like(local) for _ in range(dist.world)]
    tdist.all_gather(parts, local)
    return [p.cpu() for p in parts]


def broadcast_text(text: str, dist: Dist, device: torch.device) -> str:
    """Rank 0's text on every rank (used for the run directory and for errors found only on rank 0)."""
    if not dist.enabled:
        return text
    data = torch.tensor(list(text.encode()), dtype=torch.uint8, device=device)
    size = torch.tensor([len(data)], dtype=torch.long, device=device)
    tdist.broadcast(size, src=0)
    if dist.rank != 0:
        data = torch.empty(int(size.item()), dtype=torch.uint8, device=device)
    tdist.broadcast(data, src=0)
    return bytes(data.cpu().tolist()).decode()


def on_main(fn, dist: Dist, device: torch.device) -> str:
    """Run fn() -> str on rank 0 and hand its result to all ranks; a DigitnetError there fails every rank."""
    if not dist.enabled:
        return fn()
    result = ""
    if dist.main:
        try:
            result = "ok:" + fn()
        except DigitnetError as e:
            result = "error:" + str(e)
    result = broadcast_text(result, dist, device)
    if result.startswith("error:"):
        raise DigitnetError(result[len("error:"):])
    return result[len("ok:"):]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(nproc: int, train_args: list[str]) -> int:
    """`digitnet train --nproc N ...`: torchrun's launcher with N processes on this machine."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nproc < 1:
        raise DigitnetError(f"--nproc must be at least 1, got {nproc}")
    if "RANK" in os.environ:
        raise DigitnetError("--nproc given inside a torchrun job; use one or the other")
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # train() sets threads per process itself
    if sys.platform.startswith("linux"):
        # One machine: gloo talks over loopback, not whatever interface the hostname resolves to.
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    # The processes print their own errors; the launcher's logs and traceback would only repeat them.
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    # c10d rendezvous on loopback: a single-machine job needs no network beyond 127.0.0.1.
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"digitnet-{os.getpid()}",
                          rdzv_backend="c10d", rdzv_endpoint=f"127.0.0.1:{free_port()}", max_restarts=0,
                          monitor_interval=0.1)
    try:
        elastic_launch(config, sys.executable)("-m", "digitnet", "train", *train_args)
    except ChildFailedError as e:
        raise DigitnetError(f"{len(e.failures)} of {nproc} training processes failed (see above)") from None
    except SignalException:  # Ctrl-C or kill: the processes have been stopped; checkpoints stay for --resume
        raise KeyboardInterrupt from None
    return 0
