"""Process-group context: one process by default; data-parallel under torchrun."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


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
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor


SINGLE_PROCESS = DistContext()


def resolve_device(name: str, *, local_rank: int = 0) -> torch.device:
    """'auto' picks CUDA when present; 'cuda' without a GPU is an error, not a silent fallback."""
    from cnnkit.errors import CnnkitError

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise CnnkitError("--device cuda asked for, but PyTorch sees no CUDA GPU; use --device cpu or auto")
        return torch.device("cuda", local_rank)
    if name != "cpu":
        raise CnnkitError(f"unknown device {name!r}; valid: auto, cpu, cuda")
    return torch.device("cpu")
