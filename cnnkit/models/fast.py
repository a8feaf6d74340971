"""A small residual-free CIFAR network for fast training, in the spirit of the public DAWNBench/airbench line.

A 2x2 stem that whitens image patches (set from the training data, then frozen), three conv groups
(conv -> max-pool -> BN -> GELU -> conv -> BN -> GELU), global max pooling and a bias-free linear layer whose
logits are scaled down (a fixed temperature helps the short schedules). Convolutions start as identities on their
first channels and BatchNorm learns only its shift: both make the first epochs count. Written for this project;
used by `--recipe cifar-fast`.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnkit.models.registry import ModelSpec, register_model

WIDTHS = (64, 256, 256)
LOGIT_SCALE = 1 / 9
STEM_KERNEL = 2
WHITEN_EPS = 5e-4  # added to the patch-covariance eigenvalues: keeps near-constant directions from exploding


class _Norm(nn.BatchNorm2d):
    """BatchNorm with a fixed unit scale (only the shift learns) and fast-moving statistics (momentum 0.4)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, eps=1e-12, momentum=0.4)
        self.weight.requires_grad_(False)


def _conv(cin: int, cout: int) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[: min(cin, cout)])  # the first filters pass their input through at the start
    return conv


class _Group(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(_conv(cin, cout), nn.MaxPool2d(2), _Norm(cout), nn.GELU(),
                         _conv(cout, cout), _Norm(cout), nn.GELU())


class FastCifarNet(nn.Module):
    def __init__(self, num_classes: int, in_chans: int = 3, widths: tuple[int, int, int] = WIDTHS) -> None:
        super().__init__()
        # Twice as many filters as a patch has values: each whitened direction and its negative, through GELU.
        self.whiten = nn.Conv2d(in_chans, 2 * in_chans * STEM_KERNEL**2, STEM_KERNEL, padding=0)
        self.whiten.weight.requires_grad_(False)
        self.groups = nn.Sequential(_Group(self.whiten.out_channels, widths[0]), _Group(widths[0], widths[1]),
                                    _Group(widths[1], widths[2]))
        self.head = nn.Linear(widths[2], num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.gelu(self.whiten(x))
        # Global max pooling as a reduction: exports to ONNX with every exporter (adaptive_max_pool2d does not).
        return self.head(self.groups(x).amax(dim=(2, 3))) * LOGIT_SCALE

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor) -> None:
        """Set the stem to whiten the patches of `images` (standardised, [N, C, H, W]): PCA, scaled to unit variance."""
        c, k = images.shape[1], STEM_KERNEL
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1)  # N, C, H', W', k, k
        flat = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k)
        eigenvalues, eigenvectors = torch.linalg.eigh(flat.T @ flat / len(flat))
        # Degenerate data (plain-colour images) has a rank-deficient covariance whose zero eigenvalues come out of
        # eigh slightly negative: clamped, so that the square root stays real.
        scale = (eigenvalues.clamp_min(0) + WHITEN_EPS).sqrt()
        filters = (eigenvectors.T / scale[:, None]).view(-1, c, k, k).flip(0)
        self.whiten.weight.copy_(torch.cat([filters, -filters]).to(self.whiten.weight))


@register_model("cifar-fast-net", input_size=32, description="Fast CIFAR net (airbench-style, ~2M params)")
def cifar_fast_net(spec: ModelSpec) -> nn.Module:
    return FastCifarNet(spec.num_classes, spec.in_chans)
