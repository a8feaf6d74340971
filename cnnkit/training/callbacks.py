"""Callbacks: what happens around the steps and epochs of training, each resumable through its state_dict.

The trainer calls, in order: on_phase_start (a new optimizer exists), on_epoch_start, after_batch (after every
optimizer step), after_train_epoch (before validation), after_epoch (with the epoch's history row).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from cnnkit.config import ScheduleConfig
from cnnkit.training.optim import Lookahead
from cnnkit.training.phases import Phase
from cnnkit.training.schedules import Schedule, build_schedule, mode_for

if TYPE_CHECKING:
    from cnnkit.training.fit import Trainer


class Callback:
    """No-op hooks; subclasses override what they need. `name` keys the state in the checkpoint."""

    name = ""

    def on_phase_start(self, trainer: Trainer, phase: Phase) -> None:
        pass

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        pass

    def after_batch(self) -> None:
        pass

    def after_train_epoch(self) -> None:
        pass

    def after_epoch(self, epoch: int, row: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@dataclass
class BestTracker(Callback):
    """Remembers the best value of `monitor` and its epoch; with `patience` > 0 it also says when to stop."""

    monitor: str
    patience: int = 0
    best: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    improved: bool = False  # whether the last epoch was the best so far

    name = "best"

    def update(self, epoch: int, value: float) -> bool:
        """Record an epoch's value; return True when it is the new best."""
        if math.isnan(value):
            improved = False
        elif self.best is None:
            improved = True
        else:
            improved = value < self.best if mode_for(self.monitor) == "min" else value > self.best
        if improved:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        self.improved = improved
        return improved

    def on_phase_start(self, trainer: Trainer, phase: Phase) -> None:
        self.bad_epochs = 0  # each phase has its own patience; the best so far stays the one to beat

    def after_epoch(self, epoch: int, row: dict[str, Any]) -> None:
        self.update(epoch, row[self.monitor])

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "improved"}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


class ScheduleCallback(Callback):
    """The learning-rate schedule of each phase, stepped per batch or on the monitored value per epoch."""

    name = "schedule"

    def __init__(self, config: ScheduleConfig, *, monitor: str, steps_per_epoch: int) -> None:
        self.config, self.monitor, self.steps_per_epoch = config, monitor, steps_per_epoch
        self.schedule = Schedule(None, per_batch=False)

    def on_phase_start(self, trainer: Trainer, phase: Phase) -> None:
        self.schedule = build_schedule(self.config, trainer.optimizer, lr=phase.lr, epochs=max(phase.epochs, 1),
                                       steps_per_epoch=self.steps_per_epoch)

    def after_batch(self) -> None:
        self.schedule.after_batch()

    def after_epoch(self, epoch: int, row: dict[str, Any]) -> None:
        self.schedule.after_epoch(row.get(self.monitor))

    def state_dict(self) -> dict[str, Any]:
        return self.schedule.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.schedule.load_state_dict(state)


class LossScaling(Callback):
    """fp16 training's loss scale (torch.amp.GradScaler): the loss is multiplied before backward so that small
    gradients do not flush to zero in fp16, a step whose gradients overflowed is skipped, and the scale backs off
    (or grows after a run of good steps). Resumed with the run, so a resumed run scales as an uninterrupted one."""

    name = "loss_scale"

    def __init__(self, device_type: str) -> None:
        self.scaler = torch.amp.GradScaler(device_type)

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:  # empty before the first step
            self.scaler.load_state_dict(state)


class LookaheadCallback(Callback):
    """Lookahead weight averaging (see train.optim.Lookahead); each epoch ends with a pull, so it has no state."""

    name = "lookahead"

    def __init__(self, model: nn.Module, *, every: int, total_steps: int, steps_per_epoch: int) -> None:
        self.lookahead = Lookahead(model, total_steps=total_steps, every=every)
        self.steps_per_epoch = steps_per_epoch

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        self.lookahead.begin_epoch(step=(epoch - 1) * self.steps_per_epoch)

    def after_batch(self) -> None:
        self.lookahead.after_batch()

    def after_train_epoch(self) -> None:
        self.lookahead.end_epoch()


class EmaCallback(Callback):
    """An exponential moving average of the weights and BatchNorm statistics, updated after every step; what is
    validated, tested and saved. Its tensors travel in the checkpoint beside the model's."""

    name = "ema"

    def __init__(self, model: nn.Module, *, decay: float) -> None:
        self.model = model
        self.average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)

    def after_batch(self) -> None:
        self.average.update_parameters(self.model)
