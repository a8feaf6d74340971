"""Training a new head on a frozen base's features, computed once.

While the base is frozen (its BatchNorm in inference mode, no dropout; stochastic depth is off) and nothing augments
the images, the base is a fixed function of each image: its pooled features are computed once per image, in batches
without autograd, and the head trains on them. Every epoch after that costs the head alone; the head's weights end
as they would training through the base (a test checks it), because the base draws no random numbers and the head
draws the same ones in the same order. With augmentation, or under data parallelism, training goes through the base.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.data.datasets import ArrayData
from cnnkit.data.preprocess import Preprocess
from cnnkit.models.transfer import TransferNet
from cnnkit.runtime.engine import StepSettings, Totals

BATCH = 128


@dataclass(frozen=True)
class Features:
    """A frozen base's output for every image of a data set (float32 [N, F] on the device), and the labels."""

    values: torch.Tensor
    labels: torch.Tensor
    seconds: float

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def why_not_cached(net: nn.Module, *, augment: bool, distributed: bool, ema: bool) -> str | None:
    """Why the head cannot train on cached features (None: it can)."""
    if not isinstance(net, TransferNet) or not net.bn_frozen:
        return "no frozen base"
    if augment:
        return "augmentation (or MixUp/CutMix) changes the base's input every epoch"
    if distributed:
        return "data-parallel training"
    if ema:
        return "weight averaging (--ema-decay) averages the whole network"
    for module in net.base.modules():
        if isinstance(module, nn.Dropout) and module.p > 0:
            return "the base has dropout"  # (stochastic depth is off in a frozen base: models.transfer.TransferNet)
    return None


@torch.no_grad()
def base_features(base: nn.Module, data: ArrayData, *, preprocess: Preprocess, settings: StepSettings,
                  batch_size: int = BATCH) -> Features:
    """The base's features for every image of `data`, in order, as they are fed in training."""
    started = time.perf_counter()
    was_training = base.training
    base.eval()
    parts = []
    for index in torch.arange(len(data)).split(batch_size):
        images = data.batch(index).to(settings.device)
        with settings.autocast():
            parts.append(base(settings.prepare(preprocess(images))).float())
    base.train(was_training)
    values = torch.cat(parts) if parts else torch.zeros(0, 0, device=settings.device)
    return Features(values, data.labels.to(settings.device), time.perf_counter() - started)


@torch.no_grad()
def evaluate_features(head: nn.Module, features: Features, *, top_k: int | None, prefix: str) -> dict[str, float]:
    """Loss, accuracy and top-k accuracy of the head on cached features (as runtime.engine.evaluate_data)."""
    head.eval()
    totals = Totals(features.values.device, top_k)
    for index in torch.arange(len(features)).split(1024):
        logits = head(features.values[index]).float()
        labels = features.labels[index]
        totals.add(logits, labels, F.cross_entropy(logits, labels))
    return totals.result(prefix=prefix)
