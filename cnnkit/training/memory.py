"""How much memory a training step will take, and what keeps it under a budget.

A step holds the weights, their gradients and the optimizer's state, and, between forward and backward, the
activations autograd saves for the backward pass: those grow with the batch and are what runs out (fine-tuning
EfficientNet at 224 px and batch 64 keeps gigabytes of them). They are measured, not guessed: one forward pass of two
images through the real model, counting every tensor autograd saves (torch.autograd.graph.saved_tensors_hooks), per
block of the network. With gradient checkpointing a block keeps only its input and recomputes the rest during
backward, one block at a time: the step then holds every block's input plus the largest block's activations. Where
even that exceeds the budget, the batch is split into micro-batches whose gradients accumulate before one optimizer
step, so the effective batch size stays the one asked for.

On a CPU, micro-batches are also faster: glibc serves each buffer over its memory-map threshold (64 MB, see
runtime.allocator) with freshly mapped memory, paying a page fault per 4 KB page on every step, and a batch of 64
224-px images makes many such buffers. Where the result cannot change, because no layer computes statistics over
the batch (no BatchNorm in training mode: a frozen base's fine-tuning, or a network without BatchNorm), each
micro-batch is sized so that its largest buffer stays under the threshold.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from cnnkit.runtime.allocator import images_under_threshold
from cnnkit.runtime.engine import StepSettings

GIB = 1024**3
RAM_FRACTION = 0.7  # of the machine's RAM (or the GPU's memory) that training may use when --max-memory is not given
PROBE_IMAGES = 2
# Autograd's own buffers during backward (the gradients of the activations, a block's worth at a time) and the
# allocator's slack: measured peaks run this much above the saved activations.
OVERHEAD = 1.3
STATE_PER_PARAM = {"adam": 2, "adamw": 2, "sgd": 1}  # optimizer state tensors per trainable parameter tensor


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of one training step: `fixed` (weights, gradients, optimizer state) plus, per image in the
    (micro-)batch, `per_image` activations without checkpointing or `per_image_checkpointed` with it."""

    fixed: int
    per_image: int
    per_image_checkpointed: int | None  # None: the model cannot checkpoint
    largest_per_image: int = 0  # the largest single tensor a layer saves or outputs, per image
    batch_statistics: bool = False  # a layer (BatchNorm in training mode) computes statistics over the batch

    def peak(self, images: int, *, checkpointed: bool) -> int:
        per_image = self.per_image_checkpointed if checkpointed and self.per_image_checkpointed else self.per_image
        return self.fixed + int(OVERHEAD * per_image * images)

    def largest_batch(self, budget: int, *, checkpointed: bool) -> int:
        """The most images a step can take within `budget` bytes (at least 1)."""
        per_image = self.per_image_checkpointed if checkpointed and self.per_image_checkpointed else self.per_image
        return max(1, int((budget - self.fixed) / (OVERHEAD * max(per_image, 1))))


@dataclass(frozen=True)
class MemoryPlan:
    checkpointing: bool
    micro_batch: int | None  # images per forward/backward; None: the whole batch at once
    estimate: MemoryEstimate
    budget: int  # bytes the step may take: --max-memory less what the process holds already
    batch_size: int
    why_micro: str = ""

    def describe(self) -> str:
        images = self.micro_batch or self.batch_size
        peak = self.estimate.peak(images, checkpointed=self.checkpointing)
        parts = [f"estimated peak of a training step {peak / GIB:.2f} GiB (room {self.budget / GIB:.2f} GiB; "
                 f"weights, gradients and optimizer {self.estimate.fixed / GIB:.2f} GiB)"]
        if self.checkpointing:
            plain = self.estimate.peak(images, checkpointed=False)
            parts.append(f"gradient checkpointing on (without: {plain / GIB:.2f} GiB)")
        if self.micro_batch:
            parts.append(f"micro-batches of {self.micro_batch} images{self.why_micro}, gradients accumulated over "
                         f"the batch of {self.batch_size}")
        if peak > self.budget:
            parts.append("WARNING: over the budget even so (weights, gradients and optimizer state alone, or one "
                         "image's activations, exceed it)")
        return "; ".join(parts)


def default_budget(device: torch.device) -> int:
    """RAM_FRACTION of the GPU's memory, or of the machine's RAM."""
    if device.type == "cuda":
        return int(RAM_FRACTION * torch.cuda.get_device_properties(device).total_memory)
    return int(RAM_FRACTION * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def checkpoint_blocks(model: nn.Module) -> list[nn.Module]:
    """The blocks that timm's checkpointing recomputes one at a time: those inside the trunk's stage containers
    (EfficientNet's blocks, ResNet's bottlenecks); [] when the model cannot checkpoint."""
    target = _checkpointable(model)
    if target is None:
        return []
    blocks: list[nn.Module] = []
    for child in target.children():
        if isinstance(child, (nn.Sequential, nn.ModuleList)):
            for stage in child.children():
                blocks += list(stage.children()) if isinstance(stage, (nn.Sequential, nn.ModuleList)) else [stage]
    return blocks


def set_checkpointing(model: nn.Module, enable: bool) -> None:
    target = _checkpointable(model)
    if target is not None:
        target.set_grad_checkpointing(enable)


@contextmanager
def norm_statistics_kept(model: nn.Module) -> Iterator[None]:
    """Around a checkpointed backward pass: the recomputed forward would update every training-mode BatchNorm's
    running statistics a second time with the same batch; put back what the real forward pass left."""
    norms = [m for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats]
    saved = [[b.clone() for b in m.buffers(recurse=False)] for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for module, buffers in zip(norms, saved, strict=True):
                for buffer, value in zip(module.buffers(recurse=False), buffers, strict=True):
                    buffer.copy_(value)


def plan_memory(estimate: MemoryEstimate, *, batch_size: int, budget: int, checkpointing: str, micro_batch: int,
                for_speed: bool = False) -> MemoryPlan:
    """Checkpointing (`auto`: only when the whole batch would not fit) and micro-batch size (0: auto) for a step of
    `batch_size` images within `budget` bytes; `for_speed` (a CPU) also splits batches whose buffers would be
    memory-mapped, where that cannot change the result."""
    why, asked = "", micro_batch > 0
    if not asked and for_speed and not estimate.batch_statistics and estimate.largest_per_image:
        fast = images_under_threshold(estimate.largest_per_image, most=batch_size)
        if fast < batch_size:
            micro_batch, why = fast, " (each buffer under malloc's memory-map threshold: faster on a CPU)"
    # Only where it keeps fewer activations: not for a frozen trunk, which keeps none.
    possible = estimate.per_image_checkpointed is not None and estimate.per_image_checkpointed < estimate.per_image
    images = micro_batch or batch_size
    on = checkpointing == "on" or (checkpointing == "auto" and possible
                                   and estimate.peak(images, checkpointed=False) > budget)
    fits = min(images, estimate.largest_batch(budget, checkpointed=on))
    if not asked and fits < images:
        micro_batch, why = fits, " (to fit the memory budget)"
    return MemoryPlan(on and possible, micro_batch if 0 < micro_batch < batch_size else None, estimate, budget,
                      batch_size, why)


def inference_batch(estimate: MemoryEstimate, *, for_speed: bool, default: int = 256) -> int:
    """Images per evaluation (or feature) pass: on a CPU, the most whose largest buffer stays under malloc's
    memory-map threshold (fresh memory maps every batch are slower there: README, "Memory, and speed on a CPU"),
    else `default`."""
    if not for_speed or not estimate.largest_per_image:
        return default
    return images_under_threshold(estimate.largest_per_image, most=default)


def in_use(device: torch.device) -> int:
    """Bytes the process holds now: its resident memory, or what PyTorch has allocated on the GPU."""
    if device.type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: no figure to subtract
        return 0


def estimate_memory(model: nn.Module, images: torch.Tensor, *, settings: StepSettings, optimizer: str,
                    blocks: list[nn.Module]) -> MemoryEstimate:
    """Measure a training step's memory from one forward pass of `images` (a few preprocessed images) through
    `model` in training mode, with `blocks` the units checkpointing would recompute (empty: none)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    grads = sum(p.numel() * p.element_size() for p in trainable)
    fixed = weights + grads * (1 + STATE_PER_PARAM.get(optimizer, 2))
    counter = _SavedTensors(model, blocks)
    was_training = model.training
    model.train()
    batch_statistics = any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules())
    try:
        with counter.counting(), settings.autocast():
            model(settings.prepare(images)).float().sum()
    finally:
        model.train(was_training)
    n = images.shape[0]
    checkpointed = None
    if blocks:
        checkpointed = (counter.outside + sum(counter.block_inputs) + max(counter.block_saved, default=0)) // n
    return MemoryEstimate(fixed, counter.total // n, checkpointed, largest_per_image=counter.largest // n,
                          batch_statistics=batch_statistics)


class _SavedTensors:
    """Bytes autograd saves for backward during a forward pass, in all and per block, each block's input, and the
    largest tensor saved or output by any layer."""

    def __init__(self, model: nn.Module, blocks: list[nn.Module]) -> None:
        self.model, self.blocks = model, blocks
        self.params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.seen: set[int] = set()
        self.total = self.outside = self.largest = 0
        self.block_saved = [0] * len(blocks)
        self.block_inputs = [0] * len(blocks)
        self.current: int | None = None

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self.params and storage.data_ptr() not in self.seen:
            self.seen.add(storage.data_ptr())
            self.total += storage.nbytes()
            self.largest = max(self.largest, storage.nbytes())
            if self.current is None:
                self.outside += storage.nbytes()
            else:
                self.block_saved[self.current] += storage.nbytes()
        return tensor

    def output(self, _module: nn.Module, _args: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            self.largest = max(self.largest, output.untyped_storage().nbytes())

    @contextmanager
    def counting(self) -> Iterator[None]:
        handles = [nn.modules.module.register_module_forward_hook(self.output)]
        for i, block in enumerate(self.blocks):
            handles.append(block.register_forward_pre_hook(lambda _m, args, i=i: self._enter(i, args)))
            handles.append(block.register_forward_hook(lambda *_, i=i: self._leave()))
        try:
            with torch.autograd.graph.saved_tensors_hooks(self.pack, lambda tensor: tensor):
                yield
        finally:
            for handle in handles:
                handle.remove()

    def _enter(self, index: int, args: tuple[object, ...]) -> None:
        self.current = index
        self.block_inputs[index] += sum(a.numel() * a.element_size() for a in args if isinstance(a, torch.Tensor))

    def _leave(self) -> None:
        self.current = None


def _checkpointable(model: nn.Module) -> nn.Module | None:
    """The module whose `set_grad_checkpointing` (timm's API) switches checkpointing for the model's trunk."""
    for module in (model, getattr(model, "base", None)):
        if module is not None and callable(getattr(module, "set_grad_checkpointing", None)):
            return module
    return None
