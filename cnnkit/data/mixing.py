"""MixUp and CutMix: training batches whose images, and labels, are blended in pairs.

MixUp (Zhang et al. 2018) takes a weighted mean of two images; CutMix (Yun et al. 2019) pastes a box of one into the
other. Either way the target is the two labels' one-hot vectors in the same proportions, so the loss is the
cross-entropy against a soft target. Each image of a batch is paired with the one before it (the batch is already
shuffled), with one weight per batch drawn from Beta(alpha, alpha), as timm and torchvision do.

The draws come from the training loop's seeded generator (timm's Mixup and torchvision's MixUp/CutMix draw from the
global random state): a resumed run mixes exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Mixed:
    """A blended batch: its images, soft targets [N, classes], and each image's larger share's label (what the
    training accuracy is counted against)."""

    images: torch.Tensor
    targets: torch.Tensor
    labels: torch.Tensor


@dataclass(frozen=True)
class Mixer:
    """Blends a batch with MixUp, CutMix or, when both alphas are set, one of the two per batch at even odds."""

    num_classes: int
    mixup: float = 0.0  # Beta(alpha, alpha) for MixUp's weight; 0: off
    cutmix: float = 0.0  # the same for CutMix's box area; 0: off

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> Mixed:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        rng = np.random.default_rng(seed)  # Beta draws: torch has none that takes a generator
        use_cutmix = self.cutmix > 0 and (self.mixup <= 0 or rng.random() < 0.5)
        lam = float(rng.beta(*(2 * [self.cutmix if use_cutmix else self.mixup])))
        partner = images.roll(1, dims=0)
        if use_cutmix:
            images, lam = _paste_box(images, partner, lam, rng)
        else:
            images = images * lam + partner * (1 - lam)
        one_hot = F.one_hot(labels, self.num_classes).to(images.dtype)
        targets = one_hot * lam + one_hot.roll(1, dims=0) * (1 - lam)
        return Mixed(images, targets, labels if lam >= 0.5 else labels.roll(1, dims=0))


def _paste_box(images: torch.Tensor, partner: torch.Tensor, lam: float,
               rng: np.random.Generator) -> tuple[torch.Tensor, float]:
    """Paste a box of `partner` covering about 1 - lam of the area (centre uniform, clipped at the borders) into
    `images`; the weight that the box actually leaves to `images`."""
    height, width = images.shape[-2:]
    side = math.sqrt(1 - lam)
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    half_h, half_w = int(height * side) // 2, int(width * side) // 2
    top, bottom = max(cy - half_h, 0), min(cy + half_h, height)
    left, right = max(cx - half_w, 0), min(cx + half_w, width)
    out = images.clone()
    out[..., top:bottom, left:right] = partner[..., top:bottom, left:right]
    return out, 1 - (bottom - top) * (right - left) / (height * width)


def build_mixer(*, num_classes: int, mixup: float, cutmix: float) -> Mixer | None:
    return Mixer(num_classes, mixup, cutmix) if mixup > 0 or cutmix > 0 else None
