"""Training as data: a run is a list of phases (epochs, learning rate, what trains), run by one trainer."""

from __future__ import annotations

from dataclasses import dataclass

from cnnkit.config import TrainConfig


@dataclass(frozen=True)
class Phase:
    name: str  # "train" (from scratch or whole-network), "head" (frozen base), "finetune"
    first_epoch: int  # 1-based, counted over the whole run
    epochs: int
    lr: float
    trainable: str  # of a transfer base: "none", "all" or "last-K"; "all" for a network without a frozen base

    @property
    def last_epoch(self) -> int:
        return self.first_epoch + self.epochs - 1

    def holds(self, epoch: int) -> bool:
        return self.first_epoch <= epoch <= self.last_epoch


def plan_phases(config: TrainConfig) -> list[Phase]:
    """Frozen-base runs train the head, then (with --finetune-epochs) fine-tune; others train in one phase."""
    if not config.freeze_base:
        return [Phase("train", 1, config.epochs, config.lr, "all")]
    phases = [Phase("head", 1, config.epochs, config.lr, "none")]
    if config.finetune_epochs:
        phases.append(Phase("finetune", config.epochs + 1, config.finetune_epochs, config.finetune_lr,
                            config.unfreeze))
    return phases


def phase_of(phases: list[Phase], epoch: int) -> Phase:
    """The phase that epoch `epoch` belongs to (the last one past the end)."""
    return next((p for p in phases if p.holds(epoch)), phases[-1])
