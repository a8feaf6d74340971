"""`cnnkit augment-preview`: a grid of original images beside augmented samples of each."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from cnnkit.config import PreviewConfig
from cnnkit.data.augment import Augmenter, parse_augment
from cnnkit.data.images import enlarged, enlargement
from cnnkit.data.preprocess import Preprocess
from cnnkit.data.sources import SourceOptions, load_data
from cnnkit.errors import CnnkitError
from cnnkit.files import write_atomic

GAP = 4  # pixels between tiles
TILE_PIXELS = 96  # the smallest side a tile shows an image at (small images are enlarged)


def augment_preview(config: PreviewConfig) -> None:
    """Write a PNG: one row per original image, the original first, then `samples` augmented versions."""
    spec = parse_augment(config.augment)
    preprocess = Preprocess(input_size=config.input_size or 128)
    bundle = load_data(config.data, options=SourceOptions(data_dir=config.data_dir, preprocess=preprocess,
                                                          test_split=0, seed=config.seed))
    if bundle.train is None or len(bundle.train) == 0:
        raise CnnkitError(f"{config.data}: no images")
    size = config.input_size or bundle.train.image_size[0]
    preprocess = Preprocess(input_size=size)
    generator = torch.Generator().manual_seed(config.seed)
    picks = torch.randperm(len(bundle.train), generator=generator)[: config.images]
    originals = preprocess.to_unit(bundle.train.batch(picks))
    augmenter = Augmenter(spec)
    columns = [originals] + [augmenter(originals, generator) for _ in range(config.samples)]
    grid = _tile(columns, size)
    write_atomic(config.out, lambda tmp: Image.fromarray(grid).save(tmp, format="PNG"))


def _tile(columns: list[torch.Tensor], size: int) -> np.ndarray:
    """The images in a grid, one column per entry of `columns`; small images enlarged to TILE_PIXELS (pixel blocks)."""
    rows, cols, side = columns[0].shape[0], len(columns), size * enlargement(size, at_least=TILE_PIXELS)
    canvas = np.full((rows * (side + GAP) + GAP, cols * (side + GAP) + GAP, 3), 255, np.uint8)
    for c, batch in enumerate(columns):
        pixels = (batch.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
        for r in range(rows):
            top, left = GAP + r * (side + GAP), GAP + c * (side + GAP)
            canvas[top : top + side, left : left + side] = enlarged(pixels[r], at_least=TILE_PIXELS)
    return canvas
