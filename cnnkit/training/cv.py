"""k-fold cross-validation (`cnnkit cv`): one run per fold, each image tested exactly once, and the spread.

On a small data set one test split says little (45 test pages: an accuracy interval 0.3 wide), and which images
landed in it moves the figure as much as the recipe does. Cross-validation pools the source's images, cuts them into
K stratified folds and trains K runs (ROOT/fold-I, each an ordinary run directory with `--fold I/K`), each tested on
its own fold: the mean and standard deviation over folds say how much a figure moves, and the pooled accuracy over
every image, each tested once, has a K times narrower interval than one fold's. A killed `cnnkit cv` run again with
the same --out goes on: finished folds are kept, an interrupted one resumes.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cnnkit import artifacts as names
from cnnkit.config import TrainConfig
from cnnkit.errors import CnnkitError
from cnnkit.evaluate.metrics import wilson_interval
from cnnkit.files import write_json
from cnnkit.options import options_of
from cnnkit.rundir import RunDir
from cnnkit.runtime.parallel import process_group
from cnnkit.training.fit import absolute_paths, option_value, resume_config, train
from cnnkit.training.rundirs import resolve_run_dir

CV_JSON = "cv.json"
# Where a fold's run goes: not compared with a fold found on disk (resume_config compares the rest, and takes
# how this process runs, --device, --workers and the like, from this invocation).
NOT_COMPARED = ("out", "project", "name", "exist_ok", "overwrite", "resume")
REPORTED = ("accuracy", "macro_f1", "ece", "roc_auc")  # per fold, and their mean and spread


@dataclass(frozen=True)
class CVResult:
    root: Path
    # per fold: its run directory, test images and the REPORTED figures it has (empty in a torchrun rank other
    # than 0, which reports nothing)
    folds: list[dict[str, Any]]
    summary: dict[str, Any]  # per figure mean, sd, min, max over folds; pooled accuracy and its 95% interval


def cross_validate(config: TrainConfig, *, folds: int) -> CVResult:
    """Train and test `config` on each of `folds` folds under one root directory (--out, or PROJECT/cv-MODEL
    numbered), write ROOT/cv.json and return it."""
    if folds < 2:
        raise CnnkitError(f"--folds {folds}: cross-validation needs at least 2 folds")
    if config.fold or config.test_sources or config.resume:
        raise CnnkitError("cnnkit cv chooses each fold's test split itself: leave out --fold, --test-source, --resume")
    named = config if config.out or config.name else replace(config, name=f"cv-{config.model.replace('/', '_')}")
    # Under torchrun every fold is trained data-parallel in one process group; rank 0 writes and reports.
    with process_group(config.device) as ctx:
        root = resolve_run_dir(named)  # every rank resolves the same name before rank 0 makes it
        ctx.barrier()
        if (root / names.CONFIG).is_file():
            raise CnnkitError(f"{root} holds a single run, not folds: give cnnkit cv another --out")
        if ctx.is_main:
            root.mkdir(parents=True, exist_ok=True)
        config = absolute_paths(config)
        rows = []
        for i in range(1, folds + 1):
            ctx.barrier()  # rank 0 has finished the last fold's test pass: every rank sees the same folds on disk
            rows.append(_run_fold(replace(config, out=root / f"fold-{i}", fold=f"{i}/{folds}", name=None),
                                  config=config))
        if not ctx.is_main:
            return CVResult(root, [], {})
        result = CVResult(root, rows, _summary(rows))
        write_json(root / CV_JSON, {"folds": folds, "config": config.to_dict(), "per_fold": rows,
                                    "summary": result.summary})
    return result


def _run_fold(fold: TrainConfig, *, config: TrainConfig) -> dict[str, Any]:
    """Train one fold, or go on with what an earlier `cnnkit cv` left in its directory (resumed: a finished fold
    is only tested again); a fold trained with other settings is an error (or, with --overwrite, replaced)."""
    assert fold.out is not None
    run_dir = fold.out
    if RunDir.started(run_dir) and not config.overwrite:
        comparable = {o.keyword: option_value(fold, o.keyword) for o in options_of(TrainConfig)
                      if o.keyword not in NOT_COMPARED}
        try:
            resumed = resume_config(run_dir, **comparable)
        except CnnkitError as exc:
            raise CnnkitError(f"{run_dir} holds fold {fold.fold} trained with other settings ({exc}): give cnnkit cv "
                              "another --out, or --overwrite to train every fold again") from None
        # A finished fold resumed trains nothing more and is tested again: the same figures, from its saved weights.
        metrics = train(resumed).metrics
    else:
        metrics = train(replace(fold, overwrite=config.overwrite)).metrics
    if not metrics:  # a torchrun rank other than 0: rank 0 tests and reports
        return {}
    row: dict[str, Any] = {"fold": fold.fold, "run": str(run_dir), "test_images": metrics["num_samples"],
                           "accuracy": metrics["accuracy"], "macro_f1": metrics.get("macro_f1")}
    row["ece"] = metrics.get("calibration", {}).get("ece")
    row["roc_auc"] = metrics.get("binary", {}).get("roc_auc")
    return row


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for key in REPORTED:
        values = [row[key] for row in rows if row.get(key) is not None]
        if len(values) == len(rows):
            summary[key] = {"mean": statistics.fmean(values), "sd": statistics.stdev(values),
                            "min": min(values), "max": max(values)}
    images = sum(row["test_images"] for row in rows)
    right = sum(round(row["accuracy"] * row["test_images"]) for row in rows)
    summary["pooled_accuracy"] = right / images
    summary["pooled_accuracy_ci95"] = wilson_interval(right, images)
    summary["test_images"] = images
    return summary


def describe(result: CVResult) -> str:
    """The per-fold table and the summary lines `cnnkit cv` prints."""
    from cnnkit.evaluate.compare import text_table

    keys = [key for key in REPORTED if key in result.summary]
    table = text_table([{"fold": row["fold"], "test_images": row["test_images"], **{k: row[k] for k in keys}}
                        for row in result.folds])
    s = result.summary
    low, high = s["pooled_accuracy_ci95"]
    lines = [table, "", *(f"{key}: mean {s[key]['mean']:.4f}, sd {s[key]['sd']:.4f} (folds {s[key]['min']:.4f} to "
                          f"{s[key]['max']:.4f})" for key in keys),
             f"Pooled accuracy: {s['pooled_accuracy']:.4f} over {s['test_images']:,} images, each tested once (95% "
             f"interval {low:.4f}-{high:.4f})", f"Folds: {result.root} (summary in {CV_JSON})"]
    return "\n".join(lines)
