"""A training config's data: how its images are decoded, loading them, and what the checks say of them.

Shared by `cnnkit train` (before anything is written) and `cnnkit check-data` (which trains nothing).
"""

from __future__ import annotations

from cnnkit.config import TrainConfig
from cnnkit.data.checks import DataReport, check_data, imbalance
from cnnkit.data.datasets import DataBundle
from cnnkit.data.preprocess import Preprocess
from cnnkit.data.sources import SourceOptions, load_data
from cnnkit.errors import CnnkitError
from cnnkit.models import default_input_size
from cnnkit.models.registry import weights_spec


def training_preprocess(config: TrainConfig) -> Preprocess:
    """How images are decoded and resized, settled before any is read. Pretrained weights (with `--normalize auto`)
    bring the interpolation they were trained with; the training data is decoded with it, exactly as evaluation,
    prediction, export and serving decode images from the run's preprocess.json."""
    size = config.input_size or default_input_size(config.model)  # an unknown model fails here, with suggestions
    interpolation = weights_spec(config.model).interpolation if uses_weights_preprocessing(config) else "bilinear"
    return Preprocess(input_size=size, resize=config.resize, interpolation=interpolation,
                      crop_frame=config.crop_browser_frame, first_screen=config.first_screen)


def uses_weights_preprocessing(config: TrainConfig) -> bool:
    """Whether the pretrained weights' preprocessing (mean, std, interpolation) is the run's."""
    return (config.pretrained or config.weights is not None) and config.normalize == "auto"


def load_training_data(config: TrainConfig, preprocess: Preprocess) -> DataBundle:
    """The config's data, decoded for `preprocess` and split (test, validation) as training splits it."""
    data = load_data(config.data, options=SourceOptions.of_run(config, preprocess))
    if data.train is None or len(data.train) == 0:
        raise CnnkitError(f"{config.data}: no training images")
    return data


def data_messages(data: DataBundle, report: DataReport, *, config: TrainConfig) -> list[str]:
    """What is printed of the data before training: unusable files, images per class and split, warnings (an
    error under --strict) and the imbalance note."""
    if report.warnings and config.strict:
        raise CnnkitError("data warnings (--strict): " + "; ".join(report.warnings))
    lines = []
    if data.skipped:
        lines.append(f"Skipped {len(data.skipped)} unusable file(s):\n  " + "\n  ".join(data.skipped))
    lines.append(report.balance)
    lines += [f"Note: {note}" for note in data.notes]
    lines += [f"Warning: {warning}" for warning in report.warnings]
    corrected = config.class_weight != "none" or config.sampler != "shuffle"
    note = imbalance(data.train, data.class_names) if not corrected and data.train else None
    if note:
        lines.append(f"Note: {note}")
    return lines


def split_sizes(data: DataBundle) -> str:
    """'train N, val N, test N', and where the validation split came from when the source had its own."""
    sizes = ", ".join(f"{name} {len(split)}" for name, split in (("train", data.train), ("val", data.val),
                                                                ("test", data.test)) if split is not None)
    return sizes + (f"; validation from {data.val_from}, not --val-split" if data.val_from else "")


def check_training_data(config: TrainConfig) -> tuple[list[str], int]:
    """`cnnkit check-data`: load and check the data as `cnnkit train` would with `config`, training nothing; the
    lines training would print about it, and the number of warnings."""
    preprocess = training_preprocess(config)
    data = load_training_data(config, preprocess)
    report = check_data(data)
    header = (f"Data: {config.data} ({data.num_classes} classes; {split_sizes(data)}), decoded at "
              f"{preprocess.input_size}px")
    return [header, *data_messages(data, report, config=config)], len(report.warnings)
