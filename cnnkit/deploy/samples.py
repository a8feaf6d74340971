"""A run's own images for checking an export: its test split (or validation split) and its training pool."""

from __future__ import annotations

from dataclasses import dataclass

from cnnkit.data.datasets import ArrayData
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
    bundle = load_data(config.data, options=SourceOptions.of_run(config, classifier.preprocess, strict=False,
                                                                 quiet=True))
    test = bundle.test if bundle.test is not None and len(bundle.test) else bundle.val
    if test is None or not len(test):
        raise CnnkitError(f"{config.data}: no test or validation images to check the export on")
    pool = ArrayData.concat([p for p in (bundle.train, bundle.val) if p is not None and len(p)])
    return RunImages(pool, test)
