"""The inner loop: one training epoch. (Inference over data sets lives in cnnkit.runtime.engine.)"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.data.datasets import ArrayData
from cnnkit.data.loader import Batch, iterate
from cnnkit.data.mixing import Mixer
from cnnkit.data.preprocess import Preprocess
from cnnkit.progress import progress_bar
from cnnkit.runtime.engine import StepSettings, Totals
from cnnkit.runtime.parallel import SINGLE_PROCESS, DistContext
from cnnkit.training.features import Features
from cnnkit.training.memory import norm_statistics_kept

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
PROGRESS_EVERY = 10  # batches between progress-bar refreshes (each one syncs the device)


@dataclass(frozen=True)
class StepConfig:
    """What every training step of a run shares."""

    preprocess: Preprocess
    settings: StepSettings
    label_smoothing: float = 0.0
    augment: Augment | None = None
    mix: Mixer | None = None  # MixUp/CutMix: after augmentation, soft targets
    top_k: int | None = None
    ctx: DistContext = SINGLE_PROCESS
    show_progress: bool = True
    micro_batch: int | None = None  # images per forward/backward; gradients accumulate over the batch
    checkpointing: bool = False  # the model recomputes activations during backward
    class_weights: torch.Tensor | None = None  # per class, multiplying each image's loss (balanced_class_weights)
    scaler: torch.amp.GradScaler | None = None  # fp16: scales the loss for backward, steps the optimizer
    clip_grad_norm: float = 0.0  # the largest global L2 norm of a step's gradients (0: unclipped)


def balanced_class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """n / (classes x count) per class (scikit-learn's 'balanced'): every class adds the same total weight to an
    epoch's loss, and a balanced data set gets weights of 1. A class without images gets 0 (it never occurs)."""
    counts = torch.bincount(labels, minlength=num_classes).double()
    present = counts > 0
    weights = torch.zeros(num_classes, dtype=torch.float64)
    weights[present] = len(labels) / (int(present.sum()) * counts[present])
    return weights.float()


def train_one_epoch(
    model: nn.Module,
    data: ArrayData | Features,
    batches: list[Batch],
    *,
    optimizer: torch.optim.Optimizer,
    step: StepConfig,
    generator: torch.Generator | None = None,
    after_batch: Callable[[], None] = lambda: None,
    description: str = "",
) -> dict[str, float]:
    """Train over `batches` (this rank's indices into `data`); return loss, accuracy and top-k accuracy.

    `data` is images, or a frozen base's cached features (then `model` is the head alone). Under MixUp/CutMix the
    loss is against the blended targets and the accuracies against each image's larger share."""
    settings, ctx = step.settings, step.ctx
    model.train()
    totals = Totals(settings.device, step.top_k)
    bar = progress_bar(total=len(batches), desc=description, unit="batch", leave=False,
                       enabled=step.show_progress and ctx.is_main)
    if isinstance(data, Features):
        loaded: Iterator[tuple[torch.Tensor, torch.Tensor]] = (
            (data.values[b.index.to(data.values.device)], data.labels[b.index.to(data.labels.device)])
            for b in batches)
    else:
        loaded = iterate(data, [b.index for b in batches], device=settings.device)
    for index, (batch, (inputs, labels)) in enumerate(zip(batches, loaded), start=1):
        targets = labels
        if isinstance(data, Features):
            x = inputs
        else:
            x = step.preprocess.to_unit(inputs)
            if step.augment is not None:
                x = step.augment(x, generator)
            if step.mix is not None:
                mixed = step.mix(x, labels, generator)
                x, targets, labels = mixed.images, mixed.targets, mixed.labels
            x = settings.prepare(step.preprocess.standardize(x))
        optimizer.zero_grad(set_to_none=True)
        logits, loss = _backward(model, x, targets, step=step, scale=ctx.world_size / batch.global_size)
        _optimizer_step(optimizer, step)
        after_batch()
        totals.add(logits, labels, loss)
        bar.update(1)
        if index % PROGRESS_EVERY == 0 and not bar.disable:
            running = totals.result()
            bar.set_postfix(loss=f"{running['loss']:.4f}", acc=f"{running['accuracy']:.3f}")
    bar.close()
    return totals.result(ctx)


def _optimizer_step(optimizer: torch.optim.Optimizer, step: StepConfig) -> None:
    """Clip the gradients if asked (their true norm: fp16's loss scale is taken out first), then step. Under fp16 a
    step whose gradients overflowed is skipped, and the scale backs off."""
    if step.clip_grad_norm:
        if step.scaler is not None:
            step.scaler.unscale_(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, step.clip_grad_norm)
    if step.scaler is None:
        optimizer.step()
    else:
        step.scaler.step(optimizer)
        step.scaler.update()


def _backward(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, *, step: StepConfig,
              scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward over a batch, in micro-batches if `step` says so; the batch's logits and mean loss.
    `labels` are class indices, or (MixUp/CutMix) class probabilities per image.

    DDP averages gradients over ranks; scaling each rank's sum by `scale` (world size / global batch size) makes
    that average the mean over the whole global batch, exactly as one process computes it. Micro-batches add their
    sums' gradients up before the one optimizer step, so the step is the whole batch's."""
    size = step.micro_batch or labels.shape[0]
    chunks = list(zip(x.split(size), labels.split(size)))
    logits_parts, loss_sum = [], torch.zeros((), device=labels.device)
    for i, (xs, ys) in enumerate(chunks):
        # DDP reduces gradients over ranks once, on the last micro-batch.
        last = i == len(chunks) - 1
        sync = model.no_sync() if not last and hasattr(model, "no_sync") else contextlib.nullcontext()
        kept = norm_statistics_kept(model) if step.checkpointing else contextlib.nullcontext()
        with sync:
            with step.settings.autocast():
                logits = model(xs)
                total = F.cross_entropy(logits.float(), ys, weight=step.class_weights,
                                        label_smoothing=step.label_smoothing, reduction="sum")
            with kept:
                scaled = total * scale
                (scaled if step.scaler is None else step.scaler.scale(scaled)).backward()
        logits_parts.append(logits.detach())
        loss_sum += total.detach()
    return torch.cat(logits_parts), loss_sum / labels.shape[0]
