"""Data sources: `cifar10`, `folder:PATH`, `npz:PATH` and `csv:PATH`, looked up by name in a registry."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cnnkit.data.cifar10 import find_or_download_cifar10
from cnnkit.data.datasets import ArrayData, DataBundle, kfold_split, stratified_split
from cnnkit.data.images import ImageError, is_image_file
from cnnkit.data.preprocess import Preprocess
from cnnkit.data.table import read_table
from cnnkit.errors import CnnkitError
from cnnkit.options import did_you_mean
from cnnkit.registry import Registry

if TYPE_CHECKING:
    from cnnkit.config import TrainConfig


@dataclass(frozen=True)
class SourceOptions:
    """How to read a source: where its files are, how big to decode images, how to split."""

    data_dir: Path | None = None
    preprocess: Preprocess | None = None  # folder sources decode straight to this size
    val_split: float = 0.0
    test_split: float = 0.2  # single-tree folders only
    seed: int = 0
    strict: bool = False  # stop on the first undecodable file instead of skipping it
    workers: int = 4  # threads decoding image files (Pillow releases the GIL while decoding)
    test_sources: tuple[str, ...] = ()  # folder trees of SOURCE/CLASS/ folders: these sources are the test split
    cache_dir: Path | None = None  # decoded-image cache for folder sources (data.cache); None: decode into memory
    quiet: bool = False  # no progress bar
    fold: tuple[int, int] | None = None  # (I, K): every image pooled, the I-th of K stratified folds the test split
    folder_layout: str = "auto"  # folder trees: "classes", "sources" (ROOT/SOURCE/CLASS/) or "auto" (_is_source_tree)

    @classmethod
    def of_run(cls, config: TrainConfig, preprocess: Preprocess, **changes: Any) -> SourceOptions:
        """How a training config reads its data: training, evaluation and export checks cut the same splits."""
        return replace(cls(data_dir=config.data_dir, preprocess=preprocess, val_split=config.val_split,
                           test_split=config.test_split, seed=config.seed, strict=config.strict,
                           workers=config.workers, test_sources=config.test_sources, cache_dir=config.image_cache,
                           quiet=config.quiet, fold=config.fold_spec, folder_layout=config.folder_layout), **changes)


VAL_DIRS = ("val", "valid", "validation")  # the validation tree beside train/ and test/, by any of its usual names

SourceFn = Callable[[str | None, SourceOptions], DataBundle]
SOURCES: Registry[SourceFn] = Registry("data source")


def register_source(name: str) -> Callable[[SourceFn], SourceFn]:
    return SOURCES.decorator(name)


def load_data(spec: str, *, options: SourceOptions) -> DataBundle:
    """Load `spec` ('cifar10', 'folder:PATH', 'npz:PATH', 'csv:PATH'; a bare existing path is guessed) and split it:
    a source's own validation split (a val/ folder, x_val arrays, a split column) is used as it is, otherwise
    `val_split` of the training data."""
    name, arg = _parse_spec(spec)
    bundle = SOURCES.get(name)(arg, options)
    _check_classes(bundle, spec)
    if options.fold is not None:  # cross-validation: the source's own splits pooled, then cut into folds
        pooled = bundle.whole()
        assert pooled is not None
        rest, held = kfold_split(pooled.labels, folds=options.fold[1], fold=options.fold[0], seed=options.seed,
                                 class_names=bundle.class_names)
        bundle.train, bundle.val, bundle.test, bundle.val_from = pooled.subset(rest), None, pooled.subset(held), ""
    if options.val_split and bundle.train is not None and bundle.val is None:
        keep, held = stratified_split(bundle.train.labels, fraction=options.val_split, seed=options.seed)
        bundle.val = bundle.train.subset(held)
        bundle.train = bundle.train.subset(keep)
    return bundle


def _parse_spec(spec: str) -> tuple[str, str | None]:
    if ":" in spec and spec.split(":", 1)[0] in SOURCES:
        name, arg = spec.split(":", 1)
        return name, arg
    path = Path(spec)
    if path.is_dir():
        return "folder", spec
    if path.suffix == ".npz" and path.is_file():
        return "npz", spec
    if path.suffix.lower() == ".csv" and path.is_file():
        return "csv", spec
    name = spec.split(":", 1)[0]
    if name not in SOURCES:
        hint = did_you_mean(name, list(SOURCES))
        raise CnnkitError(f"unknown data source {spec!r}: expected cifar10, folder:PATH, npz:PATH, csv:PATH or an "
                          f"existing folder, .npz or .csv file{hint}")
    return spec, None


@dataclass(frozen=True)
class DataSpec:
    """A data source as a value: its kind (cifar10, folder, npz, csv) and, for those read from a path, that path
    made absolute. Two specs are equal when they name the same data, however they were written (a bare folder or
    folder:PATH, relative or absolute)."""

    kind: str
    path: Path | None = None

    @classmethod
    def parse(cls, spec: str) -> DataSpec:
        name, arg = _parse_spec(spec)
        return cls(name, Path(arg).resolve() if arg else None)

    def __str__(self) -> str:
        return f"{self.kind}:{self.path}" if self.path else self.kind


def absolute_spec(spec: str) -> str:
    """The same data source with its path made absolute (so that a saved config works from any directory)."""
    return str(DataSpec.parse(spec))


def same_data(spec: str, other: str | None) -> bool:
    """Whether two data specs name the same data (False when `other` is None)."""
    return other is not None and DataSpec.parse(spec) == DataSpec.parse(other)


def _check_classes(bundle: DataBundle, spec: str) -> None:
    if bundle.num_classes < 2:
        raise CnnkitError(f"{spec}: a classifier needs at least 2 classes, found {bundle.num_classes}")
    for split in (bundle.train, bundle.val, bundle.test):
        if split is not None and len(split) and int(split.labels.max()) >= bundle.num_classes:
            raise CnnkitError(f"{spec}: label {int(split.labels.max())} but only {bundle.num_classes} class names")


@register_source("cifar10")
def cifar10(arg: str | None, options: SourceOptions) -> DataBundle:
    """CIFAR-10 from train.npz/test.npz in --data-dir, $CNNKIT_DATA or the cache; downloaded if absent."""
    directory = find_or_download_cifar10(Path(arg) if arg else options.data_dir)
    train, names = _read_npz(directory / "train.npz")
    test, _ = _read_npz(directory / "test.npz")
    return DataBundle(train=train, val=None, test=test, class_names=names or _CIFAR10_NAMES, skipped=[])


_CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@register_source("npz")
def npz(arg: str | None, options: SourceOptions) -> DataBundle:
    """One .npz with x/y (and optional class_names), or x_train/y_train (+ x_val/y_val, x_test/y_test); or a folder
    of train.npz (+ val.npz, test.npz). x/y alone are unsplit data, as a single folder tree is: --test-split of them
    is held out for the test split."""
    if not arg:
        raise CnnkitError("npz source needs a path: npz:PATH")
    path = Path(arg)
    if path.is_dir():
        train, names = _read_npz(path / "train.npz")
        val, test = (_read_npz(path / f"{split}.npz")[0] if (path / f"{split}.npz").is_file() else None
                     for split in ("val", "test"))
        val_from, unsplit = "val.npz", False
    else:
        data = _load_npz(path)
        train, names, val, test = _read_npz_splits(data, path)
        val_from, unsplit = "x_val/y_val", "x_train" not in data
    if names is None:
        n = 1 + max(int(split.labels.max()) for split in (train, val, test) if split is not None and len(split))
        names = [str(i) for i in range(n)]
    if unsplit:
        return _test_held_out(train, names, skipped=[], files=[], options=options)
    return DataBundle(train=train, val=val, test=test, class_names=names, skipped=[],
                      val_from=val_from if val is not None else "")


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise CnnkitError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:  # never unpickle
            return {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        raise CnnkitError(f"{path}: not a readable .npz file ({exc})") from None


def _read_npz(path: Path) -> tuple[ArrayData, list[str] | None]:
    return _from_xy(_load_npz(path), path)


def _from_xy(data: dict[str, np.ndarray], path: Path) -> tuple[ArrayData, list[str] | None]:
    if "x" not in data or "y" not in data:
        raise CnnkitError(f"{path}: expected arrays 'x' and 'y', found {sorted(data)}")
    return ArrayData.from_numpy(data["x"], data["y"], source=str(path)), _names(data, "y")


def _names(data: dict[str, np.ndarray], labels: str) -> list[str] | None:
    """The file's class_names; else, for one-hot labels, their columns' indices (a class no image has still counts)."""
    if "class_names" in data:
        return [str(n) for n in data["class_names"]]
    y = data[labels]
    return [str(i) for i in range(y.shape[1])] if y.ndim == 2 and y.shape[1] > 1 else None


def _read_npz_splits(data: dict[str, np.ndarray],
                     path: Path) -> tuple[ArrayData, list[str] | None, ArrayData | None, ArrayData | None]:
    """(train, class names, val, test) of one .npz file's arrays."""
    if "x_train" not in data:
        train, names = _from_xy(data, path)
        return train, names, None, None
    splits = {}
    for split in ("train", "val", "test"):
        x, y = f"x_{split}", f"y_{split}"
        if (x in data) != (y in data):
            raise CnnkitError(f"{path}: {x if x in data else y} without {y if x in data else x}")
        splits[split] = ArrayData.from_numpy(data[x], data[y], source=f"{path} ({split})") if x in data else None
    return splits["train"], _names(data, "y_train"), splits["val"], splits["test"]


@register_source("folder")
def folder(arg: str | None, options: SourceOptions) -> DataBundle:
    """A tree of class subfolders; with train/ and test/ subtrees, or one tree split by --test-split."""
    root = _image_source_path("folder", arg, options)
    if options.test_sources or options.folder_layout == "sources":
        return _by_source(root, options)
    if (root / "train").is_dir():
        return _split_trees(root, options)
    if options.folder_layout == "auto" and _is_source_tree(root):
        return _by_source(root, options)
    names = _class_dirs(root)
    files = _list_tree(root, names)
    parts, skipped = _decode_trees({"all": (root, files)}, names, options)
    return _test_held_out(parts["all"], names, skipped=skipped, files=files, options=options)


def _image_source_path(kind: str, arg: str | None, options: SourceOptions) -> Path:
    """The folder or file a folder: or csv: source names, checked."""
    if not arg:
        raise CnnkitError(f"{kind} source needs a path: {kind}:PATH")
    path = Path(arg)
    if not (path.is_dir() if kind == "folder" else path.is_file()):
        raise CnnkitError(f"{path}: no such {'directory' if kind == 'folder' else 'file'}")
    if options.preprocess is None:
        raise CnnkitError(f"{kind} data needs a preprocessing policy to decode images")
    return path


def _test_held_out(data: ArrayData, names: list[str], *, skipped: list[str], files: list[tuple[Path, int]],
                   options: SourceOptions) -> DataBundle:
    """Data without a test split of its own: --test-split of it held out, stratified and seeded. The files checked
    (data.checks) are all of them: the split is random, the capture is not."""
    if options.test_split:
        keep, held = stratified_split(data.labels, fraction=options.test_split, seed=options.seed + 1)
        return DataBundle(train=data.subset(keep), val=None, test=data.subset(held), class_names=names,
                          skipped=skipped, files=files)
    return DataBundle(train=data, val=None, test=None, class_names=names, skipped=skipped, files=files)


@register_source("csv")
def csv_table(arg: str | None, options: SourceOptions) -> DataBundle:
    """A CSV of image files and labels (data.table): a split column places each image; without one, --test-split
    holds out a test split as for a single folder tree. File names are relative to --data-dir, else to the CSV's
    folder."""
    path = _image_source_path("csv", arg, options)
    table = read_table(path, root=options.data_dir or path.parent)
    store, rows, skipped, store_names = _decode_listed(table.files, options)

    def part(split: str) -> ArrayData | None:
        good = [(row, label) for row, (_, label), where in zip(rows, table.files, table.splits)
                if where == split and not isinstance(row, str)]
        return ArrayData(store, torch.tensor([lab for _, lab in good], dtype=torch.int64),
                         torch.tensor([row for row, _ in good], dtype=torch.int64), store_names) if good else None

    names, has_splits = table.class_names, any(table.splits)
    train = part("train" if has_splits else "")
    if train is None:
        raise CnnkitError(f"{path}: no readable training images ({table.columns}; {len(skipped)} unusable)")
    missing = [n for i, n in enumerate(names) if not (train.labels == i).any()]
    if missing:
        raise CnnkitError(f"{path}: no readable training images of class(es) {', '.join(missing)}")
    files = [f for f, where in zip(table.files, table.splits) if where == ("train" if has_splits else "")]
    if has_splits:
        val = part("val")
        return DataBundle(train=train, val=val, test=part("test"), class_names=names, skipped=skipped, files=files,
                          val_from="the split column" if val is not None else "")
    return _test_held_out(train, names, skipped=skipped, files=files, options=options)


def _split_trees(root: Path, options: SourceOptions) -> DataBundle:
    """ROOT/train/CLASS/ with ROOT/test/ and a validation tree (val/, valid/ or validation/, as Keras tutorials and
    data set exports name it) beside it. Their classes are train/'s: a class folder elsewhere that train/ lacks, or a
    folder beside the splits, is left out with a warning (a model cannot be scored on a class it never saw); one
    that val/ or test/ lacks is a class without validation or test images (data.checks warns)."""
    names = _class_dirs(root / "train")
    found = [name for name in VAL_DIRS if (root / name).is_dir()]
    if len(found) > 1:
        raise CnnkitError(f"{root}: both {found[0]}/ and {found[1]}/: which is the validation split? Keep one")
    layout = {"train": "train", **({"val": found[0]} if found else {}), "test": "test"}
    warnings = [f"{root / p.name}: not a split folder ({', '.join(f'{d}/' for d in layout.values())}), left out"
                for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")
                and p.name not in layout.values()]
    trees = {}
    for split, folder in layout.items():
        if (root / folder).is_dir():
            # A class folder missing from val/ or test/ (a rare class) is data.checks' warning, not an error.
            trees[split] = (root / folder, _list_tree(root / folder, names, every_class=split == "train"))
            warnings += [f"{root / folder / extra}: class {extra!r} is not in {root / 'train'} "
                         f"({_count_files(root / folder / extra)} files), left out of the {split} split"
                         for extra in _class_dirs(root / folder, at_least=0) if extra not in names]
    parts, skipped = _decode_trees(trees, names, options)
    return DataBundle(train=parts["train"], val=parts.get("val"), test=parts.get("test"), class_names=names,
                      skipped=skipped, files=trees["train"][1], val_from=f"{found[0]}/" if found else "",
                      warnings=warnings)


def _subdirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _is_source_tree(root: Path) -> bool:
    """Whether ROOT holds SOURCE/CLASS/ folders: two or more folders without files of their own, each holding the
    same two or more subfolders. Read as one tree, the sources would be the classes, and a model would learn to
    tell the collections apart."""
    tops = [root / name for name in _subdirs(root)]
    if len(tops) < 2 or any(p.is_file() and not p.name.startswith(".") for top in tops for p in top.iterdir()):
        return False
    inner = {tuple(_subdirs(top)) for top in tops}
    return len(inner) == 1 and len(next(iter(inner))) >= 2


def _by_source(root: Path, options: SourceOptions) -> DataBundle:
    """ROOT/SOURCE/CLASS/ trees (collections, crawls, sites): with --test-source, train on some sources and test on
    the others, as a deployed model will meet pages from sources it never saw; without, the sources pooled by their
    class folders, --test-split held out."""
    sources = _subdirs(root)
    for held in options.test_sources:
        if held not in sources:
            raise CnnkitError(f"--test-source {held!r}: no such source folder in {root}; sources: "
                              f"{', '.join(sources)}" + did_you_mean(held, sources))
    if options.test_sources and (len(sources) < 2 or set(sources) <= set(options.test_sources)):
        raise CnnkitError(f"{root}: --test-source needs at least one other source folder to train on")
    names = sorted({p.name for s in sources for p in (root / s).iterdir() if p.is_dir() and not p.name.startswith(".")})
    if len(names) < 2:
        raise CnnkitError(f"{root}: a classifier needs at least 2 class folders in its sources, found {names}")
    trees = {source: (root / source, _list_tree(root / source, names, every_class=False)) for source in sources}
    decoded, skipped = _decode_trees(trees, names, options, every_class=False)  # one store: the splits are views
    if not options.test_sources:
        files = [item for source in sources for item in trees[source][1]]
        bundle = _test_held_out(ArrayData.concat([decoded[s] for s in sources]), names, skipped=skipped,
                                files=files, options=options)
        if options.folder_layout == "auto":
            bundle.notes.append(f"{root} holds the class folders {', '.join(names)} in each of {', '.join(sources)}: "
                                "read as sources of one data set, pooled; --test-source NAME tests on one source "
                                f"and trains on the others; --folder-layout classes reads {', '.join(sources)} as "
                                "the classes instead")
        return bundle
    train = ArrayData.concat([decoded[s] for s in sources if s not in options.test_sources])
    test = ArrayData.concat([decoded[s] for s in sources if s in options.test_sources])
    missing = [n for i, n in enumerate(names) if not (train.labels == i).any()]
    if missing:
        raise CnnkitError(f"{root}: no training images of class(es) {', '.join(missing)} outside the test sources")
    files = [item for source in sources if source not in options.test_sources for item in trees[source][1]]
    return DataBundle(train=train, val=None, test=test, class_names=names, skipped=skipped, files=files)


def _class_dirs(root: Path, *, at_least: int = 2) -> list[str]:
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(names) < at_least:
        raise CnnkitError(f"{root}: a classifier needs at least {at_least} class folders, found {len(names)}")
    return names


def _count_files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def _list_tree(root: Path, names: list[str], *, every_class: bool = True) -> list[tuple[Path, int]]:
    """(file, label) for the files of ROOT/CLASS/ folders; `every_class` False lets a class folder be absent (a
    source without it)."""
    files: list[tuple[Path, int]] = []
    for label, name in enumerate(names):
        class_dir = root / name
        if not class_dir.is_dir() and not every_class:
            continue
        if not class_dir.is_dir():
            raise CnnkitError(f"{root}: missing class folder {name!r}")
        members = sorted(p for p in class_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not members:
            raise CnnkitError(f"{class_dir}: class folder is empty")
        files += [(path, label) for path in members]
    return files


def _decode_trees(trees: dict[str, tuple[Path, list[tuple[Path, int]]]], names: list[str], options: SourceOptions,
                  *, every_class: bool = True) -> tuple[dict[str, ArrayData], list[str]]:
    """Decode the files of several trees at once (into memory, or through the cache) into one store; each tree's
    data is a view of it. Unusable files are skipped with their reason (--strict: an error)."""
    files = [item for _, listed in trees.values() for item in listed]
    store, rows, skipped, store_names = _decode_listed(files, options)
    parts, start = {}, 0
    for key, (root, listed) in trees.items():
        mine = rows[start : start + len(listed)]
        good = [(row, label) for row, (_, label) in zip(mine, listed) if not isinstance(row, str)]
        start += len(listed)
        if not good:
            raise CnnkitError(f"{root}: no readable images in its class folders ({', '.join(names)})")
        for label, name in enumerate(names):
            if (root / name).is_dir() and not any(lab == label for _, lab in good):
                raise CnnkitError(f"{root / name}: class folder has no readable images")
        parts[key] = ArrayData(store, torch.tensor([lab for _, lab in good], dtype=torch.int64),
                               torch.tensor([row for row, _ in good], dtype=torch.int64), store_names)
    return parts, skipped


def _decode_listed(files: list[tuple[Path, int]],
                   options: SourceOptions) -> tuple[Any, list[int | str], list[str], tuple[str, ...]]:
    """(store, per file its row or why it is unusable, those reasons, each stored image's file name). Unusable files
    are skipped with their reason (--strict: an error)."""
    store, rows = _decode_files(files, options)
    skipped = [row for row in rows if isinstance(row, str)]
    if skipped and options.strict:
        raise CnnkitError(f"{len(skipped)} unusable file(s) (--strict): " + "; ".join(skipped))
    file_of = [""] * int(store.shape[0])  # each stored image's file, for reports that point at images
    for row, (path, _) in zip(rows, files):
        if not isinstance(row, str):
            file_of[row] = str(path)
    return store, rows, skipped, tuple(file_of)


def _decode_files(files: list[tuple[Path, int]], options: SourceOptions) -> tuple[Any, list[int | str]]:
    """(uint8 images, per file its row in them or why it could not be decoded)."""
    preprocess = options.preprocess
    assert preprocess is not None

    def decode(path: Path) -> np.ndarray | str:
        if not path.exists():
            return f"{path}: no such file"
        if not is_image_file(path):
            return f"{path}: not an image file (extension {path.suffix or 'none'})"
        try:
            return preprocess.load(path)
        except ImageError as exc:
            return str(exc)

    if options.cache_dir is not None:
        from cnnkit.data.cache import decode_cached

        decoded = decode_cached(files, preprocess=preprocess, cache_dir=options.cache_dir, workers=options.workers,
                                decode=decode, quiet=options.quiet)
        return decoded.images, decoded.rows
    with ThreadPoolExecutor(max_workers=max(1, min(options.workers, os.cpu_count() or 1))) as pool:
        results = list(pool.map(decode, [path for path, _ in files]))
    arrays = [r for r in results if not isinstance(r, str)]
    rows: list[int | str] = []
    good = 0
    for result in results:
        rows.append(result if isinstance(result, str) else good)
        good += not isinstance(result, str)
    if not arrays:
        return torch.zeros((0, 3, preprocess.input_size, preprocess.input_size), dtype=torch.uint8), rows
    return torch.from_numpy(np.stack(arrays).transpose(0, 3, 1, 2).copy()), rows


def dataset_stats(data: ArrayData, *, max_images: int = 10_000,
                  chunk: int = 256) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of pixels in [0, 1], from up to `max_images` images, a chunk at a time (float64
    sums: bounded memory, no loss of precision over millions of pixels)."""
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    count = 0
    n = min(max_images, len(data))
    for start in range(0, n, chunk):
        x = data.batch(torch.arange(start, min(n, start + chunk))).double().div_(255)
        total += x.sum(dim=(0, 2, 3))
        squares += x.square().sum(dim=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt().clamp_min(1e-3)
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


def decode_images(paths: list[Path], *, preprocess: Preprocess) -> torch.Tensor:
    """Decode and resize image files into a uint8 [N, 3, S, S] batch; raises ImageError naming a bad file."""
    arrays = [preprocess.load(Path(p)) for p in paths]
    return torch.from_numpy(np.stack(arrays).transpose(0, 3, 1, 2).copy())
