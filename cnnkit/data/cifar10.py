"""Finding CIFAR-10 on disk, or downloading the official binary archive (no pickle) and caching it as .npz."""

from __future__ import annotations

import hashlib
import os
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from cnnkit.errors import CnnkitError
from cnnkit.files import atomic_path

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
MD5 = "c32a1d4ab5d03f1284b67883e8d87530"  # published by the dataset's authors
TIMEOUT_S = 10.0  # per network operation: fail fast on a machine without internet
RECORD_BYTES = 1 + 32 * 32 * 3  # label byte, then 1024 R, 1024 G, 1024 B bytes
NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cnnkit" / "cifar10"


def find_or_download_cifar10(data_dir: Path | None) -> Path:
    """Return a folder holding train.npz and test.npz: `data_dir` when given (and nothing else: a folder the user
    named is never silently swapped for another copy), else $CNNKIT_DATA or the cache, downloading into the cache
    only when neither holds them."""
    if data_dir is not None:
        if _holds_cifar10(data_dir):
            return data_dir
        found = "no such folder" if not data_dir.is_dir() else "no train.npz and test.npz there"
        raise CnnkitError(f"--data-dir {data_dir}: {found}; cifar10 reads the two files cnnkit writes when it "
                          "downloads CIFAR-10 (leave --data-dir out to use the cache or download); a folder of "
                          "class folders of images is folder:PATH")
    env = os.environ.get("CNNKIT_DATA")
    for folder in [*([Path(env), Path(env) / "cifar10"] if env else []), cache_dir()]:
        if _holds_cifar10(folder):
            return folder
    return download_cifar10(cache_dir(), url=URL)


def _holds_cifar10(folder: Path) -> bool:
    return (folder / "train.npz").is_file() and (folder / "test.npz").is_file()


def download_cifar10(target: Path, *, url: str) -> Path:
    """Download and verify the official archive, and write train.npz/test.npz into `target`."""
    target.mkdir(parents=True, exist_ok=True)
    archive = target / "cifar-10-binary.tar.gz"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, atomic_path(archive) as tmp:
            with open(tmp, "wb") as out:
                while block := response.read(1 << 20):
                    out.write(block)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise CnnkitError(
            f"could not download CIFAR-10 from {url} ({getattr(exc, 'reason', exc)}); "
            "point --data-dir or the CNNKIT_DATA environment variable at a folder holding train.npz and test.npz "
            "(e.g. ../shared/data/cifar10)"
        ) from None
    digest = hashlib.md5(archive.read_bytes(), usedforsecurity=False).hexdigest()
    if digest != MD5:
        archive.unlink()
        raise CnnkitError(f"CIFAR-10 archive checksum mismatch (md5 {digest}, expected {MD5}); try again")
    with tarfile.open(archive) as tar:
        train = [_read_batch(tar, f"cifar-10-batches-bin/data_batch_{i}.bin") for i in range(1, 6)]
        test = _read_batch(tar, "cifar-10-batches-bin/test_batch.bin")
    _write_npz(target / "train.npz", np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]))
    _write_npz(target / "test.npz", *test)
    archive.unlink()
    return target


def _read_batch(tar: tarfile.TarFile, member: str) -> tuple[np.ndarray, np.ndarray]:
    handle = tar.extractfile(member)
    if handle is None:
        raise CnnkitError(f"CIFAR-10 archive lacks {member}")
    raw = np.frombuffer(handle.read(), dtype=np.uint8).reshape(-1, RECORD_BYTES)
    return raw[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), raw[:, 0].copy()


def _write_npz(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        np.savez(out, x=np.ascontiguousarray(x), y=y, class_names=np.array(NAMES))
