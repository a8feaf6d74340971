"""A small residual-free CIFAR network for fast training, in the spirit of the public DAWNBench/airbench line.

Three conv groups (conv -> max-pool -> BN -> GELU -> conv -> BN -> GELU) after a 2x2 stem, global max pooling and
a bias-free linear layer whose logits are scaled down (a fixed temperature helps the short schedules). Written
for this project; used by `--recipe cifar-fast`.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnkit.models.registry import ModelSpec, register_model

WIDTHS = (64, 256, 256)
LOGIT_SCALE = 1 / 9


class _Group(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(cout), nn.GELU(),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.GELU(),
        )


class FastCifarNet(nn.Module):
    def __init__(self, num_classes: int, in_chans: int = 3, widths: tuple[int, int, int] = WIDTHS) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_chans, 24, 2, padding=0), nn.GELU())
        self.groups = nn.Sequential(_Group(24, widths[0]), _Group(widths[0], widths[1]), _Group(widths[1], widths[2]))
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(widths[2], num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.pool(self.groups(self.stem(x))).flatten(1)
        return self.head(features) * LOGIT_SCALE


@register_model("cifar-fast-net", input_size=32, description="Fast CIFAR net (airbench-style, ~2M params)")
def cifar_fast_net(spec: ModelSpec) -> nn.Module:
    return FastCifarNet(spec.num_classes, spec.in_chans)
