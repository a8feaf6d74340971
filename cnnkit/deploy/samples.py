"""A run's own images for checking an export: its test split (or validation split) and its training pool."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cnnkit.data.datasets import ArrayData
from cnnkit.data.preprocess import Preprocess
from cnnkit.data.sources import SourceOptions, load_data
from cnnkit.errors import CnnkitError
from cnnkit.runtime.model import TorchModel


@dataclass(frozen=True)
class RunImages:
    pool: ArrayData  # training and validation splits: calibration images come from here
    test: ArrayData  # the test split, else the validation split: what an export is scored on


def run_images(classifier: TorchModel) -> RunImages:
    """The run's splits, rebuilt from its config (same data, preprocessing and seed)."""
    config = classifier.config
    bundle = load_data(config.data, options=SourceOptions(
        data_dir=config.data_dir, preprocess=classifier.preprocess, val_split=config.val_split,
        test_split=config.test_split, seed=config.seed, workers=config.workers, test_sources=config.test_sources,
        cache_dir=config.image_cache, quiet=True))
    test = bundle.test if bundle.test is not None and len(bundle.test) else bundle.val
    if test is None or not len(test):
        raise CnnkitError(f"{config.data}: no test or validation images to check the export on")
    pool = ArrayData.concat([p for p in (bundle.train, bundle.val) if p is not None and len(p)])
    return RunImages(pool, test)


def model_input(images: torch.Tensor, preprocess: Preprocess) -> np.ndarray:
    """uint8 NCHW -> float32 NHWC 0-255 at the model's input size: what the exported graph takes. Images stored at
    another size (arrays such as CIFAR-10's 32 px for a 224-px model) are resized as training resized them."""
    if images.shape[-2:] == (preprocess.input_size, preprocess.input_size):
        return images.permute(0, 2, 3, 1).float().numpy()
    return preprocess.to_unit(images).mul_(255.0).permute(0, 2, 3, 1).contiguous().numpy()
