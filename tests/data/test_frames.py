"""Browser frames at the top of screenshots: found when they are there, never on a page's own dark header; and one
capture format for every screenshot (first_screen)."""

import io

import numpy as np
from PIL import Image

from cnnkit.data.frames import SCREEN, browser_frame_height, first_screen
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
    assert Preprocess.from_dict(saved).first_screen is False


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def test_first_screen_is_one_size_and_one_encoding_whatever_came_in() -> None:
    content = np.asarray(page(header=(10, 40, 90)))
    tall = Image.fromarray(np.concatenate([content, content[::-1]], axis=0)).resize((1280, 1920))  # a full page
    short = page(header=(10, 40, 90)).resize((800, 300))  # shorter than a screen once scaled to its width
    for image in (tall, short, page()):
        screen = first_screen(image)
        assert screen.size == SCREEN and screen.mode == "RGB"
    padded = np.asarray(first_screen(short))
    assert padded[400:].min() >= 250, "white below a page shorter than the screen, as a browser shows it"
    assert padded[:60].mean(axis=(0, 1))[2] > 60, "the page itself is kept at the top"
    # The tall page's first screen is its top, scaled to the screen's width (not the whole page squeezed).
    viewport = np.asarray(first_screen(page(header=(10, 40, 90))), np.float32)
    assert np.abs(np.asarray(first_screen(tall), np.float32) - viewport).mean() < 3
    # Encoded once more it barely changes: the output already carries the one encoding's artefacts.
    once = first_screen(page(header=(10, 40, 90)))
    twice = first_screen(once)
    assert np.abs(np.asarray(once, np.int16) - np.asarray(twice, np.int16)).mean() < 0.5


def test_first_screen_makes_full_page_and_viewport_captures_of_a_page_alike() -> None:
    # The same page from two crawlers: a full-page PNG (the page continues below the first screen) and a viewport
    # JPEG at another width. Without first_screen the model sees more of the full page and padding under the
    # viewport capture, a difference a model can learn as "which crawler"; with it, the same first screen.
    top = page(header=(200, 30, 30))
    below = Image.new("RGB", (1024, 768), (40, 60, 80))  # the rest of the page: a dark section
    full = Image.new("RGB", (1024, 1536))
    full.paste(top, (0, 0))
    full.paste(below, (0, 768))
    captures = (encoded(full, "PNG"), encoded(top.resize((1366, 1025)), "JPEG", quality=60))

    def gap(preprocess: Preprocess) -> float:
        a, b = (preprocess.load(c).astype(np.int16) for c in captures)
        assert a.shape == b.shape == (224, 224, 3)
        return float(np.abs(a - b).mean())

    assert gap(Preprocess(input_size=224, resize="top-crop")) > 20
    assert gap(Preprocess(input_size=224, resize="top-crop", first_screen=True)) < 2
