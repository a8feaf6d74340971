"""Where a run goes: --out exactly, or PROJECT/NAME numbered like Ultralytics (NAME, NAME-2, NAME-3...)."""

from __future__ import annotations

import itertools
from pathlib import Path

from cnnkit.config import TrainConfig


def resolve_run_dir(config: TrainConfig) -> Path:
    """The run directory for a new run. With --out, that; else PROJECT/NAME (NAME: the model's), or the first of
    NAME-2, NAME-3... that is free, unless --exist-ok or --overwrite says to reuse NAME."""
    if config.out is not None:
        return Path(config.out)
    base = Path(config.project) / (config.name or config.model.replace("/", "_"))
    if config.exist_ok or config.overwrite or not _taken(base):
        return base
    return next(p for i in itertools.count(2) if not _taken(p := base.with_name(f"{base.name}-{i}")))


def _taken(path: Path) -> bool:
    return path.exists() and (not path.is_dir() or any(path.iterdir()))
