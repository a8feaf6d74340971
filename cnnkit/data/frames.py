"""Screenshot hygiene: finding a browser's frame (tab strip and address bar) captured at the top of a screenshot,
so that it can be cropped away (a frame on the pages of one class only is a shortcut a model learns instead of the
page), and bringing every screenshot to one capture format (first_screen), so that neither its size nor its
encoding can tell one collection from another.

Recognised: Chrome's dark frame, a near-black tab strip over a dark grey toolbar, both colourless. Light frames
look too much like page headers to be told apart by colour alone, and are left.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

FRAME_RANGE = (0.04, 0.12)  # of the height: a browser frame's plausible height on a first-screen capture
MIN_PART = 0.01  # of the height: the least a tab strip or a toolbar can be
STRIP = 25  # a tab-strip row's median brightness (0-255) is below this: near-black
TOOLBAR = (25, 80)  # a toolbar row's median brightness: dark grey
DARK_SHARE = 0.75  # of a tab-strip row's pixels near-black and colourless (the rest: tabs, favicons)
UNIFORM = 0.7  # of a toolbar row's pixels colourless and within TOLERANCE of its median (the rest: the URL)
TOLERANCE = 30
NEUTRAL = 12  # largest channel spread of a colourless (grey) pixel

# One capture format, as the shared real-screenshot collection was normalised: a desktop viewport's first screen.
SCREEN = (1024, 768)  # width, height in pixels
SCREEN_JPEG_QUALITY = 90
SCREEN_PAD = (255, 255, 255)  # below a page shorter than the screen: white, as a browser shows it


def first_screen(image: Image.Image) -> Image.Image:
    """`image` (RGB) as one capture format: scaled to SCREEN's width, its top SCREEN height kept (white below a
    shorter page), then encoded once as JPEG at SCREEN_JPEG_QUALITY and decoded. Whatever size and format a
    screenshot came in (PNG from one crawler, JPEG from another, a full page or a viewport), the model then sees the
    same kind of pixels, with the same compression artefacts."""
    width, height = SCREEN
    scaled_height = max(1, round(image.height * width / image.width))
    keep = min(scaled_height, height)
    # Only the part kept is scaled (Pillow's box): a very tall page is not scaled whole first.
    source_rows = min(image.height, image.width * keep / width)
    top = image.resize((width, keep), Image.Resampling.BILINEAR, box=(0, 0, image.width, source_rows))
    screen = Image.new("RGB", SCREEN, SCREEN_PAD)
    screen.paste(top, (0, 0))
    encoded = io.BytesIO()
    screen.save(encoded, format="JPEG", quality=SCREEN_JPEG_QUALITY)
    encoded.seek(0)
    with Image.open(encoded) as decoded:
        return decoded.convert("RGB")


def browser_frame_height(image: Image.Image) -> int:
    """Rows of a dark browser frame at the top of `image` (RGB): a near-black tab strip, then a dark grey toolbar,
    both colourless; 0 when there is none."""
    low, high = (int(image.height * f) for f in FRAME_RANGE)
    rgb = np.asarray(image.crop((0, 0, image.width, high + 1)).convert("RGB"), dtype=np.int16)
    gray = rgb.mean(axis=2)
    neutral = (rgb.max(axis=2) - rgb.min(axis=2)) <= NEUTRAL
    medians = np.median(gray, axis=1)
    strip_rows = (medians < STRIP) & (((gray < STRIP + 15) & neutral).mean(axis=1) >= DARK_SHARE)
    flat = ((np.abs(gray - medians[:, None]) <= TOLERANCE) & neutral).mean(axis=1) >= UNIFORM
    toolbar_rows = flat & (medians >= TOOLBAR[0]) & (medians < TOOLBAR[1])
    strip = _run_length(strip_rows, 0)
    toolbar = _run_length(toolbar_rows, strip)
    least = max(1, int(image.height * MIN_PART))
    height = strip + toolbar
    return height if strip >= least and toolbar >= least and low <= height <= high else 0


def _run_length(rows: np.ndarray, start: int) -> int:
    """How many rows from `start` on are True."""
    ends = np.flatnonzero(~rows[start:])
    return int(ends[0]) if len(ends) else len(rows) - start
