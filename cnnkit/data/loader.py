"""Batching: each batch is one indexing operation on a uint8 tensor (or one read per image of a cache file)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from cnnkit.data.datasets import ArrayData


def epoch_order(n: int, *, seed: int, epoch: int, shuffle: bool) -> torch.Tensor:
    """The sample order of one epoch; a pure function of (seed, epoch), so a resumed run sees the same order."""
    if not shuffle:
        return torch.arange(n)
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=generator)


def balanced_order(labels: torch.Tensor, *, seed: int, epoch: int) -> torch.Tensor:
    """An epoch of len(labels) indices drawn with replacement, every class equally likely (PyTorch's
    WeightedRandomSampler with each image weighted 1 / its class's count): a minority class's images recur within
    an epoch and some of a majority class's sit it out. A pure function of (seed, epoch), as epoch_order."""
    counts = torch.bincount(labels)
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.multinomial(1.0 / counts[labels].double(), len(labels), replacement=True, generator=generator)


def draw_seed(*, seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of an epoch's random draws (augmentation, mixing; dropout under data parallelism) on one rank: a
    pure function of (seed, epoch, rank), so a resumed run draws as an uninterrupted one, and each rank draws its own
    (the same draws on every rank would flip, crop, mix and drop out its images alike)."""
    return seed * 100_003 + epoch + 7 + rank * 1_000_003


@dataclass(frozen=True)
class Batch:
    """This rank's share of one global batch, and the global batch's size (for the loss scale)."""

    index: torch.Tensor
    global_size: int


def shard_batches(order: torch.Tensor, *, batch_size: int, rank: int = 0, world_size: int = 1) -> list[Batch]:
    """Cut `order` into global batches of `batch_size` and keep this rank's share of each.

    Every rank gets the same number of batches, and batch i of every rank together is global batch i, so
    data-parallel training sees exactly the batches a single process would. A last batch too small to give every
    rank a sample is dropped under data parallelism.
    """
    batches = []
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        if len(batch) < world_size:
            break
        batches.append(Batch(batch[rank::world_size], len(batch)))
    return batches


def iterate(
    data: ArrayData, batches: list[torch.Tensor], *, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (uint8 images, labels) on `device` for each index tensor."""
    non_blocking = device.type == "cuda"
    for index in batches:
        images, labels = data.batch(index), data.labels[index]
        if non_blocking:
            images, labels = images.pin_memory(), labels.pin_memory()
        yield images.to(device, non_blocking=non_blocking), labels.to(device, non_blocking=non_blocking)


def sequential_batches(n: int, *, batch_size: int) -> list[torch.Tensor]:
    return [b.index for b in shard_batches(torch.arange(n), batch_size=batch_size)]
