"""Augmentation specs: a policy name or "flip,rotate=0.1,...", parsed and checked without torch.

A spec is an option value (`--augment`), so the config validates it here; cnnkit.data.augment applies it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from cnnkit.errors import CnnkitError
from cnnkit.options import did_you_mean

__all__ = ["LIMITS", "POLICIES", "AugmentSpec", "parse_augment"]


@dataclass(frozen=True)
class AugmentSpec:
    """Strength of each transform; 0 (or False) turns it off."""

    flip: bool = False  # horizontal flip with probability 0.5
    rotate: float = 0.0  # fraction of a full turn, as Keras RandomRotation: 0.1 = up to +-36 degrees
    zoom: float = 0.0  # +- relative scale, as Keras RandomZoom
    crop: float = 0.0  # random crop keeping at least this fraction of the area (0.9), resized back to full size
    translate: float = 0.0  # +- fraction of width and height (sub-pixel, interpolated)
    shift: int = 0  # +- whole pixels, reflect-padded: translation without any interpolation blur
    contrast: float = 0.0  # +- relative contrast around each image's mean
    brightness: float = 0.0  # +- added brightness, as a fraction of full scale
    jpeg: float = 0.0  # probability of re-encoding an image as JPEG (quality 40-90), as screenshots get shared

    @property
    def active(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))


POLICIES: dict[str, AugmentSpec] = {
    "none": AugmentSpec(),
    "standard": AugmentSpec(flip=True, rotate=0.1, zoom=0.1, contrast=0.1),
    # Text and page layouts are not mirror-symmetric: no flips or rotations for screenshots.
    "screenshot": AugmentSpec(crop=0.85, zoom=0.05, translate=0.03, brightness=0.1, contrast=0.15, jpeg=0.3),
}
LIMITS = {"shift": (0, 64), "rotate": (0.0, 0.5), "zoom": (0.0, 0.9), "crop": (0.1, 1.0), "translate": (0.0, 0.5),
          "contrast": (0.0, 1.0), "brightness": (0.0, 1.0), "jpeg": (0.0, 1.0)}


def parse_augment(text: str) -> AugmentSpec:
    """A policy name or a comma-separated spec; unknown or out-of-range parts are a clear error."""
    text = text.strip()
    if text in POLICIES:
        return POLICIES[text]
    values: dict[str, object] = {}
    valid = ", ".join([*POLICIES, *(f.name for f in fields(AugmentSpec))])
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, raw = part.partition("=")
        if key == "flip" and not raw:
            values["flip"] = True
            continue
        if key not in LIMITS:
            raise CnnkitError(f"--augment: unknown part {key!r}; valid: {valid}"
                              + did_you_mean(key, [*POLICIES, *LIMITS, "flip"]))
        try:
            value = float(raw)
        except ValueError:
            raise CnnkitError(f"--augment: {key} needs a number, as {key}=0.1") from None
        low, high = LIMITS[key]
        if not low <= value <= high or (key == "shift" and value != int(value)):
            raise CnnkitError(f"--augment: {key}={raw} is out of range [{low}, {high}]"
                              + (" (whole pixels)" if key == "shift" else ""))
        values[key] = int(value) if key == "shift" else value
    if not values:
        raise CnnkitError(f"--augment: empty spec; valid: {valid}")
    return AugmentSpec(**values)  # type: ignore[arg-type]
