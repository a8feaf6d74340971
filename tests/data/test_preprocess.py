from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.data.images import ImageError, open_rgb
from cnnkit.data.preprocess import Preprocess


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "LA", "I;16", "CMYK"])
def test_any_image_mode_decodes_to_rgb(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "img.png" if mode != "CMYK" else tmp_path / "img.jpg"
    Image.new("RGB", (13, 7), (200, 30, 60)).convert(mode).save(path)
    image = open_rgb(path)
    assert image.mode == "RGB" and image.size == (13, 7)


def test_missing_corrupt_and_non_image_files_raise_image_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such file"):
        open_rgb(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ImageError, match="bad.png"):
        open_rgb(tmp_path / "bad.png")
    with pytest.raises(ImageError, match="not a readable image"):
        open_rgb(b"hello world")


@pytest.mark.parametrize("resize", ["squash", "center-crop", "top-crop"])
def test_resize_modes_give_the_input_size(resize: str) -> None:
    image = Image.new("RGB", (120, 300), (10, 20, 30))
    out = Preprocess(input_size=48, resize=resize).resize_image(image)
    assert out.shape == (48, 48, 3) and out.dtype == np.uint8


def test_top_crop_keeps_the_top_of_a_page_and_pads_short_pages() -> None:
    page = np.zeros((400, 100, 3), np.uint8)
    page[:50] = 255  # a white header band at the top of a tall page
    out = Preprocess(input_size=100, resize="top-crop").resize_image(Image.fromarray(page))
    assert out[:50].min() == 255 and out[50:].max() == 0
    wide = Preprocess(input_size=100, resize="top-crop").resize_image(Image.new("RGB", (200, 50), (0, 0, 0)))
    assert wide[:25].max() == 0 and wide[25:].min() == 255


def test_normalisation_and_batch_resize() -> None:
    pre = Preprocess(input_size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    batch = torch.full((2, 3, 32, 32), 255, dtype=torch.uint8)
    x = pre(batch)
    assert x.shape == (2, 3, 16, 16) and torch.allclose(x, torch.full_like(x, 2.0))
    assert Preprocess.from_dict(pre.to_dict()) == pre


def test_crop_policies_resize_only_what_they_keep(monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    requested: list[tuple[int, int]] = []
    resize = Image.Image.resize

    def spy(self: Image.Image, size: tuple[int, int], *args: object, **kwargs: object) -> Image.Image:
        requested.append(tuple(size))
        return resize(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", spy)
    strip = Image.new("RGB", (1, 1_000_000), (10, 200, 30))  # as a decode-stage attack sends
    wide = Image.new("RGB", (1_000_000, 1), (10, 200, 30))
    for policy in ("top-crop", "center-crop", "squash"):
        for image in (strip, wide):
            assert Preprocess(input_size=32, resize=policy).resize_image(image).shape == (32, 32, 3)
    assert requested and max(max(size) for size in requested) <= 32  # never the strip scaled whole (32 x 32M)


def test_top_crop_keeps_the_top_square_of_a_tall_page() -> None:
    from PIL import Image

    page = np.full((400, 100, 3), 255, np.uint8)
    page[:100] = (200, 0, 0)  # the first screen is red, the rest white
    out = Preprocess(input_size=20, resize="top-crop").resize_image(Image.fromarray(page))
    assert out[:18, :, 0].min() > 150 and out[:18, :, 1].max() < 60
    centre = Preprocess(input_size=20, resize="center-crop").resize_image(Image.fromarray(page))
    assert centre[:, :, 1].min() > 200  # the middle square is all white
