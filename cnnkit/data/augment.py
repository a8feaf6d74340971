"""Batched data augmentation on the device: one affine warp per batch plus cheap per-pixel jitter.

Operates on float images in [0, 1], NCHW, before normalisation. Random draws come from a CPU generator, so a
seeded run is repeatable on any device. Policies: none, standard (the tutorial's Keras layers), screenshot,
or a spec such as "flip,rotate=0.1,zoom=0.1,contrast=0.1,brightness=0.2,crop=0.9,translate=0.05,jpeg=0.3".
"""

from __future__ import annotations

import io
import math

import torch
import torch.nn.functional as F

from cnnkit.augment_spec import POLICIES, AugmentSpec, parse_augment  # noqa: F401  (re-exported)


class Augmenter:
    """Callable (images in [0, 1], generator) -> augmented images, for training batches only."""

    def __init__(self, spec: AugmentSpec) -> None:
        self.spec = spec

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        spec = self.spec
        if spec.rotate or spec.zoom or spec.crop or spec.translate:
            x = self._warp(x, generator)
        elif spec.flip:  # exact mirror images, no resampling
            mirrored = torch.rand(x.shape[0], generator=generator) < 0.5
            x = torch.where(mirrored.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)
        if spec.shift:
            x = _shift(x, spec.shift, generator)
        n = x.shape[0]
        if spec.contrast:
            factor = 1 + _uniform(n, spec.contrast, generator).to(x.device).view(n, 1, 1, 1)
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * factor + mean
        if spec.brightness:
            x = x + _uniform(n, spec.brightness, generator).to(x.device).view(n, 1, 1, 1)
        x = x.clamp(0.0, 1.0)
        if spec.jpeg:
            x = _jpeg(x, spec.jpeg, generator)
        return x

    def _warp(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One affine_grid + grid_sample for flip, rotation, zoom, crop and translation together."""
        spec, n = self.spec, x.shape[0]
        angle = _uniform(n, spec.rotate * 2 * math.pi, generator)
        scale = 1 + _uniform(n, spec.zoom, generator)  # >1 zooms out (samples a larger area)
        shift = torch.zeros(n, 2)
        if spec.crop:
            area = spec.crop + (1 - spec.crop) * torch.rand(n, generator=generator)
            scale = scale * area.sqrt()
            room = (1 - area.sqrt()).unsqueeze(1)  # how far the crop window can move from the centre
            shift += (torch.rand(n, 2, generator=generator) * 2 - 1) * room
        if spec.translate:
            shift += _uniform(2 * n, spec.translate * 2, generator).view(n, 2)
        flip = torch.ones(n)
        if spec.flip:
            flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
        cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
        theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1),
                             torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
        # Reflection fills the corners that rotation uncovers, as Keras's default fill_mode does.
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _shift(x: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by whole pixels in [-pixels, pixels], filling the border by reflection."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pixels,) * 4, mode="reflect")
    offsets = torch.randint(0, 2 * pixels + 1, (n, 2), generator=generator)
    out = torch.empty_like(x)
    # One slice per distinct offset pair: at most (2p+1)^2 batched copies instead of one per image.
    for dy, dx in torch.unique(offsets, dim=0).tolist():
        chosen = torch.nonzero((offsets[:, 0] == dy) & (offsets[:, 1] == dx)).flatten().to(x.device)
        out[chosen] = padded[chosen, :, dy : dy + h, dx : dx + w]
    return out


def _uniform(n: int, spread: float, generator: torch.Generator) -> torch.Tensor:
    """n draws from U(-spread, spread)."""
    return (torch.rand(n, generator=generator) * 2 - 1) * spread


def _jpeg(x: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    from PIL import Image

    chosen = torch.nonzero(torch.rand(x.shape[0], generator=generator) < probability).flatten().tolist()
    if not chosen:
        return x
    qualities = torch.randint(40, 91, (len(chosen),), generator=generator).tolist()
    out = x.clone()
    for index, quality in zip(chosen, qualities):
        pixels = (x[index] * 255).round().byte().permute(1, 2, 0).cpu().numpy()
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
        decoded = torch.frombuffer(bytearray(Image.open(buffer).convert("RGB").tobytes()), dtype=torch.uint8)
        out[index] = decoded.view(pixels.shape).permute(2, 0, 1).to(x.device, x.dtype) / 255
    return out


def build_augmenter(text: str) -> Augmenter | None:
    spec = parse_augment(text)
    return Augmenter(spec) if spec.active else None
