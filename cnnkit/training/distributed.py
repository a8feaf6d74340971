"""Data-parallel training under torchrun: process-group set-up and tear-down, and the launcher for --nproc."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from datetime import timedelta

import torch
import torch.distributed as dist

from cnnkit.errors import CnnkitError
from cnnkit.runtime.parallel import SINGLE_PROCESS, DistContext


@contextlib.contextmanager
def process_group(device: str) -> Iterator[DistContext]:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1); else one process.

    gloo on CPU, NCCL on CUDA (each rank on its LOCAL_RANK's GPU). On the way out every rank meets at a barrier
    before the group is destroyed: a rank that exits while another still talks to it can abort with "terminate
    called without an active exception".
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield SINGLE_PROCESS
        return
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    ctx = DistContext(rank=rank, world_size=world, local_rank=local_rank)
    try:
        yield ctx
        dist.barrier()
    finally:
        dist.destroy_process_group()


def launch_torchrun(argv: Sequence[str], *, nproc: int) -> int:
    """Re-run `cnnkit ARGV` under torchrun with `nproc` processes on this machine; return its exit code."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise CnnkitError("--nproc is for launching; under torchrun already, leave it out")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "cnnkit", *argv]
    return subprocess.run(command, check=False).returncode
