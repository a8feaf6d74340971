"""Optimisers and weight averaging: what moves the weights between batches."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cnnkit.config import TrainConfig

NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm)


def build_optimizer(config: TrainConfig, model: nn.Module, *, lr: float) -> torch.optim.Optimizer:
    """The configured optimiser over the trainable parameters (normalisation layers in their own group)."""
    groups = _param_groups(model, lr=lr, weight_decay=config.weight_decay, norm_lr_scale=config.norm_lr_scale)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, nesterov=config.momentum > 0)
    # One fused kernel for all of Adam's per-parameter updates instead of several small ops per tensor: it matters
    # most for small models with short steps, such as the tutorial CNN (bench/vs_keras.py).
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, fused=fused or None)
    return torch.optim.Adam(groups, lr=lr, fused=fused or None)


def _param_groups(model: nn.Module, *, lr: float, weight_decay: float, norm_lr_scale: float) -> list[dict[str, Any]]:
    # Normalisation shifts and scales can move `norm_lr_scale` times faster; dividing their weight decay by the same
    # factor keeps the decay per step (lr * weight_decay) the same as everywhere else.
    norm = {id(p) for m in model.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters(recurse=False)}
    trainable = [p for p in model.parameters() if p.requires_grad]
    if norm_lr_scale == 1.0:
        return [{"params": trainable, "lr": lr, "weight_decay": weight_decay}]
    return [
        {"params": [p for p in trainable if id(p) not in norm], "lr": lr, "weight_decay": weight_decay},
        {"params": [p for p in trainable if id(p) in norm], "lr": lr * norm_lr_scale,
         "weight_decay": weight_decay / norm_lr_scale},
    ]


class Lookahead:
    """Lookahead weight averaging (Zhang et al., 2019) on a schedule like airbench's.

    Every `every` steps a slow copy of the weights (and BatchNorm statistics) moves toward the trained ones, and the
    trained ones jump back to it. The slow copy's inertia grows with the cube of training progress, so the end of
    training is averaged hardest. Each epoch ends with such a step: the two copies agree there, so a checkpoint of
    the model is the whole state and a resumed run continues exactly.
    """

    def __init__(self, model: nn.Module, *, total_steps: int, every: int, max_decay: float = 0.95**5) -> None:
        self.model, self.total_steps, self.every, self.max_decay = model, max(total_steps, 1), every, max_decay
        self.step = 0
        self._fast: list[torch.Tensor] = []
        self._slow: list[torch.Tensor] = []

    def begin_epoch(self, *, step: int) -> None:
        """Start from the model as it is, `step` optimiser steps into training."""
        self.step = step
        self._fast = [t for t in self.model.state_dict().values() if t.is_floating_point()]
        self._slow = [t.detach().clone() for t in self._fast]

    def after_batch(self) -> None:
        self.step += 1
        if self.step % self.every == 0:
            self._pull()

    def end_epoch(self) -> None:
        if self.step % self.every:
            self._pull()

    @torch.no_grad()
    def _pull(self) -> None:
        decay = self.max_decay * min(1.0, self.step / self.total_steps) ** 3
        for slow, fast in zip(self._slow, self._fast):
            slow.lerp_(fast, 1 - decay)
            fast.copy_(slow)
