"""Image data sets: uint8 NCHW images (in memory or in a cache file) plus int64 labels, batched by indexing."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from cnnkit.errors import CnnkitError

if TYPE_CHECKING:
    from pathlib import Path

    from cnnkit.data.cache import DiskImages


@dataclass
class ArrayData:
    """Images and their int64 labels [N]. `store` holds uint8 [M, 3, H, W] images: a tensor, or a decoded-image
    cache file read a batch at a time (data.cache.DiskImages); `rows` says which of them this data set is, in order
    (None: all of them), so that splits and subsets are views that copy no pixels. `store_names` names each
    image of the store (its file, for folder sources), so that a report can say which file an image was."""

    store: torch.Tensor | DiskImages
    labels: torch.Tensor
    rows: torch.Tensor | None = None
    store_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.store, torch.Tensor) and (self.store.dtype != torch.uint8 or self.store.ndim != 4
                                                     or self.store.shape[1] != 3):
            raise CnnkitError(f"images must be uint8 [N, 3, H, W], got {self.store.dtype} {list(self.store.shape)}")
        count = len(self.rows) if self.rows is not None else int(self.store.shape[0])
        if self.labels.shape != (count,):
            raise CnnkitError(f"{len(self.labels)} labels for {count} images")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.store.shape[2]), int(self.store.shape[3])

    def batch(self, index: torch.Tensor) -> torch.Tensor:
        """uint8 [len(index), 3, H, W] images at positions `index` of this data set, in memory."""
        return self.store[self.rows[index] if self.rows is not None else index]

    def name(self, i: int) -> str | None:
        """What image `i` of this data set is called (its file), if the store names its images."""
        if self.store_names is None:
            return None
        return self.store_names[int(self.rows[i]) if self.rows is not None else i]

    def head(self, n: int) -> torch.Tensor:
        """The first `n` images (all, if fewer), in memory."""
        return self.batch(torch.arange(min(n, len(self))))

    @property
    def images(self) -> torch.Tensor:
        """Every image, in memory: for small data sets and tests; iterate with batch() over large ones."""
        if self.rows is None and isinstance(self.store, torch.Tensor):
            return self.store
        return self.head(len(self))

    def subset(self, index: torch.Tensor) -> ArrayData:
        return replace(self, labels=self.labels[index], rows=self.rows[index] if self.rows is not None else index)

    @classmethod
    def concat(cls, parts: list[ArrayData]) -> ArrayData:
        """Parts of one store stay views of it; parts of different stores are copied into one tensor."""
        if not parts:
            raise CnnkitError("no images to put together")
        labels = torch.cat([p.labels for p in parts])
        if all(p.store is parts[0].store for p in parts):
            rows = [p.rows if p.rows is not None else torch.arange(len(p)) for p in parts]
            return cls(parts[0].store, labels, torch.cat(rows), parts[0].store_names)
        names = [[p.name(i) for i in range(len(p))] for p in parts] if all(p.store_names for p in parts) else None
        return cls(torch.cat([p.images for p in parts]), labels,
                   store_names=tuple(n for part in names for n in part) if names else None)

    @classmethod
    def from_numpy(cls, x: np.ndarray, y: np.ndarray, *, source: str) -> ArrayData:
        """Accept [N, H, W, C] (C = 1, 3 or 4) or [N, H, W] uint8 (or float in [0, 1]) arrays, and labels as class
        indices or one-hot rows (see _class_indices)."""
        x, y = np.asarray(x), _class_indices(np.asarray(y), source=source)
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
            raise CnnkitError(f"{source}: images must be [N, H, W, C] with C in 1, 3, 4; got shape {list(x.shape)}")
        if len(x) != len(y):
            raise CnnkitError(f"{source}: {len(x)} images but {len(y)} labels")
        if np.issubdtype(x.dtype, np.floating):
            if len(x) and (np.nanmin(x) < 0 or np.nanmax(x) > 1 or np.isnan(x).any()):
                raise CnnkitError(f"{source}: float images must lie in [0, 1]")
            x = np.round(x * 255).astype(np.uint8)
        elif x.dtype != np.uint8:
            raise CnnkitError(f"{source}: images must be uint8 or float in [0, 1], got {x.dtype}")
        if x.shape[-1] == 1:
            x = np.repeat(x, 3, axis=-1)
        elif x.shape[-1] == 4:
            x = x[..., :3]
        images = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        return cls(images, torch.from_numpy(y.astype(np.int64)))


def _class_indices(y: np.ndarray, *, source: str) -> np.ndarray:
    """Labels as non-negative class indices: [N] or [N, 1] integers (or floats with whole values, as a CSV or
    pandas round trip leaves them), or [N, C] one-hot rows, as Keras's to_categorical makes them."""
    if y.ndim == 2 and y.shape[1] > 1:
        if not (np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all()):
            raise CnnkitError(f"{source}: labels of shape {list(y.shape)} must be one-hot rows (a single 1 in each)")
        return y.argmax(axis=1)
    y = y.reshape(-1)
    if np.issubdtype(y.dtype, np.floating) and np.isfinite(y).all() and (y == np.round(y)).all():
        y = y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        got = f"{y.min()}" if np.issubdtype(y.dtype, np.integer) else f"{y.dtype} values that are not all whole numbers"
        raise CnnkitError(f"{source}: labels must be non-negative whole numbers (class indices), got {got}")
    return y


def in_classes(data: ArrayData, classes: list[str], model_classes: list[str], *, source: str) -> ArrayData:
    """`data`, whose labels index `classes`, labelled by the model's class indices instead: a data source may hold
    some of a model's classes (matched by name, in any order), never one the model does not know."""
    unknown = [name for name in classes if name not in model_classes]
    if unknown:
        raise CnnkitError(f"{source}: classes {classes} differ from the model's {model_classes} ({', '.join(unknown)} "
                          "unknown to it)")
    if classes == model_classes:
        return data
    return replace(data, labels=torch.tensor([model_classes.index(name) for name in classes])[data.labels])


@dataclass
class DataBundle:
    """The splits of one data source, with its ordered class names."""

    train: ArrayData | None
    val: ArrayData | None
    test: ArrayData | None
    class_names: list[str]
    skipped: list[str]  # files left out because they could not be decoded, with the reason
    # (file, label) of the images training draws from, for folder sources: data.checks looks at the files too
    files: list[tuple[Path, int]] = field(default_factory=list)
    val_from: str = ""  # where the source's own validation split came from ('val/', 'x_val'); '' when it has none
    warnings: list[str] = field(default_factory=list)  # what the source left out of its layout, and why
    notes: list[str] = field(default_factory=list)  # how the source's layout was read, where it could be misread

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def whole(self) -> ArrayData | None:
        """Every image of the source, its splits together; None if it has none."""
        parts = [part for part in (self.train, self.val, self.test) if part is not None and len(part)]
        return ArrayData.concat(parts) if parts else None


def stratified_split(labels: torch.Tensor, *, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices into (keep, held_out) with `fraction` of every class held out, seeded."""
    if not 0.0 < fraction < 1.0:
        raise CnnkitError(f"validation split must be between 0 and 1, got {fraction}")
    generator = torch.Generator().manual_seed(seed)
    keep, held = [], []
    for cls in torch.unique(labels):
        members = torch.nonzero(labels == cls).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_held = int(round(len(members) * fraction))
        if len(members) > 1:
            n_held = min(max(n_held, 1), len(members) - 1)
        else:
            n_held = 0
        held.append(members[:n_held])
        keep.append(members[n_held:])
    return torch.cat(keep).sort().values, torch.cat(held).sort().values


def kfold_split(labels: torch.Tensor, *, folds: int, fold: int, seed: int,
                class_names: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (rest, fold) of the `fold`-th (1-based) of `folds` stratified, seeded folds (scikit-learn's
    StratifiedKFold): every image is in exactly one fold's test part, each class spread evenly over the folds."""
    from sklearn.model_selection import StratifiedKFold

    counts = torch.bincount(labels)
    short = [int(c) for c in torch.nonzero((counts > 0) & (counts < folds)).flatten()]
    if short:
        named = [class_names[c] if class_names else str(c) for c in short]
        raise CnnkitError(f"{folds}-fold cross-validation needs at least {folds} images of every class; class(es) "
                          f"{', '.join(named)} have {', '.join(str(int(counts[c])) for c in short)}")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    rest, held = list(splitter.split(labels.numpy().reshape(-1, 1), labels.numpy()))[fold - 1]
    return torch.from_numpy(rest).sort().values, torch.from_numpy(held).sort().values
