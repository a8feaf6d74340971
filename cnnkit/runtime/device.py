"""Choosing the device, with no side effects (training's process group selects the CUDA device itself)."""

from __future__ import annotations

import torch

from cnnkit.errors import CnnkitError


def resolve_device(name: str, *, local_rank: int = 0) -> torch.device:
    """'auto' picks CUDA when present; 'cuda' without a GPU is an error, not a silent fallback."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise CnnkitError("--device cuda asked for, but PyTorch sees no CUDA GPU; use --device cpu or auto")
        return torch.device("cuda", local_rank)
    if name != "cpu":
        raise CnnkitError(f"unknown device {name!r}; valid: auto, cpu, cuda")
    return torch.device("cpu")
