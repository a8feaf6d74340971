"""Atomic, checksummed file writing: a killed process or a full disk never leaves a half-written artifact."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cnnkit.errors import CnnkitError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
FILE_MODE = 0o644  # mkstemp creates 0600; artifacts are meant to be shared like ordinary files


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, FILE_MODE)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        if exc.errno in DISK_FULL:
            raise CnnkitError(f"no space left on the device of {path.parent} to write {path.name} (its previous "
                              "version, if any, is untouched): free some space and run again") from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    # The rename itself is only durable once the directory entry is flushed.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(path: Path, writer: Callable[[Path], None]) -> None:
    """Call `writer(tmp_path)` and atomically move the result to `path`."""
    with atomic_path(path) as tmp:
        writer(tmp)


def write_bytes(path: Path, data: bytes) -> None:
    write_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_json(path: Path, obj: Any) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def no_such_path(path: Path) -> CnnkitError:
    """The error for a path that does not exist, naming the closest names beside it (a typo, usually)."""
    import difflib

    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    hint = ""
    if parent.is_dir():
        close = difflib.get_close_matches(path.name, [p.name for p in parent.iterdir()], n=3, cutoff=0.6)
        if close:
            hint = "; did you mean " + " or ".join(str(parent / c) for c in close) + "?"
    elif str(parent) not in (".", ""):
        hint = f" ({parent} does not exist either)"
    return CnnkitError(f"{path}: no such file or directory{hint}")
