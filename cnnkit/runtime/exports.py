"""Export directories: finding one, reading what it says, and refusing one made from other weights than its run's.

No torch here: the server uses it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from cnnkit import artifacts as names
from cnnkit.errors import CnnkitError
from cnnkit.files import read_json
from cnnkit.runtime.fitted import best_weights_sha256, read_fitted, run_temperature, run_threshold, stale_reason


def find_export_dir(path: Path) -> Path | None:
    """`path` itself, or `path/export`, when it holds every file a server needs."""
    for candidate in (Path(path), Path(path) / names.EXPORT_DIR):
        if all((candidate / f).is_file() for f in names.EXPORT_FILES):
            return candidate
    return None


def owning_run(export: Path) -> Path | None:
    """The run directory an export lies in (RUN/export), if it does."""
    parent = Path(export).parent
    if Path(export).name == names.EXPORT_DIR and (parent / names.CONFIG).is_file():
        return parent
    return None


def export_status(run: Path) -> str:
    """'current', 'stale' or 'none': whether RUN/export was made from the run's present best weights."""
    export = find_export_dir(Path(run) / names.EXPORT_DIR)
    if export is None:
        return "none"
    return "stale" if staleness(export) else "current"


def staleness(export: Path) -> str | None:
    """Why an export inside a run no longer matches the run's best weights, or None when it matches (or lies
    outside any run, where there is nothing to compare with)."""
    run = owning_run(export)
    if run is None:
        return None
    info = read_json(Path(export) / names.EXPORT_INFO)
    current = best_weights_sha256(run)
    made_from = (info.get("weights") or {}).get("sha256")
    if made_from is None:
        return "it does not record which weights it was made from (made by an older cnnkit)"
    if made_from != current:
        return (f"it was made from weights {made_from[:12]}, but the run's {names.WEIGHTS_BEST} is now "
                f"{(current or 'missing')[:12]} (the run was resumed or retrained since)")
    # A served decision or probability would then differ from `cnnkit predict RUN`'s, which reads the run's files.
    for name in (names.THRESHOLD, names.TEMPERATURE):
        reason = stale_reason(run, name)
        if reason is not None:
            return reason
    threshold = run_threshold(run)
    if info.get("threshold") != threshold:
        carried = (info.get("threshold") or {}).get("threshold")
        return (f"it carries decision threshold {carried}, but the run's {names.THRESHOLD} now says "
                f"{(threshold or {}).get('threshold')} (evaluate --target-fpr was run since)")
    temperature = read_fitted(run, names.TEMPERATURE)
    if info.get("temperature") != temperature:
        return (f"its probabilities use temperature {export_temperature(info):g}, but the run's is now "
                f"{run_temperature(run):g} (cnnkit calibrate was run since)")
    return None


def weights_sha256(path: Path) -> str | None:
    """The sha256 of the best weights a run directory, or an export directory, predicts with (an export: the
    weights it was made from)."""
    path = Path(path)
    if (path / names.CONFIG).is_file() and (path / names.MANIFEST).is_file():
        return best_weights_sha256(path)
    export = find_export_dir(path)
    return (read_export(export).get("weights") or {}).get("sha256") if export is not None else None


def check_current(export: Path) -> None:
    """Refuse a stale export with one line that says how to make a current one."""
    reason = staleness(export)
    if reason is not None:
        run = owning_run(export)
        raise CnnkitError(f"{export}: stale export: {reason}; re-export with `cnnkit export {run}`")


def read_export(export: Path) -> dict[str, Any]:
    return read_json(Path(export) / names.EXPORT_INFO)


def read_verified_model(export: Path, *, precision: str = "fp32") -> tuple[dict[str, Any], bytes]:
    """export.json and the model bytes (model.onnx, or model.int8.onnx for precision "int8") that passed its
    sha256: read once, so a session is built from exactly the bytes that were checked."""
    info = read_export(export)
    if precision == "int8":
        record = info.get("int8")
        if not record:
            raise CnnkitError(f"{export}: no INT8 variant; make one with `cnnkit export RUN --quantize int8`")
        filename, expected = names.ONNX_INT8, record.get("sha256")
    else:
        filename, expected = names.ONNX_MODEL, info.get("sha256", {}).get(names.ONNX_MODEL)
    path = Path(export) / filename
    if not path.is_file():
        raise CnnkitError(f"{path}: no such file, although {names.EXPORT_INFO} lists it; re-export the run")
    model = path.read_bytes()
    if expected and hashlib.sha256(model).hexdigest() != expected:
        raise CnnkitError(f"{path}: checksum does not match {names.EXPORT_INFO}; refusing to use it")
    return info, model


def stored_threshold(path: Path) -> dict[str, Any] | None:
    """A binary model's decision threshold: RUN/threshold.json, or the one an export carries."""
    path = Path(path)
    if (path / names.THRESHOLD).is_file():
        return run_threshold(path)
    for export in (path, path / names.EXPORT_DIR):
        if (export / names.EXPORT_INFO).is_file():
            return read_export(export).get("threshold")
    return None


def stored_temperature(path: Path) -> float:
    """The softmax temperature a run (RUN/temperature.json) or an export (its export.json) applies; 1 without one."""
    path = Path(path)
    if (path / names.CONFIG).is_file():
        return run_temperature(path)
    for export in (path, path / names.EXPORT_DIR):
        if (export / names.EXPORT_INFO).is_file():
            return export_temperature(read_export(export))
    return 1.0


def export_temperature(info: dict[str, Any]) -> float:
    """The softmax temperature inside an export's graph, from its export.json (`info`); 1 without one."""
    return float((info.get("temperature") or {}).get("temperature", 1.0))
