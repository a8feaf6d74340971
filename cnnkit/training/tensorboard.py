"""A run's history as TensorBoard scalars, laid out as Keras's TensorBoard callback lays them out.

`RUN/tensorboard/train/`, `validation/` and `test/` (with --test-every-epoch) share tag names (`epoch_loss`,
`epoch_accuracy`, ...), so that TensorBoard draws a run's training and validation curves in one chart, and
`tensorboard --logdir runs` shows every run beside the others.

The history is the truth and the event files a view of it. A process that opens the log removes the event files
earlier processes left and writes the whole saved history again, behind a marker that tells a TensorBoard already
watching to drop what it read before from epoch 1 on. A run killed after it logged an epoch it had not yet
checkpointed, then resumed, shows each epoch once, as history.json has it.

tensorboardX writes the files: torch.utils.tensorboard would need the tensorboard package, which loads TensorFlow
into the training process wherever TensorFlow is installed.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnkit.errors import CnnkitError

if TYPE_CHECKING:
    from tensorboardX import SummaryWriter

LOG_DIR = "tensorboard"
EVENT_FILES = "events.out.tfevents.*"
# History columns that are not per-epoch numbers to chart (the phase is a name; the epoch is the step).
_NOT_SCALARS = ("epoch", "phase")
_SPLITS = (("val_", "validation"), ("test_", "test"))
_KERAS_NAMES = {"lr": "learning_rate"}


def check_tensorboard() -> None:
    """Refuse --tensorboard before any work when tensorboardX, which writes the logs, is not installed."""
    if importlib.util.find_spec("tensorboardX") is None:
        raise CnnkitError("--tensorboard needs tensorboardX to write the logs: pip install 'cnnkit[tensorboard]' "
                          "(and tensorboard, to view them)")


def viewing_hint(run: Path) -> str:
    """How to look at the logs, and how to install the viewer where it is missing (tensorboardX only writes)."""
    where = f"TensorBoard logs: {Path(run) / 'tensorboard'}; view them with `tensorboard --logdir {Path(run).parent}`"
    if importlib.util.find_spec("tensorboard") is None:
        where += " (not installed here: pip install tensorboard, or 'cnnkit[tensorboard]')"
    return where


def scalar_tags(row: dict[str, Any]) -> dict[str, dict[str, float]]:
    """One history row as {split: {tag: value}}: val_loss is validation's epoch_loss, lr train's
    epoch_learning_rate."""
    tags: dict[str, dict[str, float]] = {}
    for key, value in row.items():
        if key in _NOT_SCALARS or not isinstance(value, int | float):
            continue
        split, name = next(((split, key.removeprefix(prefix)) for prefix, split in _SPLITS
                            if key.startswith(prefix)), ("train", key))
        tags.setdefault(split, {})[f"epoch_{_KERAS_NAMES.get(name, name)}"] = float(value)
    return tags


class TensorBoardLog:
    """Writes the rows of a run's history that it has not written yet; the first call writes them all."""

    def __init__(self, run_dir: Path) -> None:
        self.log_dir = run_dir / LOG_DIR
        self.writers: dict[str, SummaryWriter] = {}
        self.written = 0  # rows of the history this process has written

    def write(self, history: list[dict[str, Any]]) -> None:
        for row in history[self.written:]:
            for split, tags in scalar_tags(row).items():
                writer = self._writer(split)
                for tag, value in tags.items():
                    writer.add_scalar(tag, value, global_step=int(row["epoch"]))
        self.written = len(history)
        for writer in self.writers.values():
            writer.flush()  # so that a TensorBoard watching the run shows each epoch as it ends

    def _writer(self, split: str) -> SummaryWriter:
        if split not in self.writers:
            from tensorboardX import SummaryWriter

            folder = self.log_dir / split
            for stale in folder.glob(EVENT_FILES):
                stale.unlink()
            # purge_step=1: a TensorBoard that read the removed files drops their events from epoch 1 on. The
            # process id keeps two processes started in one second (the file name's time) from sharing a file.
            self.writers[split] = SummaryWriter(str(folder), purge_step=1, filename_suffix=f".{os.getpid()}")
        return self.writers[split]

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()
