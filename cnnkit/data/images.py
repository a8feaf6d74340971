"""Decoding image files into RGB arrays, with clear errors for missing, unreadable or corrupt files."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnkit.errors import CnnkitError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# Pillow raises DecompressionBombError above twice this many pixels; keep its guard on, at a screenshot-friendly size.
MAX_IMAGE_PIXELS = 64_000_000
# Above this many pixels, an image decoded for a known input size is reduced while it is converted (JPEG: decoded at
# 1/2, 1/4 or 1/8 scale; other formats: box-reduced a strip at a time in their own mode), never copied whole to RGB:
# a 64-Mpx 1-bit PNG is 8 KB on the wire, 64 MB decoded and 256 MB as RGB. Smaller images are decoded exactly as
# before, so training and serving agree on every ordinary image.
LARGE_PIXELS = 16_000_000
STRIP_PIXELS = 1_000_000  # pixels converted to RGB at a time while reducing


class ImageError(CnnkitError):
    """An image file that cannot be used, with the path in the message."""


@dataclass(frozen=True)
class ImageInfo:
    """What an image file's header says, read without decoding its pixels."""

    width: int
    height: int
    mode: str
    format: str | None

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def decoded_bytes(self) -> int:
        """Memory decoding holds at its peak, in bytes: the image in its own mode (Pillow stores 1, 2 or 4 bytes a
        pixel), plus its RGB copy (4 bytes a pixel) unless the image is large enough to be reduced while converted."""
        own = self.pixels * (1 if self.mode in ("1", "L", "P") else 2 if self.mode.startswith("I;16") else 4)
        if self.pixels > LARGE_PIXELS:
            return own + STRIP_PIXELS * 8
        return own + (0 if self.mode == "RGB" else self.pixels * 4)


def peek(source: Path | bytes, *, name: str | None = None) -> ImageInfo:
    """Size, mode and format from an image's header; the same errors as open_rgb for what is not an image, and for
    images whose decoding would cost far more than their pixels say (check_cost)."""
    with _opened(source, name) as image:
        info = ImageInfo(image.width, image.height, image.mode, image.format)
    check_cost(info, source if isinstance(source, bytes) else None, name=name or str(source))
    return info


def check_cost(info: ImageInfo, data: bytes | None, *, name: str) -> None:
    """Refuse what costs far more to decode than its pixels say, before decoding: a strip (a 1 x 64,000,000 PNG costs
    Pillow bookkeeping per row, 20x its pixels), and a PNG cut into thousands of tiny data chunks (each costs a call:
    a 32 x 32 PNG of 540,000 one-byte chunks took 1.7 s to decode)."""
    long, short = max(info.width, info.height), max(1, min(info.width, info.height))
    if long > MAX_ASPECT * short and long > MAX_ASPECT:
        raise ImageError(f"{name}: {info.width} x {info.height} pixels, an aspect ratio over {MAX_ASPECT}:1 (such a "
                         "strip costs far more to decode than its pixels); crop or pad it first")
    if data is not None and info.format == "PNG":
        chunks = data.count(b"IDAT")  # an upper bound on the data chunks, counted at memchr speed
        if chunks > MAX_PNG_CHUNKS and len(data) < chunks * MIN_PNG_CHUNK_BYTES:
            raise ImageError(f"{name}: a PNG of {len(data):,} bytes in up to {chunks:,} data chunks (encoders write "
                             f"chunks of 8 KB or more; over {MAX_PNG_CHUNKS:,} chunks averaging under "
                             f"{MIN_PNG_CHUNK_BYTES} bytes are refused: each costs the decoder a call)")


MAX_ASPECT = 100  # width:height or height:width; a full-page screenshot of 1280 x 20,000 is 1:16
MAX_PNG_CHUNKS = 2000
MIN_PNG_CHUNK_BYTES = 256


def open_rgb(source: Path | bytes, *, name: str | None = None, min_side: int | None = None) -> Image.Image:
    """Decode a file path or encoded bytes into an RGB image (any mode, EXIF rotation applied).

    `min_side`: the smallest side the caller needs (pixels); an image over LARGE_PIXELS is then reduced by a whole
    factor while it is decoded, keeping its shorter side at least four times `min_side`."""
    with _opened(source, name) as image:
        factor = _reduction(image.size, min_side)
        if factor > 1 and image.format == "JPEG":
            image.draft("RGB", (-(-image.width // factor), -(-image.height // factor)))  # decodes at 1/2, 1/4, 1/8
        image.load()  # decode now, so truncated files fail here and not later
        ImageOps.exif_transpose(image, in_place=True)
        factor = _reduction(image.size, min_side)
        return _reduced_rgb(image, factor) if factor > 1 else to_rgb(image)


@contextmanager
def _opened(source: Path | bytes, name: str | None) -> Iterator[Image.Image]:
    label = name or str(source if isinstance(source, Path) else "<bytes>")
    if isinstance(source, Path) and not source.is_file():
        raise ImageError(f"{label}: no such file")
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Decoded from memory, so no file handle outlives this call and nothing needs closing: closing an image
            # frees its pixels, and copying them out first would cost a tenth of decoding a small JPEG.
            yield Image.open(io.BytesIO(source if isinstance(source, bytes) else source.read_bytes()))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{label}: image too large ({exc})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{label}: not a readable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{label}: corrupt or truncated image ({exc})") from None


def _reduction(size: tuple[int, int], min_side: int | None) -> int:
    """The whole factor a large image may be reduced by and keep its shorter side >= 4 * min_side; 1: none."""
    if min_side is None or size[0] * size[1] <= LARGE_PIXELS:
        return 1
    return max(1, min(size) // (4 * min_side))


def _reduced_rgb(image: Image.Image, factor: int) -> Image.Image:
    """`image` box-reduced by `factor`, converted to RGB a strip of rows at a time (no whole-image RGB copy)."""
    if image.mode == "RGB":
        return image.reduce(factor)
    width, height = image.size
    rows = factor * max(1, STRIP_PIXELS // (width * factor))  # a whole number of output rows per strip
    out = Image.new("RGB", (-(-width // factor), -(-height // factor)))
    for top in range(0, height, rows):
        strip = to_rgb(image.crop((0, top, width, min(height, top + rows))))
        out.paste(strip.reduce(factor), (0, top // factor))
    return out


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


def enlarged(pixels: np.ndarray, *, at_least: int) -> np.ndarray:
    """HxWx3 `pixels` repeated by the smallest whole factor that makes their longer side at least `at_least`, each
    pixel a square block (for pictures meant to be looked at: a 32-px image is too small, and blurring it would show
    detail it does not have). Larger images are returned as they are."""
    factor = enlargement(max(pixels.shape[:2]), at_least=at_least)
    return pixels.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else pixels


def enlargement(side: int, *, at_least: int) -> int:
    """The whole factor `enlarged` applies to an image whose longer side is `side`."""
    return max(1, -(-at_least // side))
