"""The learning-rate range test (Smith 2017; fastai's `lr_find`, Lightning's `Tuner.lr_find`), as `cnnkit lr-find`.

Train one batch per step while the learning rate grows geometrically from `start_lr` to `end_lr`, keep an
exponentially smoothed loss, stop once it diverges, and suggest a tenth of the learning rate where the smoothed loss
was lowest. A sweep that diverged too early, or whose loss never fell, gets no suggestion, and says why:
a number read off a flat or too-short curve would look like advice and be noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from cnnkit.config import LRFindConfig, TrainConfig
from cnnkit.errors import CnnkitError
from cnnkit.files import write_atomic
from cnnkit.runtime.allocator import reuse_freed_memory
from cnnkit.runtime.device import respect_thread_limit
from cnnkit.runtime.parallel import SINGLE_PROCESS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SMOOTHING = 0.98  # weight of the running loss in the exponential average (fastai's and Lightning's)
DIVERGED = 4.0  # the sweep stops once the smoothed loss exceeds this multiple of its lowest value
SKIP_START, SKIP_END = 10, 5  # points left out of the steepest-fall search: warming-up average, diverging tail
MIN_FALL = 0.05  # the smoothed loss must fall below (1 - this) x its early value for a suggestion


@dataclass(frozen=True)
class LRFinding:
    """The sweep: each step's learning rate and smoothed loss, the suggestion (None: none can be trusted) and why."""

    lrs: list[float]
    losses: list[float]
    suggestion: float | None
    reason: str
    phase: str  # which phase's parameters were swept: "train", "head" with --freeze-base, or "finetune"

    def describe(self) -> str:
        if self.suggestion is None:
            return f"No learning rate suggested: {self.reason}"
        flag = "--finetune-lr" if self.phase == "finetune" else "--lr"
        return f"Suggested {flag}: {self.suggestion:.2g} ({self.reason})"


def lr_find(config: TrainConfig, finder: LRFindConfig) -> LRFinding:
    """Run the range test on `config`'s data and model (its first phase, or its fine-tuning phase after the head has
    trained: `finder.phase`), draw `finder.plot`, return the finding."""
    from cnnkit.training.fit import Trainer

    reuse_freed_memory()
    respect_thread_limit()
    trainer = Trainer.prepare(replace(config, resume=False), SINGLE_PROCESS)
    phase = trainer.phases[0]
    if finder.phase == "finetune":
        if trainer.phases[-1].name != "finetune":
            raise CnnkitError("--phase finetune sweeps the fine-tuning learning rate: give --freeze-base and "
                              "--finetune-epochs N (the head trains for --epochs first)")
        phase = trainer.phases[-1]
    ratio = finder.end_lr / finder.start_lr
    schedule = [finder.start_lr * ratio ** (i / (finder.steps - 1)) for i in range(finder.steps)]
    lrs: list[float] = []
    losses: list[float] = []
    average, lowest = 0.0, math.inf
    for i, (lr, loss) in enumerate(zip(schedule, trainer.train_steps(schedule, phase=phase)), start=1):
        if not math.isfinite(loss):
            break
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        smoothed = average / (1 - SMOOTHING**i)  # bias-corrected: the average starts at 0
        lrs.append(lr)
        losses.append(smoothed)
        lowest = min(lowest, smoothed)
        if smoothed > DIVERGED * lowest:
            break
    suggestion, reason = suggest(lrs, losses)
    finding = LRFinding(lrs, losses, suggestion, reason, phase.name)
    title = f"{config.model} on {config.data}, batch {config.batch_size}"
    if phase.name == "finetune":
        title += f": fine-tuning ({phase.trainable}) after {phase.first_epoch - 1} head epochs"
    figure = lr_figure(finding, title=title)
    write_atomic(finder.plot, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
    return finding


def suggest(lrs: list[float], losses: list[float]) -> tuple[float | None, str]:
    """A tenth of the learning rate where the smoothed loss was lowest (Smith's and fastai's rule: the lowest point
    is already at the edge of divergence), or None and why not."""
    if len(losses) < SKIP_START + SKIP_END + 10:
        return None, (f"the loss diverged after {len(losses)} steps, too few to read a curve from: lower --start-lr "
                      "or --end-lr, or add --steps")
    early = losses[SKIP_START]
    lowest = int(np.argmin(losses))
    if losses[lowest] > (1 - MIN_FALL) * early:
        return None, (f"the smoothed loss never fell {MIN_FALL:.0%} below its early value {early:.3g}: add --steps "
                      "(a network trained from scratch needs a few hundred), widen the sweep, or check the data")
    if lowest >= len(losses) - SKIP_END and not _rising(losses):
        return None, f"the loss was still falling at {lrs[-1]:.2g}, the sweep's end: raise --end-lr"
    slopes = np.gradient(np.asarray(losses), np.log10(lrs))
    steepest = SKIP_START + int(np.argmin(slopes[SKIP_START : len(losses) - SKIP_END]))
    return lrs[lowest] / 10, (f"a tenth of {lrs[lowest]:.2g}, where the smoothed loss was lowest; it fell fastest at "
                              f"{lrs[steepest]:.2g}")


def _rising(losses: list[float]) -> bool:
    """Whether the curve's tail has turned up from its minimum (the sweep reached divergence)."""
    return losses[-1] > min(losses) * (1 + MIN_FALL)


def lr_figure(finding: LRFinding, *, title: str) -> Figure:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5))
    ax = figure.subplots()
    ax.plot(finding.lrs, finding.losses)
    if finding.suggestion is not None:
        ax.axvline(finding.suggestion, color="tab:red", linestyle="--", linewidth=1,
                   label=f"suggested: {finding.suggestion:.2g}")
        ax.legend()
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed)")
    ax.grid(alpha=0.3, which="both")
    ax.set_title(title if finding.suggestion is not None else f"{title}\n(no suggestion: see the command's output)",
                 fontsize=10)
    return figure
