"""Sanity checks on a loaded data set, before training: class balance and classes too small to learn or measure."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cnnkit.data.datasets import ArrayData, DataBundle

MIN_TRAIN_IMAGES = 5  # per class; fewer cannot be learned, and metrics on them mean little
BALANCE_CLASSES_SHOWN = 12


@dataclass(frozen=True)
class DataReport:
    balance: str  # one line: images per class in each split
    warnings: list[str]


def check_data(bundle: DataBundle) -> DataReport:
    """Images per class in each split, and a warning (saying what it means) for each class that is too small."""
    splits = {name: split for name, split in (("train", bundle.train), ("val", bundle.val), ("test", bundle.test))
              if split is not None}
    counts = {name: _counts(split, bundle.num_classes) for name, split in splits.items()}
    warnings = []
    for index, cls in enumerate(bundle.class_names):
        n_train = counts.get("train", [0] * bundle.num_classes)[index]
        if n_train < MIN_TRAIN_IMAGES:
            warnings.append(f"class {cls!r} has {n_train} training image(s): fewer than {MIN_TRAIN_IMAGES} cannot be "
                            "learned reliably; add images or drop the class")
        if "val" in counts and counts["val"][index] == 0:
            warnings.append(f"class {cls!r} has no validation images: the best epoch is chosen without it")
        if "test" in counts and counts["test"][index] == 0:
            warnings.append(f"class {cls!r} has no test images: its test metrics cannot be measured, and test "
                            "accuracy says nothing about it")
    return DataReport(_balance(bundle.class_names, counts), warnings)


def _counts(split: ArrayData, num_classes: int) -> list[int]:
    return torch.bincount(split.labels, minlength=num_classes).tolist()


def _balance(class_names: list[str], counts: dict[str, list[int]]) -> str:
    header = "/".join(counts)
    per_class = [f"{name} {'/'.join(str(counts[s][i]) for s in counts)}" for i, name in enumerate(class_names)]
    if len(per_class) > BALANCE_CLASSES_SHOWN:
        train = counts.get("train") or next(iter(counts.values()))
        per_class = [f"{len(class_names)} classes, {min(train)} to {max(train)} training images each"]
    return f"Images per class ({header}): " + ", ".join(per_class)
