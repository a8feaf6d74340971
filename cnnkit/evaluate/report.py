"""Evaluating a model on a data set and writing the results into its run directory."""

from __future__ import annotations

from typing import Any

from torch import nn

from cnnkit.config import EvaluateConfig
from cnnkit.data.datasets import ArrayData
from cnnkit.data.preprocess import Preprocess
from cnnkit.data.sources import SourceOptions, load_data
from cnnkit.errors import CnnkitError
from cnnkit.evaluate.metrics import classification_metrics
from cnnkit.evaluate.plots import confusion_matrix_figure
from cnnkit.predict import load_classifier
from cnnkit.rundir import RunDir
from cnnkit.train.engine import StepSettings, predict_logits


def evaluate_model(
    model: nn.Module,
    data: ArrayData,
    *,
    run: RunDir,
    class_names: list[str],
    preprocess: Preprocess,
    settings: StepSettings,
    top_k: int,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Metrics of `model` on `data`; writes confusion_matrix.json and .png into `run` and returns the metrics."""
    logits = predict_logits(model, data, preprocess=preprocess, settings=settings, batch_size=batch_size)
    probs = logits.softmax(dim=1).numpy()
    metrics = classification_metrics(probs, data.labels.numpy(), class_names=class_names, top_k=top_k)
    run.write_json("confusion_matrix.json", {"classes": class_names, "matrix": metrics["confusion_matrix"]})
    run.save_figure("confusion_matrix.png", confusion_matrix_figure(metrics["confusion_matrix"], class_names))
    return metrics


def evaluate_run(config: EvaluateConfig) -> dict[str, Any]:
    """Evaluate a run's best weights on its test split (or on `config.data`) and write metrics.json."""
    classifier = load_classifier(config.run, device=config.device)
    train_config = classifier.config
    spec = config.data or train_config.data
    bundle = load_data(spec, options=SourceOptions(
        data_dir=config.data_dir or train_config.data_dir, preprocess=classifier.preprocess,
        test_split=train_config.test_split, seed=train_config.seed, workers=train_config.workers))
    data = bundle.test if bundle.test is not None else bundle.train
    if data is None or len(data) == 0:
        raise CnnkitError(f"{spec}: no images to evaluate on")
    if bundle.class_names != classifier.class_names:
        raise CnnkitError(f"{spec}: classes {bundle.class_names} differ from the run's {classifier.class_names}")
    run = RunDir.open(config.run)
    top_k = config.top_k or train_config.top_k
    metrics = evaluate_model(classifier.model, data, run=run, class_names=classifier.class_names,
                             preprocess=classifier.preprocess, settings=classifier.settings, top_k=top_k,
                             batch_size=config.batch_size)
    metrics["data"] = spec
    previous = run.read_json("metrics.json") if run.exists("metrics.json") else {}
    run.write_json("metrics.json", previous | metrics)
    return metrics
