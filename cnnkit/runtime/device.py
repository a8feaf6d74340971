"""Choosing the device, with no side effects (training's process group selects the CUDA device itself), and
keeping PyTorch's CPU threads within the process's OpenMP limit."""

from __future__ import annotations

import os
from typing import NamedTuple

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


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX), from Linux's /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line for line in info if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class Precision(NamedTuple):
    """A training phase's numeric precision: the autocast type (or fp32), and why."""

    name: str  # fp32, bf16 or fp16
    why: str
    fp32_depthwise: bool = False  # the phase's depthwise convolutions stay fp32 inside bf16 autocast

    def describe(self) -> str:
        return self.name + (" with depthwise convolutions in fp32" if self.fp32_depthwise else "")


def resolve_precision(name: str, device: torch.device, *, trains_depthwise: bool) -> Precision:
    """A training phase's precision; `trains_depthwise`: whether the phase trains depthwise convolutions. `auto`:
    bf16 autocast where the hardware runs it fast (CUDA GPUs with bf16; CPUs with AVX512-BF16 or AMX), on CPUs with
    the depthwise convolutions a phase trains left in fp32, as bf16 slows their backward and speeds up the rest
    (bench/precision.py); fp16 with loss scaling on CUDA GPUs with fp16 tensor cores but no bf16 (T4, V100:
    compute capability 7.x); fp32 elsewhere."""
    if name == "fp16" and device.type == "cpu":
        return Precision(name, "asked for; most CPUs run fp16 slower than bf16 or fp32")
    if name != "auto":
        return Precision(name, "asked for")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return Precision("bf16", "auto: the GPU has bf16")
        if torch.cuda.get_device_capability(device) >= (7, 0):
            return Precision("fp16", "auto: the GPU has fp16 tensor cores but no bf16; with loss scaling")
        return Precision("fp32", "auto: the GPU has neither bf16 nor fp16 tensor cores")
    if not cpu_has_fast_bf16():
        return Precision("fp32", "auto: the CPU has neither AVX512-BF16 nor AMX")
    if trains_depthwise:
        return Precision("bf16", "auto: the CPU has AVX512-BF16 or AMX; bf16 slows depthwise convolutions' "
                         "backward, so they stay fp32", fp32_depthwise=True)
    return Precision("bf16", "auto: the CPU has AVX512-BF16 or AMX")


def respect_thread_limit() -> int | None:
    """Lower PyTorch's CPU threads to OMP_THREAD_LIMIT where that is lower; return the new count (None: unchanged).

    Under the limit OpenMP runs every parallel region with at most that many threads, while oneDNN splits its work
    for PyTorch's count: bf16 convolutions then came out wrong without any error (a NaN loss in training, different
    probabilities in inference; README: "Threads"). With the counts equal they are right."""
    raw = os.environ.get("OMP_THREAD_LIMIT", "").strip()
    limit = int(raw) if raw.isdigit() else 0
    if limit < 1 or torch.get_num_threads() <= limit:
        return None
    torch.set_num_threads(limit)
    return limit
