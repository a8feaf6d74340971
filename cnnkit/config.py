"""Typed settings for each command, each option declared once (see cnnkit.options).

The CLI flags and the Python API's keyword arguments are generated from these declarations, and validation runs
in the configs themselves, so the library and the command line accept and refuse the same things. No torch here:
the server imports this module.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

from cnnkit.errors import CnnkitError
from cnnkit.options import check, from_keywords, option, section

Device = Literal["auto", "cpu", "cuda"]
Normalize = Literal["auto", "dataset", "unit", "imagenet"]
Scheduler = Literal["none", "plateau", "cosine", "onecycle", "linear"]
Resize = Literal["squash", "center-crop", "top-crop"]
TTA = Literal["none", "flip", "flip-shift"]
DEVICE_HELP = "auto picks CUDA when PyTorch sees a GPU, else the CPU"
DEFAULT_FOLDS = 5  # `cnnkit cv --folds` and cross_validate(folds=)


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning-rate schedule, stepped per epoch (plateau) or per batch (cosine, onecycle, linear)."""

    name: Scheduler = section("schedule and early stopping",
                              option("none", flag="scheduler", help="learning-rate schedule"))
    warmup_epochs: float = option(0.0, low=0, help="cosine: linear warm-up from 0; onecycle, linear: the rising phase")
    # --monitor-metric for torchrun run by hand, whose parser refuses --monitor (its --monitor-interval).
    monitor: str = option("val_loss", flag=("monitor", "monitor-metric"),
                          help="history key that picks the best epoch, drives plateau and early stopping")
    factor: float = option(0.1, flag="plateau_factor", low=0, high=1, help="plateau: multiply the LR by this")
    patience: int = option(2, flag="plateau_patience", low=0, help="plateau: epochs without improvement")
    min_lr: float = option(0.0, low=0, help="the LR never goes below this")

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class TrainConfig:
    """Everything `cnnkit train` needs; saved as config.json in the run directory."""

    data: str = option("", cli=False, help="cifar10 | folder:PATH | npz:PATH | csv:PATH (a bare folder, .npz or .csv "
                       "path works too)")
    model: str = section("model and run directory", option(
        "simple-cnn", help="a registered model (cnnkit models) or timm/NAME"))
    out: Path | None = option(None, help="the run directory, exactly (default: PROJECT/NAME, numbered if taken)")
    project: Path = option(Path("runs"), help="where named runs go")
    name: str | None = option(None, help="run name under --project (default: the model's); NAME-2, NAME-3... if taken")
    exist_ok: bool = option(False, help="reuse --project/--name even if it holds a run (replacing it)")
    epochs: int = section("optimisation", option(
        10, low=1, help="epochs (with --freeze-base: of head training); with --resume: the new total"))
    batch_size: int = option(64, low=1, help="images per step")
    lr: float = option(1e-3, low=0, help="learning rate")
    optimizer: Literal["adam", "adamw", "sgd"] = option("adam", help="optimizer")
    weight_decay: float = option(0.0, low=0, help="weight decay")
    momentum: float = option(0.9, low=0, high=0.999, help="SGD momentum (Nesterov)")
    norm_lr_scale: float = option(1.0, low=1e-6, help="normalisation layers train at this multiple of the LR "
                                  "(their weight decay divided by it)")
    label_smoothing: float = option(0.0, low=0, high=0.99, help="label smoothing of the cross-entropy")
    clip_grad_norm: float = option(0.0, low=0, help="scale each step's gradients down to this global L2 norm where "
                                   "it is larger (0: off); steadies training that spikes or diverges")
    class_weight: Literal["none", "balanced"] = option(
        "none", help="balanced: weight each class's training loss by n / (classes x its images), as Keras's "
        "class_weight and scikit-learn's 'balanced' (imbalanced data; validation and test losses stay unweighted)")
    sampler: Literal["shuffle", "balanced"] = option(
        "shuffle", help="the order of an epoch's images: shuffle (each image once) or balanced (imbalanced data: as "
        "many draws, with replacement, every class equally likely; instead of --class-weight balanced)")
    data_dir: Path | None = section("data and preprocessing", option(
        None, help="where the data source's files are (cifar10: train.npz, test.npz)"))
    val_split: float = option(0.1, low=0, high=0.9, help="fraction of the training data held out for validation")
    test_split: float = option(0.2, low=0, high=0.9, help="data without a test split of its own (a folder tree without "
                               "test/, a CSV without a split column, an .npz of x/y): the fraction held out for test")
    test_source: str | None = option(None, help="folder trees of SOURCE/CLASS/ folders: these sources (comma-"
                                     "separated) are the test split, the others are trained on (cross-source)")
    folder_layout: Literal["auto", "classes", "sources"] = option(
        "auto", help="folder sources: classes: each top folder is a class, its images at any depth (torchvision's "
        "ImageFolder); sources: ROOT/SOURCE/CLASS/ collections, pooled by class folder (or split by --test-source); "
        "auto: sources when every top folder holds the same two or more subfolders and no files, else classes")
    fold: str = option("", help="I/K: train on k-fold cross-validation's I-th fold: the source's images pooled, cut "
                       "into K stratified folds, the I-th the test split (cnnkit cv runs them all)")
    input_size: int | None = option(None, low=8, high=4096, help="input side in pixels (default: the model's)")
    normalize: Normalize = option("auto", help="auto: the pretrained weights' mean/std, else the training images'")
    resize: Resize = option("squash", help="how images reach the square input: squash, center-crop or top-crop")
    crop_browser_frame: bool = option(False, help="screenshots: crop a browser frame (tab strip, address bar) "
                                      "captured at the top, in training and in every prediction")
    first_screen: bool = option(False, help="screenshots: bring every image to one capture format (1024 px wide, "
                                "the top 1024x768, one JPEG encoding) in training and in every prediction, so that "
                                "capture size and encoding cannot become features")
    augment: str = section("augmentation", option(
        "none", help="none | standard | screenshot | a spec like flip,rotate=0.1,zoom=0.1"))
    mixup: float = option(0.0, low=0, high=10, help="MixUp: blend each training image with another, and their labels, "
                          "by a weight drawn from Beta(a, a) per batch (0: off; 0.2-0.4 is usual)")
    cutmix: float = option(0.0, low=0, high=10, help="CutMix: paste a box of another training image, labels "
                           "weighted by area drawn from Beta(a, a) (0: off; 1.0 is usual); with --mixup: one of the "
                           "two per batch")
    pretrained: bool = section("transfer learning", option(False, help="start from ImageNet weights"))
    weights: Path | None = option(None, help="pretrained weights file (.safetensors or a .pth state dict)")
    freeze_base: bool = option(False, help="train a new head on the frozen pretrained base")
    head_hidden: int = option(128, low=0, help="units of the new head's hidden layer (0: none)")
    head_dropout: float = option(0.3, low=0, high=0.99, help="dropout of the new head")
    drop_path: float = option(0.0, low=0, high=0.9, help="stochastic depth: residual blocks skipped at random in "
                              "training, the deepest at this rate (timm's drop_path_rate; 0.1-0.2 is usual for "
                              "EfficientNet and ResNet fine-tuning); models without residual blocks refuse it")
    finetune_epochs: int = option(0, low=0, help="then train this many epochs with the base unfrozen")
    finetune_lr: float = option(1e-5, low=0, help="learning rate while fine-tuning")
    unfreeze: str = option("all", help="for fine-tuning: all | last-K (blocks of the base)")
    schedule: ScheduleConfig = option(factory=ScheduleConfig, cli=False, help="learning-rate schedule")
    early_stopping: int = option(0, low=0, help="stop after this many epochs without improvement (0: off); with "
                                 "--finetune-epochs, per phase: fine-tuning then starts from the best head weights")
    device: Device = section("device, precision, memory and data loading", option("auto", help=DEVICE_HELP))
    precision: Literal["auto", "fp32", "bf16", "fp16"] = option(
        "auto", help="bf16: autocast (fast on AVX512-BF16/AMX CPUs and GPUs); fp16: autocast with loss scaling "
        "(GPUs without bf16: T4, V100); auto: bf16 where fast, fp16 on CUDA GPUs with fp16 tensor cores but no bf16, "
        "fp32 elsewhere; on CPUs, depthwise convolutions being trained (EfficientNet, MobileNet) stay fp32")
    channels_last: bool = option(True, help="channels-last memory layout")
    max_memory: float = option(0.0, low=0, help="GiB the training process may use; where a step would take more "
                               "than what is left, gradient checkpointing, then micro-batches, keep it within (0: 0.7 "
                               "of the machine's RAM, or of the GPU's memory)")
    grad_checkpointing: Literal["auto", "on", "off"] = option(
        "auto", help="recompute activations during backward instead of keeping them (timm models); auto: when the "
        "step would exceed --max-memory")
    micro_batch: int = option(0, low=0, help="images per forward/backward pass, gradients accumulated over the batch "
                              "(0: the whole batch, or what --max-memory needs)")
    workers: int = option(4, low=1, help="threads decoding image files")
    cache_dir: Path | None = option(None, help="where folder data is cached decoded, for later runs and other ranks "
                                    "(default: $CNNKIT_CACHE_DIR or ~/.cache/cnnkit/images)")
    no_cache: bool = option(False, help="decode folder data into memory on every run (no cache)")
    seed: int = section("run control and reporting", option(
        0, low=0, help="random seed (splits, initialisation, shuffling, augmentation)"))
    strict: bool = option(False, help="stop on unreadable images and data warnings instead of going on")
    overwrite: bool = option(False, help="replace an existing run in the run directory")
    resume: bool = option(False, help="continue the run directory's run from its last checkpoint")
    quiet: bool = option(False, help="print nothing but errors")
    top_k: int = option(3, low=1, help="also report top-k accuracy (dropped when k >= the number of classes)")
    test_every_epoch: bool = option(False, help="also evaluate the test split each epoch (reported only)")
    tensorboard: bool = option(False, help="also write each epoch's losses, metrics and learning rate as TensorBoard "
                               "logs in RUN/tensorboard/ (Keras's layout; `tensorboard --logdir runs`); needs "
                               "tensorboardX: pip install 'cnnkit[tensorboard]'")
    ema_decay: float = section("weight averaging and test-time augmentation", option(
        0.0, low=0, high=0.99999, help="keep a moving average of the weights (per step)"))
    lookahead_steps: int = option(0, low=0, help="lookahead weight averaging every K steps (0: off)")
    tta: TTA = option("none", const="flip", help="test-time augmentation in evaluation, prediction and export "
                      "(--tta alone: flip)")

    def __post_init__(self) -> None:
        check(self)
        if self.weights is not None and not self.pretrained:
            object.__setattr__(self, "pretrained", True)  # a weights file is a pretrained start
        if not self.data and not self.resume:
            raise CnnkitError("no data source given (cifar10, folder:PATH, npz:PATH or csv:PATH)")
        if self.finetune_epochs and not self.freeze_base:
            raise CnnkitError("--finetune-epochs needs --freeze-base (a pretrained base with a new head)")
        if self.freeze_base and not self.pretrained:
            raise CnnkitError("--freeze-base needs --pretrained or --weights PATH")
        if not re.fullmatch(r"all|none|last-[1-9]\d*", self.unfreeze):
            raise CnnkitError(f"--unfreeze {self.unfreeze!r}: expected all, none or last-K (K >= 1)")
        if self.lr <= 0 or self.finetune_lr <= 0:
            raise CnnkitError("--lr and --finetune-lr must be greater than 0")
        if self.fold and self.fold_spec is None:
            raise CnnkitError(f"--fold {self.fold!r}: expected I/K with 1 <= I <= K and K >= 2, as 2/5")
        if self.fold and self.test_sources:
            raise CnnkitError("--fold and --test-source both choose the test split: give one")
        if self.sampler == "balanced" and self.class_weight == "balanced":
            raise CnnkitError("--sampler balanced and --class-weight balanced both correct for class imbalance (the "
                              "two together weight the minority twice over): give one")
        if self.test_sources and self.folder_layout == "classes":
            raise CnnkitError("--test-source names SOURCE folders: it needs --folder-layout sources (or auto)")
        if self.name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name):
            raise CnnkitError(f"--name {self.name!r}: use letters, digits, '.', '_' and '-'")
        from cnnkit.augment_spec import parse_augment

        parse_augment(self.augment)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    @property
    def image_cache(self) -> Path | None:
        """Where folder data's decoded images are cached (data.cache); None: decoded into memory (--no-cache)."""
        if self.no_cache:
            return None
        return self.cache_dir or default_cache_dir()

    @property
    def test_sources(self) -> tuple[str, ...]:
        """The source folders held out as the test split (--test-source a,b)."""
        return tuple(s.strip() for s in (self.test_source or "").split(",") if s.strip())

    @property
    def fold_spec(self) -> tuple[int, int] | None:
        """(I, K) of --fold I/K; None without one, or when it is malformed."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", self.fold)
        if match is None:
            return None
        fold, folds = int(match[1]), int(match[2])
        return (fold, folds) if folds >= 2 and 1 <= fold <= folds else None

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.finetune_epochs

    def monitor_name(self) -> str:
        """The history key that picks the best epoch (and drives plateau and early stopping)."""
        return self.schedule.monitor

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """A saved config.json; keys this version does not know are ignored."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["schedule"] = ScheduleConfig(**values.get("schedule", {}))
        if isinstance(values.get("tta"), bool):  # runs from before the TTA modes
            values["tta"] = "flip" if values["tta"] else "none"
        return cls(**values)


# Named presets for `--recipe NAME` (and `recipe=` in the API): partial configs, by keyword. Values the user gives
# always win, whatever they are, also when they equal a default.
RECIPES: dict[str, dict[str, Any]] = {
    # A fast CIFAR-10 recipe after airbench94 (Keller Jordan, 2024), re-derived for this code base: the whitened,
    # identity-initialised net of cnnkit.models.fast; batch 1024; Nesterov SGD whose LR rises linearly for 2 epochs
    # and falls linearly to 0; BatchNorm shifts at 64x the LR; label smoothing; flips and 2-pixel translations;
    # lookahead averaging every 5 steps; flip-and-shift TTA; bf16 autocast. airbench's per-sum LR 11.5/7851 and
    # decoupled decay 0.0153 per 1024 images become lr 1.5 and weight_decay 0.002 / 1.5 for a mean loss here.
    "cifar-fast": {
        "model": "cifar-fast-net", "epochs": 10, "batch_size": 1024, "lr": 1.5, "optimizer": "sgd",
        "momentum": 0.85, "weight_decay": 0.002 / 1.5, "norm_lr_scale": 64.0, "label_smoothing": 0.2,
        "augment": "flip,shift=2", "scheduler": "linear", "warmup_epochs": 2, "monitor": "val_accuracy",
        "precision": "bf16", "lookahead_steps": 5, "tta": "flip-shift", "val_split": 0.02,
    },
}


def train_config(data: str = "", *, recipe: str | None = None, **values: Any) -> TrainConfig:
    """A TrainConfig from keyword options named as the CLI flags (`scheduler=`, `warmup_epochs=`...), over a
    recipe's values. What is given here wins over the recipe, always."""
    preset: dict[str, Any] = {}
    if recipe is not None:
        if recipe not in RECIPES:
            from cnnkit.options import did_you_mean

            raise CnnkitError(f"unknown recipe {recipe!r}; valid: {', '.join(RECIPES)}"
                              + did_you_mean(recipe, list(RECIPES)))
        preset = dict(RECIPES[recipe])
    return from_keywords(TrainConfig, {**preset, **values, "data": data})


@dataclass(frozen=True)
class EvaluateConfig:
    run: Path = option(cli="positional", help="the run directory")
    data: str | None = option(None, help="another data source with the same classes, evaluated whole: its "
                                   "test part where it has one, else every image (default: the run's test split)")
    data_dir: Path | None = option(None, help="where that data source's files are")
    top_k: int | None = option(None, low=1, help="top-k accuracy (default: the run's)")
    batch_size: int = option(0, low=0, help="images per forward pass (0: on a CPU, as many as keep each layer's "
                             "output under malloc's memory-map threshold, at most 256; 256 on a GPU)")
    device: Device = option("auto", help=DEVICE_HELP)
    target_fpr: float | None = option(None, low=1e-6, high=0.5,
                                      help="binary: choose and store the threshold for this false-positive rate")
    positive: str | None = option(None, help="binary: the positive class (default: phishing, or the second class)")
    calibration_data: str | None = option(None, help="binary: choose the --target-fpr threshold on this data source "
                                          "(all of it) instead of the run's validation split")

    def __post_init__(self) -> None:
        check(self)
        if self.calibration_data is not None and self.target_fpr is None:
            raise CnnkitError("--calibration-data is for choosing a threshold: give --target-fpr too")


@dataclass(frozen=True)
class CalibrateConfig:
    """`cnnkit calibrate`: fit the softmax temperature of a run's best weights on held-out data."""

    run: Path = option(cli="positional", help="the run directory")
    data: str | None = option(None, help="fit on this data source (all of it: held-out images, neither the run's "
                              "training nor its test data) instead of the run's validation split")
    data_dir: Path | None = option(None, help="where that data source's files are")
    device: Device = option("auto", help=DEVICE_HELP)
    reset: bool = option(False, help="remove the fitted temperature: probabilities are the plain softmax again")

    def __post_init__(self) -> None:
        check(self)
        if self.reset and self.data is not None:
            raise CnnkitError("--reset fits nothing: give no --data")


@dataclass(frozen=True)
class LRFindConfig:
    """The learning-rate range test's own settings (`cnnkit lr-find`); the training settings are a TrainConfig."""

    start_lr: float = option(1e-7, low=1e-12, help="the sweep's first learning rate")
    end_lr: float = option(10.0, low=1e-12, help="the sweep's last learning rate (it stops earlier if the loss "
                           "diverges)")
    steps: int = option(300, low=20, high=100_000, help="training steps of the sweep, one batch each, the learning "
                        "rate growing geometrically (a network trained from scratch needs a few hundred)")
    plot: Path = option(Path("lr_find.png"), help="PNG of the loss against the learning rate")
    phase: Literal["first", "finetune"] = option(
        "first", help="the phase swept: first (the head's, with --freeze-base, or the whole network's), or finetune "
        "(--freeze-base with --finetune-epochs: the head is trained for --epochs first, nothing written, and the "
        "sweep suggests a --finetune-lr)")

    def __post_init__(self) -> None:
        check(self)
        if self.end_lr <= self.start_lr:
            raise CnnkitError(f"--end-lr {self.end_lr:g} must be above --start-lr {self.start_lr:g}")


@dataclass(frozen=True)
class PredictConfig:
    run: Path = option(cli="positional", help="a run directory, or an export directory (ONNX Runtime)")
    images: tuple[str, ...] = option((), cli="positional", help="image files, http(s) URLs, folders (recursive), "
                                     "globs, or @FILE (one path or URL a line)")
    top_k: int = option(3, low=1, help="classes per image")
    device: Device = option("auto", help=DEVICE_HELP)
    batch_size: int = option(64, low=1, help="images decoded and run at a time (bounds memory)")
    json: bool = option(False, help="print JSON instead of text")
    csv: Path | None = option(None, help="write one row per image to this CSV file")
    jsonl: Path | None = option(None, help="write one JSON object per image to this file")
    resume: bool = option(False, help="with --csv/--jsonl: skip the images the file already has, append the rest")

    def __post_init__(self) -> None:
        check(self)
        if self.csv is not None and self.jsonl is not None:
            raise CnnkitError("give --csv or --jsonl, not both")
        if self.resume and self.csv is None and self.jsonl is None:
            raise CnnkitError("--resume continues an output file: give --csv FILE or --jsonl FILE")


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
    data: str = option(cli="positional", help="data source")
    out: Path = option(Path("augment.png"), help="PNG to write")
    augment: str = option("standard", help="policy or spec, as for train")
    data_dir: Path | None = option(None, help="where the data source's files are")
    input_size: int | None = option(None, low=8, help="pixels (default: the images' own for arrays, 128)")
    images: int = option(8, low=1, high=64, help="how many originals")
    samples: int = option(4, low=1, high=16, help="augmented samples per original")
    seed: int = option(0, low=0, help="random seed")

    def __post_init__(self) -> None:
        check(self)


def default_cache_dir() -> Path:
    """Where decoded folder images are cached unless --cache-dir says otherwise."""
    return Path(os.environ.get("CNNKIT_CACHE_DIR") or Path.home() / ".cache/cnnkit/images")


@dataclass(frozen=True)
class CacheConfig:
    cache_dir: Path | None = option(None, help="the cache directory (default: $CNNKIT_CACHE_DIR or "
                                    "~/.cache/cnnkit/images)")
    prune: bool = option(False, help="remove unfinished builds, and entries that a later one of the same folders "
                         "replaced; never one that a run is building or opening")
    everything: bool = option(False, flag="all", help="with --prune: every entry no run is building or opening")
    unused_days: float | None = option(None, low=0, help="with --prune: also entries no run has read for this many "
                                       "days")

    def __post_init__(self) -> None:
        check(self)
        if (self.everything or self.unused_days is not None) and not self.prune:
            raise CnnkitError("--all and --unused-days choose what --prune removes: add --prune")

    @property
    def directory(self) -> Path:
        return self.cache_dir or default_cache_dir()


@dataclass(frozen=True)
class ExportConfig:
    run: Path = option(cli="positional", help="the run directory")
    out: Path | None = option(None, help="export directory (default: RUN/export)")
    format: Literal["onnx", "saved_model", "tflite", "all"] = option(
        "onnx", help="export format; ONNX is always written (the server's format), saved_model (TensorFlow "
        "Serving) and tflite (LiteRT) are converted from it and need `pip install 'cnnkit[tf]'`")
    opset: int = option(18, low=13, help="ONNX opset")
    tolerance: float = option(1e-4, low=0, help="largest allowed |export - PyTorch| difference of a probability, "
                              "on random images and the run's own")
    quantize: Literal["none", "int8"] = option("none", help="int8: also write model.int8.onnx (static INT8, "
                                               "calibrated on the run's images), checked on its test split")
    calibration: int = option(300, low=1, help="images (from the run's training and validation splits, fixed "
                              "seed) that calibrate the INT8 model")
    max_drop: float = option(1.0, low=-100, high=100, help="refuse an INT8 model whose top-1 is more than this many "
                             "points below fp32's")
    force: bool = option(False, help="keep an INT8 model that fails --max-drop")

    @property
    def tf_formats(self) -> tuple[str, ...]:
        """The TensorFlow-side formats asked for."""
        return ("saved_model", "tflite") if self.format == "all" else () if self.format == "onnx" else (self.format,)

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class ServeConfig:
    """What `cnnkit serve` serves and how."""

    paths: tuple[Path, ...] = option((), cli=False, help="run dirs, export dirs, or NAME/ dirs of VERSION/ subdirs")
    named: tuple[tuple[str, Path], ...] = option((), cli=False, help="--model NAME=PATH")
    labels: tuple[tuple[str, str, int], ...] = option((), cli=False, help="--label NAME:LABEL=VERSION")
    host: str = option("127.0.0.1", help="address to bind (default: loopback only)")
    port: int = option(8501, low=0, high=65535, help="TCP port")
    max_batch: int = option(32, low=1, help="images per ONNX Runtime call")
    max_wait_ms: float = option(0.0, low=0, help="extra wait for a fuller batch (0: run what is queued at once)")
    max_queue: int = option(1024, low=1, help="waiting model calls (a request's images in groups of "
                            "--max-batch) before answering 429")
    max_queue_wait: float = option(1.0, low=0, help="seconds a request may wait in the parsing, decoding and model "
                                   "queues, all together, from its body's arrival (judged by the measured cost of "
                                   "the work queued ahead); more is answered 429 with Retry-After at once (0: no "
                                   "limit)")
    max_body_mb: float = option(16.0, low=0.001, help="largest request body, MiB (413 above it)")
    threads: int = option(0, low=0, help="ONNX Runtime threads per model version (0: one per core)")
    lanes: int = option(0, low=0, help="batches that may run at once under load, splitting the threads between them "
                        "(0: one per thread, at most 4; 1: every batch uses every thread)")
    top_k: int = option(5, low=1, help="classes in a :classify answer")
    precision: Literal["fp32", "int8"] = option("fp32", help="int8: serve each export's INT8 variant (cnnkit "
                                                "export --quantize int8); answers keep their form")
    allowed_hosts: str | None = option(None, help="host names a request's Host header may give, comma-separated "
                                       "(default: the bound address and loopback names; any for 0.0.0.0)")
    cors_origin: str | None = option(None, help="web origins whose pages may call the API, comma-separated "
                                     "(default: none but the server's own page)")
    docs: bool = option(False, help="serve the OpenAPI docs at /docs (they load scripts from a public CDN)")
    # Request budgets: what one request, and all requests at once, may ask of the decoder (see README, Security).
    max_images: int = option(1024, low=1, help="images in one request (400 above it)")
    max_request_mpx: float = option(128.0, low=0.001, help="decoded pixels of one request's images together, "
                                    "megapixels, read from their headers before decoding (413 above it)")
    decode_budget_mb: float = option(1024.0, low=1, help="memory that images being decoded may hold at once, "
                                     "MiB; a request that would go over it waits for none: 429 with Retry-After")
    decode_timeout: float = option(10.0, low=0.01, help="seconds a request's images may take to decode (503)")
    decode_threads: int = option(0, low=0, help="threads decoding images (0: one per core); images of over 4 Mpx "
                                 "a request decode on a separate pool of half as many, so small requests never wait "
                                 "behind them")
    body_budget_mb: float = option(512.0, low=1, help="request bodies being received at once, MiB (429 above it)")
    # HTTP limits, enforced by the server's own protocol class (serving.http): uvicorn's parser has no header limits.
    max_header_kb: float = option(64.0, low=1, help="a request's line and headers together, KiB (400, or 431 while a "
                                  "header is still arriving)")
    max_headers: int = option(100, low=1, help="header fields in one request (431 above it)")
    header_timeout: float = option(10.0, low=0.01, help="seconds a connection may take to send a request's line "
                                   "and headers, counted from its first byte or from the connection (408)")
    body_timeout: float = option(30.0, low=0.01, help="seconds a request body may take to arrive (408)")
    keep_alive: float = option(5.0, low=0.01, help="seconds an idle keep-alive connection stays open")
    max_connections: int = option(0, low=0, help="open connections; at the cap the one waiting longest for a request "
                                  "head is closed (408) to make room, else the new one gets 503 (0: 1,000, or the "
                                  "process's file-descriptor limit less 100 if lower)")

    def __post_init__(self) -> None:
        check(self)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)


@dataclass(frozen=True)
class ExplainConfig:
    run: Path = option(cli="positional", help="the run directory")
    image: Path = option(cli="positional", help="the image to explain")
    out: Path = option(Path("heat.png"), help="PNG to write")
    label: str | None = option(None, help="explain this class (default: the predicted one)")

    def __post_init__(self) -> None:
        check(self)
