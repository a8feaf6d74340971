"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import os
from pathlib import Path

SHARED_CIFAR10 = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


def cifar10_dir() -> Path:
    """The local CIFAR-10 copy: $CNNKIT_DATA, else ../shared/data/cifar10 beside the project."""
    env = os.environ.get("CNNKIT_DATA")
    path = Path(env) if env else SHARED_CIFAR10
    if not (path / "train.npz").is_file():
        raise SystemExit(f"no CIFAR-10 at {path}; set CNNKIT_DATA to a folder with train.npz and test.npz")
    return path


def table(rows: list[dict[str, object]]) -> str:
    """A plain fixed-width table of dict rows (same keys in each)."""
    columns = list(rows[0])
    cells = [[_fmt(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)
