"""Prediction in bulk: folders, globs and lists of paths, streamed in batches with bounded memory; an unreadable
file is a row with its error, never the end of the job."""

from __future__ import annotations

import csv
import glob
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.data.images import IMAGE_SUFFIXES, ImageError
from cnnkit.errors import CnnkitError
from cnnkit.files import write_json
from cnnkit.runtime.remote import fetch, is_url


def expand(specs: Iterable[str | Path]) -> Iterator[Path | str]:
    """Files from paths, folders (searched recursively for images), globs, and @FILE lists (one path a line);
    http(s) URLs as they are (fetched when their batch is decoded)."""
    for spec in map(str, specs):
        if is_url(spec):
            yield spec
        elif spec.startswith("@"):
            listing = Path(spec[1:])
            if not listing.is_file():
                raise CnnkitError(f"{listing}: no such list of paths")
            lines = [line.strip() for line in listing.read_text().splitlines()]
            yield from (line if is_url(line) else Path(line) for line in lines if line and not line.startswith("#"))
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
                 threshold: dict[str, Any] | None = None, workers: int = 0) -> Iterator[dict[str, Any]]:
    """One row per path, in order: path, label, score, top-k and (with a threshold) the decision; or its error.

    `model` is a runtime TorchModel or OnnxModel. Each batch of `batch_size` paths is decoded by `workers` threads
    (0: one per core; Pillow releases the GIL while decoding), so at most one batch of decoded images is held."""
    from concurrent.futures import ThreadPoolExecutor
    from itertools import islice

    def load(path: Path | str) -> np.ndarray | str:
        try:
            return model.preprocess.load(fetch(path), name=path) if is_url(path) else model.preprocess.load(path)
        except ImageError as exc:
            return str(exc)

    iterator = iter(paths)
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        while chunk := list(islice(iterator, batch_size)):
            batch: list[tuple[Path, np.ndarray]] = []
            for path, pixels in zip(chunk, pool.map(load, chunk)):
                if isinstance(pixels, str):
                    yield from _flush(model, batch, top_k, threshold)  # rows stay in path order
                    batch = []
                    yield {"path": str(path), "error": pixels}
                else:
                    batch.append((path, pixels))
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


def done_paths(output: Path, *, jsonl: bool | None = None) -> set[str]:
    """Paths an earlier (interrupted) run already wrote to `output` (.csv or .jsonl, or as `jsonl` says), for
    --resume."""
    if not Path(output).is_file():
        return set()
    if jsonl if jsonl is not None else Path(output).suffix == ".jsonl":
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


CSV_FIELDS = ["path", "label", "score", "top", "decision", "error"]


def write_rows(rows: Iterable[dict[str, Any]], output: Path, *, jsonl: bool, append: bool) -> int:
    """Write rows to a CSV or JSON-lines file as they come (flushed every row), appending when `append` and the file
    has rows; returns how many rows were errors."""
    from cnnkit.progress import progress_bar

    if append:
        cut_partial_line(output)
    fresh = not (append and output.is_file() and output.stat().st_size)
    failed = 0
    with open(output, "w" if fresh else "a", newline="") as handle:
        writer = None
        if not jsonl:
            writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
            if fresh:
                writer.writeheader()
        for row in progress_bar(iterable=rows, desc="Predicting", unit="image"):
            failed += "error" in row
            if writer is not None:
                writer.writerow({**row, "top": ";".join(f"{label}:{p:.6f}" for label, p in row.get("top", []))})
            else:
                handle.write(json.dumps(row) + "\n")
            handle.flush()
    return failed


def predict_to_file(model: Any, paths: list[Path], *, output: Path, resume: bool, ctx: Any = None,
                    identity: dict[str, Any] | None = None, **options: Any) -> int:
    """Predict `paths` into `output` (.csv or .jsonl); returns the number of files that failed, over all ranks.

    Under torchrun (`ctx` a runtime.parallel.DistContext of several ranks) rank r predicts paths[r::world] into
    OUTPUT.partR, then rank 0 merges the parts (and, with `resume`, what OUTPUT already had) into OUTPUT in path
    order. With `resume` each rank skips what OUTPUT and its own part already hold, so a killed job goes on where
    it stopped. `identity` (the model's weights, top-k, threshold) is kept beside OUTPUT (OUTPUT.cnnkit.json), and
    `resume` refuses an OUTPUT another model or setting wrote: its rows would mix two models' answers.
    `options`: predict_rows' batch_size, top_k, threshold, workers."""
    jsonl = output.suffix == ".jsonl"
    if identity is not None:
        _check_identity(output, identity, resume=resume, write=ctx is None or ctx.is_main)
    done = done_paths(output, jsonl=jsonl) if resume else set()
    if ctx is None or not ctx.enabled:
        todo = [p for p in paths if str(p) not in done]
        return write_rows(predict_rows(model, todo, **options), output, jsonl=jsonl, append=resume)
    import torch

    part = _part(output, ctx.rank)
    if not resume:
        part.unlink(missing_ok=True)
    done |= done_paths(part, jsonl=jsonl)
    mine = [p for p in paths[ctx.rank :: ctx.world_size] if str(p) not in done]
    failed = torch.tensor([write_rows(predict_rows(model, mine, **options), part, jsonl=jsonl, append=True)])
    ctx.barrier()  # every part is complete
    if ctx.is_main:
        _merge(output, [_part(output, rank) for rank in range(ctx.world_size)], order=paths, keep=resume,
               jsonl=jsonl)
    ctx.barrier()
    return int(ctx.all_reduce_sum(failed).item())


def _check_identity(output: Path, identity: dict[str, Any], *, resume: bool, write: bool) -> None:
    sidecar = output.with_name(output.name + ".cnnkit.json")
    if resume and sidecar.is_file() and output.is_file():
        before = json.loads(sidecar.read_text())
        differ = [k for k in sorted(identity.keys() | before.keys()) if before.get(k) != identity.get(k)]
        if differ:
            raise CnnkitError(f"{output} was written with another {', '.join(differ)} ({before}); --resume would mix "
                              "two models' rows in one file: write to a new file, or leave out --resume to start over")
    if write:
        write_json(sidecar, identity)


def count_errors(output: Path) -> int:
    """Rows of `output` (.csv or .jsonl) that are errors."""
    if not output.is_file():
        return 0
    return sum(bool(row.get("error")) for row in _read_rows(output, jsonl=output.suffix == ".jsonl"))


def _part(output: Path, rank: int) -> Path:
    return output.with_name(f"{output.name}.part{rank}")


def _merge(output: Path, parts: list[Path], *, order: list[Path], keep: bool, jsonl: bool) -> None:
    """Rows of `parts` (and of `output` when `keep`) into `output`, in the order of `order`; atomically."""
    position = {str(p): i for i, p in enumerate(order)}
    sources = ([output] if keep and output.is_file() else []) + [p for p in parts if p.is_file()]
    rows = [row for source in sources for row in _read_rows(source, jsonl=jsonl)]
    rows.sort(key=lambda row: position.get(row["path"], len(position)))
    temp = output.with_name(f".{output.name}.merging")
    with open(temp, "w", newline="") as handle:
        if jsonl:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
        else:
            writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
    os.replace(temp, output)
    for part in parts:
        part.unlink(missing_ok=True)


def _read_rows(path: Path, *, jsonl: bool) -> list[dict[str, Any]]:
    cut_partial_line(path)
    if jsonl:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))
