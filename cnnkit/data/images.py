"""Decoding image files into RGB arrays, with clear errors for missing, unreadable or corrupt files."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnkit.errors import CnnkitError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# Pillow raises DecompressionBombError above twice this many pixels; keep its guard on, at a screenshot-friendly size.
MAX_IMAGE_PIXELS = 64_000_000


class ImageError(CnnkitError):
    """An image file that cannot be used, with the path in the message."""


def open_rgb(source: Path | bytes, *, name: str | None = None) -> Image.Image:
    """Decode a file path or encoded bytes into an RGB image (any mode, EXIF rotation applied)."""
    import io

    label = name or str(source if isinstance(source, Path) else "<bytes>")
    if isinstance(source, Path) and not source.is_file():
        raise ImageError(f"{label}: no such file")
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Decoded from memory, so no file handle outlives this call and nothing needs closing: closing an image
            # frees its pixels, and copying them out first would cost a tenth of decoding a small JPEG.
            image = Image.open(io.BytesIO(source if isinstance(source, bytes) else source.read_bytes()))
            image.load()  # decode now, so truncated files fail here and not later
            ImageOps.exif_transpose(image, in_place=True)
            return to_rgb(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{label}: image too large ({exc})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{label}: not a readable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{label}: corrupt or truncated image ({exc})") from None


def to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Composite transparent pixels on white, as a browser would show them.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def to_array(image: Image.Image) -> np.ndarray:
    """HWC uint8 array of an RGB image."""
    return np.asarray(image, dtype=np.uint8)


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
