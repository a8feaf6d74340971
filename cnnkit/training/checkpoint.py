"""Resumable training state in one safetensors file: tensors as tensors, everything else as JSON metadata."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cnnkit.artifacts import CHECKPOINT
from cnnkit.rundir import RunDir


@dataclass
class TrainingState:
    """What a resumed run needs besides the model and optimizer tensors."""

    epoch: int  # epochs completed
    history: list[dict[str, Any]]
    elapsed_s: float
    callbacks: dict[str, dict[str, Any]]  # each callback's state_dict, by its name

    @staticmethod
    def epoch_of(run: RunDir) -> int:
        """How many epochs the run's checkpoint has completed."""
        _, metadata = run.read_tensors(CHECKPOINT)
        return int(json.loads(metadata["cnnkit.state"])["epoch"])


def save_checkpoint(run: RunDir, *, model: nn.Module, optimizer: torch.optim.Optimizer, state: TrainingState,
                    ema: nn.Module | None = None) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors |= {f"ema.{k}": v for k, v in ema.state_dict().items()}
    optim = optimizer.state_dict()
    for index, slots in optim["state"].items():
        for slot, value in slots.items():
            tensors[f"optim.{index}.{slot}"] = value if isinstance(value, torch.Tensor) else torch.tensor(value)
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    meta = {
        "epoch": state.epoch,
        "history": state.history,
        "callbacks": state.callbacks,
        "elapsed_s": state.elapsed_s,
        "param_groups": optim["param_groups"],
    }
    run.write_tensors(CHECKPOINT, tensors, metadata={"cnnkit.state": json.dumps(meta)})


def load_checkpoint(run: RunDir, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                    ema: nn.Module | None = None) -> TrainingState:
    """Restore model, optimizer, weight average and RNG from the run's checkpoint; return the rest of the state."""
    tensors, metadata = run.read_tensors(CHECKPOINT)
    meta = json.loads(metadata["cnnkit.state"])
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    if ema is not None:
        ema.load_state_dict({k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")})
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, slot = key.split(".", 2)
            slots.setdefault(int(index), {})[slot] = value
    optimizer.load_state_dict({"state": slots, "param_groups": meta["param_groups"]})
    _match_layouts(optimizer)
    torch.set_rng_state(tensors["rng.cpu"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    # Checkpoints from before callbacks kept the schedule's and the best tracker's states by name.
    callbacks = meta.get("callbacks") or {"schedule": meta.get("schedule", {}), "best": meta.get("tracker", {})}
    return TrainingState(epoch=meta["epoch"], history=meta["history"], elapsed_s=meta["elapsed_s"],
                         callbacks=callbacks)


def _match_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give each per-parameter state tensor (Adam's moments) its parameter's memory layout. Checkpoints store them
    contiguous; a channels-last convolution's moments must be channels-last again, because fused optimisers walk
    parameter, gradient and state as flat memory and would pair the wrong elements (a resumed run diverged)."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            for slot, value in optimizer.state.get(param, {}).items():
                if isinstance(value, torch.Tensor) and value.shape == param.shape and value.stride() != param.stride():
                    optimizer.state[param][slot] = torch.empty_like(param, dtype=value.dtype).copy_(value)
