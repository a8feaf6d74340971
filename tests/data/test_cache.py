"""The decoded-image cache: built once and reused, rebuilt when a file changes (decoding only that file), when
its images file is truncated or its build was killed, and shared by the ranks of a distributed run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_tree
from PIL import Image

from cnnkit.data.cache import IMAGES, _locked, cache_entries, decode_cached, prune_cache
from cnnkit.data.preprocess import Preprocess
from cnnkit.data.sources import SourceOptions, load_data

PRE = Preprocess(input_size=24)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = write_tree(tmp_path / "tree", 6, size=40, seed=5)
    (root / "circle" / "broken.png").write_bytes(b"not a png")
    return root


def files_of(root: Path) -> list[tuple[Path, int]]:
    names = sorted(p.name for p in root.iterdir())
    return [(path, label) for label, name in enumerate(names) for path in sorted((root / name).iterdir())]


def decode_counting(calls: list[Path]):  # type: ignore[no-untyped-def]
    def decode(path: Path) -> np.ndarray | str:
        calls.append(path)
        try:
            return PRE.load(path)
        except Exception as exc:  # noqa: BLE001 - the reason is the row
            return str(exc)

    return decode


def decoded(files: list[tuple[Path, int]], cache: Path, calls: list[Path]):  # type: ignore[no-untyped-def]
    return decode_cached(files, preprocess=PRE, cache_dir=cache, workers=2, decode=decode_counting(calls), quiet=True)


def pixels(result, n: int) -> torch.Tensor:  # type: ignore[no-untyped-def]
    rows = [r for r in result.rows[:n] if isinstance(r, int)]
    return result.images[torch.tensor(rows)]


def test_built_once_then_read_without_decoding(tree: Path, tmp_path: Path) -> None:
    files, cache = files_of(tree), tmp_path / "cache"
    first_calls: list[Path] = []
    first = decoded(files, cache, first_calls)
    assert len(first_calls) == len(files) and not first.cached
    again_calls: list[Path] = []
    again = decoded(files, cache, again_calls)
    assert again_calls == [] and again.cached  # the second run decodes nothing
    assert again.rows == first.rows and sum(isinstance(r, str) for r in again.rows) == 1  # the broken file's reason
    assert torch.equal(pixels(again, len(files)), pixels(first, len(files)))
    expected = torch.from_numpy(PRE.load(files[0][0]).transpose(2, 0, 1).copy())
    assert torch.equal(again.images[torch.tensor([0])][0], expected)


def test_an_entry_is_keyed_by_what_decides_the_pixels(tree: Path, tmp_path: Path) -> None:
    """Mean and std are applied to tensors after decoding: a run's evaluation (its preprocess.json carries the
    weights' mean and std) reads the entry training built. Another interpolation decodes other pixels: a new entry."""
    from dataclasses import replace

    files, cache = files_of(tree), tmp_path / "cache"
    decoded(files, cache, [])
    calls: list[Path] = []
    normalised = replace(PRE, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert decode_cached(files, preprocess=normalised, cache_dir=cache, workers=2, decode=decode_counting(calls),
                         quiet=True).cached and calls == []
    bicubic = replace(PRE, interpolation="bicubic")
    assert not decode_cached(files, preprocess=bicubic, cache_dir=cache, workers=2, decode=decode_counting(calls),
                             quiet=True).cached


def test_a_changed_file_is_decoded_again_and_only_it(tree: Path, tmp_path: Path) -> None:
    files, cache = files_of(tree), tmp_path / "cache"
    decoded(files, cache, [])
    changed = files[3][0]
    Image.new("RGB", (40, 40), (10, 200, 30)).save(changed)
    os.utime(changed, ns=(1, 1))  # a different mtime, whatever the clock's resolution
    calls: list[Path] = []
    result = decoded(files, cache, calls)
    assert calls == [changed] and not result.cached
    assert torch.equal(result.images[torch.tensor([3])][0],
                       torch.from_numpy(PRE.load(changed).transpose(2, 0, 1).copy()))
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 2  # the old entry is kept for other file sets


def test_prune_removes_replaced_and_unfinished_entries_but_none_in_use(tree: Path, tmp_path: Path) -> None:
    files, cache = files_of(tree), tmp_path / "cache"
    decoded(files, cache, [])
    old = next(p for p in cache.iterdir() if p.is_dir())
    os.utime(old / "meta.json", (1_000, 1_000))  # last used long ago
    added = tree / "circle" / "added.png"
    Image.new("RGB", (40, 40), (200, 10, 30)).save(added)
    decoded(files_of(tree), cache, [])  # a new entry for the new file set
    other = Preprocess(input_size=16)  # other pixels: an entry of its own group, kept
    decode_cached(files, preprocess=other, cache_dir=cache, workers=1, quiet=True,
                  decode=lambda path: "unreadable" if path.name == "broken.png" else other.load(path))
    unfinished = cache / f".{'f' * 32}.4242.tmp"  # a build whose process died
    unfinished.mkdir()
    entries = {e.path: e for e in cache_entries(cache)}
    assert len(entries) == 4 and entries[old].group is not None and not entries[old].latest
    assert entries[unfinished].group is None
    assert sum(e.latest for e in entries.values()) == 2 and entries[old].images == len(files)

    with _locked(cache / f"{old.name}.lock"):  # a run is opening the replaced entry: it stays
        assert {e.path for e in prune_cache(cache)} == {unfinished}
    assert {e.path for e in prune_cache(cache)} == {old}
    kept = cache_entries(cache)
    assert len(kept) == 2 and all(e.latest for e in kept)
    calls: list[Path] = []
    assert decoded(files_of(tree), cache, calls).cached and not calls  # the latest entry still serves its runs
    assert prune_cache(cache, unused_days=1) == []  # both were used just now
    assert len(prune_cache(cache, everything=True)) == 2 and cache_entries(cache) == []


def test_a_cache_without_room_is_refused_before_decoding(tree: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    import cnnkit.data.cache as cache_module
    from cnnkit.errors import CnnkitError

    files, cache = files_of(tree), tmp_path / "cache"
    needed = len(files) * 3 * PRE.input_size**2
    monkeypatch.setattr(cache_module.shutil, "disk_usage", lambda path: SimpleNamespace(free=needed - 1))
    calls: list[Path] = []
    with pytest.raises(CnnkitError, match=rf"{len(files)} decoded images need .* MiB free: `cnnkit cache --prune`"):
        decoded(files, cache, calls)
    assert calls == [] and [p for p in cache.iterdir() if p.is_dir()] == []  # nothing decoded, nothing left

    def disk_fills(path: Path) -> np.ndarray | str:
        raise OSError(28, "No space left on device")  # ENOSPC: the disk filled up while decoding

    monkeypatch.undo()
    with pytest.raises(CnnkitError, match="no space left in the image cache .* --no-cache"):
        decode_cached(files, preprocess=PRE, cache_dir=cache, workers=1, decode=disk_fills, quiet=True)
    assert [p for p in cache.iterdir() if p.is_dir()] == []


def test_a_truncated_cache_is_rebuilt_not_read(tree: Path, tmp_path: Path) -> None:
    files, cache = files_of(tree), tmp_path / "cache"
    good = pixels(decoded(files, cache, []), len(files))
    entry = next(p for p in cache.iterdir() if p.is_dir())
    with open(entry / IMAGES, "r+b") as handle:
        handle.truncate(100)
    calls: list[Path] = []
    rebuilt = decoded(files, cache, calls)
    assert len(calls) == len(files) and not rebuilt.cached
    assert torch.equal(pixels(rebuilt, len(files)), good)


def test_a_killed_build_leaves_nothing_that_is_read(tree: Path, tmp_path: Path) -> None:
    files, cache = files_of(tree), tmp_path / "cache"

    def dies(path: Path) -> np.ndarray | str:
        raise KeyboardInterrupt  # the user pressed Ctrl-C in the middle of decoding

    with pytest.raises(KeyboardInterrupt):
        decode_cached(files, preprocess=PRE, cache_dir=cache, workers=1, decode=dies, quiet=True)
    assert [p.name for p in cache.iterdir() if p.is_dir()] == []  # no entry, no half-written temporary
    calls: list[Path] = []
    assert not decoded(files, cache, calls).cached and len(calls) == len(files)


@pytest.mark.parametrize("read_whole_below", [0, 1 << 30], ids=["read-per-batch", "read-whole"])
def test_folder_data_from_the_cache_matches_decoding_into_memory(tree: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 read_whole_below: int) -> None:
    import cnnkit.data.cache

    monkeypatch.setattr(cnnkit.data.cache, "IN_MEMORY_BYTES", read_whole_below)
    options = {"preprocess": PRE, "val_split": 0.2, "test_split": 0.3}
    memory = load_data(f"folder:{tree}", options=SourceOptions(**options))
    cached = load_data(f"folder:{tree}", options=SourceOptions(**options, cache_dir=tmp_path / "cache"))
    for split in ("train", "val", "test"):
        a, b = getattr(memory, split), getattr(cached, split)
        assert torch.equal(a.labels, b.labels) and torch.equal(a.images, b.images), split
    assert memory.skipped == cached.skipped and len(cached.skipped) == 1
    from cnnkit.data.cache import DiskImages

    assert isinstance(cached.train.store, DiskImages) == (read_whole_below == 0)
    index = torch.tensor([3, 0, 3])  # any order, repeats
    assert torch.equal(cached.train.batch(index), memory.train.batch(index))


def test_ranks_of_a_distributed_run_share_one_cache(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "tree", 12, size=40, seed=6)
    cache = tmp_path / "cache"
    command = [sys.executable, "-m", "cnnkit", "train", f"folder:{root}", "--out", str(tmp_path / "run"), "--epochs",
               "1", "--batch-size", "8", "--device", "cpu", "--nproc", "2", "--cache-dir", str(cache)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (done.stdout + done.stderr).count("into the cache") == 1  # one rank decoded; the other waited and read
    entries = [p for p in cache.iterdir() if p.is_dir()]
    assert len(entries) == 1 and json.loads((entries[0] / "meta.json").read_text())["decoded"] == 36
