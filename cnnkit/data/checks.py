"""Sanity checks on a loaded data set, before training: class balance and classes too small to learn or measure."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from sklearn.metrics import roc_auc_score

from cnnkit.data.datasets import ArrayData, DataBundle

MIN_TRAIN_IMAGES = 5  # per class; fewer cannot be learned, and metrics on them mean little
BALANCE_CLASSES_SHOWN = 12
SHORTCUT_AUC = 0.9  # a one-number feature that ranks a class above the rest this well is a shortcut to learn
SHORTCUT_MIN_IMAGES = 10  # per class, before the shortcut check says anything
TOP_BAND = 0.08  # of the height: where a browser's tab strip and address bar sit in a screenshot


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
    if bundle.train is not None:
        warnings += shortcut_warnings(bundle.train, bundle.class_names)
    return DataReport(_balance(bundle.class_names, counts), warnings)


def trivial_features(data: ArrayData, *, limit: int, chunk: int = 256) -> dict[str, torch.Tensor]:
    """For the first `limit` images, numbers that say nothing of their content: brightness, colour, contrast, white
    space, and the look of the top band (a browser frame: grey, flat). A chunk at a time (bounded memory)."""
    n = min(limit, len(data))
    parts = [_features(data.batch(torch.arange(i, min(n, i + chunk)))) for i in range(0, n, chunk)]
    return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}


def _features(images: torch.Tensor) -> dict[str, torch.Tensor]:
    x = images.float() / 255  # N, 3, H, W
    band = x[:, :, : max(1, round(x.shape[2] * TOP_BAND))]
    gray = x.mean(dim=1)
    return {"mean brightness": gray.mean(dim=(1, 2)), "contrast": gray.std(dim=(1, 2)),
            "redness": (x[:, 0] - x[:, 2]).mean(dim=(1, 2)), "white space": (gray > 0.95).float().mean(dim=(1, 2)),
            "top-band brightness": band.mean(dim=(1, 2, 3)), "top-band flatness": -band.std(dim=(1, 2, 3))}


def shortcut_warnings(train: ArrayData, class_names: list[str]) -> list[str]:
    """A warning for each trivial feature that alone separates a class from the others in the training data."""
    labels = train.labels
    if int(torch.bincount(labels, minlength=len(class_names)).min()) < SHORTCUT_MIN_IMAGES:
        return []
    features = trivial_features(train, limit=20_000)
    labels = labels[:20_000]
    warnings = []
    for name, values in features.items():
        for index, cls in enumerate(class_names[: 1 if len(class_names) == 2 else None]):
            auc = float(roc_auc_score((labels == index).numpy(), values.numpy()))
            if max(auc, 1 - auc) >= SHORTCUT_AUC:
                what = f"{cls!r} from {class_names[1 - index]!r}" if len(class_names) == 2 else f"{cls!r} from the rest"
                warnings.append(f"{name} alone separates {what} in the training data (AUC {max(auc, 1 - auc):.2f}): "
                                "a shortcut the model can learn instead of what matters, from how the images were "
                                "captured (browser frames, crops, encodings) or what was collected (home pages "
                                "against login pages); capture and crop every class alike, and check cnnkit explain")
    return warnings


def _counts(split: ArrayData, num_classes: int) -> list[int]:
    return torch.bincount(split.labels, minlength=num_classes).tolist()


def _balance(class_names: list[str], counts: dict[str, list[int]]) -> str:
    header = "/".join(counts)
    per_class = [f"{name} {'/'.join(str(counts[s][i]) for s in counts)}" for i, name in enumerate(class_names)]
    if len(per_class) > BALANCE_CLASSES_SHOWN:
        train = counts.get("train") or next(iter(counts.values()))
        per_class = [f"{len(class_names)} classes, {min(train)} to {max(train)} training images each"]
    return f"Images per class ({header}): " + ", ".join(per_class)
