"""Browser frames at the top of screenshots: found when they are there, never on a page's own dark header."""

import numpy as np
from PIL import Image

from cnnkit.data.frames import browser_frame_height
from cnnkit.data.preprocess import Preprocess


def page(*, frame: bool = False, header: tuple[int, int, int] | None = None) -> Image.Image:
    """A 1024x768 white page; `frame` draws a dark browser frame (black tab strip with a tab, grey toolbar with a
    URL), `header` a coloured page header."""
    pixels = np.full((768, 1024, 3), 255, np.uint8)
    top = 0
    if frame:
        pixels[:24] = 0
        pixels[4:24, 10:200] = 53  # the active tab
        pixels[24:47] = (33, 34, 38)
        pixels[30:40, 120:600:3] = 200  # the URL's text: thin strokes
        top = 47
    if header is not None:
        pixels[top : top + 80] = header
    pixels[top + 120 : top + 160, 300:700] = 30  # some content
    return Image.fromarray(pixels)


def test_a_dark_browser_frame_is_found_and_cropped() -> None:
    assert browser_frame_height(page(frame=True)) == 47
    assert browser_frame_height(page(frame=True, header=(10, 40, 90))) == 47
    cropped = Preprocess(input_size=64, resize="top-crop", crop_frame=True).resize_image(page(frame=True))
    plain = Preprocess(input_size=64, resize="top-crop").resize_image(page(frame=True))
    assert cropped[0].mean() > 200 and plain[0].mean() < 50  # the frame's black rows are gone


def test_dark_page_headers_are_not_frames() -> None:
    assert browser_frame_height(page()) == 0
    for header in ((0, 0, 0), (10, 40, 90), (40, 40, 40), (150, 0, 0)):
        assert browser_frame_height(page(header=header)) == 0, header


def test_runs_from_before_the_option_load() -> None:
    saved = {"input_size": 32, "mean": [0, 0, 0], "std": [1, 1, 1], "resize": "squash", "interpolation": "bilinear",
             "channel_order": "RGB", "layout": "NCHW"}
    assert Preprocess.from_dict(saved).crop_frame is False
