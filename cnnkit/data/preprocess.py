"""Preprocessing: how raw images become model inputs. Saved with every run as preprocess.json.

The tensor methods import torch when called, so the ONNX-only server can use this module without loading torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image

from cnnkit.data.frames import SCREEN, browser_frame_height, first_screen
from cnnkit.data.images import open_rgb
from cnnkit.errors import CnnkitError

if TYPE_CHECKING:
    import torch

ResizeMode = Literal["squash", "center-crop", "top-crop"]
RESIZE_MODES: tuple[str, ...] = ("squash", "center-crop", "top-crop")
PAD_VALUE = 255  # top-crop pads short pages with white, the usual page background
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """Everything needed to turn an RGB image into the tensor the model was trained on.

    Pixels are scaled to [0, 1], then normalised as (x - mean) / std per RGB channel.
    `resize`: squash (stretch to the square), center-crop (shorter side to size, crop the centre) or
    top-crop (scale to width, keep the top of the page and crop or pad the height: for screenshots).
    """

    input_size: int
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    resize: ResizeMode = "squash"
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    crop_frame: bool = False  # crop a browser frame captured at the top (see data.frames)
    first_screen: bool = False  # then bring the screenshot to one capture format (data.frames.first_screen)
    channel_order: Literal["RGB"] = "RGB"
    layout: Literal["NCHW"] = "NCHW"

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise CnnkitError(f"unknown resize mode {self.resize!r}; valid: {', '.join(RESIZE_MODES)}")
        if self.input_size < 8:
            raise CnnkitError(f"input size must be at least 8 pixels, got {self.input_size}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def decoding(self) -> dict[str, object]:
        """The fields that decide the decoded uint8 pixels (mean and std are applied later, to tensors): what the
        decoded-image cache is keyed by, so that training and a later evaluation share an entry."""
        return {k: v for k, v in asdict(self).items() if k not in ("mean", "std")}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Preprocess:
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**fields)  # type: ignore[arg-type]

    def load(self, source: Path | bytes, *, name: str | None = None) -> np.ndarray:
        """Decode an image file (or its bytes) and resize it: HWC uint8 at input_size. Large images are reduced
        while they are decoded (see data.images.LARGE_PIXELS)."""
        # first_screen needs SCREEN's width: a large image may be reduced to 4 x min_side on its shorter side.
        min_side = max(self.input_size, SCREEN[0] // 4) if self.first_screen else self.input_size
        return self.resize_image(open_rgb(source, name=name, min_side=min_side))

    def resize_image(self, image: Image.Image) -> np.ndarray:
        """Resize an RGB PIL image to input_size x input_size by the resize mode; HWC uint8."""
        if self.crop_frame:
            frame = browser_frame_height(image)
            if frame:
                image = image.crop((0, frame, image.width, image.height))
        if self.first_screen:
            image = first_screen(image)
        size = self.input_size
        resample = Image.Resampling.BICUBIC if self.interpolation == "bicubic" else Image.Resampling.BILINEAR
        width, height = image.size
        if (width, height) == (size, size):
            return np.array(image, dtype=np.uint8)  # every mode is the identity at the target size
        if self.resize == "squash":
            return np.array(image.resize((size, size), resample), dtype=np.uint8)
        # Crop policies resize only the source region they keep (Pillow's `box`), never the whole image: a
        # 1 x 1,000,000 strip would otherwise be scaled to size x 32M pixels first.
        if self.resize == "center-crop":
            side = min(width, height)
            left, top = (width - side) / 2, (height - side) / 2
            return np.array(image.resize((size, size), resample, box=(left, top, left + side, top + side)),
                            dtype=np.uint8)
        if height >= width:  # top-crop of a tall page: its top square, scaled
            return np.array(image.resize((size, size), resample, box=(0, 0, width, width)), dtype=np.uint8)
        new_h = max(1, round(height * size / width))  # a short page: scaled to the width and padded below
        image = image.resize((size, new_h), resample)
        out = np.full((size, size, 3), PAD_VALUE, dtype=np.uint8)
        rows = min(size, new_h)
        out[:rows] = np.asarray(image, dtype=np.uint8)[:rows]
        return out

    def to_unit(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW batch of any size -> float32 in [0, 1] at input_size (antialiased resize if needed)."""
        import torch.nn.functional as F

        x = batch.float().div_(255.0)
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode=self.interpolation,
                              antialias=True, align_corners=False).clamp_(0.0, 1.0)
        return x

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] float batch -> (x - mean) / std per channel."""
        import torch

        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW batch -> model input."""
        return self.standardize(self.to_unit(batch))

    def exported_input(self, batch: torch.Tensor) -> np.ndarray:
        """uint8 NCHW batch -> float32 NHWC 0-255 at input_size: what an exported model takes. Images stored at
        another size (arrays such as CIFAR-10's 32 px for a 224-px model) are resized as training resized them."""
        if batch.shape[-2:] == (self.input_size, self.input_size):
            return batch.permute(0, 2, 3, 1).float().numpy()
        return self.to_unit(batch).mul_(255.0).permute(0, 2, 3, 1).contiguous().numpy()
