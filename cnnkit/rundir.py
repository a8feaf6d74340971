"""The run directory: the contract between training and everything after it.

    config.json  classes.json  preprocess.json  model.safetensors  last.safetensors  checkpoint.safetensors
    history.json  history.csv  metrics.json  *.png  manifest.json (sha256 and size of every artifact)

Every file is written to a temporary name and renamed, and its checksum is verified when weights are loaded.
PyTorch and safetensors load only where tensors are read or written: the torch-free side (runtime/, the server)
reads manifests and checks checksums through this same class.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnkit.artifacts import CONFIG, MANIFEST
from cnnkit.errors import CnnkitError
from cnnkit.files import no_such_path, read_json, sha256_file, write_bytes, write_json

if TYPE_CHECKING:
    import torch

RUN_MARKERS = (CONFIG, MANIFEST)


class RunDir:
    """A run directory on disk; only one process (rank 0) writes to it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, path: Path, *, overwrite: bool) -> RunDir:
        """Make an empty run directory; refuse to clobber an existing run unless `overwrite`."""
        path = Path(path)
        if path.exists() and any(path.iterdir()):
            if not any((path / m).exists() for m in RUN_MARKERS):
                raise CnnkitError(f"{path}: exists, is not empty and is not a cnnkit run; choose another --out")
            if not overwrite:
                raise CnnkitError(f"{path}: already holds a run; "
                                  "pass --overwrite to replace it or --resume to continue")
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    @classmethod
    def open(cls, path: Path) -> RunDir:
        """An existing run directory (one with config.json)."""
        path = Path(path)
        if not path.exists():
            raise no_such_path(path)
        if not cls.started(path):
            raise CnnkitError(f"{path}: not a cnnkit run directory (no config.json)")
        return cls(path)

    @staticmethod
    def started(path: Path) -> bool:
        """Whether a run in `path` got as far as saving its settings (config.json)."""
        return (Path(path) / CONFIG).is_file()

    def remove_temporaries(self) -> list[Path]:
        """Delete half-written files that a killed writer left (they were never renamed into place)."""
        stale = list(self.path.glob(".*.tmp"))
        for path in stale:
            path.unlink(missing_ok=True)
        return stale

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def exists(self, name: str) -> bool:
        return (self.path / name).is_file()

    # writing -------------------------------------------------------------------------------------------------
    def write_json(self, name: str, obj: Any) -> None:
        write_json(self.path / name, obj)
        self._record(name)

    def write_bytes(self, name: str, data: bytes) -> None:
        write_bytes(self.path / name, data)
        self._record(name)

    def write_csv(self, name: str, rows: list[dict[str, Any]]) -> None:
        buffer = io.StringIO()
        columns = list(dict.fromkeys(key for row in rows for key in row))
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        self.write_bytes(name, buffer.getvalue().encode())

    def write_tensors(
        self, name: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
    ) -> None:
        """Save tensors as safetensors (contiguous CPU copies), atomically."""
        from safetensors.torch import save as save_safetensors_bytes

        cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        self.write_bytes(name, save_safetensors_bytes(cpu, metadata=metadata))

    def save_figure(self, name: str, figure: Any) -> None:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        self.write_bytes(name, buffer.getvalue())

    def record(self, name: str) -> None:
        """Enter a file written into the run by other means (an export) into the manifest."""
        self._record(name)

    def _record(self, name: str) -> None:
        if name == MANIFEST:
            return
        manifest = self.manifest()
        path = self.path / name
        manifest[name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        write_json(self.path / MANIFEST, dict(sorted(manifest.items())))

    def remove(self, name: str) -> None:
        """Delete an artifact, if there, and take it out of the manifest."""
        (self.path / name).unlink(missing_ok=True)
        self.forget(name)

    def forget(self, name: str) -> None:
        """Take a file that no longer exists (a replaced export's INT8 variant) out of the manifest."""
        manifest = self.manifest()
        if manifest.pop(name, None) is not None:
            write_json(self.path / MANIFEST, dict(sorted(manifest.items())))

    # reading -------------------------------------------------------------------------------------------------
    def manifest(self) -> dict[str, dict[str, Any]]:
        return read_json(self.path / MANIFEST) if (self.path / MANIFEST).is_file() else {}

    def read_json(self, name: str) -> Any:
        path = self.path / name
        if not path.is_file():
            raise CnnkitError(f"{path}: missing from the run directory")
        return read_json(path)

    def read_verified(self, name: str) -> bytes:
        """The bytes of an artifact, checked against the sha256 recorded in the manifest."""
        path = self.path / name
        if not path.is_file():
            raise CnnkitError(f"{path}: missing from the run directory")
        data = path.read_bytes()
        expected = self.manifest().get(name, {}).get("sha256")
        if expected is None:
            raise CnnkitError(f"{path}: not listed in {MANIFEST}; refusing an unrecorded file")
        if hashlib.sha256(data).hexdigest() != expected:
            raise CnnkitError(f"{path}: checksum does not match {MANIFEST}; the file is corrupt or was changed")
        return data

    def read_tensors(self, name: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """Tensors and string metadata of a verified safetensors artifact."""
        from safetensors import SafetensorError
        from safetensors.torch import load as load_safetensors_bytes

        data = self.read_verified(name)
        try:
            tensors = load_safetensors_bytes(data)
            header_len = int.from_bytes(data[:8], "little")
            metadata = json.loads(data[8 : 8 + header_len]).get("__metadata__") or {}
        except (SafetensorError, ValueError) as exc:
            raise CnnkitError(f"{self.path / name}: unreadable safetensors file ({exc})") from None
        return tensors, metadata
