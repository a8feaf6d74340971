"""Reading `csv:PATH`: a table of image files and their labels, as Kaggle competitions and labelling tools ship them.

Only the table is read here (columns, labels, splits, file paths); decoding is the folder source's (data.sources).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from cnnkit.data.images import IMAGE_SUFFIXES
from cnnkit.errors import CnnkitError

FILE_COLUMNS = ("file", "filename", "file_name", "path", "image", "image_id", "id")
LABEL_COLUMNS = ("label", "class", "category", "target")
SPLITS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


@dataclass(frozen=True)
class Table:
    """Each row's file and label index, its split ('' without a split column), and the class names."""

    files: list[tuple[Path, int]]
    splits: list[str]
    class_names: list[str]
    columns: str  # which columns were read, for messages


def read_table(path: Path, *, root: Path) -> Table:
    """Read the CSV at `path`; file names are relative to `root`. A file name without an extension (Kaggle's ids)
    is looked up with each image extension. Missing columns, empty labels, unknown split names and a file listed with
    two labels are errors that name the line."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: Excel writes a byte-order mark
            reader = csv.DictReader(handle)
            columns = {name.strip().lower(): name for name in reader.fieldnames or []}
            file_col = _column(columns, FILE_COLUMNS, path, "image file")
            label_col = _column(columns, LABEL_COLUMNS, path, "label")
            split_col = columns.get("split")
            rows = [(line, row) for line, row in enumerate(reader, start=2)]
    except UnicodeDecodeError as exc:
        raise CnnkitError(f"{path}: not a UTF-8 text file ({exc.reason})") from None
    except csv.Error as exc:
        raise CnnkitError(f"{path}: not a readable CSV file ({exc})") from None
    if not rows:
        raise CnnkitError(f"{path}: no rows under the header")
    labels: list[str] = []
    for line, row in rows:
        label = (row.get(label_col) or "").strip()
        if not label:
            raise CnnkitError(f"{path}, line {line}: no label in column {label_col!r}")
        labels.append(label)
    names = sorted(set(labels), key=lambda n: (0, int(n), "") if n.lstrip("-").isdigit() else (1, 0, n))
    index = {name: i for i, name in enumerate(names)}
    files, splits, seen = [], [], {}
    for (line, row), label in zip(rows, labels):
        name = (row.get(file_col) or "").strip()
        if not name:
            raise CnnkitError(f"{path}, line {line}: no file name in column {file_col!r}")
        file = _find(root / name)
        if seen.get(file, label) != label:
            raise CnnkitError(f"{path}, line {line}: {name} is listed with two labels, {seen[file]!r} and {label!r}")
        seen[file] = label
        files.append((file, index[label]))
        splits.append(_split(row.get(split_col) if split_col else None, path, line))
    used = f"{file_col!r} and {label_col!r}" + (f", split {split_col!r}" if split_col else "")
    return Table(files, splits, names, used)


def _column(columns: dict[str, str], wanted: tuple[str, ...], path: Path, what: str) -> str:
    found = next((columns[name] for name in wanted if name in columns), None)
    if found is None:
        raise CnnkitError(f"{path}: no {what} column; expected one of {', '.join(wanted)} (any case), found "
                          f"{', '.join(columns.values()) or 'no header'}")
    return found


def _find(path: Path) -> Path:
    """`path`, or for a name without an image extension that is not a file, the first `path.EXT` that is."""
    if path.suffix.lower() in IMAGE_SUFFIXES or path.is_file():
        return path
    return next((c for c in (path.with_name(path.name + s) for s in IMAGE_SUFFIXES) if c.is_file()), path)


def _split(value: str | None, path: Path, line: int) -> str:
    if value is None:
        return ""
    split = SPLITS.get(value.strip().lower())
    if split is None:
        raise CnnkitError(f"{path}, line {line}: split {value!r}; expected one of {', '.join(SPLITS)}")
    return split
