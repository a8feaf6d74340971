"""Running a model over data: how a batch is run (device, precision, layout, TTA) and batched inference."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.data.datasets import ArrayData
from cnnkit.data.loader import iterate, sequential_batches
from cnnkit.data.preprocess import Preprocess
from cnnkit.models.tta import tta_logits
from cnnkit.runtime.allocator import images_under_threshold
from cnnkit.runtime.parallel import SINGLE_PROCESS, DistContext

PROBE_IMAGES = 2


AUTOCAST_TYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class StepSettings:
    """How a batch is run: device, numeric precision and memory layout."""

    device: torch.device
    precision: str = "fp32"  # or "bf16"/"fp16": autocast matmuls and convolutions to that type
    channels_last: bool = True
    tta: str = "none"  # evaluation averages the logits of these views of each image (see models.tta)
    temperature: float = 1.0  # evaluation divides the logits by it (`cnnkit calibrate`); training's are left alone

    def infer(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Evaluation-time logits (float32), with the test-time augmentation `tta` names, divided by the
        temperature: their softmax is the run's probabilities."""
        with self.autocast():
            logits = tta_logits(model, x, self.tta).float()
        return logits if self.temperature == 1.0 else logits / self.temperature

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        if self.precision in AUTOCAST_TYPES:
            return torch.autocast(self.device.type, dtype=AUTOCAST_TYPES[self.precision])
        return contextlib.nullcontext()

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


class Totals:
    """Running sums of loss, correct top-1 and top-k and sample count, kept on the device to avoid syncs.

    `top_k` None leaves top-k out (it is always 1.0 when k >= the number of classes)."""

    def __init__(self, device: torch.device, top_k: int | None) -> None:
        self.top_k = top_k
        self.sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss*n, top1, topk, n

    def add(self, logits: torch.Tensor, labels: torch.Tensor, loss: torch.Tensor) -> None:
        n = labels.shape[0]
        k = min(self.top_k or 1, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hits = top == labels[:, None]
        self.sums += torch.stack([loss.detach().double() * n, hits[:, 0].sum(), hits.any(dim=1).sum(),
                                  torch.tensor(n, device=labels.device)]).double()

    def result(self, ctx: DistContext = SINGLE_PROCESS, prefix: str = "") -> dict[str, float]:
        loss, top1, topk, n = ctx.all_reduce_sum(self.sums.clone()).tolist()
        n = max(n, 1.0)
        out = {f"{prefix}loss": loss / n, f"{prefix}accuracy": top1 / n}
        if self.top_k:
            out[f"{prefix}top{self.top_k}_accuracy"] = topk / n
        return out


@torch.no_grad()
def inference_batch_size(model: nn.Module, *, input_size: int, settings: StepSettings, default: int = 256) -> int:
    """Images per inference batch: on a CPU, the most whose largest layer output stays under malloc's memory-map
    threshold (runtime.allocator), at most `default`, from one forward pass of two images; `default` elsewhere.
    Over the threshold every batch's buffers are freshly mapped memory, paid for in page faults (README: "Memory,
    and speed on a CPU")."""
    if settings.device.type != "cpu":
        return default
    largest = 0

    def measure(_module: nn.Module, _inputs: object, output: object) -> None:
        nonlocal largest
        if isinstance(output, torch.Tensor):
            largest = max(largest, output.numel() * output.element_size())

    model.eval()
    handles = [module.register_forward_hook(measure) for module in model.modules()]
    try:
        settings.infer(model, settings.prepare(torch.rand(PROBE_IMAGES, 3, input_size, input_size)))
    finally:
        for handle in handles:
            handle.remove()
    return images_under_threshold(largest // PROBE_IMAGES, most=default)


@torch.no_grad()
def predict_logits(
    model: nn.Module, data: ArrayData, *, preprocess: Preprocess, settings: StepSettings, batch_size: int = 256
) -> torch.Tensor:
    """Logits for every image of `data`, in order, as float32 on the CPU."""
    model.eval()
    outputs = []
    for images, _ in iterate(data, sequential_batches(len(data), batch_size=batch_size), device=settings.device):
        outputs.append(settings.infer(model, settings.prepare(preprocess(images))).cpu())
    if not outputs:
        return torch.zeros(0, 0)
    return torch.cat(outputs)


@torch.no_grad()
def evaluate_data(
    model: nn.Module,
    data: ArrayData,
    *,
    preprocess: Preprocess,
    settings: StepSettings,
    top_k: int | None,
    batch_size: int = 256,
    ctx: DistContext = SINGLE_PROCESS,
    prefix: str = "",
) -> dict[str, float]:
    """Loss, accuracy and top-k accuracy of `model` on `data` (each rank takes its share under DDP)."""
    model.eval()
    totals = Totals(settings.device, top_k)
    own = torch.arange(ctx.rank, len(data), ctx.world_size)
    batches = [own[i : i + batch_size] for i in range(0, len(own), batch_size)]
    for images, labels in iterate(data, batches, device=settings.device):
        logits = settings.infer(model, settings.prepare(preprocess(images)))
        totals.add(logits, labels, F.cross_entropy(logits, labels))
    return totals.result(ctx, prefix=prefix)
