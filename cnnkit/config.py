"""Typed settings for each command. The CLI parses into these; the library takes nothing else."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

Device = Literal["auto", "cpu", "cuda"]
Normalize = Literal["auto", "dataset", "unit", "imagenet"]
Scheduler = Literal["none", "plateau", "cosine", "onecycle", "linear"]
TTA = Literal["none", "flip", "flip-shift"]


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning-rate schedule, stepped per epoch (plateau) or per batch (cosine, onecycle)."""

    name: Scheduler = "none"
    warmup_epochs: float = 0.0  # cosine: linear warm-up from 0; onecycle, linear: the rising phase
    monitor: str = "val_loss"  # plateau and early stopping watch this history key
    factor: float = 0.1  # plateau: multiply the LR by this on a plateau
    patience: int = 2  # plateau: epochs without improvement before lowering the LR
    min_lr: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    """Everything `cnnkit train` needs; saved as config.json in the run directory."""

    data: str
    out: Path
    model: str = "simple-cnn"
    data_dir: Path | None = None
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    norm_lr_scale: float = 1.0  # normalisation layers: LR times this, weight decay divided by it
    label_smoothing: float = 0.0
    val_split: float = 0.1
    test_split: float = 0.2  # folder trees without a test/ subtree
    input_size: int | None = None  # default: the model's own
    normalize: Normalize = "auto"
    resize: Literal["squash", "center-crop", "top-crop"] = "squash"
    top_k: int = 3
    augment: str = "none"  # policy name or spec, see cnnkit.data.augment
    pretrained: bool = False
    weights: Path | None = None  # local pretrained weights (.safetensors, or .pth read with weights_only=True)
    freeze_base: bool = False  # train a new head on the frozen pretrained base
    head_hidden: int = 128  # the new head: GAP -> Dense(head_hidden, relu) -> Dropout -> Dense(N)
    head_dropout: float = 0.3
    finetune_epochs: int = 0  # after `epochs`, continue with the base unfrozen
    finetune_lr: float = 1e-5
    unfreeze: str = "all"  # all | last-K blocks of the base, for fine-tuning
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    early_stopping: int = 0  # patience in epochs; 0 = off
    seed: int = 0
    device: Device = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    channels_last: bool = True
    strict: bool = False
    overwrite: bool = False
    resume: bool = False
    workers: int = 4
    quiet: bool = False
    test_every_epoch: bool = False  # also report test metrics each epoch (never used to pick weights)
    ema_decay: float = 0.0  # > 0: evaluate and keep an exponential moving average of the weights (per step)
    lookahead_steps: int = 0  # > 0: lookahead weight averaging every this many steps (see train.optim)
    tta: TTA = "none"  # test-time augmentation in evaluation, prediction and export (see models.tta)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.finetune_epochs

    def monitor_name(self) -> str:
        """The history key that picks the best epoch (and drives plateau and early stopping)."""
        return self.schedule.monitor

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["out"] = Path(values["out"])
        for key in ("data_dir", "weights"):
            if values.get(key):
                values[key] = Path(values[key])
        values["schedule"] = ScheduleConfig(**values.get("schedule", {}))
        if isinstance(values.get("tta"), bool):  # runs from before the TTA modes
            values["tta"] = "flip" if values["tta"] else "none"
        return cls(**values)


# Named presets for `cnnkit train --recipe NAME`: values for the flags the user leaves at their defaults.
RECIPES: dict[str, dict[str, Any]] = {
    # A fast CIFAR-10 recipe after airbench94 (Keller Jordan, 2024), re-derived for this code base: the whitened,
    # identity-initialised net of cnnkit.models.fast; batch 1024; Nesterov SGD whose LR rises linearly for 2 epochs
    # and falls linearly to 0; BatchNorm shifts at 64x the LR; label smoothing; flips and 2-pixel translations;
    # lookahead averaging every 5 steps; flip-and-shift TTA; bf16 autocast. airbench's per-sum LR 11.5/7851 and
    # decoupled decay 0.0153 per 1024 images become lr 1.5 and weight_decay 0.002 / 1.5 for a mean loss here.
    "cifar-fast": {
        "model": "cifar-fast-net", "epochs": 10, "batch_size": 1024, "lr": 1.5, "optimizer": "sgd",
        "momentum": 0.85, "weight_decay": 0.002 / 1.5, "norm_lr_scale": 64.0, "label_smoothing": 0.2,
        "augment": "flip,shift=2", "schedule": ScheduleConfig(name="linear", warmup_epochs=2, monitor="val_accuracy"),
        "precision": "bf16", "lookahead_steps": 5, "tta": "flip-shift", "val_split": 0.02,
    },
}


@dataclass(frozen=True)
class EvaluateConfig:
    run: Path
    data: str | None = None  # default: the run's own data source and test split
    data_dir: Path | None = None
    top_k: int | None = None
    batch_size: int = 256
    device: Device = "auto"
    target_fpr: float | None = None  # binary runs: choose the threshold on validation data for this FPR
    positive: str | None = None  # binary runs: the positive class (default: "phishing" or the second class)


@dataclass(frozen=True)
class PredictConfig:
    run: Path
    images: tuple[Path, ...]
    top_k: int = 3
    device: Device = "auto"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


@dataclass(frozen=True)
class PreviewConfig:
    data: str
    out: Path
    augment: str = "standard"
    data_dir: Path | None = None
    input_size: int | None = None  # default: array images' own size, else 128
    images: int = 8
    samples: int = 4
    seed: int = 0


@dataclass(frozen=True)
class ExportConfig:
    run: Path
    out: Path | None = None  # default: RUN/export
    format: Literal["onnx"] = "onnx"
    opset: int = 18
    tolerance: float = 1e-4  # largest allowed |ONNX - PyTorch| difference of a class probability


@dataclass(frozen=True)
class ServeConfig:
    """What `cnnkit serve` serves and how."""

    paths: tuple[Path, ...] = ()  # run dirs, export dirs, or TF-Serving-style NAME/VERSION/ trees
    named: tuple[tuple[str, Path], ...] = ()  # --model NAME=PATH
    labels: tuple[tuple[str, str, int], ...] = ()  # --label NAME:LABEL=VERSION
    host: str = "127.0.0.1"
    port: int = 8501
    max_batch: int = 32
    max_wait_ms: float = 0.0  # extra wait for a fuller batch; 0 = run whatever is queued at once
    max_queue: int = 1024  # requests waiting for a batch before the server answers 429
    max_body_bytes: int = 16 * 1024 * 1024
    threads: int = 0  # ONNX Runtime threads per model version; 0 = one per core
    lanes: int = 0  # model calls that may run at once, sharing the threads; 0 = one per thread, at most 4
    top_k: int = 5  # :classify answers with this many classes


@dataclass(frozen=True)
class ExplainConfig:
    run: Path
    image: Path
    out: Path
    label: str | None = None  # explain this class instead of the predicted one


@dataclass(frozen=True)
class DemoConfig:
    out: Path
    count: int = 200  # screenshots in all, half of them phishing
    width: int = 1280
    height: int = 800
    seed: int = 0


@dataclass(frozen=True)
class CaptureConfig:
    urls: Path  # a text file: one URL per line; blank lines and # comments are skipped
    out: Path
    label: str | None = None  # screenshots go to OUT/LABEL/ (a folder data set) or OUT/ without one
    width: int = 1280
    height: int = 800
    timeout_s: float = 20.0  # per page load
    full_page: bool = False
    browser: Path = Path("/usr/bin/chromium")
    driver: Path = Path("/usr/bin/chromedriver")
