"""Test-time augmentation: logits averaged over a few views of each image, the same in evaluation and export."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TTA_MODES = ("none", "flip", "flip-shift")


def tta_logits(model: nn.Module, x: torch.Tensor, mode: str) -> torch.Tensor:
    """Float32 logits of `model` on `x` [N, C, H, W], averaged over the views that `mode` names.

    "flip": the image and its mirror image. "flip-shift": those two, weighted 1/2, and both again shifted by one
    pixel up-left and down-right (reflect-padded), weighted 1/4 each, as airbench's strongest TTA.
    """
    if mode == "none":
        return model(x).float()
    logits = _with_mirror(model, x)
    if mode == "flip":
        return logits
    if mode != "flip-shift":
        raise ValueError(f"unknown TTA mode {mode!r}; valid: {', '.join(TTA_MODES)}")
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    shifted = _with_mirror(model, padded[..., :h, :w]) + _with_mirror(model, padded[..., 2:, 2:])
    return 0.5 * logits + 0.25 * shifted


def _with_mirror(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (model(x).float() + model(x.flip(-1)).float())
