"""Finding a browser's frame (tab strip and address bar) captured at the top of a screenshot, so that it can be
cropped away: a frame on the pages of one class only is a shortcut a model learns instead of the page.

Recognised: Chrome's dark frame, a near-black tab strip over a dark grey toolbar, both colourless. Light frames
look too much like page headers to be told apart by colour alone, and are left.
"""

from __future__ import annotations

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
