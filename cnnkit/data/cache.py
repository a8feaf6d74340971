"""A decoded-image cache on disk: image files decoded once, in parallel, into one uint8 file that later runs (and
every rank of a distributed run) read instead of decoding again.

An entry is a directory named by a key: the sha256 of what determines its content (cache format, preprocessing:
input size, resize policy, interpolation, frame cropping; and each file's absolute path, size, mtime and label).
A changed, added or removed file changes the key: the whole entry is rebuilt, but the new build copies the rows of
files that did not change from the newest entry of the same folder and preprocessing, so only new or changed files
are decoded again. An entry is built in a temporary directory and renamed into place once complete, so a killed
build leaves nothing that could be read; a truncated or unreadable entry is removed and rebuilt. One process builds
while the others wait on a file lock (all ranks of a torchrun job, or two runs started at once), then map it.

Training reads an entry of over IN_MEMORY_BYTES a batch at a time, with positioned reads (`os.preadv`), not a
memory map: the pages it reads land in the operating system's page cache, which the kernel may drop, instead of the
process's resident memory. Smaller entries are read whole into memory: CIFAR-10 is 150 MB at 32 px.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from cnnkit.data.preprocess import Preprocess
from cnnkit.errors import CnnkitError
from cnnkit.files import DISK_FULL

FORMAT = 1
ROOM_HINT = "`cnnkit cache --prune` removes stale entries; or give --cache-dir on another disk, or --no-cache"
IMAGES = "images.u8"
META = "meta.json"
# Entries up to this size are read into memory whole (one sequential read, then batches cost what in-memory data
# costs); larger ones are read a batch at a time, leaving what to keep to the page cache.
IN_MEMORY_BYTES = 1 << 30


@dataclass(frozen=True)
class Decoded:
    """Decoded images of a list of files: `images` (a tensor, or rows read from the cache file), one row per file
    that decoded, in file order; `errors` the reason for each file that did not; and whether they came from a
    cache entry already built."""

    images: torch.Tensor | DiskImages
    rows: list[int | str]  # per input file: its row in `images`, or why it could not be decoded
    cached: bool


class DiskImages:
    """uint8 [N, 3, S, S] images in a file, read a batch at a time; indexing returns an in-memory tensor."""

    def __init__(self, path: Path, shape: tuple[int, int, int, int]) -> None:
        self.path, self.shape = path, shape
        self.row_bytes = int(np.prod(shape[1:]))
        self._fd = os.open(path, os.O_RDONLY)
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_RANDOM)  # batches jump around: no read-ahead

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        rows = index.reshape(-1)
        out = np.empty((len(rows), *self.shape[1:]), dtype=np.uint8)
        flat = out.reshape(len(rows), self.row_bytes)
        for i, row in enumerate(rows.tolist()):
            view = memoryview(flat[i])
            got = os.preadv(self._fd, [view], row * self.row_bytes)
            if got != self.row_bytes:
                raise CnnkitError(f"{self.path}: cache file shorter than expected (row {row}); delete it to rebuild")
        return torch.from_numpy(out)

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)


def decode_cached(files: list[tuple[Path, int]], *, preprocess: Preprocess, cache_dir: Path, workers: int,
                  decode: Callable[[Path], np.ndarray | str], quiet: bool = False) -> Decoded:
    """The decoded images of `files` from the cache entry for them, built first if needed."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    stats = [_stat(path, label) for path, label in files]
    key = _key(stats, preprocess)
    entry = cache_dir / key
    with _locked(cache_dir / f"{key}.lock"):
        found = _open(entry, key, len(files), preprocess.input_size)
        if found is not None:
            return found
        _build(entry, stats, files, preprocess=preprocess, workers=workers, decode=decode, quiet=quiet,
               previous=_newest_sibling(cache_dir, _group(stats, preprocess), exclude=key))
        built = _open(entry, key, len(files), preprocess.input_size)
        if built is None:
            raise CnnkitError(f"{entry}: the decoded-image cache could not be read back after building it")
        return Decoded(built.images, built.rows, cached=False)


# keys ---------------------------------------------------------------------------------------------------------------
def _stat(path: Path, label: int) -> list[object]:
    try:
        st = path.stat()
        return [str(path.resolve()), st.st_size, st.st_mtime_ns, label]
    except OSError:
        return [str(path), -1, -1, label]


def _key(stats: list[list[object]], preprocess: Preprocess) -> str:
    digest = hashlib.sha256(json.dumps({"format": FORMAT, "preprocess": preprocess.decoding()}).encode())
    for item in stats:
        digest.update(json.dumps(item).encode())
    return digest.hexdigest()[:32]


def _group(stats: list[list[object]], preprocess: Preprocess) -> str:
    """What entries of the same folder and preprocessing share, whatever their files: their common parent folder."""
    text = json.dumps({"format": FORMAT, "preprocess": preprocess.decoding(), "folders": _folders(stats)})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _folders(stats: list[list[object]]) -> list[str]:
    """The folders holding the class folders of the files (a file's grandparent), sorted."""
    return sorted({str(Path(str(item[0])).parent.parent) for item in stats})


# reading an entry ---------------------------------------------------------------------------------------------------
def _open(entry: Path, key: str, count: int, size: int) -> Decoded | None:
    """The entry, if it is complete and matches; an unreadable or truncated one is removed (and None returned)."""
    if not entry.is_dir():
        return None
    try:
        meta = json.loads((entry / META).read_text())
        shape = (int(meta["images"]), 3, size, size)
        ok = (meta["format"] == FORMAT and meta["key"] == key and len(meta["rows"]) == count
              and (entry / IMAGES).stat().st_size == int(np.prod(shape)))  # a truncated file fails here
    except (OSError, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        print(f"Decoded-image cache {entry} is incomplete or does not match; rebuilding it", file=sys.stderr)
        shutil.rmtree(entry, ignore_errors=True)
        return None
    with contextlib.suppress(OSError):  # a read-only cache is still read
        os.utime(entry / META)  # its time of last use: `cnnkit cache` keeps the latest used entry of a folder
    if int(np.prod(shape)) <= IN_MEMORY_BYTES:
        images = torch.from_numpy(np.fromfile(entry / IMAGES, dtype=np.uint8).reshape(shape))
        return Decoded(images, meta["rows"], cached=True)
    return Decoded(DiskImages(entry / IMAGES, shape), meta["rows"], cached=True)


def _newest_sibling(cache_dir: Path, group: str, *, exclude: str) -> tuple[Path, dict[str, object]] | None:
    """The newest complete entry of the same folder and preprocessing (its unchanged files are copied, not
    decoded again)."""
    best: tuple[float, Path, dict[str, object]] | None = None
    for meta_path in cache_dir.glob(f"*/{META}"):
        if meta_path.parent.name == exclude or meta_path.parent.name.startswith("."):
            continue
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("group") == group and meta.get("format") == FORMAT:
                when = meta_path.stat().st_mtime
                if best is None or when > best[0]:
                    best = (when, meta_path.parent, meta)
        except (OSError, ValueError):
            continue
    return (best[1], best[2]) if best else None


# building an entry --------------------------------------------------------------------------------------------------
def _build(entry: Path, stats: list[list[object]], files: list[tuple[Path, int]], *,
           preprocess: Preprocess, workers: int, decode: Callable[[Path], np.ndarray | str], quiet: bool,
           previous: tuple[Path, dict[str, object]] | None) -> None:
    """Decode `files` into a new entry (named by its key): one row per file (a file that fails keeps a zero row
    and its error)."""
    key, size = entry.name, preprocess.input_size
    needed = max(1, len(files)) * 3 * size * size
    free = shutil.disk_usage(entry.parent).free
    if needed > free:
        # The images file is made sparse at its full size, so without this a full disk would show only after
        # decoding up to that point.
        raise CnnkitError(f"{len(files)} decoded images need {needed / 2**20:,.1f} MiB in the image cache "
                          f"{entry.parent}, which has {free / 2**20:,.1f} MiB free: {ROOM_HINT}")
    source, reuse = _reusable(previous, stats, size)
    temp = entry.parent / f".{key}.{os.getpid()}.tmp"
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir()
    started = time.perf_counter()
    row_bytes = 3 * size * size
    # Rows are written with pwrite, not through a memory map: written pages then belong to the page cache, not to
    # this process's resident memory (a mapped 7.5 GB cache showed as 8 GB of RSS while it was built).
    fd = os.open(temp / IMAGES, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, max(1, len(files)) * row_bytes)
        rows: list[int | str] = list(range(len(files)))

        def one(i: int) -> None:
            if i in reuse:
                old = reuse[i]
                if isinstance(old, str):
                    rows[i] = old
                elif source is not None:
                    os.pwrite(fd, source[torch.tensor([old])][0].numpy().tobytes(), i * row_bytes)
                return
            decoded = decode(files[i][0])
            if isinstance(decoded, str):
                rows[i] = decoded
            else:
                os.pwrite(fd, np.ascontiguousarray(decoded.transpose(2, 0, 1)).tobytes(), i * row_bytes)

        new = len(files) - len(reuse)
        with ThreadPoolExecutor(max_workers=max(1, min(workers, os.cpu_count() or 1))) as pool:
            for _ in _progress(pool.map(one, range(len(files))), total=len(files), quiet=quiet,
                               desc=f"Decoding {new} images into the cache ({len(reuse)} kept)"):
                pass
        os.fsync(fd)
        meta = {"format": FORMAT, "key": key, "group": _group(stats, preprocess), "images": max(1, len(files)),
                "rows": rows, "files": stats, "preprocess": preprocess.decoding(), "decoded": new,
                "seconds": round(time.perf_counter() - started, 3)}
        (temp / META).write_text(json.dumps(meta))  # last: an entry without it is incomplete
        if entry.exists():
            shutil.rmtree(temp)  # built meanwhile by a process that did not take the lock (another host)
        else:
            os.replace(temp, entry)
        if not quiet:
            print(f"Decoded {new} images into the cache {entry} ({len(reuse)} kept from an earlier entry) in "
                  f"{meta['seconds']:.1f}s", file=sys.stderr, flush=True)
            older = [e for e in _entries_or_none(entry.parent) if e.group == meta["group"] and e.path != entry]
            if older:
                print(f"{len(older)} older cache entr{'y' if len(older) == 1 else 'ies'} of these folders take "
                      f"{sum(e.size_bytes for e in older) / 2**30:.2f} GiB: `cnnkit cache --prune` removes "
                      "what no run uses now", file=sys.stderr, flush=True)
    except BaseException as exc:
        shutil.rmtree(temp, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:  # the disk filled up meanwhile
            raise CnnkitError(f"no space left in the image cache {entry.parent} while decoding {len(files)} images: "
                              f"{ROOM_HINT}") from exc
        raise
    finally:
        os.close(fd)


def _reusable(previous: tuple[Path, dict[str, object]] | None, stats: list[list[object]],
              size: int) -> tuple[DiskImages | None, dict[int, int | str]]:
    """`previous`'s images, and by file index the row (or error) it holds for each file unchanged since."""
    if previous is None:
        return None, {}
    entry, meta = previous
    old = {json.dumps(item[:3]): row for item, row in zip(meta["files"], meta["rows"])}  # type: ignore[call-overload]
    reuse = {i: old[json.dumps(item[:3])] for i, item in enumerate(stats)
             if item[1] != -1 and json.dumps(item[:3]) in old}
    try:
        return DiskImages(entry / IMAGES, (int(meta["images"]), 3, size, size)), reuse  # type: ignore[call-overload]
    except OSError:
        return None, {}


def _progress(items: Iterator[None], *, total: int, quiet: bool, desc: str) -> Iterator[None]:
    from cnnkit.progress import progress_bar

    return iter(progress_bar(iterable=items, total=total, desc=desc, unit="image", leave=False, enabled=not quiet))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (flock: released by the kernel if the holder dies)."""
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# listing and pruning (`cnnkit cache`) --------------------------------------------------------------------------------
@dataclass(frozen=True)
class CacheEntry:
    """One entry of a decoded-image cache directory, or a build that never finished."""

    path: Path
    group: str | None  # entries of the same folders and preprocessing share it; None: incomplete
    images: int
    size_bytes: int
    decoding: str  # input size, resize and interpolation, e.g. "224 px top-crop bicubic"
    folders: list[str]
    used: float  # when a run last read or built it (seconds since the epoch)
    latest: bool  # the most recently used complete entry of its group: what the next run of those folders reads

    @property
    def key(self) -> str:
        return self.path.name.lstrip(".").split(".")[0]


def cache_entries(cache_dir: Path) -> list[CacheEntry]:
    """The entries under `cache_dir`, most recently used first; unfinished builds are entries with no group."""
    found = []
    for path in cache_dir.iterdir() if cache_dir.is_dir() else []:
        with contextlib.suppress(FileNotFoundError):  # removed meanwhile by another process's prune or rebuild
            if path.is_dir():
                found.append(_entry(path))
    newest: dict[str, float] = {}
    for entry in found:
        if entry.group is not None:
            newest[entry.group] = max(newest.get(entry.group, 0.0), entry.used)
    return sorted((replace(e, latest=e.group is not None and e.used == newest[e.group]) for e in found),
                  key=lambda e: -e.used)


def _entries_or_none(cache_dir: Path) -> list[CacheEntry]:
    """cache_entries for a hint, never an error that stops the run that asked."""
    try:
        return cache_entries(cache_dir)
    except OSError:
        return []


def _entry(path: Path) -> CacheEntry:
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    try:
        meta = json.loads((path / META).read_text()) if not path.name.startswith(".") else None
    except (FileNotFoundError, ValueError):
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("key") != path.name:
        return CacheEntry(path, None, 0, size, "-", [], path.stat().st_mtime, latest=False)
    folders = _folders(meta.get("files", []))
    pre = meta.get("preprocess", {})
    decoding = " ".join([f"{pre.get('input_size')} px", str(pre.get("resize")), str(pre.get("interpolation"))]
                        + ["frame cropped"] * bool(pre.get("crop_frame")) + ["first screen"] * bool(
                            pre.get("first_screen")))
    return CacheEntry(path, str(meta.get("group")), len(meta.get("rows", [])), size, decoding, folders,
                      (path / META).stat().st_mtime, latest=False)


def prune_cache(cache_dir: Path, *, everything: bool = False, unused_days: float | None = None) -> list[CacheEntry]:
    """Remove entries no run is building or about to read: unfinished builds, entries that a later one of the same
    folders superseded, and with `everything` all others too, or with `unused_days` those unused that long.
    Returns what was removed. A run that has an entry open goes on reading it (its files stay until closed)."""
    cutoff = time.time() - unused_days * 86400 if unused_days is not None else None
    removed = []
    for entry in cache_entries(cache_dir):
        unused = cutoff is not None and entry.used < cutoff
        if not (everything or unused or not entry.latest):
            continue
        with _try_locked(cache_dir / f"{entry.key}.lock") as held:
            # Held elsewhere: a run is building this key or about to read it.
            if held and entry.path.is_dir():
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(entry)
    return removed


@contextlib.contextmanager
def _try_locked(path: Path) -> Iterator[bool]:
    """The lock of `_locked` if nobody holds it now (True), else False at once."""
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
