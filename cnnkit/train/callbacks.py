"""Epoch-end logic: tracking the best epoch and early stopping, both resumable from their state."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


def mode_for(monitor: str) -> str:
    """'min' for losses, 'max' for accuracies."""
    return "min" if "loss" in monitor else "max"


@dataclass
class BestTracker:
    """Remembers the best value of `monitor` and its epoch; with `patience` > 0 it also says when to stop."""

    monitor: str
    patience: int = 0
    best: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0

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
        return improved

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, object]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, object]) -> None:
        for key, value in state.items():
            setattr(self, key, value)
