"""Modules kept in fp32 inside a bf16 autocast region while training.

On CPUs bf16 slows the backward of depthwise convolutions while it speeds up everything else in the networks that
have them (the 1x1 convolutions and the head: bench/precision.py), so `--precision auto` trains such networks in
bf16 with their depthwise convolutions in fp32. Forward hooks leave autocast before each such module and return
to it after; autograd then runs the module's backward in fp32 too, as its saved tensors are fp32. Without
autograd (validation, a frozen base's features) the modules run as autocast runs everything else."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle


class Fp32Islands:
    """While installed, `modules` compute in fp32 under autocast whenever autograd records (training steps)."""

    def __init__(self, modules: Iterable[nn.Module], *, device_type: str) -> None:
        self.device_type = device_type
        self.entered: list[torch.autocast | None] = []  # one per module call in progress, innermost last
        self.handles: list[RemovableHandle] = []
        for module in modules:
            self.handles += [module.register_forward_pre_hook(self._enter),
                             module.register_forward_hook(self._leave, always_call=True)]

    def __len__(self) -> int:
        return len(self.handles) // 2

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def _enter(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if not (torch.is_grad_enabled() and torch.is_autocast_enabled(self.device_type)):
            self.entered.append(None)
            return None
        fp32 = torch.autocast(self.device_type, enabled=False)
        fp32.__enter__()
        self.entered.append(fp32)
        return tuple(a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)

    def _leave(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        fp32 = self.entered.pop()
        if fp32 is not None:
            fp32.__exit__(None, None, None)
