"""Temperature scaling (Guo et al., 2017): the logits divided by one number T, fitted on held-out data by
log-likelihood, before the softmax. Networks trained with cross-entropy tend to be over-confident; T > 1 softens
their probabilities until the stated confidence matches the accuracy. The argmax does not change, so neither do
the accuracy, the confusion matrix or any ranking (ROC AUC): only how sure each answer says it is.

`cnnkit calibrate RUN` fits T on the run's validation split (or on another held-out source) and stores it in
RUN/temperature.json for the best weights (runtime.fitted); from then on `predict`, `evaluate`, the export and the
server all use it. A binary run's decision threshold is chosen again on the calibrated probabilities (the same
operating point: only the number changes), and the test split is evaluated again, so that metrics.json describes
the probabilities the run now gives.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cnnkit import artifacts as names
from cnnkit.config import CalibrateConfig, EvaluateConfig
from cnnkit.data.datasets import ArrayData
from cnnkit.data.sources import SourceOptions, load_data, same_data
from cnnkit.errors import CnnkitError
from cnnkit.evaluate.metrics import ROUGH_CALIBRATION, calibration
from cnnkit.evaluate.report import all_images, check_unchanged, choose_run_threshold, evaluate_run
from cnnkit.rundir import RunDir
from cnnkit.runtime.engine import inference_batch_size, predict_logits
from cnnkit.runtime.fitted import WEIGHTS_KEY, best_weights_sha256, run_threshold
from cnnkit.runtime.model import TorchModel, load_run_model

MIN_IMAGES = 100  # fewer held-out images: refused (one parameter, but its log-likelihood is then mostly noise)
LOG_T_BOUNDS = (np.log(0.05), np.log(20.0))  # a fitted T at either end means the data cannot pin it down
VALIDATION = "the validation split"


@dataclass(frozen=True)
class Calibration:
    """What `cnnkit calibrate` did: the temperature and the held-out figures before and after it."""

    temperature: float
    fitted_on: str
    images: int
    before: dict[str, float]  # held-out log loss and ECE at T = 1
    after: dict[str, float]  # ... and at the fitted T
    test: dict[str, Any] | None = None  # the test split's metrics, evaluated again with T (None: no test split)
    test_before: dict[str, Any] | None = None  # metrics.json's calibration before this call
    threshold: dict[str, Any] | None = None  # a binary run's re-chosen threshold
    threshold_before: dict[str, Any] | None = None  # ... and the one it replaced

    def to_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "fitted_on": self.fitted_on, "images": self.images,
                "before": self.before, "after": self.after}

    def describe(self, *, run: Path) -> list[str]:
        """What `cnnkit calibrate RUN` prints: the fit (or the reset), the test split again, the threshold again."""
        if not self.fitted_on:
            lines = [f"Removed {Path(run) / names.TEMPERATURE}: probabilities are the plain softmax again"]
        else:
            before, after = self.before, self.after
            rough = f" (rough: under {ROUGH_CALIBRATION} images)" if self.images < ROUGH_CALIBRATION else ""
            lines = [f"Temperature {self.temperature:.4f}, fitted on {self.fitted_on} ({self.images} images){rough}: "
                     f"log loss {before['log_loss']:.4f} -> {after['log_loss']:.4f}, ECE {before['ece']:.4f} -> "
                     f"{after['ece']:.4f}, mean confidence {before['mean_confidence']:.4f} -> "
                     f"{after['mean_confidence']:.4f}"]
        if self.test is not None:
            was, now = self.test_before or {}, self.test["calibration"]
            lines.append(f"Test split evaluated again (accuracy {self.test['accuracy']:.4f}): ECE "
                         f"{was.get('ece', float('nan')):.4f} -> {now['ece']:.4f}, log loss "
                         f"{was.get('log_loss', float('nan')):.4f} -> {now['log_loss']:.4f}; written to metrics.json")
        if self.threshold is not None and self.threshold_before is not None:
            new, old = self.threshold, self.threshold_before
            same = all(abs(new[key] - old[key]) < 1e-9 for key in ("val_fpr", "val_tpr"))
            point = (f"the same operating point: FPR {new['val_fpr']:.4f}, TPR {new['val_tpr']:.4f}" if same else
                     f"FPR {old['val_fpr']:.4f} -> {new['val_fpr']:.4f}, TPR {old['val_tpr']:.4f} -> "
                     f"{new['val_tpr']:.4f}: ties broken differently")
            lines.append(f"Decision threshold chosen again for --target-fpr {new['target_fpr']:g}: "
                         f"{old['threshold']:.4f} -> {new['threshold']:.4f}, on {new['calibration']} ({point})")
        return lines


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T that minimises the mean negative log-likelihood of softmax(logits / T) on these labels. It is a
    one-dimensional, well-behaved problem (the NLL is convex in 1/T), solved by bounded search over log T."""
    from scipy.optimize import minimize_scalar  # SciPy loads where used: a second off every command's start

    logits, labels = logits.double(), labels.long()

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(logits / np.exp(log_t), labels))

    found = minimize_scalar(nll, bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-5})
    return float(np.exp(found.x))


def held_out_figures(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> dict[str, float]:
    probs = (logits.double() / temperature).softmax(dim=1).numpy()
    cal = calibration(probs, labels.numpy())
    return {"log_loss": cal["log_loss"], "ece": cal["ece"], "mean_confidence": cal["mean_confidence"]}


def calibrate_run(config: CalibrateConfig) -> Calibration:
    """Fit (or, with `reset`, remove) the run's temperature; then re-choose a binary run's threshold and evaluate
    the test split again, so that both describe the probabilities the run now gives."""
    run = RunDir.open(config.run)
    classifier = load_run_model(config.run, device=config.device, calibrated=False)
    batch_size = inference_batch_size(classifier.model, input_size=classifier.preprocess.input_size,
                                      settings=classifier.settings)
    test_before = run.read_json(names.METRICS).get("calibration") if run.exists(names.METRICS) else None
    threshold_before = run_threshold(run.path)  # refused here, before anything is written, if stale
    validation = None  # the run's validation split, once loaded: a threshold chosen on it is chosen again on it
    if config.reset:
        run.remove(names.TEMPERATURE)
        result = Calibration(1.0, "", 0, {}, {})
    else:
        if config.data is None:
            validation = _validation_split(classifier, config)
        held_out = validation if validation is not None else _other_held_out(classifier, config)
        result = _fit(classifier, held_out, fitted_on=config.data or VALIDATION, batch_size=batch_size)
        run.write_json(names.TEMPERATURE, result.to_dict() | {"rough": result.images < ROUGH_CALIBRATION,
                                                              WEIGHTS_KEY: best_weights_sha256(run.path)})
    threshold = None
    if threshold_before is not None:
        calibrated = replace(classifier, settings=replace(classifier.settings, temperature=result.temperature))
        threshold = _rechoose_threshold(calibrated, config, run, threshold_before, validation=validation,
                                        batch_size=batch_size)
    test = None
    if run.exists(names.METRICS) and "accuracy" in run.read_json(names.METRICS):
        test = evaluate_run(EvaluateConfig(run=config.run, device=config.device))
    return replace(result, test=test, test_before=test_before, threshold=threshold, threshold_before=threshold_before)


def _fit(classifier: TorchModel, held_out: ArrayData, *, fitted_on: str, batch_size: int) -> Calibration:
    if len(held_out) < MIN_IMAGES:
        raise CnnkitError(f"{fitted_on} has {len(held_out)} images; fitting a temperature takes at least "
                          f"{MIN_IMAGES} held-out images (train with a larger --val-split, or give --data)")
    logits = predict_logits(classifier.model, held_out, preprocess=classifier.preprocess,
                            settings=classifier.settings, batch_size=batch_size)
    labels = held_out.labels
    temperature = fit_temperature(logits, labels)
    if not LOG_T_BOUNDS[0] + 1e-3 < np.log(temperature) < LOG_T_BOUNDS[1] - 1e-3:
        raise CnnkitError(f"the fitted temperature ({temperature:.3g}) sits at the end of its range: the held-out "
                          "data cannot pin it down (a model that is always right, or never); nothing stored")
    return Calibration(temperature, fitted_on, len(held_out), held_out_figures(logits, labels, 1.0),
                       held_out_figures(logits, labels, temperature))


def _other_held_out(classifier: TorchModel, config: CalibrateConfig) -> ArrayData:
    """`config.data` whole, kept apart from the run's own data."""
    assert config.data is not None
    train_data = classifier.config.data
    if same_data(config.data, train_data):
        raise CnnkitError(f"--data {config.data} is the run's own data: a temperature fitted on the images it "
                          "trained on would keep it over-confident; give held-out images, or leave --data out "
                          "to use the validation split")
    return all_images(config.data, classifier, data_dir=config.data_dir)


def _validation_split(classifier: TorchModel, config: CalibrateConfig) -> ArrayData:
    """The run's validation split, cut as training cut it and checked to be unchanged."""
    train_config = classifier.config
    bundle = load_data(train_config.data, options=SourceOptions.of_run(
        train_config, classifier.preprocess, data_dir=config.data_dir or train_config.data_dir, strict=False,
        quiet=True))
    if bundle.val is None or len(bundle.val) == 0:
        raise CnnkitError(f"{config.run} has no validation split to fit a temperature on (it trained with "
                          "--val-split 0): give held-out images with --data")
    run = RunDir.open(config.run)
    if run.exists(names.DATA_SPLITS):
        check_unchanged(run.read_json(names.DATA_SPLITS), run=run.path, spec=train_config.data,
                        splits={"val": bundle.val})
    return bundle.val


def _rechoose_threshold(calibrated: TorchModel, config: CalibrateConfig, run: RunDir, stored: dict[str, Any], *,
                        validation: ArrayData | None, batch_size: int) -> dict[str, Any]:
    """A binary threshold chosen on the earlier probabilities, chosen again on the same data and for the same
    false-positive rate: the same images flagged, the number on the new scale."""
    source = stored.get("calibration", "validation split")
    if source == "validation split":
        data = validation if validation is not None else _validation_split(calibrated, config)
    else:
        data = all_images(source, calibrated, data_dir=config.data_dir)
    return choose_run_threshold(calibrated, data, run=run, target_fpr=stored["target_fpr"], positive=stored["positive"],
                                calibration=source, batch_size=batch_size).to_dict()
