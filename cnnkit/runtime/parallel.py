"""Data-parallel processes under torchrun: which process this is, reductions that are no-ops in a single process,
process-group set-up and tear-down, and the launcher behind --nproc. Used by training and by bulk prediction.

torch is imported only where several processes are at work: a single process predicting with an ONNX export (the
serving image, docker/) runs this module without PyTorch installed."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from cnnkit.errors import CnnkitError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum a tensor over ranks (in place); a no-op in a single process."""
        if self.enabled:
            import torch.distributed as dist

            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def describe(self) -> dict[str, Any] | None:
        """How the run is distributed, for its header and config.json (None: one process). Nodes and processes per
        node come from torchrun's LOCAL_WORLD_SIZE (homogeneous nodes, as torchrun launches them)."""
        if not self.enabled:
            return None
        import torch.distributed as dist

        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", self.world_size))
        return {"world_size": self.world_size, "backend": dist.get_backend() if dist.is_initialized() else None,
                "nodes": max(1, self.world_size // max(per_node, 1)), "processes_per_node": per_node}

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()


SINGLE_PROCESS = DistContext()


def current_context() -> DistContext:
    """This process's place in the process group it has joined (see process_group); one process if none."""
    if _world_size() <= 1:
        return SINGLE_PROCESS
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(),
                           local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    return SINGLE_PROCESS


@contextlib.contextmanager
def process_group(device: str) -> Iterator[DistContext]:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1); else one process.

    gloo on CPU, NCCL on CUDA (each rank on its LOCAL_RANK's GPU). On the way out every rank meets at a barrier
    before the group is destroyed: a rank that exits while another still talks to it can abort with "terminate
    called without an active exception". Inside a group already joined, it is that group, left to its owner.
    """
    world = _world_size()
    if world <= 1:
        yield SINGLE_PROCESS
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():  # inside an outer group (cnnkit cv trains every fold in one): that group is this one
        yield current_context()
        return
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = _uses_cuda(device)
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        _check_gpus(processes=local_rank + 1)
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    ctx = DistContext(rank=rank, world_size=world, local_rank=local_rank)
    try:
        yield ctx
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _world_size() -> int:
    """The processes torchrun started for this job (1 when not launched by it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _uses_cuda(device: str) -> bool:
    import torch

    return device == "cuda" or (device == "auto" and torch.cuda.is_available())


def _check_gpus(*, processes: int) -> None:
    """NCCL needs a GPU per process; without this, a process beyond the GPUs dies in set_device with "invalid
    device ordinal" (and torchrun's traceback buries it)."""
    import torch

    gpus = torch.cuda.device_count()
    if processes > gpus:
        raise CnnkitError(f"{processes} processes on this machine but {gpus} GPU(s): start at most {gpus} processes "
                          "per machine (one per GPU), or use --device cpu")


LAUNCHED = "CNNKIT_LAUNCHED"  # set for the ranks that --nproc starts: the launcher reports the outcome


def launch_torchrun(argv: Sequence[str], *, nproc: int, device: str) -> int:
    """Re-run `cnnkit ARGV` under torchrun with `nproc` processes on this machine; return its exit code."""
    if _world_size() > 1:
        raise CnnkitError("--nproc is for launching; under torchrun already, leave it out")
    if _uses_cuda(device):
        _check_gpus(processes=nproc)
    command = [sys.executable, "-c", _TORCHRUN, str(nproc), *argv]
    return subprocess.run(command, check=False, env={**os.environ, LAUNCHED: "1"}).returncode


# What the launcher's child process runs: torchrun with cnnkit's arguments.
_TORCHRUN = "import sys; from cnnkit.runtime.parallel import torchrun; torchrun(int(sys.argv[1]), sys.argv[2:])"


def torchrun(nproc: int, argv: list[str]) -> None:
    """`torchrun --standalone --nproc-per-node NPROC -m cnnkit ARGV`, with ARGV handed to the ranks as it is. Given
    on torchrun's command line, ARGV would go through torchrun's own parser too, which refuses an option that
    abbreviates two of its own (`--monitor`: `--monitor-interval` or `--monitor_interval`)."""
    from torch.distributed.elastic.multiprocessing.errors import record
    from torch.distributed.run import parse_args, run

    args = parse_args(["--standalone", f"--nproc-per-node={nproc}", "-m", "cnnkit"])
    args.training_script_args = list(argv)
    record(run)(args)  # as torchrun's main: a failed rank's error report, then a non-zero exit
