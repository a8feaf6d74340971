"""`train(config)`: data, model and run directory in; a trained, evaluated run directory out.

Everything that can be checked (model name, data, sizes, flags) is checked before the run directory is made, and
a run that fails before its first epoch is saved removes the directory it made. The run is a list of phases
(train.phases) run by one loop, with callbacks (train.callbacks) for schedules, weight averaging and best-epoch
tracking.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from cnnkit import __version__
from cnnkit import artifacts as names
from cnnkit.config import TrainConfig
from cnnkit.data.augment import build_augmenter
from cnnkit.data.checks import changed_splits, check_data
from cnnkit.data.datasets import ArrayData, DataBundle
from cnnkit.data.loader import Batch, balanced_order, draw_seed, epoch_order, shard_batches
from cnnkit.data.mixing import build_mixer
from cnnkit.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from cnnkit.data.sources import absolute_spec, dataset_stats
from cnnkit.errors import CnnkitError
from cnnkit.evaluate.plots import learning_curves
from cnnkit.evaluate.report import ReportPlace, evaluate_model, write_report
from cnnkit.models import count_params
from cnnkit.models.network import InitializedFromData, NetworkConfig, build_network
from cnnkit.models.pretrained import WeightsInfo, check_obtainable
from cnnkit.models.registry import weights_spec
from cnnkit.models.transfer import TransferNet, depthwise_convs, set_base_trainable, trained_base_parts
from cnnkit.rundir import RunDir
from cnnkit.runtime.allocator import allocator_name, describe_allocator, reuse_freed_memory
from cnnkit.runtime.device import Precision, resolve_device, resolve_precision, respect_thread_limit
from cnnkit.runtime.engine import StepSettings, evaluate_data
from cnnkit.runtime.fitted import REFIT, run_temperature, stale_files
from cnnkit.runtime.parallel import DistContext, process_group
from cnnkit.training import memory
from cnnkit.training.callbacks import (
    BestTracker,
    Callback,
    EmaCallback,
    LookaheadCallback,
    LossScaling,
    ScheduleCallback,
)
from cnnkit.training.checkpoint import TrainingState, load_checkpoint, save_checkpoint
from cnnkit.training.data import (
    data_messages,
    load_training_data,
    split_sizes,
    training_preprocess,
    uses_weights_preprocessing,
)
from cnnkit.training.engine import StepConfig, balanced_class_weights, train_one_epoch
from cnnkit.training.features import Features, base_features, evaluate_features, why_not_cached
from cnnkit.training.islands import Fp32Islands
from cnnkit.training.optim import build_optimizer
from cnnkit.training.phases import Phase, phase_of, plan_phases
from cnnkit.training.rundirs import resolve_run_dir
from cnnkit.training.tensorboard import TensorBoardLog, check_tensorboard, viewing_hint

# What may change when a run is resumed; and of that, how this process runs, not what it trains: never inherited.
# data_dir may change because where files lie is not what they are: the splits' fingerprints (data.json) must match.
RESUMABLE = ("epochs", "finetune_epochs", "device", "quiet", "workers", "cache_dir", "no_cache", "max_memory",
             "grad_checkpointing", "micro_batch", "tensorboard", "data_dir")
PER_INVOCATION = ("device", "quiet", "workers", "cache_dir", "no_cache")


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict[str, Any]]
    metrics: dict[str, Any]


class Diverged(CnnkitError):
    """A non-finite loss: training stops and keeps what it had."""


def train(config: TrainConfig, *, callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Train `config.model` on `config.data`, writing a run directory; return history and metrics. `callbacks`:
    your own, called after cnnkit's at each point of the loop (training.callbacks.Callback: on_phase_start,
    on_epoch_start, after_batch, after_train_epoch, after_epoch), as Keras's `fit(callbacks=...)`.

    Under torchrun the same call trains data-parallel: every rank runs it, rank 0 alone prints and writes. On a
    CPU, the process's malloc keeps freed memory for reuse from then on (runtime.allocator: without it, every step
    maps and faults in fresh pages for its larger buffers).
    """
    if not torch.cuda.is_available() or config.device == "cpu":
        reuse_freed_memory()
    respect_thread_limit()
    with process_group(config.device) as ctx:
        return Trainer.prepare(config, ctx, callbacks=callbacks).fit()


def resume_config(run: Path, **changes: Any) -> TrainConfig:
    """The saved config of the run in `run` (the directory named, wherever it now lies), with the settings that may
    change on resume (epochs, finetune_epochs, device, quiet, workers) replaced."""
    saved = TrainConfig.from_dict(RunDir.open(run).read_json(names.CONFIG))
    if "data" in changes and changes["data"]:
        changes["data"] = absolute_spec(changes["data"])
    refused = sorted(k for k, v in changes.items() if k not in RESUMABLE and option_value(saved, k) != v)
    if refused:
        raise CnnkitError(f"cannot change {', '.join('--' + k.replace('_', '-') for k in refused)} when resuming; "
                          f"only {', '.join('--' + k.replace('_', '-') for k in RESUMABLE)} may change")
    defaults = TrainConfig(resume=True)
    changes = {k: getattr(defaults, k) for k in PER_INVOCATION} | {k: v for k, v in changes.items() if k in RESUMABLE}
    if changes.get("epochs", saved.epochs) > saved.epochs and saved.schedule.name == "onecycle":
        raise CnnkitError(f"a one-cycle schedule ends after its {saved.epochs} epochs and cannot be extended; "
                          "start a new run (or use --scheduler cosine or plateau)")
    # The run is where the user says it is: never the location saved in its config.
    return replace(saved, **changes, out=Path(run), resume=True, overwrite=False, exist_ok=False)


def option_value(config: TrainConfig, keyword: str) -> Any:
    """A config's value of a flat option (`scheduler` is schedule.name)."""
    from cnnkit.options import options_of

    path = next((o.path for o in options_of(TrainConfig) if o.keyword == keyword), (keyword,))
    value: Any = config
    for part in path:
        value = getattr(value, part, None)
    return value


class Trainer:
    """One training run: set up by `prepare`, run by `fit`."""

    def __init__(self, config: TrainConfig, ctx: DistContext, data: DataBundle, model: nn.Module,
                 weights: WeightsInfo | None, preprocess: Preprocess) -> None:
        self.config, self.ctx, self.data, self.weights = config, ctx, data, weights
        self.fingerprints: dict[str, dict[str, object]] = {}  # each split's (data.checks), set by _report_data
        self.device = resolve_device(config.device, local_rank=ctx.local_rank)
        self.phases = plan_phases(config)
        self.preprocess = _normalization(config, preprocess, data.train, weights)
        self.top_k = config.top_k if config.top_k < data.num_classes else None
        settings = StepSettings(device=self.device, precision="fp32", channels_last=config.channels_last,
                                tta=config.tta)  # the precision is each phase's (see _start_phase)
        class_weights = (balanced_class_weights(data.train.labels, data.num_classes).to(self.device)
                         if config.class_weight == "balanced" else None)
        self.step = StepConfig(self.preprocess, settings, label_smoothing=config.label_smoothing,
                               augment=build_augmenter(config.augment), top_k=self.top_k, ctx=ctx,
                               mix=build_mixer(num_classes=data.num_classes, mixup=config.mixup,
                                               cutmix=config.cutmix),
                               show_progress=not config.quiet, class_weights=class_weights,
                               clip_grad_norm=config.clip_grad_norm)
        if not config.resume:
            _init_from_data(model, data.train, self.preprocess)
        layout = torch.channels_last if config.channels_last else torch.contiguous_format
        self.net = model.to(self.device, memory_format=layout)  # the bare model; `self.model` may wrap it in DDP
        self.model = self.net
        self.optimizer: torch.optim.Optimizer | None = None
        self.precision: Precision | None = None  # each phase's (see _set_precision)
        self.islands = Fp32Islands([], device_type=self.device.type)  # modules the phase keeps in fp32
        self.history: list[dict[str, Any]] = []
        self.elapsed_s = 0.0
        self.steps_per_epoch = len(shard_batches(torch.arange(len(data.train)), batch_size=config.batch_size))
        monitor = config.monitor_name() if data.val is not None else config.monitor_name().removeprefix("val_")
        self.best = BestTracker(monitor=monitor, patience=config.early_stopping)
        self.ema = EmaCallback(self.net, decay=config.ema_decay) if config.ema_decay > 0 else None
        self.callbacks: list[Callback] = [self.best, ScheduleCallback(config.schedule, monitor=monitor,
                                                                      steps_per_epoch=self.steps_per_epoch)]
        if config.lookahead_steps > 0:
            self.callbacks.append(LookaheadCallback(
                self.net, every=config.lookahead_steps, steps_per_epoch=self.steps_per_epoch,
                total_steps=config.total_epochs * self.steps_per_epoch))
        if self.ema is not None:
            self.callbacks.append(self.ema)
        # The frozen base's features while the head trains on them; {} once the head phase must go through the base.
        self.features: dict[str, Features | None] | None = None
        self.eval_batch = 256  # images per evaluation pass; each phase's memory plan sets it for the device
        self.run: RunDir | None = None
        self.board: TensorBoardLog | None = None  # rank 0's TensorBoard view of the history, with --tensorboard
        self.created_run = False  # whether this call made the run directory (and may remove it on early failure)

    # set-up ------------------------------------------------------------------------------------------------------
    @classmethod
    def prepare(cls, config: TrainConfig, ctx: DistContext, *, callbacks: Sequence[Callback] = ()) -> Trainer:
        """Check everything and load data and model; nothing is written yet. `callbacks` run after cnnkit's own."""
        out = config.out or Path()
        if config.resume and out.is_dir() and not RunDir.started(out) and config.data:
            # Stopped before it saved even its settings: nothing is lost by starting over with this command line.
            if ctx.is_main:
                RunDir(out).remove_temporaries()
            ctx.barrier()
            _say(ctx, config, f"{out}: stopped before its first save; starting it from the beginning")
            config = replace(config, resume=False, exist_ok=True)
        if config.resume:
            config = resume_config(config.out or Path(), **{k: getattr(config, k) for k in RESUMABLE})
        preprocess = training_preprocess(config)  # an unknown model name fails here (its input size), with hints
        if config.tensorboard:
            check_tensorboard()
        resuming = config.resume and RunDir(config.out or Path()).exists(names.CHECKPOINT)
        if (config.pretrained or config.weights is not None) and not resuming:
            check_obtainable(weights_spec(config.model), weights=config.weights)  # before decoding the data
        data = load_training_data(config, preprocess)
        config = absolute_paths(config)
        torch.manual_seed(config.seed)
        # A run resumed from a checkpoint gets every weight from it: the pretrained file or hub need not be there.
        model, weights = build_network(NetworkConfig.of(config, data.num_classes, preprocess.input_size),
                                       load_weights=not resuming)
        if resuming:
            weights = _saved_weights(config)
        trainer = cls(config, ctx, data, model, weights, preprocess)
        trainer.callbacks += callbacks
        trainer._report_data()
        return trainer

    def _report_data(self) -> None:
        report = check_data(self.data)
        self.fingerprints = report.fingerprints
        for line in data_messages(self.data, report, config=self.config):
            self.log(line)

    def _open_run(self) -> RunDir:
        config, ctx = self.config, self.ctx
        if config.resume:
            assert config.out is not None
            return RunDir.open(config.out)
        path = resolve_run_dir(config)  # every rank resolves the same name before rank 0 makes it
        ctx.barrier()
        existed = path.exists()
        run = RunDir.create(path, overwrite=config.overwrite or config.exist_ok) if ctx.is_main else RunDir(path)
        ctx.barrier()  # no rank goes on while rank 0 may still be clearing an old run
        self.created_run = not existed
        self.config = replace(config, out=path.resolve())
        return run

    # the loop ----------------------------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        config = self.config
        self.run = self._open_run()
        self.log(f"Run directory: {self.run.path}")
        if config.tensorboard and self.ctx.is_main:
            self.board = TensorBoardLog(self.run.path)
            self.log(viewing_hint(self.run.path))
        try:
            start = self._restore() if config.resume else 0
            if start == 0:
                self._start_phase(self.phases[0])
                if self.ctx.is_main:
                    self._write_header()
            epoch = self._next_epoch(start)
            if start and self.best.should_stop and epoch > config.total_epochs:
                self.log(f"Early stopping ended this run after epoch {start} ({self._stop_reason()}): more epochs "
                         "would stop at once; nothing to train")
            elif start and epoch > config.total_epochs:
                more = "--finetune-epochs" if config.finetune_epochs else "--epochs"
                now = config.finetune_epochs if config.finetune_epochs else config.epochs
                self.log(f"This run has already finished its {config.total_epochs} epochs; nothing to train. To "
                         f"train on, resume it with more: cnnkit train --resume {self.run.path} {more} {now + 10}")
            while epoch <= config.total_epochs:
                phase = phase_of(self.phases, epoch)
                if epoch == phase.first_epoch and epoch > 1:
                    if self.best.should_stop:  # the phase before stopped early
                        self._continue_from_best()
                    self._start_phase(phase)
                self._run_epoch(epoch, phase)
                epoch = self._next_epoch(epoch)
                if self.best.should_stop:
                    self._say_stopped(phase, next_epoch=epoch)
        except Diverged as exc:
            if not self.history:
                self._remove_unfinished_run()
                raise
            result = self._finish(diverged=str(exc))
            raise Diverged(f"{exc}; the run keeps epoch {self.history[-1]['epoch']}'s checkpoint and its best "
                           f"weights (epoch {self.best.best_epoch}), evaluated in {result.run_dir}") from None
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (kill, timeout, Docker, Kubernetes: cli.run maps it here)
            if not self.history:
                self._remove_unfinished_run()
            elif self.ctx.is_main and self.run.exists(names.CHECKPOINT):
                self.log(f"Interrupted after epoch {TrainingState.epoch_of(self.run)}, which is saved; go on with: "
                         f"cnnkit train --resume {self.run.path}")
            raise
        except BaseException:
            if not self.history:
                self._remove_unfinished_run()
            raise
        finally:
            if self.board is not None:
                self.board.close()
        return self._finish()

    def _next_epoch(self, epoch: int) -> int:
        """The epoch after `epoch` (0: none yet): under early stopping, the next phase's first (past the end after
        the last phase). Each phase has its own patience: fine-tuning still runs after the head stopped early, as
        Keras's separate fit calls with an EarlyStopping callback each would."""
        if not (epoch and self.best.should_stop):
            return epoch + 1
        later = [p for p in self.phases if p.first_epoch > epoch]
        return later[0].first_epoch if later else self.config.total_epochs + 1

    def _stop_reason(self) -> str:
        best = self.best
        return f"no improvement in {best.monitor} for {best.patience} epochs (best epoch {best.best_epoch})"

    def _say_stopped(self, phase: Phase, *, next_epoch: int) -> None:
        if next_epoch > self.config.total_epochs:
            self.log(f"Early stopping: {self._stop_reason()}")
        else:
            following = phase_of(self.phases, next_epoch)
            self.log(f"Early stopping of the {phase.name} phase: {self._stop_reason()}; the {following.name} phase "
                     f"starts at epoch {next_epoch} from epoch {self.best.best_epoch}'s weights")

    def _continue_from_best(self, weights: dict[str, torch.Tensor] | None = None) -> None:
        """After a phase stopped early, the next one starts from the best weights (`weights`, else the run's file),
        not from `patience` epochs past them (Keras: restore_best_weights). Read on the main process; wrapping for
        the new phase, DDP copies them to every rank."""
        weights = weights if weights is not None else self._saved_best()
        if weights is not None:
            self.net.load_state_dict(weights)
            if self.ema is not None:
                self.ema.average.module.load_state_dict(weights)
        if self.ema is not None and self.ctx.enabled:  # DDP does not see the moving average: copy it here
            for tensor in self.ema.average.module.state_dict().values():
                torch.distributed.broadcast(tensor, src=0)

    def _saved_best(self) -> dict[str, torch.Tensor] | None:
        """The run's best weights as saved, on the main process; None elsewhere, before any, or with no run."""
        run = self.run
        if not (self.ctx.is_main and self.best.best_epoch and run is not None and run.exists(names.WEIGHTS_BEST)):
            return None
        return run.read_tensors(names.WEIGHTS_BEST)[0]

    def train_steps(self, lrs: Iterable[float], *, phase: Phase | None = None) -> Iterator[float]:
        """Train one batch at each learning rate of `lrs` in `phase` (default the first: the head's, with
        --freeze-base) and yield each batch's loss: the learning-rate range test (lr_find). The phases before
        `phase` are trained first, epoch by epoch as `train` trains them (validation, schedule and early stopping
        included), so that a fine-tuning sweep starts from the head fine-tuning would start from. Nothing is
        written (the best weights so far are kept in memory); the weights change, so the trainer is spent
        afterwards."""
        config, data = self.config, self.data.train
        assert data is not None
        phase = phase or self.phases[0]
        epoch, best = 1, None
        while epoch < phase.first_epoch:
            current = phase_of(self.phases, epoch)
            if epoch == current.first_epoch:
                self._start_phase(current)
            self._run_epoch(epoch, current)
            if self.best.improved:
                best = {k: v.detach().clone() for k, v in self.eval_model.state_dict().items()}
            epoch = self._next_epoch(epoch)
            if self.best.should_stop:
                self._say_stopped(current, next_epoch=epoch)
        if self.best.should_stop:
            self._continue_from_best(best)
        self._start_phase(phase)
        assert self.optimizer is not None
        scales = [group["lr"] / phase.lr for group in self.optimizer.param_groups]  # --norm-lr-scale's groups
        step = replace(self.step, show_progress=False)
        generator = torch.Generator().manual_seed(draw_seed(seed=config.seed, epoch=0))
        batches: Iterator[Batch] = iter(())
        epoch = 0
        for lr in lrs:
            batch = next(batches, None)
            if batch is None:  # a sweep longer than an epoch goes on into the next one, reshuffled
                epoch += 1
                order = _epoch_order(config, data.labels, epoch=epoch)
                batches = iter(shard_batches(order, batch_size=config.batch_size))
                batch = next(batches)
            for group, scale in zip(self.optimizer.param_groups, scales):
                group["lr"] = lr * scale
            yield train_one_epoch(self.model, data, [batch], optimizer=self.optimizer, step=step,
                                  generator=generator)["loss"]

    def _start_phase(self, phase: Phase) -> None:
        """Set what trains, the precision, and a fresh optimizer (and schedule) at the phase's learning rate."""
        self._set_precision(phase)
        if phase.name == "finetune":
            if not isinstance(self.net, TransferNet):
                raise CnnkitError("--finetune-epochs needs --freeze-base (a pretrained base with a new head)")
            set_base_trainable(self.net, phase.trainable)
        self._plan_memory(phase)
        # DDP fixes the set of trainable parameters when it wraps a model: wrap anew at each phase.
        self.model = _distribute(self.net, self.ctx, self.device)
        self.optimizer = build_optimizer(self.config, self.model, lr=phase.lr)
        for callback in self.callbacks:
            callback.on_phase_start(self, phase)
        if phase.name == "finetune":
            trainable, frozen = count_params(self.net)
            self.log(f"Fine-tuning (unfreeze {phase.trainable}, lr {phase.lr:g}): trainable params: {trainable:,}; "
                     f"non-trainable: {frozen:,}")

    def _run_epoch(self, epoch: int, phase: Phase) -> None:
        config, data, ctx = self.config, self.data, self.ctx
        assert self.optimizer is not None and data.train is not None
        started = time.perf_counter()
        order = _epoch_order(config, data.train.labels, epoch=epoch)
        batches = shard_batches(order, batch_size=config.batch_size, rank=ctx.rank, world_size=ctx.world_size)
        lr = self.optimizer.param_groups[0]["lr"]
        seed = draw_seed(seed=config.seed, epoch=epoch, rank=ctx.rank)
        generator = torch.Generator().manual_seed(seed)
        if ctx.enabled:  # a checkpoint holds rank 0's random state: every rank's dropout seeded anew, its own
            torch.manual_seed(seed)
        for callback in self.callbacks:
            callback.on_epoch_start(self, epoch)
        row: dict[str, Any] = {"epoch": epoch, "phase": phase.name}
        features = self._features(phase)
        model, inputs = (self.net.head, features["train"]) if features else (self.model, data.train)
        row |= train_one_epoch(model, inputs, batches, optimizer=self.optimizer, step=self.step,
                               generator=generator, after_batch=self._after_batch,
                               description=f"Epoch {epoch}/{config.total_epochs}")
        for callback in self.callbacks:
            callback.after_train_epoch()
        if features and features["val"] is not None:
            row |= evaluate_features(self.net.head, features["val"], top_k=self.top_k, prefix="val_")
        elif data.val is not None:
            row |= self._evaluate(data.val, prefix="val_")
        row["lr"] = lr
        if self.step.scaler is not None:
            row["loss_scale"] = self.step.scaler.get_scale()  # one that keeps falling: fp16 overflows; try bf16/fp32
        row["time_s"] = round(time.perf_counter() - started, 3)
        if config.test_every_epoch and data.test is not None:
            # Reported for learning curves and time-to-accuracy; the best epoch is still chosen on validation data.
            row |= self._evaluate(data.test, prefix="test_")
        _check_finite(row, epoch=epoch, lr=lr)
        if self.best.monitor not in row:
            raise CnnkitError(f"cannot monitor {self.best.monitor!r}; history has {', '.join(row)}")
        self.elapsed_s += row["time_s"]
        self.history.append(row)
        for callback in self.callbacks:
            callback.after_epoch(epoch, row)
        if ctx.is_main and self.run is not None:  # None: lr_find's phases before its sweep, written nowhere
            self._save_epoch(epoch)
        self.log(_epoch_line(row, config.total_epochs, self.best.improved))

    def _plan_memory(self, phase: Phase) -> None:
        """Measure what a step of this phase keeps for backward; checkpoint and micro-batch to fit --max-memory."""
        config, train = self.config, self.data.train
        assert train is not None
        memory.set_checkpointing(self.net, False)
        blocks = memory.checkpoint_blocks(self.net)
        if config.grad_checkpointing == "on" and not blocks:
            raise CnnkitError(f"--grad-checkpointing on: {config.model} cannot checkpoint (timm models can)")
        sample = train.batch(torch.arange(min(len(train), memory.PROBE_IMAGES))).to(self.device)
        x = self.preprocess.standardize(self.preprocess.to_unit(sample))
        estimate = memory.estimate_memory(self.net, x, settings=self.step.settings, optimizer=config.optimizer,
                                          blocks=blocks)
        self.eval_batch = memory.inference_batch(estimate, for_speed=self.device.type == "cpu")
        if phase.name == "head" and self._why_not_cached() is None:  # the head trains on cached features
            self.step = replace(self.step, micro_batch=None, checkpointing=False)
            return
        limit = int(config.max_memory * memory.GIB) or memory.default_budget(self.device)
        plan = memory.plan_memory(estimate, batch_size=config.batch_size // self.ctx.world_size,
                                  budget=limit - memory.in_use(self.device), checkpointing=config.grad_checkpointing,
                                  micro_batch=config.micro_batch, for_speed=self.device.type == "cpu")
        memory.set_checkpointing(self.net, plan.checkpointing)
        self.step = replace(self.step, micro_batch=plan.micro_batch, checkpointing=plan.checkpointing)
        self.log(f"Memory ({phase.name} phase): {plan.describe()}" if len(self.phases) > 1 else
                 f"Memory: {plan.describe()}")

    def _trained_depthwise(self, phase: Phase) -> list[nn.Conv2d]:
        trained = trained_base_parts(self.net, phase.trainable) if isinstance(self.net, TransferNet) else [self.net]
        return [conv for part in trained for conv in depthwise_convs(part)]

    def _precision(self, phase: Phase) -> Precision:
        """The phase's precision and why (runtime.device.resolve_precision), from what it trains."""
        return resolve_precision(self.config.precision, self.device,
                                 trains_depthwise=bool(self._trained_depthwise(phase)))

    def _set_precision(self, phase: Phase) -> None:
        precision = self._precision(phase)
        if precision != self.precision or phase.first_epoch == 1:
            self.log(f"Precision: {precision.describe()} ({precision.why})"
                     + (f", {phase.name} phase" if len(self.phases) > 1 else ""))
        self.precision = precision
        self.islands.remove()
        self.islands = Fp32Islands(self._trained_depthwise(phase) if precision.fp32_depthwise else [],
                                   device_type=self.device.type)
        fp16 = precision.name == "fp16"
        scaling = next((c for c in self.callbacks if isinstance(c, LossScaling)), None)
        if fp16 and scaling is None:
            scaling = LossScaling(self.device.type)
            self.callbacks.append(scaling)
        scaler = scaling.scaler if fp16 and scaling is not None else None
        self.step = replace(self.step, settings=replace(self.step.settings, precision=precision.name), scaler=scaler)

    def _features(self, phase: Phase) -> dict[str, Features | None] | None:
        """While a frozen base's head trains without augmentation: the base's features, computed at the phase's
        first epoch (also a resumed one); None when the head must train through the base."""
        if phase.name != "head":
            self.features = None
        elif self.features is None:
            reason = self._why_not_cached()
            if reason is not None:
                self.log(f"The head trains through the frozen base ({reason})")
                self.features = {}
                return None
            assert isinstance(self.net, TransferNet) and self.data.train is not None
            settings, val = self.step.settings, self.data.val
            train = base_features(self.net.base, self.data.train, preprocess=self.preprocess, settings=settings,
                                  batch_size=self.eval_batch)
            # Test-time augmentation evaluates other views of each image: validation then goes through the base.
            cached_val = (base_features(self.net.base, val, preprocess=self.preprocess, settings=settings,
                                        batch_size=self.eval_batch)
                          if val is not None and settings.tta == "none" else None)
            seconds = train.seconds + (cached_val.seconds if cached_val else 0.0)
            self.log(f"Frozen base: features of {len(train) + (len(cached_val) if cached_val else 0)} images "
                     f"computed once in {seconds:.1f}s; the head trains on them")
            self.features = {"train": train, "val": cached_val}
        return self.features or None

    def _why_not_cached(self) -> str | None:
        return why_not_cached(self.net, augment=self.step.augment is not None or self.step.mix is not None,
                              distributed=self.ctx.enabled, ema=self.ema is not None)

    def _after_batch(self) -> None:
        for callback in self.callbacks:
            callback.after_batch()

    def _evaluate(self, data: ArrayData, *, prefix: str) -> dict[str, float]:
        return evaluate_data(self.eval_model, data, preprocess=self.preprocess, settings=self.step.settings,
                             top_k=self.top_k, ctx=self.ctx, prefix=prefix, batch_size=self.eval_batch)

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated, tested and saved: the moving average when there is one."""
        return self.ema.average.module if self.ema is not None else self.net

    # saving and restoring ----------------------------------------------------------------------------------------
    def _write_header(self) -> None:
        config, run, data = self.config, self.run, self.data
        assert run is not None
        run.write_json(names.CONFIG, {
            **config.to_dict(), "cnnkit_version": __version__, "torch_version": torch.__version__,
            "created": time.strftime("%Y-%m-%d %H:%M"),
            "weights_source": self.weights.source if self.weights else None,
            "precision_used": {phase.name: self._precision(phase).describe() for phase in self.phases},
            "allocator": allocator_name() if self.device.type == "cpu" else None,
            "distributed": self.ctx.describe(),
        })
        run.write_json(names.CLASSES, data.class_names)
        run.write_json(names.PREPROCESS, self.preprocess.to_dict())
        run.write_json(names.DATA_SPLITS, self.fingerprints)
        trainable, frozen = count_params(self.net)
        spread = self.ctx.describe()
        if spread:
            self.log(f"Distributed: {spread['world_size']} processes ({spread['backend']}) on {spread['nodes']} "
                     f"node{'s' * (spread['nodes'] != 1)}, {spread['processes_per_node']} a node; each rank takes "
                     f"1/{spread['world_size']} of every global batch of {config.batch_size}")
        self.log(f"Data: {config.data} ({data.num_classes} classes; {split_sizes(data)})")
        if self.step.class_weights is not None:
            weights = ", ".join(f"{name} {w:.3g}"
                                for name, w in zip(data.class_names, self.step.class_weights.tolist()))
            self.log(f"Class weights (balanced, training loss only): {weights}")
        if config.sampler == "balanced":
            counts = torch.bincount(data.train.labels, minlength=data.num_classes).tolist()
            held = ", ".join(f"{name} {n}" for name, n in zip(data.class_names, counts))
            self.log(f"Sampler: balanced: {len(data.train)} draws an epoch, with replacement, each class equally "
                     f"likely (training images: {held}); training loss and accuracy are on the drawn images")
        if self.step.mix is not None:
            kinds = [f"{name} alpha {alpha:g}" for name, alpha in (("MixUp", config.mixup), ("CutMix", config.cutmix))
                     if alpha]
            self.log(f"Mixing: {' and '.join(kinds)}{' (one of the two per batch)' if len(kinds) == 2 else ''}; "
                     "training loss and accuracy are on blended images (accuracy against each one's larger share)")
        source = f", weights {self.weights.source}" if self.weights else ""
        self.log(f"Model: {config.model} at {self.preprocess.input_size}px on {self.device}{source} "
                 f"(trainable params: {trainable:,}; non-trainable: {frozen:,})")
        if self.device.type == "cpu":
            self.log(f"Memory allocator: {describe_allocator()}")
        dropped = "" if self.top_k else f"; top-{config.top_k} accuracy left out ({data.num_classes} classes)"
        self.log(f"Epochs: {config.total_epochs}; a * marks the best {self.best.monitor} so far{dropped}")

    def _save_epoch(self, epoch: int) -> None:
        run, weights = self.run, self.eval_model.state_dict()
        assert run is not None and self.optimizer is not None
        meta = {"model": self.config.model, "epoch": str(epoch)}
        if self.best.improved:
            run.write_tensors(names.WEIGHTS_BEST, weights, metadata=meta)
        run.write_tensors(names.WEIGHTS_LAST, weights, metadata=meta)
        run.write_json(names.HISTORY_JSON, self.history)
        run.write_csv(names.HISTORY_CSV, self.history)
        # The checkpoint goes last: if the process dies before it, resume repeats this epoch from the previous one.
        state = TrainingState(epoch=epoch, history=self.history, elapsed_s=self.elapsed_s,
                              callbacks={c.name: c.state_dict() for c in self.callbacks})
        save_checkpoint(run, model=self.net, optimizer=self.optimizer, state=state,
                        ema=self.ema.average if self.ema else None)
        if self.board is not None:  # a view of the history, after everything resume needs
            self.board.write(self.history)

    def _restore(self) -> int:
        run = self.run
        assert run is not None
        if self.ctx.is_main:
            run.remove_temporaries()
        if run.exists(names.DATA_SPLITS):
            changed = changed_splits(run.read_json(names.DATA_SPLITS), self.fingerprints)
            if changed:
                raise CnnkitError(f"{self.config.data} changed since {run.path} started ({'; '.join(changed)}): "
                                  "resumed, it would train and test on other splits than its first epochs did, "
                                  "and its test images could include images it trained on; start a new run")
        if not run.exists(names.CHECKPOINT):
            self.log(f"{run.path}: no epoch was completed before; starting from the beginning")
            return 0
        epoch = TrainingState.epoch_of(run)
        self._start_phase(phase_of(self.phases, epoch))  # the checkpoint's optimizer belongs to its epoch's phase
        state = load_checkpoint(run, model=self.net, optimizer=self.optimizer,
                                ema=self.ema.average if self.ema else None)
        for callback in self.callbacks:
            if callback.name in state.callbacks:
                callback.load_state_dict(state.callbacks[callback.name])
        self.history, self.elapsed_s = state.history, state.elapsed_s
        saved = run.read_json(names.CONFIG)
        now = {k: v for k, v in self.config.to_dict().items() if k in ("epochs", "finetune_epochs", "data_dir")}
        if self.ctx.is_main and any(saved.get(k) != v for k, v in now.items()):
            run.write_json(names.CONFIG, saved | now)  # what evaluate and a later resume read
        self.log(f"Resuming {run.path} after epoch {state.epoch} of {self.config.total_epochs}")
        return state.epoch

    def _remove_unfinished_run(self) -> None:
        """A run that failed before saving its first epoch leaves nothing behind (if this call made it)."""
        if self.ctx.is_main and self.created_run and self.run is not None and self.run.path.is_dir():
            shutil.rmtree(self.run.path, ignore_errors=True)

    def _finish(self, *, diverged: str | None = None) -> TrainResult:
        config, run, data = self.config, self.run, self.data
        assert run is not None
        self.islands.remove()
        best = self._saved_best()
        if best is not None:
            self.net.load_state_dict(best)
        metrics: dict[str, Any] = {}
        if self.ctx.is_main:
            self._forget_stale_fits(run)
            final = self.history[-1] if self.history else {}
            trainable, frozen = count_params(self.net)
            metrics = {"best_epoch": self.best.best_epoch, "train_time_s": round(self.elapsed_s, 2),
                       "final_train_accuracy": final.get("accuracy"), "params": trainable + frozen,
                       "trainable_params": trainable}
            if diverged:
                metrics["diverged"] = diverged
            if data.test is not None and len(data.test):
                # In fp32, as `cnnkit evaluate`, predict, the export and the server run the saved weights: a test
                # figure from bf16 inference could differ from all of theirs (0.333 against 0.25 on 12 images).
                metrics |= evaluate_model(self.net, data.test, out=ReportPlace(run), class_names=data.class_names,
                                          preprocess=self.preprocess, top_k=self.top_k, batch_size=self.eval_batch,
                                          settings=replace(self.step.settings, precision="fp32",
                                                           temperature=run_temperature(run.path)))
            run.write_json(names.METRICS, metrics)
            run.save_figure(names.LEARNING_CURVES, learning_curves(self.history, title=config.model,
                                                                   kept_epoch=self.best.best_epoch or None))
            if "accuracy" in metrics:
                write_report(ReportPlace(run), metrics, title=f"{config.model}, run {run.path.name}: test split")
            last, best = final.get("epoch"), self.best.best_epoch
            # After early stopping or a best epoch before the last, the saved weights are not the last epoch's: both
            # lines say which epoch they describe, so that the two accuracies are not read as one model's.
            weights = f"; epoch {best}'s weights: the best {self.best.monitor}" if best and best != last else ""
            if "accuracy" in metrics:
                low, high = metrics["accuracy_ci95"]
                self.log(f"Test accuracy: {metrics['accuracy']:.3f} on {metrics['num_samples']} images (95% interval "
                         f"{low:.3f}-{high:.3f}{weights})")
            if final:
                notes = [note for note, applies in ((f"epoch {last}, measured while it trained", bool(weights)),
                                                    ("on MixUp/CutMix-blended images", self.step.mix is not None))
                         if applies]
                self.log(f"Training accuracy: {final['accuracy']:.3f}" + (f" ({'; '.join(notes)})" if notes else ""))
            self.log(f"Run directory: {run.path}")
        return TrainResult(run_dir=run.path, history=self.history, metrics=metrics)

    def _forget_stale_fits(self, run: RunDir) -> None:
        """A resumed run that found better weights: a threshold or temperature fitted for the old ones would be
        refused wherever it is read, so it goes now, with a line saying how to fit it again."""
        for name in stale_files(run.path):
            run.remove(name)
            refit = REFIT[name].replace("RUN", str(run.path))
            self.log(f"Removed {name}: it was fitted for earlier weights than the new best; fit it again with "
                     f"`{refit}`")

    def log(self, message: str) -> None:
        _say(self.ctx, self.config, message)


def _epoch_order(config: TrainConfig, labels: torch.Tensor, *, epoch: int) -> torch.Tensor:
    """The training images of one epoch, in order (--sampler)."""
    if config.sampler == "balanced":
        return balanced_order(labels, seed=config.seed, epoch=epoch)
    return epoch_order(len(labels), seed=config.seed, epoch=epoch, shuffle=True)


def _say(ctx: DistContext, config: TrainConfig, message: str) -> None:
    if ctx.is_main and not config.quiet:
        print(message, flush=True)


def _saved_weights(config: TrainConfig) -> WeightsInfo | None:
    """A resumed run's pretrained weights: where they came from (its config.json) and the preprocessing they expect."""
    if not (config.pretrained or config.weights is not None):
        return None
    spec = weights_spec(config.model)
    source = RunDir(config.out or Path()).read_json(names.CONFIG).get("weights_source") or spec.name
    return WeightsInfo(source, spec.mean, spec.std, spec.interpolation)


def absolute_paths(config: TrainConfig) -> TrainConfig:
    """Saved configs name data and weights by absolute path, so a run resumes from any working directory."""
    def absolute(path: Path | None) -> Path | None:
        return path.resolve() if path is not None else None

    return replace(config, data=absolute_spec(config.data), data_dir=absolute(config.data_dir),
                   weights=absolute(config.weights))


def _check_finite(row: dict[str, Any], *, epoch: int, lr: float) -> None:
    bad = [k for k in ("loss", "val_loss") if k in row and not math.isfinite(row[k])]
    if bad:
        raise Diverged(f"training diverged in epoch {epoch} ({bad[0]} {row[bad[0]]}); try a lower --lr "
                       f"(the LR was {lr:.3g} then)")


def _distribute(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """Wrap in DistributedDataParallel under torchrun (BatchNorm synchronised across GPUs)."""
    if not ctx.enabled:
        return model
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[device.index])
    return DistributedDataParallel(model)


def _normalization(
    config: TrainConfig, preprocess: Preprocess, train: ArrayData | None, weights: WeightsInfo | None
) -> Preprocess:
    """Pretrained weights dictate mean and std (their interpolation is already `preprocess`'s); from scratch, the
    training images' statistics."""
    if weights is not None and uses_weights_preprocessing(config):
        return replace(preprocess, mean=weights.mean, std=weights.std)
    mode = "dataset" if config.normalize == "auto" else config.normalize
    if mode == "unit":
        return preprocess
    if mode == "imagenet":
        return replace(preprocess, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert train is not None
    mean, std = dataset_stats(train)
    return replace(preprocess, mean=mean, std=std)


def _init_from_data(model: nn.Module, train: ArrayData | None, preprocess: Preprocess, *, images: int = 5000) -> None:
    """Layers set from data (a whitening stem) see the first `images` training images, as they will be fed."""
    if isinstance(model, InitializedFromData) and train is not None:  # only then is the sample worth preprocessing
        model.init_from_data(preprocess(train.head(images)))


def _epoch_line(row: dict[str, Any], epochs: int, improved: bool) -> str:
    parts = [f"Epoch {row['epoch']}/{epochs}", f"{row['time_s']:.1f}s"]
    parts += [f"{k}: {v:.4f}" for k, v in row.items() if k not in ("epoch", "phase", "lr", "time_s", "loss_scale")]
    parts.append(f"lr: {row['lr']:.2e}")
    return " - ".join(parts) + (" *" if improved else "")
