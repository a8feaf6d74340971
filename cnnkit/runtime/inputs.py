"""What users hand to `predict`: file paths, http(s) URLs, PIL images, NumPy or torch arrays, one or many; turned
into one uint8 [N, S, S, 3] batch at the model's input size. No torch import: tensors are recognised by their
methods."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cnnkit.data.images import ImageError, to_rgb
from cnnkit.data.preprocess import Preprocess
from cnnkit.errors import CnnkitError
from cnnkit.runtime.remote import fetch, is_url

CHANNELS = (1, 3, 4)


def to_batch(inputs: Any, *, preprocess: Preprocess) -> tuple[np.ndarray, list[str], bool]:
    """(uint8 [N, S, S, 3] batch, a name per image, whether `inputs` was a single image).

    A list or tuple, a 4-D array and a 4-D tensor are batches; anything else is one image. NumPy arrays are HWC
    (or HW), torch tensors CHW (as each library lays images out); uint8, or float in [0, 1]."""
    items, single = _items(inputs)
    if not items:
        raise CnnkitError("no images given")
    arrays, names = [], []
    for index, item in enumerate(items):
        if is_url(item):
            name, pixels = item, preprocess.load(fetch(item), name=item)
        elif isinstance(item, (str, Path)):
            name, pixels = str(item), preprocess.load(Path(item))
        else:
            name = f"<image {index}>"
            pixels = preprocess.resize_image(_to_image(item, name))
        arrays.append(pixels)
        names.append(name)
    return np.stack(arrays), names, single


def _items(inputs: Any) -> tuple[list[Any], bool]:
    if isinstance(inputs, (str, Path, Image.Image)):
        return [inputs], True
    if isinstance(inputs, Sequence):
        return list(inputs), False
    array = _numpy(inputs)
    if array is not None:
        if array.ndim == 4:
            return list(inputs), False
        return [inputs], True
    raise CnnkitError(f"cannot read images from a {type(inputs).__name__}; give paths, PIL images, NumPy HWC "
                      "arrays or torch CHW tensors")


def _numpy(value: Any) -> np.ndarray | None:
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        return value.detach().cpu().numpy()
    return None


def _to_image(item: Any, name: str) -> Image.Image:
    if isinstance(item, Image.Image):
        return to_rgb(item)
    array = _numpy(item)
    if array is None:
        raise CnnkitError(f"{name}: cannot read an image from a {type(item).__name__}")
    if not isinstance(item, np.ndarray) and array.ndim == 3 and array.shape[0] in CHANNELS:
        array = array.transpose(1, 2, 0)  # torch CHW -> HWC
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in CHANNELS:
        raise ImageError(f"{name}: expected an image of shape [H, W, C] with C in 1, 3, 4 (torch: [C, H, W]); "
                         f"got {list(array.shape)}")
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ImageError(f"{name}: float images must lie in [0, 1]")
        array = np.round(array * 255)
    elif array.dtype != np.uint8:
        raise ImageError(f"{name}: images must be uint8 or float in [0, 1], got {array.dtype}")
    array = array.astype(np.uint8)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return Image.fromarray(np.ascontiguousarray(array[..., :3]), "RGB")
