"""The Python API: one obvious entry per job, keyword arguments named as the CLI flags.

    import cnnkit
    run = cnnkit.train("folder:photos", model="efficientnet_lite0", pretrained=True, freeze_base=True, epochs=5)
    clf = cnnkit.load(run.run_dir)                     # a run directory (PyTorch) or an export directory (ONNX Runtime)
    clf.predict("cat.jpg")                             # one Prediction; a list (or a batch array) gives a list
    clf.evaluate("folder:other")                       # the metrics `cnnkit evaluate` prints
    cnnkit.calibrate(run.run_dir)                      # softmax temperature fitted on the validation split
    cnnkit.export(run.run_dir)                         # RUN/export/model.onnx, checked against PyTorch
    cnnkit.lr_find("cifar10").suggestion               # the learning-rate range test: a suggested lr
    cnnkit.serve([run.run_dir], port=8501)             # TensorFlow Serving REST API
    print(cnnkit.summary("resnet50"))                  # Keras-style layer table (of a run's network too)
    cnnkit.check_data("folder:photos")                 # splits, balance, duplicates, shortcuts; trains nothing
    cnnkit.evaluate_run(run.run_dir, target_fpr=0.01)  # `cnnkit evaluate`: metrics, plots, a threshold
    cnnkit.explain(run.run_dir, "cat.jpg")             # Grad-CAM heatmap
    cnnkit.runs("runs"); cnnkit.compare([a, b])        # the runs under a folder; runs side by side

Errors are `cnnkit.CnnkitError` with one clear message, the same ones the CLI prints.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from cnnkit import artifacts as names
from cnnkit.config import (
    DEFAULT_FOLDS,
    EvaluateConfig,
    ExplainConfig,
    ExportConfig,
    LRFindConfig,
    PredictConfig,
    ServeConfig,
    TrainConfig,
    train_config,
)
from cnnkit.data.preprocess import Preprocess
from cnnkit.errors import CnnkitError
from cnnkit.options import from_keywords
from cnnkit.runtime.inputs import to_batch

if TYPE_CHECKING:  # the results' types, named without importing PyTorch when cnnkit is imported
    from cnnkit.deploy.onnx import ExportResult
    from cnnkit.evaluate.explain import Explanation
    from cnnkit.evaluate.temperature import Calibration
    from cnnkit.runtime.load import LoadedModel
    from cnnkit.training.callbacks import Callback
    from cnnkit.training.cv import CVResult
    from cnnkit.training.fit import TrainResult
    from cnnkit.training.lr_find import LRFinding

PREDICT_BATCH = 64  # images per forward pass in predict


@dataclass(frozen=True)
class Prediction:
    """One image's answer: the most likely class first."""

    source: str  # the file path, or <image N> for in-memory images
    label: str
    probability: float
    top: list[tuple[str, float]]  # (label, probability), most likely first


def train(data: str = "", *, recipe: str | None = None, resume: str | Path | None = None,
          callbacks: Sequence[Callback] = (), **options: Any) -> TrainResult:
    """Train and evaluate a model; returns a TrainResult (run_dir, history, metrics). `callbacks`: your own
    cnnkit.training.callbacks.Callback subclasses, called after cnnkit's at each point of the loop.

    `data`: cifar10 | folder:PATH | npz:PATH | csv:PATH. `options`: any `cnnkit train` flag as a keyword (`epochs=5`,
    `freeze_base=True`, `scheduler="cosine"`...). `recipe`: a preset whose values the options override.
    `resume=RUN`: continue that run directory from its checkpoint (only epochs, finetune_epochs, how it runs
    (device, quiet, workers, caching, memory), tensorboard and data_dir may change).
    """
    from cnnkit.training.fit import resume_config
    from cnnkit.training.fit import train as fit

    if resume is not None:
        if data or recipe:
            raise CnnkitError("resume takes the run's own data and settings; give no data or recipe")
        return fit(resume_config(Path(resume), **options), callbacks=callbacks)
    return fit(train_config(data, recipe=recipe, **options), callbacks=callbacks)


def cross_validate(data: str, *, folds: int = DEFAULT_FOLDS, recipe: str | None = None,
                   **options: Any) -> CVResult:
    """k-fold cross-validation (`cnnkit cv`): a CVResult with each fold's figures (`folds`) and their mean, spread
    and pooled accuracy (`summary`); the fold runs are ordinary run directories under `root`."""
    from cnnkit.training.cv import cross_validate as run_folds

    return run_folds(train_config(data, recipe=recipe, **options), folds=folds)


def lr_find(data: str, *, recipe: str | None = None, start_lr: float = LRFindConfig.start_lr,
            end_lr: float = LRFindConfig.end_lr, steps: int = LRFindConfig.steps, plot: str | Path = LRFindConfig.plot,
            phase: Literal["first", "finetune"] = LRFindConfig.phase, **options: Any) -> LRFinding:
    """The learning-rate range test (`cnnkit lr-find`): an LRFinding with each step's learning rate and smoothed
    loss, and `suggestion` (None, with `reason`, when the curve cannot be trusted). `options`: `cnnkit train` flags
    as keywords (model, batch_size, optimizer...); nothing but the `plot` PNG is written. `phase="finetune"`
    (with freeze_base and finetune_epochs) trains the head for `epochs` first and sweeps the fine-tuning phase."""
    from cnnkit.training.lr_find import lr_find as sweep

    finder = LRFindConfig(start_lr=start_lr, end_lr=end_lr, steps=steps, plot=Path(plot), phase=phase)
    return sweep(train_config(data, recipe=recipe, **options), finder)


def summary(model: str | Path, *, input_size: int | None = None, num_classes: int = 10) -> str:
    """A Keras-style layer table (`cnnkit summary`): of a registered model, timm/NAME, at `input_size` (default: the
    model's) with `num_classes` outputs; or of a run directory's network as it trained (its classes, input size and
    head, trainable as in its last phase: a fine-tuned base counts as trainable, a base left frozen does not)."""
    from cnnkit.models import create_model, default_input_size
    from cnnkit.models import summary as layer_table

    if (Path(model) / names.CONFIG).is_file():
        from cnnkit.models.transfer import TransferNet, set_base_trainable
        from cnnkit.runtime.model import load_run_model
        from cnnkit.training.phases import plan_phases

        run = Path(model)
        loaded = load_run_model(run, device="cpu")
        if isinstance(loaded.model, TransferNet):
            set_base_trainable(loaded.model, plan_phases(loaded.config)[-1].trainable)
        return layer_table(loaded.model, input_size=loaded.preprocess.input_size,
                           name=f"{loaded.config.model}, run {run.name}: {len(loaded.class_names)} classes")
    name = str(model)
    size = input_size or default_input_size(name)
    return layer_table(create_model(name, num_classes=num_classes, input_size=size), input_size=size, name=name)


@dataclass(frozen=True)
class DataCheck:
    """`cnnkit check-data`'s findings: the lines it prints (splits, images per class, notes, warnings) and how many
    of them are warnings."""

    lines: list[str]
    warnings: int

    def __str__(self) -> str:
        return "\n".join(self.lines)


def check_data(data: str, *, recipe: str | None = None, **options: Any) -> DataCheck:
    """Load and check `data` as `train` with the same options would read it, training nothing (`cnnkit
    check-data`); `options`: `train`'s keywords (model, input_size, val_split, test_source...)."""
    from cnnkit.training.data import check_training_data

    lines, warnings = check_training_data(train_config(data, recipe=recipe, **options))
    return DataCheck(lines, warnings)


def evaluate_run(run: str | Path, **options: Any) -> dict[str, Any]:
    """`cnnkit evaluate`: the run's best weights on its test split (or `data=` another source), with metrics.json,
    the confusion matrix and, for binary runs, ROC/PR curves written; `target_fpr=` also chooses a threshold.
    Returns the metrics, and `output`: the folder they were written to. (Not `cnnkit.evaluate`: that name is the
    subpackage; `cnnkit.load(run).evaluate()` gives the figures without writing anything.)"""
    from cnnkit.evaluate.report import evaluate_run as evaluate

    return evaluate(from_keywords(EvaluateConfig, {**options, "run": Path(run)}))


def explain(run: str | Path, image: str | Path, **options: Any) -> Explanation:
    """Grad-CAM (`cnnkit explain`): the image with the heatmap of what drove the prediction beside it, written to
    `out=` (default heat.png); returns the explained label and probability."""
    from cnnkit.evaluate.explain import explain as grad_cam

    return grad_cam(from_keywords(ExplainConfig, {**options, "run": Path(run), "image": Path(image)}))


def runs(directory: str | Path = "runs") -> list[dict[str, Any]]:
    """`cnnkit runs`: a row per run directory under `directory` (progress, results, export state), oldest first."""
    from cnnkit.evaluate.compare import list_runs

    if not Path(directory).is_dir():
        raise CnnkitError(f"{directory}: no such directory")
    return list_runs(Path(directory))


def compare(run_dirs: list[str | Path], *, out: str | Path | None = "compare.png") -> str:
    """`cnnkit compare`: the runs side by side as a text table; their learning curves in one PNG at `out` (None:
    no plot)."""
    from cnnkit.evaluate.compare import compare_runs

    return compare_runs(runs=[Path(r) for r in run_dirs], plot_path=Path(out) if out is not None else None)


def load(path: str | Path, *, device: str = "auto", backend: Literal["auto", "torch", "onnx"] = "auto") -> Classifier:
    """A trained classifier from a run directory (PyTorch; `backend="onnx"` uses its export) or an export
    directory (ONNX Runtime, no PyTorch needed)."""
    from cnnkit.runtime.load import load_model

    return Classifier(load_model(Path(path), device=device, backend=backend), Path(path))


class Classifier:
    """A loaded model with its preprocessing and class names: `predict`, `probabilities`, `evaluate`."""

    def __init__(self, model: LoadedModel, path: Path) -> None:
        self._model = model
        self.path = path

    @property
    def class_names(self) -> list[str]:
        return list(self._model.class_names)

    @property
    def preprocess(self) -> Preprocess:
        return self._model.preprocess

    @property
    def backend(self) -> str:
        return self._model.backend

    def __repr__(self) -> str:
        names = ", ".join(self.class_names[:5]) + (", ..." if len(self.class_names) > 5 else "")
        return (f"Classifier({str(self.path)!r}, backend={self.backend}, input={self.preprocess.input_size}px, "
                f"{len(self.class_names)} classes: {names})")

    def probabilities(self, inputs: Any) -> np.ndarray:
        """Class probabilities [N, C] for paths, PIL images, NumPy HWC or torch CHW arrays (one or many)."""
        batch, _, _ = to_batch(inputs, preprocess=self.preprocess)
        return self._run(batch)

    def predict(self, inputs: Any, *, top_k: int = PredictConfig.top_k) -> Prediction | list[Prediction]:
        """The top-k classes of each image. One image in, one Prediction out; a list or batch in, a list out."""
        if top_k < 1:
            raise CnnkitError("top_k must be at least 1")
        batch, sources, single = to_batch(inputs, preprocess=self.preprocess)
        probs = self._run(batch)
        k = min(top_k, probs.shape[1])
        predictions = []
        for source, row in zip(sources, probs):
            order = np.argsort(-row)[:k]
            top = [(self.class_names[i], float(row[i])) for i in order]
            predictions.append(Prediction(source, top[0][0], top[0][1], top))
        return predictions[0] if single else predictions

    def predict_files(self, paths: Any, *, batch_size: int = PredictConfig.batch_size,
                      top_k: int = PredictConfig.top_k) -> Iterator[dict[str, Any]]:
        """Rows for files, folders (recursive), globs and @FILE lists, streamed in batches of `batch_size`: path,
        label, score, top-k, the decision for a binary run with a threshold; an unreadable file is a row with its
        `error`."""
        from cnnkit.runtime.bulk import expand, predict_rows
        from cnnkit.runtime.exports import stored_threshold

        specs = [paths] if isinstance(paths, (str, Path)) else list(paths)
        return predict_rows(self._model, expand(specs), batch_size=batch_size, top_k=top_k,
                            threshold=stored_threshold(self.path))

    def predict_to_file(self, paths: Any, output: str | Path, *, resume: bool = False,
                        batch_size: int = PredictConfig.batch_size, top_k: int = PredictConfig.top_k) -> int:
        """Predict files, folders, globs and @FILE lists into `output` (.csv or .jsonl), a row per file as it comes;
        returns how many files failed. `resume`: skip the files `output` already has and append. In every rank of
        a torchrun job that has joined its process group, the ranks share the files and rank 0 merges one file."""
        import os

        from cnnkit.runtime.bulk import expand, predict_to_file
        from cnnkit.runtime.exports import stored_temperature, stored_threshold, weights_sha256

        ctx = None
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torch.distributed only under torchrun
            from cnnkit.runtime.parallel import current_context

            ctx = current_context()
        specs = [paths] if isinstance(paths, (str, Path)) else list(paths)
        threshold = stored_threshold(self.path)
        identity = {"weights_sha256": weights_sha256(self.path), "top_k": top_k, "threshold": threshold}
        temperature = stored_temperature(self.path)
        if temperature != 1.0:  # rows resumed under another temperature would state other probabilities
            identity["temperature"] = temperature
        return predict_to_file(self._model, list(expand(specs)), output=Path(output), resume=resume, ctx=ctx,
                               identity=identity, batch_size=batch_size, top_k=top_k, threshold=threshold)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        parts = [self._model.probabilities(batch[i : i + PREDICT_BATCH]) for i in range(0, len(batch), PREDICT_BATCH)]
        return np.concatenate(parts)

    def evaluate(self, data: str | None = None, **options: Any) -> dict[str, Any]:
        """Accuracy, top-k, per-class precision/recall/F1 and the confusion matrix (binary: ROC AUC and more) on
        `data` (default: the run's test split; another source whole: its test part where it has one, else every
        image), as `cnnkit evaluate` computes them. `options`: its flags (`data_dir=`, `batch_size=`,
        `target_fpr=`...). A run directory's results are also saved in it (another source's in
        RUN/evaluations/NAME/, `output` in the result)."""
        if self.backend == "torch":
            from cnnkit.evaluate.report import evaluate_run

            config = from_keywords(EvaluateConfig, {"data": data, **options}, base=EvaluateConfig(run=self.path))
            return evaluate_run(config)
        if data is None:
            raise CnnkitError("an export directory does not know its data: pass data='folder:PATH' (or npz:PATH)")
        return self._evaluate_onnx(data, options)

    def _evaluate_onnx(self, data: str, options: dict[str, Any]) -> dict[str, Any]:
        import torch

        from cnnkit.data.datasets import in_classes
        from cnnkit.data.sources import SourceOptions, load_data
        from cnnkit.evaluate.metrics import classification_metrics

        bundle = load_data(data, options=SourceOptions(data_dir=options.get("data_dir"), preprocess=self.preprocess,
                                                       test_split=0.0))
        split = bundle.test if bundle.test is not None else bundle.whole()
        if split is None:
            raise CnnkitError(f"{data}: no images to evaluate on")
        split = in_classes(split, bundle.class_names, self.class_names, source=data)
        probs = np.concatenate([self._run(self.preprocess.exported_input(split.batch(index)))
                                for index in torch.arange(len(split)).split(256)])  # bounded memory
        top_k = options.get("top_k", TrainConfig.top_k)
        return classification_metrics(probs, split.labels.numpy(), class_names=self.class_names,
                                      top_k=top_k if top_k < len(self.class_names) else None)


def calibrate(run: str | Path, **options: Any) -> Calibration:
    """Fit the run's softmax temperature on held-out data (`cnnkit calibrate`): a Calibration with the temperature
    and the log loss and ECE before and after; `options`: its flags (`data=`, `reset=True`...)."""
    from cnnkit.config import CalibrateConfig
    from cnnkit.evaluate.temperature import calibrate_run

    return calibrate_run(from_keywords(CalibrateConfig, options, base=CalibrateConfig(run=Path(run))))


def export(run: str | Path, **options: Any) -> ExportResult:
    """Export a run to ONNX (RUN/export), checked against PyTorch; `options`: `cnnkit export` flags."""
    from cnnkit.deploy.onnx import export_run

    return export_run(from_keywords(ExportConfig, options, base=ExportConfig(run=Path(run))))


def serve(paths: list[str | Path], **options: Any) -> None:
    """Serve exported runs over the TensorFlow Serving REST API until interrupted; `options`: `cnnkit serve`
    flags (`port=`, `host=`, `max_batch=`...; `brands=GALLERY` adds the phishing app's verdicts)."""
    from cnnkit.apps.phishing.serving import server_hooks
    from cnnkit.serving.main import serve as run_server

    gallery = options.pop("brands", None)
    base = ServeConfig(paths=tuple(Path(p) for p in paths))
    run_server(from_keywords(ServeConfig, options, base=base),
               hooks=server_hooks(Path(gallery) if gallery is not None else None))
