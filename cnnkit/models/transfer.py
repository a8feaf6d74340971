"""Transfer learning: a pretrained base without its classifier, a new head, and what is frozen."""

from __future__ import annotations

import re

import torch
from torch import nn

from cnnkit.errors import CnnkitError

UNFREEZE_HELP = "all, none or last-K (the last K blocks of the base)"


class TransferNet(nn.Module):
    """base (image -> pooled features) followed by head (features -> logits).

    While `base_frozen`, or with `bn_frozen`, the base's BatchNorm layers stay in inference mode during training:
    their running statistics are ImageNet's and a small data set would only disturb them (Keras does the same
    with `base_model(x, training=False)`).
    """

    def __init__(self, base: nn.Module, head: nn.Module, *, bn_frozen: bool = True) -> None:
        super().__init__()
        self.base = base
        self.head = head
        self.bn_frozen = bn_frozen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.base(x))

    def train(self, mode: bool = True) -> TransferNet:
        """Training mode, less what a frozen base must not do: BatchNorm keeps its statistics (bn_frozen), and a
        base none of whose weights train skips no blocks (stochastic depth, timm's DropPath/DropBlock: it
        regularises the blocks it skips, and a frozen base is a fixed function whose features can be cached)."""
        super().train(mode)
        if not mode:
            return self
        frozen = not any(p.requires_grad for p in self.base.parameters())
        for module in self.base.modules():
            if (self.bn_frozen and isinstance(module, nn.modules.batchnorm._BatchNorm)) or (
                    frozen and getattr(module, "drop_prob", 0.0)):
                module.eval()
        return self


def new_head(num_features: int, num_classes: int, *, hidden: int = 128, dropout: float = 0.3) -> nn.Sequential:
    """The tutorial's head on pooled features: Dense(hidden, relu) -> Dropout -> Dense(N); hidden 0 = linear."""
    if hidden <= 0:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(num_features, num_classes))
    return nn.Sequential(nn.Linear(num_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                         nn.Linear(hidden, num_classes))


def split_base(model: nn.Module) -> tuple[nn.Module, int]:
    """The model without its classifier, as a module from images to globally average-pooled features."""
    if hasattr(model, "reset_classifier") and hasattr(model, "num_features"):  # timm
        model.reset_classifier(0, "avg")
        return model, int(model.num_features)
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential):  # torchvision AlexNet, VGG
        channels = [m.out_channels for m in features.modules() if isinstance(m, nn.Conv2d)][-1]
        return nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten()), channels
    raise CnnkitError(f"{type(model).__name__} has no pretrained base to freeze; use a timm or torchvision model")


def base_units(base: nn.Module) -> list[nn.Module]:
    """The base's blocks in forward order: top-level layers, with stage containers opened one level."""
    units: list[nn.Module] = []
    for child in base.children():
        if isinstance(child, (nn.Sequential, nn.ModuleList)):
            units += [c for c in child.children() if any(True for _ in c.parameters())]
        elif any(True for _ in child.parameters()):
            units.append(child)
    return units


def set_base_trainable(net: TransferNet, unfreeze: str) -> None:
    """Freeze the base, then unfreeze `all`, `none` or `last-K` of its blocks; the head always trains."""
    net.base.requires_grad_(False)
    net.head.requires_grad_(True)
    for part in trained_base_parts(net, unfreeze):
        part.requires_grad_(True)


def trained_base_parts(net: TransferNet, unfreeze: str) -> list[nn.Module]:
    """The parts of the base that `unfreeze` (`all`, `none` or `last-K`) trains."""
    if unfreeze == "none":
        return []
    if unfreeze == "all":
        return [net.base]
    match = re.fullmatch(r"last-(\d+)", unfreeze)
    if not match or int(match[1]) < 1:
        raise CnnkitError(f"--unfreeze {unfreeze!r}: expected {UNFREEZE_HELP}")
    return base_units(net.base)[-int(match[1]):]


def depthwise_convs(module: nn.Module) -> list[nn.Conv2d]:
    """The depthwise convolutions in `module` (one filter per input channel: EfficientNet, MobileNet, ConvNeXt),
    whose backward bf16 slows on CPUs (bench/precision.py)."""
    return [m for m in module.modules() if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels]
