"""Learning-rate schedules: torch's own, chosen by name."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.optim.lr_scheduler import (
    LambdaLR,
    LRScheduler,
    OneCycleLR,
    ReduceLROnPlateau,
)

from cnnkit.config import ScheduleConfig


def mode_for(monitor: str) -> str:
    """'min' for losses, 'max' for accuracies."""
    return "min" if "loss" in monitor else "max"


@dataclass
class Schedule:
    """A scheduler and when it steps: after every batch, or once per epoch on the monitored value."""

    scheduler: LRScheduler | ReduceLROnPlateau | None
    per_batch: bool

    def after_batch(self) -> None:
        if self.per_batch and self.scheduler is not None:
            self.scheduler.step()

    def after_epoch(self, monitored: float | None) -> None:
        if isinstance(self.scheduler, ReduceLROnPlateau) and monitored is not None:
            self.scheduler.step(monitored)

    def state_dict(self) -> dict[str, object]:
        return self.scheduler.state_dict() if self.scheduler is not None else {}

    def load_state_dict(self, state: dict[str, object]) -> None:
        if self.scheduler is not None and state:
            self.scheduler.load_state_dict(state)


class _WarmupCosine:
    """LR multiplier: linear warm-up over `warmup` steps, then cosine decay to `floor` at `total` steps."""

    def __init__(self, warmup: int, total: int, floor: float) -> None:
        self.warmup, self.total, self.floor = warmup, max(total, 1), floor

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress))


class _Triangle:
    """LR multiplier: linear rise from `start` to 1 over `warmup` steps, then linear fall to `floor` at `total`."""

    def __init__(self, warmup: int, total: int, floor: float, start: float = 0.2) -> None:
        self.warmup, self.total, self.floor, self.start = warmup, max(total, 1), floor, start

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.start + (1 - self.start) * step / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.floor + (1 - self.floor) * (1 - progress)


def build_schedule(
    config: ScheduleConfig, optimizer: torch.optim.Optimizer, *, lr: float, epochs: int, steps_per_epoch: int
) -> Schedule:
    total = epochs * steps_per_epoch
    warmup = int(config.warmup_epochs * steps_per_epoch)
    if config.name == "plateau":
        plateau = ReduceLROnPlateau(
            optimizer, mode=mode_for(config.monitor), factor=config.factor, patience=config.patience,
            min_lr=config.min_lr,
        )
        return Schedule(plateau, per_batch=False)
    if config.name == "cosine":
        return Schedule(LambdaLR(optimizer, _WarmupCosine(warmup, total, config.min_lr / lr)), per_batch=True)
    if config.name == "linear":
        return Schedule(LambdaLR(optimizer, _Triangle(warmup, total, config.min_lr / lr)), per_batch=True)
    if config.name == "onecycle":
        pct = min(0.9, max(0.01, warmup / total)) if warmup else 0.25
        peaks = [group["lr"] for group in optimizer.param_groups]  # groups may run at multiples of `lr`
        return Schedule(OneCycleLR(optimizer, max_lr=peaks, total_steps=total, pct_start=pct), per_batch=True)
    return Schedule(None, per_batch=False)
