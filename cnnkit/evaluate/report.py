"""Evaluating a model on a data set and writing the results into its run directory."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnkit import artifacts as names
from cnnkit.config import EvaluateConfig
from cnnkit.data.checks import changed_since
from cnnkit.data.datasets import ArrayData, in_classes
from cnnkit.data.preprocess import Preprocess
from cnnkit.data.sources import SourceOptions, absolute_spec, load_data, same_data
from cnnkit.errors import CnnkitError
from cnnkit.evaluate.binary import (
    Threshold,
    binary_metrics,
    choose_threshold,
    positive_index,
    roc_pr_figure,
)
from cnnkit.evaluate.html import report_html
from cnnkit.evaluate.metrics import classification_metrics, finite_probabilities
from cnnkit.evaluate.plots import confusion_matrix_figure, mistakes_figure, reliability_figure
from cnnkit.rundir import RunDir
from cnnkit.runtime.allocator import reuse_freed_memory
from cnnkit.runtime.engine import StepSettings, inference_batch_size, predict_logits
from cnnkit.runtime.fitted import WEIGHTS_KEY, best_weights_sha256, run_threshold
from cnnkit.runtime.model import TorchModel, load_run_model

THRESHOLD_FILE = names.THRESHOLD
MISTAKES_SHOWN = 16  # images in mistakes.png


@dataclass(frozen=True)
class ReportPlace:
    """Where an evaluation's files go: the run itself, or a `folder` inside it (another data source's results,
    RUN/evaluations/NAME/); each file joins the run's manifest. The decision threshold is always the run's."""

    run: RunDir
    folder: str = ""

    def write_json(self, name: str, obj: Any) -> None:
        self.run.write_json(self.folder + name, obj)

    def save_figure(self, name: str, figure: Any) -> None:
        self.run.save_figure(self.folder + name, figure)

    def write_csv(self, name: str, rows: list[dict[str, Any]]) -> None:
        self.run.write_csv(self.folder + name, rows)

    def remove(self, name: str) -> None:
        """Take out what an earlier evaluation wrote and this one has nothing for: it would describe other weights."""
        self.run.remove(self.folder + name)


def evaluate_model(
    model: nn.Module,
    data: ArrayData,
    *,
    out: ReportPlace,
    class_names: list[str],
    preprocess: Preprocess,
    settings: StepSettings,
    top_k: int | None,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Metrics of `model` on `data`; writes confusion_matrix.json and .png to `out` and returns the metrics."""
    probs = predict_logits(model, data, preprocess=preprocess, settings=settings, batch_size=batch_size).softmax(
        dim=1).numpy()
    labels = data.labels.numpy()
    metrics = classification_metrics(probs, labels, class_names=class_names, top_k=top_k)
    if settings.temperature != 1.0:
        metrics["temperature"] = settings.temperature  # the probabilities above are the calibrated ones
    out.write_json(names.CONFUSION_JSON, {"classes": class_names, "matrix": metrics["confusion_matrix"]})
    out.save_figure(names.CONFUSION_PNG, confusion_matrix_figure(metrics["confusion_matrix"], class_names))
    out.save_figure(names.CALIBRATION_PNG, reliability_figure(metrics["calibration"]))
    rows = prediction_rows(probs, labels, class_names=class_names, data=data)
    out.write_csv(names.PREDICTIONS, rows)
    ranked = confident_mistakes(probs, labels)
    if len(ranked):
        wrong = ranked[:MISTAKES_SHOWN]
        images = data.batch(torch.from_numpy(wrong)).permute(0, 2, 3, 1).numpy()
        captions = [f"{_short(data.name(i)) or f'#{i}'}: {rows[i]['label']}\n"
                    + (f"said {rows[i]['predicted']} {rows[i]['probability']:.0%}" if rows[i]["predicted"]
                       else "said nothing (NaN)") for i in wrong]
        title = (f"The {len(wrong)} most confident of {len(ranked)} mistakes" if len(wrong) < len(ranked)
                 else f"All {len(ranked)} mistakes, the most confident first")
        out.save_figure(names.MISTAKES_PNG, mistakes_figure(images, captions, title=title))
    else:
        out.remove(names.MISTAKES_PNG)
    if len(class_names) == 2:
        metrics["binary"] = _binary_report(out, probs, labels, class_names)
    return metrics


# What report.html shows, where the evaluation wrote it (learning curves: the run's own test split only).
REPORT_FIGURES = ((names.LEARNING_CURVES, "Learning curves"), (names.CONFUSION_PNG, "Confusion matrix"),
                  (names.CALIBRATION_PNG, "Calibration (reliability diagram)"),
                  (names.ROC_PR, "ROC and precision-recall curves"),
                  (names.MISTAKES_PNG, "The most confident mistakes"))


def write_report(out: ReportPlace, metrics: dict[str, Any], *, title: str) -> None:
    """report.html beside the evaluation's files: its tables, and the figures that are there."""
    figures = [(name, heading) for name, heading in REPORT_FIGURES if out.run.exists(out.folder + name)]
    out.run.write_bytes(out.folder + names.REPORT_HTML, report_html(metrics, title=title, figures=figures).encode())


def prediction_rows(probs: np.ndarray, labels: np.ndarray, *, class_names: list[str],
                    data: ArrayData) -> list[dict[str, Any]]:
    """One row per evaluated image, in order: what it is, what the model said and how sure it was; for looking
    into errors, and for `cnnkit compare` to pair two runs' answers on the same test images."""
    finite, bad = finite_probabilities(probs)
    predicted = finite.argmax(axis=1)
    return [{"index": i, "file": data.name(i) or "", "label": class_names[labels[i]],
             "predicted": "" if bad[i] else class_names[predicted[i]],
             "probability": "" if bad[i] else round(float(finite[i, predicted[i]]), 6),
             "correct": int(not bad[i] and predicted[i] == labels[i])} for i in range(len(labels))]


def _short(path: str | None) -> str | None:
    """A file's folder and name (its class folder, for folder sources): enough to find it, short enough to read."""
    return "/".join(Path(path).parts[-2:]) if path else None


def confident_mistakes(probs: np.ndarray, labels: np.ndarray, *, limit: int | None = None) -> np.ndarray:
    """Indices of the wrongly predicted images, the most confident first (at most `limit`): the ones to look at
    (mislabelled data, a shortcut, a confusable pair). Non-finite outputs are wrong, as the metrics count them, and
    come last."""
    finite, bad = finite_probabilities(probs)
    predicted = finite.argmax(axis=1)
    wrong = np.flatnonzero(bad | (predicted != labels))
    confidence = np.where(bad[wrong], -1.0, finite[wrong, predicted[wrong]])
    return wrong[np.argsort(-confidence, kind="stable")][:limit]


def _binary_report(out: ReportPlace, probs: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """Binary metrics at the run's stored threshold (or 0.5), and the ROC/PR figure."""
    stored = run_threshold(out.run.path)
    positive = positive_index(class_names, stored["positive"] if stored else None)
    scores, positives = finite_probabilities(probs)[0][:, positive], labels == positive
    threshold = stored["threshold"] if stored else 0.5
    report = {"positive": class_names[positive], **binary_metrics(scores, positives, threshold=threshold)}
    if positives.any() and not positives.all():
        out.save_figure(names.ROC_PR, roc_pr_figure(scores, positives, threshold=threshold))
    else:
        out.remove(names.ROC_PR)
    return report


def choose_run_threshold(
    classifier: TorchModel, val: ArrayData, *, run: RunDir, target_fpr: float, positive: str | None,
    calibration: str = "validation split", batch_size: int = 256,
) -> Threshold:
    """Pick the threshold for `target_fpr` on `val` (validation or calibration data) and store it in the run."""
    index = positive_index(classifier.class_names, positive)
    probs = predict_logits(classifier.model, val, preprocess=classifier.preprocess, settings=classifier.settings,
                           batch_size=batch_size).softmax(dim=1).numpy()
    scores = finite_probabilities(probs)[0][:, index]
    chosen = replace(choose_threshold(scores, val.labels.numpy() == index, target_fpr=target_fpr,
                                      positive=classifier.class_names[index]), calibration=calibration)
    run.write_json(THRESHOLD_FILE, chosen.to_dict() | {WEIGHTS_KEY: best_weights_sha256(run.path)})
    return chosen


def evaluate_run(config: EvaluateConfig) -> dict[str, Any]:
    """Evaluate a run's best weights on its test split, or on `config.data`, and write metrics.json: into the run
    for its own test split, into RUN/evaluations/NAME/ for another source (the run's own figures, which `cnnkit
    runs` and `cnnkit compare` show, stay its test split's). `output` in the result says where."""
    reuse_freed_memory()  # as training does: each batch's buffers come from the heap, not from fresh memory maps
    classifier = load_run_model(config.run, device=config.device)
    train_config = classifier.config
    # The run's own data: its test split, cut as training cut it. Another source is evaluated whole: its own test
    # part where it has one (train/ and test/ subtrees, CIFAR-10's test set), else every image, less the split
    # that --target-fpr calibrates on.
    own = config.data is None or same_data(config.data, train_config.data)
    spec = train_config.data if own else str(config.data)
    bundle = load_data(spec, options=SourceOptions.of_run(
        # --data-dir of the run's own source is the run's; another source's is only what is given for it (a csv:
        # table's files are relative to its own folder, not to where the training's CIFAR-10 arrays were).
        train_config, classifier.preprocess, data_dir=config.data_dir or (train_config.data_dir if own else None),
        val_split=train_config.val_split if config.target_fpr else 0.0, strict=False, quiet=False,
        **({} if own else {"test_split": 0.0, "test_sources": (), "fold": None})))
    has_test = bundle.test is not None and len(bundle.test) > 0
    calibrating = config.target_fpr is not None and bundle.val is not None
    data = bundle.test if has_test else bundle.train if calibrating else bundle.whole()
    if data is None or len(data) == 0:
        raise CnnkitError(f"{spec}: no images to evaluate on")
    evaluated_on = ("the run's test split" if own else "its test part" if has_test
                    else "its images outside the calibration split" if calibrating else "all its images")
    data = in_classes(data, bundle.class_names, classifier.class_names, source=spec)
    if bundle.class_names != classifier.class_names:
        missing = [name for name in classifier.class_names if name not in bundle.class_names]
        evaluated_on += (f", in {len(bundle.class_names)} of the run's {len(classifier.class_names)} classes: no "
                         f"{', '.join(missing)}")
    run = RunDir.open(config.run)
    if own:
        recorded = run.read_json(names.DATA_SPLITS) if run.exists(names.DATA_SPLITS) else None
        _check_own_test_split(recorded, run=run.path, spec=spec, has_test=has_test)
        if recorded is not None:
            check_unchanged(recorded, run=run.path, spec=spec,
                            splits={"test": bundle.test if has_test else None,
                                    "val": bundle.val if config.target_fpr is not None else None})
    batch_size = config.batch_size or inference_batch_size(
        classifier.model, input_size=classifier.preprocess.input_size, settings=classifier.settings)
    if config.target_fpr is not None:
        calibration = bundle.val
        if config.calibration_data is not None:
            _check_apart(config.calibration_data, evaluated=spec, trained=train_config.data)
            calibration = all_images(config.calibration_data, classifier, data_dir=config.data_dir)
        if calibration is None or len(calibration) == 0:
            raise CnnkitError("--target-fpr needs validation data (train with --val-split > 0) or --calibration-data")
        choose_run_threshold(classifier, calibration, run=run, target_fpr=config.target_fpr,
                             positive=config.positive, calibration=config.calibration_data or "validation split",
                             batch_size=batch_size)
    top_k = config.top_k or train_config.top_k
    top_k = top_k if top_k < len(classifier.class_names) else None
    out = ReportPlace(run, "" if own else f"{names.EVALUATIONS_DIR}/{_folder_name(spec)}/")
    (run.path / out.folder).mkdir(parents=True, exist_ok=True)
    metrics = evaluate_model(classifier.model, data, out=out, class_names=classifier.class_names,
                             preprocess=classifier.preprocess, settings=classifier.settings, top_k=top_k,
                             batch_size=batch_size)
    metrics["data"], metrics["evaluated_on"] = spec, evaluated_on
    previous = run.read_json(names.METRICS) if own and run.exists(names.METRICS) else {}
    previous.pop("temperature", None)  # this evaluation's says whether one applies now
    out.write_json(names.METRICS, previous | metrics)
    write_report(out, previous | metrics, title=f"{train_config.model}, run {run.path.name}: {evaluated_on}")
    return metrics | {"output": str(run.path / out.folder)}


def _folder_name(spec: str) -> str:
    """A folder name for another data source's evaluation: readable, and unique to the source's absolute spec."""
    absolute = absolute_spec(spec)
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", absolute.rstrip("/").rsplit("/", 1)[-1].split(":")[-1]).strip("-")
    return f"{readable or 'data'}-{hashlib.sha256(absolute.encode()).hexdigest()[:8]}"


def _check_own_test_split(recorded: dict[str, Any] | None, *, run: Path, spec: str, has_test: bool) -> None:
    """A run is evaluated on its own data's test split alone, and only where it trained with one: every other image
    of that data trained or validated it, and figures from them would flatter it. `recorded` is the run's
    data.json (None for runs from before it existed, which all trained with a test split)."""
    recorded = {"test": None} if recorded is None else recorded
    if "test" in recorded and not has_test:
        raise CnnkitError(f"{spec} has no test split now, where {run} trained with one: the data changed since; "
                          "evaluate on a separate folder (--data) or train again")
    if "test" not in recorded:
        raise CnnkitError(f"{run} trained without a test split of {spec}: every image of it trained or "
                          "validated the run (a test split cut from it now would hold images it trained on), so "
                          "figures from it would flatter the model; evaluate on other data with --data SOURCE")


def check_unchanged(recorded: dict[str, Any], *, run: Path, spec: str, splits: dict[str, ArrayData | None]) -> None:
    """The run's own data must still be what it was trained on (`recorded`: the run's data.json): otherwise its test
    split, cut again from changed data, can hold images the run trained on, and the figures would look better than
    they are."""
    changed = changed_since(recorded, splits)
    if changed:
        raise CnnkitError(f"{spec} changed since {run} was trained ({'; '.join(changed)}): its test split, cut "
                          "again, may hold images the run trained on; evaluate on a separate folder (--data) or "
                          "train again")


def _check_apart(calibration: str, *, evaluated: str, trained: str | None) -> None:
    """A threshold chosen on the images it is then measured on (or on the run's own data, test split included)
    would make its TPR and FPR look better than they are: refused."""
    if same_data(calibration, trained):
        raise CnnkitError(f"--calibration-data {calibration} is the run's own data (its training images and test "
                          "split): give a separate calibration folder, or leave it out to use the validation split")
    if same_data(calibration, evaluated):
        raise CnnkitError(f"--calibration-data {calibration} is the data being evaluated: the threshold would be "
                          "measured on the images it was chosen on; give a separate calibration folder")


def all_images(spec: str, classifier: TorchModel, *, data_dir: Path | None) -> ArrayData:
    """Every image of a data source (its train and test parts together), checked to have the run's classes."""
    bundle = load_data(spec, options=SourceOptions(data_dir=data_dir, preprocess=classifier.preprocess,
                                                   test_split=0.0))
    if bundle.class_names != classifier.class_names:
        raise CnnkitError(f"{spec}: classes {bundle.class_names} differ from the run's {classifier.class_names}")
    whole = bundle.whole()
    if whole is None:
        raise CnnkitError(f"{spec}: no images")
    return whole
