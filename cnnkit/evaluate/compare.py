"""`cnnkit compare`: runs side by side, e.g. from scratch against transfer learning."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnkit import artifacts as names
from cnnkit.config import TrainConfig
from cnnkit.files import write_atomic
from cnnkit.rundir import RunDir
from cnnkit.runtime.exports import export_status

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def run_summary(run: RunDir) -> dict[str, Any]:
    """One row of the comparison table, from a run's config, history and metrics."""
    config = run.read_json(names.CONFIG)
    history = run.read_json(names.HISTORY_JSON) if run.exists(names.HISTORY_JSON) else []
    metrics = run.read_json(names.METRICS) if run.exists(names.METRICS) else {}
    top_k = config.get("top_k", 3)
    # The epoch whose weights were kept (the best of the monitored figure), whose test columns these are: its own
    # validation accuracy, not the highest any epoch reached.
    best = metrics.get("best_epoch")
    kept = next((row for row in history if row.get("epoch") == best), {})
    return {
        "run": run.path.name,
        "model": config["model"] + (" (pretrained)" if config.get("pretrained") else ""),
        "params": metrics.get("params"),
        "trainable": metrics.get("trainable_params"),
        "epochs": len(history),
        "wall_s": metrics.get("train_time_s", sum(row.get("time_s", 0) for row in history)),
        "kept_epoch": best or None,
        "val_acc": kept.get("val_accuracy"),
        "test_top1": metrics.get("accuracy"),
        # how far each test accuracy may lie from the model's on new images: overlapping intervals do not rank runs
        "top1_ci95": "-".join(f"{v:.3f}" for v in metrics["accuracy_ci95"]) if "accuracy_ci95" in metrics else None,
        f"test_top{top_k}": metrics.get(f"top{top_k}_accuracy"),
        "test_ece": metrics.get("calibration", {}).get("ece"),  # runs from before calibration was measured: blank
    }


def list_runs(directory: Path) -> list[dict[str, Any]]:
    """One row per run directory under `directory` (searched two levels deep), oldest first."""
    paths = sorted({p.parent for pattern in ("*/" + names.CONFIG, "*/*/" + names.CONFIG)
                    for p in Path(directory).glob(pattern)})
    rows = [_listing(RunDir(path), Path(directory)) for path in paths]
    return sorted(rows, key=lambda row: row["created"])


def _listing(run: RunDir, root: Path) -> dict[str, Any]:
    config = run.read_json(names.CONFIG)
    history = run.read_json(names.HISTORY_JSON) if run.exists(names.HISTORY_JSON) else []
    metrics = run.read_json(names.METRICS) if run.exists(names.METRICS) else {}
    monitor = (config.get("schedule") or {}).get("monitor", "val_loss")
    values = [row[monitor] for row in history if monitor in row]
    best = (min(values) if "loss" in monitor else max(values)) if values else None
    planned = config.get("epochs", 0) + config.get("finetune_epochs", 0)
    created = config.get("created") or time.strftime("%Y-%m-%d %H:%M", time.localtime(
        (run.path / names.CONFIG).stat().st_mtime))
    fold = f" fold {config['fold']}" if config.get("fold") else ""  # cross-validation: which fold was its test
    return {"run": str(run.path.relative_to(root)), "model": config.get("model"),
            "data": _short(config.get("data"), width=32 - len(fold)) + fold,
            "epochs": f"{len(history)}/{planned}", "monitor": monitor, "best": best,
            "test_acc": metrics.get("accuracy"), "export": export_status(run.path), "created": created}


def _short(spec: str | None, width: int = 32) -> str:
    spec = spec or ""
    return spec if len(spec) <= width else "..." + spec[-(width - 3):]


def compare_runs(*, runs: list[Path], plot_path: Path | None = None) -> str:
    """The comparison table as text; writes the runs' learning curves into one PNG when `plot_path` is given."""
    opened = [RunDir.open(path) for path in runs]
    rows = [run_summary(run) for run in opened]
    if plot_path is not None:
        figure = _curves(opened)
        write_atomic(plot_path, lambda tmp: figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    return text_table(rows) + _notes(opened) + _paired(opened) + _differences(opened)


def _paired(runs: list[RunDir]) -> str:
    """McNemar's exact test of each run against the first, image by image on the test set they share (same images,
    same order: equal data.json test fingerprints): only the images one run gets right and the other wrong tell
    them apart, and a difference of a few such images is chance."""
    if len(runs) < 2 or not _same_test_images(runs):
        return ""
    correct = {run.path.name: _correct(run) for run in runs}
    first, base = runs[0].path.name, correct[runs[0].path.name]
    if base is None:
        return ""
    lines = []
    for name, other in list(correct.items())[1:]:
        if other is None or len(other) != len(base):
            continue
        gained, lost = sum(o and not b for o, b in zip(other, base)), sum(b and not o for o, b in zip(other, base))
        from scipy.stats import binomtest

        p = binomtest(min(gained, lost), gained + lost).pvalue if gained + lost else 1.0
        verdict = ("the two models differ" if p < 0.05 else "no evidence that the two models differ") + \
            f" (McNemar p = {p:.3g})"
        lines.append(f"{name}: right where {first} was wrong on {gained}, wrong where it was right on {lost}: "
                     f"{verdict}")
    if not lines:
        return ""
    return (f"\n\nPaired on the same {len(base):,} test images:\n" + "\n".join(lines) + "\n(This compares the "
            "trained models; two recipes compare over several --seed values each: seeds alone move accuracy.)")


def _same_test_images(runs: list[RunDir]) -> bool:
    tests = [run.read_json(names.DATA_SPLITS).get("test") if run.exists(names.DATA_SPLITS) else None for run in runs]
    return all(tests) and len({json.dumps(t, sort_keys=True) for t in tests}) == 1


def _correct(run: RunDir) -> list[bool] | None:
    """Per test image, whether the run's kept weights got it right (its predictions.csv), or None without one."""
    if not run.exists(names.PREDICTIONS):
        return None
    rows = csv.DictReader(io.StringIO(run.read_verified(names.PREDICTIONS).decode()))
    return [row["correct"] == "1" for row in rows]


# Where a run was written and how the process ran: not what was trained, so not worth a line.
NOT_SETTINGS = {"out", "project", "name", "exist_ok", "overwrite", "resume", "quiet", "created", "workers",
                "cache_dir", "no_cache", "data_dir", "strict"}


def _differences(runs: list[RunDir]) -> str:
    """A table of the settings whose values differ between the runs (what to credit a difference in results to).
    An option a run's cnnkit did not have yet counts as its default, the behaviour that run had."""
    if len(runs) < 2:
        return ""
    defaults = _flat(TrainConfig(resume=True).to_dict())
    settings = {run.path.name: defaults | _flat(run.read_json(names.CONFIG)) for run in runs}
    keys = sorted({key for values in settings.values() for key in values} - NOT_SETTINGS)
    rows = [{"setting": key, **{name: _setting(values.get(key)) for name, values in settings.items()}}
            for key in keys if len({json.dumps(values.get(key)) for values in settings.values()}) > 1]
    return "\n\nSettings that differ:\n" + text_table(rows) if rows else "\n\nNo setting differs between the runs."


def _setting(value: Any) -> Any:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return _short(value) if isinstance(value, str) else value


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as one level: {"schedule": {"name": ...}} is {"schedule.name": ...}."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[prefix + key] = value
    return flat


def _notes(runs: list[RunDir]) -> str:
    """Lines under the table where the runs' test columns do not compare: other classes, other test images (data.json's
    test fingerprints), no test set, or no fingerprint to tell."""
    if len(runs) < 2:
        return ""
    notes = []
    classes = {run.path.name: run.read_json(names.CLASSES) if run.exists(names.CLASSES) else None for run in runs}
    if len({json.dumps(c) for c in classes.values()}) > 1:
        counts = ", ".join(f"{name} {len(c) if c is not None else '?'}" for name, c in classes.items())
        notes.append(f"the runs classify different sets of classes ({counts}): their accuracies do not compare")
    splits = {run.path.name: run.read_json(names.DATA_SPLITS) if run.exists(names.DATA_SPLITS) else None
              for run in runs}
    unknown = [name for name, split in splits.items() if split is None]
    untested = [name for name, split in splits.items() if split is not None and not split.get("test")]
    tests = {name: split["test"] for name, split in splits.items() if split is not None and split.get("test")}
    if untested:
        notes.append(f"{', '.join(untested)} had no test set")
    if unknown:
        notes.append(f"{', '.join(unknown)} recorded no test-set fingerprint (trained by an older cnnkit): whether "
                     "the runs were tested on the same images is unknown")
    elif len({json.dumps(t, sort_keys=True) for t in tests.values()}) > 1:
        sizes = ", ".join(f"{name} {test['images']}" for name, test in tests.items())
        notes.append(f"the runs were tested on different images ({sizes}): their test columns do not compare")
    return "".join(f"\nNote: {note}" for note in notes)


def _curves(runs: list[RunDir]) -> Figure:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4))
    axes = figure.subplots(1, 2)
    for run in runs:
        history = run.read_json(names.HISTORY_JSON) if run.exists(names.HISTORY_JSON) else []
        epochs = [row["epoch"] for row in history]
        for ax, key in zip(axes, ("loss", "accuracy")):
            (line,) = ax.plot(epochs, [row[key] for row in history], label=f"{run.path.name} train")
            if history and f"val_{key}" in history[0]:
                ax.plot(epochs, [row[f"val_{key}"] for row in history], linestyle="--", color=line.get_color(),
                        label=f"{run.path.name} val")
    for ax, key in zip(axes, ("loss", "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return figure


def text_table(rows: list[dict[str, Any]], *, cell: Callable[[Any], str] | None = None) -> str:
    """A fixed-width text table of dict rows: columns in first-seen order, a rule under the header."""
    cell = cell or _cell
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if value < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
