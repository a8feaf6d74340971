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
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar

from cnnkit import artifacts as names
from cnnkit.config import CalibrateConfig, EvaluateConfig
from cnnkit.data.datasets import ArrayData
from cnnkit.data.sources import SourceOptions, absolute_spec, load_data
from cnnkit.errors import CnnkitError
from cnnkit.evaluate.metrics import ROUGH_CALIBRATION, calibration
from cnnkit.evaluate.report import all_images, check_unchanged, choose_run_threshold, evaluate_run
from cnnkit.rundir import RunDir
from cnnkit.runtime.engine import inference_batch_size, predict_logits
from cnnkit.runtime.fitted import WEIGHTS_KEY, best_weights_sha256, run_threshold
from cnnkit.runtime.model import TorchModel, load_run_model

MIN_IMAGES = 100  # fewer held-out images: refused (one parameter, but its log-likelihood is then mostly noise)
LOG_T_BOUNDS = (np.log(0.05), np.log(20.0))  # a fitted T at either end means the data cannot pin it down


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


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T that minimises the mean negative log-likelihood of softmax(logits / T) on these labels. It is a
    one-dimensional, well-behaved problem (the NLL is convex in 1/T), solved by bounded search over log T."""
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
    test_before = run.read_json(names.METRICS).get("calibration") if run.exists(names.METRICS) else None
    threshold_before = run_threshold(run.path)  # refused here, before anything is written, if stale
    if config.reset:
        (run.path / names.TEMPERATURE).unlink(missing_ok=True)
        run.forget(names.TEMPERATURE)
        result = Calibration(1.0, "", 0, {}, {})
    else:
        result = _fit(classifier, config)
        run.write_json(names.TEMPERATURE, result.to_dict() | {"rough": result.images < ROUGH_CALIBRATION,
                                                              WEIGHTS_KEY: best_weights_sha256(run.path)})
    calibrated = replace(classifier, settings=replace(classifier.settings, temperature=result.temperature))
    threshold = _rechoose_threshold(calibrated, config, run, threshold_before)
    test = None
    if run.exists(names.METRICS) and "accuracy" in run.read_json(names.METRICS):
        test = evaluate_run(EvaluateConfig(run=config.run, device=config.device))
    return replace(result, test=test, test_before=test_before, threshold=threshold, threshold_before=threshold_before)


def _fit(classifier: TorchModel, config: CalibrateConfig) -> Calibration:
    held_out, fitted_on = _held_out(classifier, config)
    if len(held_out) < MIN_IMAGES:
        raise CnnkitError(f"{fitted_on} has {len(held_out)} images; fitting a temperature takes at least "
                          f"{MIN_IMAGES} held-out images (train with a larger --val-split, or give --data)")
    logits = predict_logits(classifier.model, held_out, preprocess=classifier.preprocess,
                            settings=classifier.settings, batch_size=_batch(classifier))
    labels = held_out.labels
    temperature = fit_temperature(logits, labels)
    if not LOG_T_BOUNDS[0] + 1e-3 < np.log(temperature) < LOG_T_BOUNDS[1] - 1e-3:
        raise CnnkitError(f"the fitted temperature ({temperature:.3g}) sits at the end of its range: the held-out "
                          "data cannot pin it down (a model that is always right, or never); nothing stored")
    return Calibration(temperature, fitted_on, len(held_out), held_out_figures(logits, labels, 1.0),
                       held_out_figures(logits, labels, temperature))


def _held_out(classifier: TorchModel, config: CalibrateConfig) -> tuple[ArrayData, str]:
    """The images to fit on: `config.data` whole (kept apart from the run's own data), else the run's validation
    split, cut as training cut it and checked to be unchanged."""
    train_config = classifier.config
    if config.data is not None:
        if train_config.data is not None and absolute_spec(config.data) == absolute_spec(train_config.data):
            raise CnnkitError(f"--data {config.data} is the run's own data: a temperature fitted on the images it "
                              "trained on would keep it over-confident; give held-out images, or leave --data out "
                              "to use the validation split")
        return all_images(config.data, classifier, data_dir=config.data_dir), config.data
    bundle = load_data(train_config.data, options=SourceOptions.of_run(
        train_config, classifier.preprocess, data_dir=config.data_dir or train_config.data_dir, strict=False,
        quiet=True))
    if bundle.val is None or len(bundle.val) == 0:
        raise CnnkitError(f"{config.run} has no validation split to fit a temperature on (it trained with "
                          "--val-split 0): give held-out images with --data")
    run = RunDir.open(config.run)
    if run.exists(names.DATA_SPLITS):
        check_unchanged(run, train_config.data, {"val": bundle.val})
    return bundle.val, "the validation split"


def _rechoose_threshold(calibrated: TorchModel, config: CalibrateConfig, run: RunDir,
                        stored: dict[str, Any] | None) -> dict[str, Any] | None:
    """A binary threshold chosen on the earlier probabilities, chosen again on the same data and for the same
    false-positive rate: the same images flagged, the number on the new scale."""
    if stored is None:
        return None
    source = stored.get("calibration", "validation split")
    if source == "validation split":
        data, _ = _held_out(calibrated, replace(config, data=None))
    else:
        data = all_images(source, calibrated, data_dir=config.data_dir)
    return choose_run_threshold(calibrated, data, run=run, target_fpr=stored["target_fpr"], positive=stored["positive"],
                                calibration=source, batch_size=_batch(calibrated)).to_dict()


def _batch(classifier: TorchModel) -> int:
    return inference_batch_size(classifier.model, input_size=classifier.preprocess.input_size,
                                settings=classifier.settings)

