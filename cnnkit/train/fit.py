"""`train(config)`: data, model and run directory in; a trained, evaluated run directory out."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from cnnkit import __version__
from cnnkit.config import TrainConfig
from cnnkit.data.augment import Augmenter, build_augmenter
from cnnkit.data.datasets import ArrayData, DataBundle
from cnnkit.data.loader import epoch_order, shard_batches
from cnnkit.data.preprocess import Preprocess
from cnnkit.data.sources import SourceOptions, dataset_stats, load_data
from cnnkit.errors import CnnkitError
from cnnkit.evaluate.plots import learning_curves
from cnnkit.evaluate.report import evaluate_model
from cnnkit.models import count_params, default_input_size
from cnnkit.models.network import InitializedFromData, NetworkConfig, build_network
from cnnkit.models.pretrained import WeightsInfo
from cnnkit.models.transfer import TransferNet, set_base_trainable
from cnnkit.rundir import RunDir
from cnnkit.train.callbacks import BestTracker
from cnnkit.train.checkpoint import (
    CHECKPOINT,
    TrainingState,
    checkpoint_epoch,
    load_checkpoint,
    save_checkpoint,
)
from cnnkit.train.distributed import DistContext, process_group, resolve_device
from cnnkit.train.engine import StepSettings, evaluate_data, train_one_epoch
from cnnkit.train.optim import Lookahead, build_optimizer
from cnnkit.train.schedules import Schedule, build_schedule

WEIGHTS_BEST = "model.safetensors"
WEIGHTS_LAST = "last.safetensors"


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict[str, Any]]
    metrics: dict[str, Any]


@dataclass
class _Session:
    """Everything one training run holds while it runs."""

    config: TrainConfig
    run: RunDir
    data: DataBundle
    preprocess: Preprocess
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    tracker: BestTracker
    settings: StepSettings
    ctx: DistContext
    history: list[dict[str, Any]]
    augment: Augmenter | None
    weights: WeightsInfo | None
    ema: AveragedModel | None = None  # weight averaging: what is evaluated and saved when enabled
    lookahead: Lookahead | None = None
    phase: str = "train"  # "train", or "head" then "finetune" for transfer learning
    elapsed_s: float = 0.0

    def log(self, message: str) -> None:
        if self.ctx.is_main and not self.config.quiet:
            print(message, flush=True)

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated, tested and saved: the moving average when there is one."""
        return self.ema.module if self.ema is not None else _unwrap(self.model)

    def after_batch(self) -> None:
        self.schedule.after_batch()
        if self.lookahead is not None:
            self.lookahead.after_batch()
        if self.ema is not None:
            self.ema.update_parameters(_unwrap(self.model))


def train(config: TrainConfig) -> TrainResult:
    """Train `config.model` on `config.data`, writing the run directory `config.out`; return history and metrics.

    Under torchrun the same call trains data-parallel: every rank runs it, rank 0 alone prints and writes.
    """
    with process_group(config.device) as ctx:
        return _train(config, ctx)


def _train(config: TrainConfig, ctx: DistContext) -> TrainResult:
    if config.resume and not RunDir.started(config.out) and config.data and config.epochs:
        # Stopped before it saved even its settings, so nothing is lost by starting over with this command line.
        if ctx.is_main and config.out.is_dir():
            RunDir(config.out).remove_temporaries()
        ctx.barrier()
        if ctx.is_main and not config.quiet:
            print(f"{config.out}: stopped before its first save; starting it from the beginning", flush=True)
        config = replace(config, resume=False)
    if config.resume:
        config = _resumed_config(config)
    session = _setup(config, ctx)
    start_epoch = _restore(session) if config.resume else 0
    if ctx.is_main and start_epoch == 0:
        _write_run_header(session)
    for epoch in range(start_epoch + 1, config.total_epochs + 1):
        if epoch == config.epochs + 1:
            _start_finetune(session)
        _run_epoch(session, epoch)
        if session.tracker.should_stop:
            session.log(f"Early stopping: no improvement in {session.config.monitor_name()} for "
                        f"{session.tracker.patience} epochs (best epoch {session.tracker.best_epoch})")
            break
    return _finish(session)


def _resumed_config(config: TrainConfig) -> TrainConfig:
    """The saved config of the run being resumed; only the epoch count (0: keep it), device and quiet may change."""
    saved = TrainConfig.from_dict(RunDir.open(config.out).read_json("config.json"))
    if config.epochs > saved.epochs and saved.schedule.name == "onecycle":
        raise CnnkitError(f"a one-cycle schedule ends after its {saved.epochs} epochs and cannot be extended; "
                          "start a new run (or use --scheduler cosine or plateau)")
    return replace(saved, resume=True, epochs=config.epochs or saved.epochs, device=config.device,
                   quiet=config.quiet, overwrite=False)


def _setup(config: TrainConfig, ctx: DistContext) -> _Session:
    torch.manual_seed(config.seed)
    device = resolve_device(config.device, local_rank=ctx.local_rank)
    run = RunDir.open(config.out) if config.resume else _create_run(config, ctx)
    preprocess = Preprocess(input_size=config.input_size or default_input_size(config.model), resize=config.resize)
    data = load_data(config.data, options=SourceOptions(
        data_dir=config.data_dir, preprocess=preprocess, val_split=config.val_split, test_split=config.test_split,
        seed=config.seed, strict=config.strict, workers=config.workers))
    if data.train is None or len(data.train) == 0:
        raise CnnkitError(f"{config.data}: no training images")
    model, weights = build_network(NetworkConfig.of(config, data.num_classes, preprocess.input_size),
                                   load_weights=True)
    preprocess = _normalization(config, preprocess, data.train, weights)
    if not config.resume:
        _init_from_data(model, data.train, preprocess)
    settings = StepSettings(device=device, precision=config.precision, channels_last=config.channels_last,
                            tta=config.tta)
    model = model.to(device, memory_format=torch.channels_last if config.channels_last else torch.contiguous_format)
    model = _distribute(model, ctx, device)
    optimizer = build_optimizer(config, model, lr=config.lr)
    schedule = _schedule(config, optimizer, data.train, lr=config.lr, epochs=config.epochs)
    monitor = config.monitor_name() if data.val is not None else config.monitor_name().removeprefix("val_")
    tracker = BestTracker(monitor=monitor, patience=config.early_stopping)
    session = _Session(config, run, data, preprocess, model, optimizer, schedule, tracker, settings, ctx, history=[],
                       augment=build_augmenter(config.augment), weights=weights,
                       phase="head" if config.freeze_base else "train", ema=_ema(model, config.ema_decay))
    if config.lookahead_steps > 0:
        total_steps = config.total_epochs * _steps_per_epoch(config, data.train)
        session.lookahead = Lookahead(_unwrap(model), total_steps=total_steps, every=config.lookahead_steps)
    if data.skipped:
        session.log(f"Skipped {len(data.skipped)} unusable file(s):\n  " + "\n  ".join(data.skipped))
    return session


def _create_run(config: TrainConfig, ctx: DistContext) -> RunDir:
    run = RunDir.create(config.out, overwrite=config.overwrite) if ctx.is_main else RunDir(config.out)
    ctx.barrier()  # no rank goes on while rank 0 may still be clearing an old run
    return run


def _ema(model: nn.Module, decay: float) -> AveragedModel | None:
    """An exponential moving average of the weights and BatchNorm statistics, updated after every step."""
    if decay <= 0:
        return None
    return AveragedModel(_unwrap(model), multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _distribute(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """Wrap in DistributedDataParallel under torchrun (BatchNorm synchronised across GPUs)."""
    if not ctx.enabled:
        return model
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[device.index])
    return DistributedDataParallel(model)


def _normalization(
    config: TrainConfig, preprocess: Preprocess, train: ArrayData, weights: WeightsInfo | None
) -> Preprocess:
    """Pretrained weights dictate mean, std and interpolation; from scratch, the training images' statistics."""
    if weights is not None and config.normalize == "auto":
        return replace(preprocess, mean=weights.mean, std=weights.std, interpolation=weights.interpolation)
    mode = "dataset" if config.normalize == "auto" else config.normalize
    if mode == "unit":
        return preprocess
    if mode == "imagenet":
        from cnnkit.data.preprocess import IMAGENET_MEAN, IMAGENET_STD

        return replace(preprocess, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    mean, std = dataset_stats(train)
    return replace(preprocess, mean=mean, std=std)


def _schedule(config: TrainConfig, optimizer: torch.optim.Optimizer, train: ArrayData, *, lr: float,
              epochs: int) -> Schedule:
    return build_schedule(config.schedule, optimizer, lr=lr, epochs=max(epochs, 1),
                          steps_per_epoch=_steps_per_epoch(config, train))


def _steps_per_epoch(config: TrainConfig, train: ArrayData) -> int:
    return len(shard_batches(torch.arange(len(train)), batch_size=config.batch_size))


def _init_from_data(model: nn.Module, train: ArrayData, preprocess: Preprocess, *, images: int = 5000) -> None:
    """Layers set from data (a whitening stem) see the first `images` training images, as they will be fed."""
    if isinstance(model, InitializedFromData):  # only then is the sample worth preprocessing
        model.init_from_data(preprocess(train.images[:images]))


def _start_finetune(session: _Session) -> None:
    """Unfreeze the base (all or its last K blocks) and continue with a fresh optimizer at the fine-tuning LR."""
    config = session.config
    model = _unwrap(session.model)
    if not isinstance(model, TransferNet):
        raise CnnkitError("--finetune-epochs needs --freeze-base (a pretrained base with a new head)")
    set_base_trainable(model, config.unfreeze)
    # DDP fixes the set of trainable parameters when it wraps a model: wrap the unfrozen model anew.
    session.model = _distribute(model, session.ctx, session.settings.device)
    session.optimizer = build_optimizer(config, session.model, lr=config.finetune_lr)
    session.schedule = _schedule(config, session.optimizer, session.data.train, lr=config.finetune_lr,
                                 epochs=config.finetune_epochs)
    session.phase = "finetune"
    trainable, frozen = count_params(model)
    session.log(f"Fine-tuning (unfreeze {config.unfreeze}, lr {config.finetune_lr:g}): "
                f"trainable params: {trainable:,}; non-trainable: {frozen:,}")


def _write_run_header(session: _Session) -> None:
    config, run, data = session.config, session.run, session.data
    run.write_json("config.json", {
        **config.to_dict(), "cnnkit_version": __version__, "torch_version": torch.__version__,
        "weights_source": session.weights.source if session.weights else None,
    })
    run.write_json("classes.json", data.class_names)
    run.write_json("preprocess.json", session.preprocess.to_dict())
    trainable, frozen = count_params(session.model)
    sizes = ", ".join(f"{name} {len(split)}" for name, split in (("train", data.train), ("val", data.val),
                                                                ("test", data.test)) if split is not None)
    session.log(f"Data: {config.data} ({data.num_classes} classes; {sizes})")
    source = f", weights {session.weights.source}" if session.weights else ""
    session.log(f"Model: {config.model} at {session.preprocess.input_size}px on {session.settings.device}{source} "
                f"(trainable params: {trainable:,}; non-trainable: {frozen:,})")


def _restore(session: _Session) -> int:
    if session.ctx.is_main:
        session.run.remove_temporaries()
    if not session.run.exists(CHECKPOINT):
        session.log(f"{session.run.path}: no epoch was completed before; starting from the beginning")
        return 0
    if session.config.finetune_epochs and checkpoint_epoch(session.run) > session.config.epochs:
        _start_finetune(session)  # the checkpoint's optimizer belongs to the fine-tuning phase
    state = load_checkpoint(session.run, model=_unwrap(session.model), optimizer=session.optimizer, ema=session.ema)
    session.schedule.load_state_dict(state.schedule)
    session.tracker.load_state_dict(state.tracker)
    session.history, session.elapsed_s = state.history, state.elapsed_s
    session.log(f"Resuming {session.run.path} after epoch {state.epoch} of {session.config.total_epochs}")
    return state.epoch


def _run_epoch(session: _Session, epoch: int) -> None:
    config, data, ctx = session.config, session.data, session.ctx
    assert data.train is not None
    started = time.perf_counter()
    order = epoch_order(len(data.train), seed=config.seed, epoch=epoch, shuffle=True)
    batches = shard_batches(order, batch_size=config.batch_size, rank=ctx.rank, world_size=ctx.world_size)
    lr = session.optimizer.param_groups[0]["lr"]
    # Augmentation draws depend only on (seed, epoch): a resumed run augments exactly as an uninterrupted one.
    generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch + 7)
    if session.lookahead is not None:
        session.lookahead.begin_epoch(step=(epoch - 1) * len(batches))
    row: dict[str, Any] = {"epoch": epoch, "phase": session.phase}
    row |= train_one_epoch(
        session.model, data.train, batches, optimizer=session.optimizer, preprocess=session.preprocess,
        settings=session.settings, label_smoothing=config.label_smoothing, augment=session.augment,
        generator=generator, after_batch=session.after_batch, top_k=config.top_k, ctx=ctx,
        description=f"Epoch {epoch}/{config.total_epochs}", show_progress=not config.quiet)
    if session.lookahead is not None:
        session.lookahead.end_epoch()
    if data.val is not None:
        row |= evaluate_data(session.eval_model, data.val, preprocess=session.preprocess, settings=session.settings,
                             top_k=config.top_k, ctx=ctx, prefix="val_")
    row["lr"] = lr
    row["time_s"] = round(time.perf_counter() - started, 3)
    if config.test_every_epoch and data.test is not None:
        # Reported for learning curves and time-to-accuracy; the best epoch is still chosen on validation data.
        row |= evaluate_data(session.eval_model, data.test, preprocess=session.preprocess, settings=session.settings,
                             top_k=config.top_k, ctx=ctx, prefix="test_")
    session.elapsed_s += row["time_s"]
    session.history.append(row)
    monitored = row.get(session.tracker.monitor)
    if monitored is None:
        raise CnnkitError(f"cannot monitor {session.tracker.monitor!r}; history has {', '.join(row)}")
    improved = session.tracker.update(epoch, monitored)
    session.schedule.after_epoch(monitored)
    if ctx.is_main:
        _save_epoch(session, epoch, improved)
    session.log(_epoch_line(row, config.total_epochs, improved))


def _save_epoch(session: _Session, epoch: int, improved: bool) -> None:
    run, weights = session.run, session.eval_model.state_dict()
    meta = {"model": session.config.model, "epoch": str(epoch)}
    if improved:
        run.write_tensors(WEIGHTS_BEST, weights, metadata=meta)
    run.write_tensors(WEIGHTS_LAST, weights, metadata=meta)
    run.write_json("history.json", session.history)
    run.write_csv("history.csv", session.history)
    # The checkpoint goes last: if the process dies before it, resume repeats this epoch from the previous one.
    state = TrainingState(epoch=epoch, history=session.history, schedule=session.schedule.state_dict(),
                          tracker=session.tracker.state_dict(), elapsed_s=session.elapsed_s)
    save_checkpoint(run, model=_unwrap(session.model), optimizer=session.optimizer, state=state, ema=session.ema)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def _epoch_line(row: dict[str, Any], epochs: int, improved: bool) -> str:
    parts = [f"Epoch {row['epoch']}/{epochs}", f"{row['time_s']:.1f}s"]
    parts += [f"{k}: {v:.4f}" for k, v in row.items() if k not in ("epoch", "phase", "lr", "time_s")]
    parts.append(f"lr: {row['lr']:.2e}")
    return " - ".join(parts) + (" *" if improved else "")


def _finish(session: _Session) -> TrainResult:
    config, run, data = session.config, session.run, session.data
    model = _unwrap(session.model)
    if session.tracker.best_epoch and run.exists(WEIGHTS_BEST) and session.ctx.is_main:
        weights, _ = run.read_tensors(WEIGHTS_BEST)
        model.load_state_dict(weights)
    metrics: dict[str, Any] = {}
    if session.ctx.is_main:
        final = session.history[-1] if session.history else {}
        trainable, frozen = count_params(model)
        metrics = {"best_epoch": session.tracker.best_epoch, "train_time_s": round(session.elapsed_s, 2),
                   "final_train_accuracy": final.get("accuracy"), "params": trainable + frozen,
                   "trainable_params": trainable}
        if data.test is not None and len(data.test):
            metrics |= evaluate_model(model, data.test, run=run, class_names=data.class_names,
                                      preprocess=session.preprocess, settings=session.settings, top_k=config.top_k)
        run.write_json("metrics.json", metrics)
        run.save_figure("learning_curves.png", learning_curves(session.history, title=config.model))
        if "accuracy" in metrics:
            session.log(f"Test accuracy: {metrics['accuracy']:.3f}")
        if final:
            session.log(f"Training accuracy: {final['accuracy']:.3f}")
        session.log(f"Run directory: {run.path}")
    return TrainResult(run_dir=run.path, history=session.history, metrics=metrics)
