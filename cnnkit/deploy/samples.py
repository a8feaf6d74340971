"""A run's own images for checking an export: its test split (or validation split) and its training pool."""

from __future__ import annotations

from dataclasses import dataclass

from cnnkit import artifacts as names
from cnnkit.data.checks import changed_since
from cnnkit.data.datasets import ArrayData
from cnnkit.data.sources import SourceOptions, load_data
from cnnkit.errors import CnnkitError
from cnnkit.runtime.model import TorchModel


@dataclass(frozen=True)
class RunImages:
    pool: ArrayData  # training and validation splits: calibration images come from here
    test: ArrayData  # the test split, else the validation split: what an export is scored on


def run_images(classifier: TorchModel, *, scored: bool) -> RunImages:
    """The run's splits, rebuilt from its config (same data, preprocessing and seed). `scored`: figures (INT8's
    accuracy against fp32's) will be measured on the test split, so splits that are not the images the run recorded
    when it trained (its data.json) are refused; parity checks alone take any of the run's images."""
    config = classifier.config
    bundle = load_data(config.data, options=SourceOptions.of_run(config, classifier.preprocess, strict=False,
                                                                 quiet=True))
    if scored and classifier.run.exists(names.DATA_SPLITS):
        changed = changed_since(classifier.run.read_json(names.DATA_SPLITS),
                                {"train": bundle.train, "val": bundle.val, "test": bundle.test})
        if changed:
            raise CnnkitError(f"{config.data} changed since {classifier.run.path} was trained ({'; '.join(changed)}): "
                              "its splits, cut again, may put training images in the test split the export is "
                              "checked on, and test images among INT8's calibration images; restore the data or "
                              "train again (an export without --quantize int8 scores nothing on them)")
    test = bundle.test if bundle.test is not None and len(bundle.test) else bundle.val
    if test is None or not len(test):
        raise CnnkitError(f"{config.data}: no test or validation images to check the export on")
    pool = ArrayData.concat([p for p in (bundle.train, bundle.val) if p is not None and len(p)])
    return RunImages(pool, test)
