"""Prediction in bulk: folders, globs and lists of paths, streamed in batches with bounded memory; an unreadable
file is a row with its error, never the end of the job."""

from __future__ import annotations

import glob
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.data.images import IMAGE_SUFFIXES, ImageError
from cnnkit.errors import CnnkitError


def expand(specs: Iterable[str | Path]) -> Iterator[Path]:
    """Files from paths, folders (searched recursively for images), globs, and @FILE lists (one path a line)."""
    for spec in map(str, specs):
        if spec.startswith("@"):
            listing = Path(spec[1:])
            if not listing.is_file():
                raise CnnkitError(f"{listing}: no such list of paths")
            lines = [line.strip() for line in listing.read_text().splitlines()]
            yield from (Path(line) for line in lines if line and not line.startswith("#"))
        elif Path(spec).is_dir():
            yield from sorted(p for p in Path(spec).rglob("*")
                              if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        elif any(ch in spec for ch in "*?[") and not Path(spec).exists():
            matches = sorted(glob.glob(spec, recursive=True))
            if not matches:
                raise CnnkitError(f"{spec}: matches no file")
            yield from map(Path, matches)
        else:
            yield Path(spec)  # a missing file becomes a row with its error


def predict_rows(model: Any, paths: Iterable[Path], *, batch_size: int = 64, top_k: int = 3,
                 threshold: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """One row per path, in order: path, label, score, top-k and (with a threshold) the decision; or its error.

    `model` is a runtime TorchModel or OnnxModel. At most `batch_size` decoded images are held at a time."""
    batch: list[tuple[Path, np.ndarray]] = []
    for path in paths:
        try:
            batch.append((path, model.preprocess.load(path)))
        except ImageError as exc:
            yield from _flush(model, batch, top_k, threshold)
            batch = []
            yield {"path": str(path), "error": str(exc)}
            continue
        if len(batch) == batch_size:
            yield from _flush(model, batch, top_k, threshold)
            batch = []
    yield from _flush(model, batch, top_k, threshold)


def _flush(model: Any, batch: list[tuple[Path, np.ndarray]], top_k: int,
           threshold: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
    if not batch:
        return
    probs = model.probabilities(np.stack([pixels for _, pixels in batch]))
    classes = model.class_names
    for (path, _), row in zip(batch, probs):
        order = np.argsort(-row)[: min(top_k, len(classes))]
        result: dict[str, Any] = {"path": str(path), "label": classes[order[0]], "score": float(row[order[0]]),
                                  "top": [[classes[i], round(float(row[i]), 6)] for i in order]}
        if threshold and threshold.get("positive") in classes and len(classes) == 2:
            score = float(row[classes.index(threshold["positive"])])
            result["decision"] = threshold["positive"] if score >= threshold["threshold"] else \
                classes[1 - classes.index(threshold["positive"])]
        yield result


def done_paths(output: Path) -> set[str]:
    """Paths an earlier (interrupted) run already wrote to `output` (.csv or .jsonl), for --resume."""
    if not Path(output).is_file():
        return set()
    if Path(output).suffix == ".jsonl":
        paths = set()
        for line in Path(output).read_text().splitlines():
            try:
                paths.add(json.loads(line)["path"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by the interruption: that file is predicted again
        return paths
    import csv

    with open(output, newline="") as handle:
        return {row["path"] for row in csv.DictReader(handle) if row.get("path") and (row.get("label")
                                                                                      or row.get("error"))}


def cut_partial_line(output: Path) -> None:
    """Drop a last line that an interruption left without its newline, so that appended rows start clean."""
    path = Path(output)
    if not path.is_file() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])
