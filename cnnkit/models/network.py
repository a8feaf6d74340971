"""Building the network of a run: architecture, optional pretrained weights, optional transfer head."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from cnnkit.config import TrainConfig
from cnnkit.models.pretrained import WeightsInfo, load_pretrained
from cnnkit.models.registry import create_model, weights_spec
from cnnkit.models.transfer import TransferNet, new_head, set_base_trainable, split_base


@dataclass(frozen=True)
class NetworkConfig:
    model: str
    num_classes: int
    input_size: int
    pretrained: bool = False
    weights: Path | None = None  # a local file of pretrained weights (implies pretrained)
    transfer_head: bool = False  # replace the classifier by the tutorial head on a frozen base
    head_hidden: int = 128
    head_dropout: float = 0.3
    drop_path: float = 0.0  # stochastic depth of the base's residual blocks

    @classmethod
    def of(cls, config: TrainConfig, num_classes: int, input_size: int) -> NetworkConfig:
        """The network part of a training config."""
        return cls(model=config.model, num_classes=num_classes, input_size=input_size, pretrained=config.pretrained,
                   weights=config.weights, transfer_head=config.freeze_base, head_hidden=config.head_hidden,
                   head_dropout=config.head_dropout, drop_path=config.drop_path)


def build_network(config: NetworkConfig, *, load_weights: bool) -> tuple[nn.Module, WeightsInfo | None]:
    """The network, and where its pretrained weights came from (None when trained from scratch).

    With `load_weights` False only the architecture is built, to receive a run's saved weights.
    """
    pretrained = config.pretrained or config.weights is not None
    classes = 1000 if config.transfer_head else config.num_classes  # the head is replaced below
    model = create_model(config.model, num_classes=classes, input_size=config.input_size, drop_path=config.drop_path)
    info = None
    if pretrained and load_weights:
        info = load_pretrained(model, weights_spec(config.model), weights=config.weights)
    if config.transfer_head:
        base, features = split_base(model)
        model = TransferNet(base, new_head(features, config.num_classes, hidden=config.head_hidden,
                                           dropout=config.head_dropout))
        set_base_trainable(model, "none")
    return model, info


@runtime_checkable
class InitializedFromData(Protocol):
    """A model with a layer set from the training data before training (e.g. a whitening stem)."""

    def init_from_data(self, images: torch.Tensor) -> None: ...

