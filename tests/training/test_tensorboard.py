import importlib.util
import json
import struct
from pathlib import Path

import pytest

import cnnkit
from cnnkit.errors import CnnkitError
from cnnkit.training.tensorboard import EVENT_FILES, check_tensorboard, scalar_tags


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """The scalars of a folder's one event file: TFRecords (length, its CRC, an Event protobuf, the data's CRC)."""
    from tensorboardX.proto.event_pb2 import Event

    (path,) = folder.glob(EVENT_FILES)
    data, pos, scalars = path.read_bytes(), 0, {}
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        event = Event.FromString(data[pos + 12:pos + 12 + length])
        pos += 12 + length + 4
        for value in event.summary.value:
            scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_a_history_row_becomes_keras_named_scalars_per_split() -> None:
    row = {"epoch": 3, "phase": "head", "loss": 0.5, "accuracy": 0.8, "val_loss": 0.7, "val_accuracy": 0.75,
           "test_accuracy": 0.7, "lr": 1e-3, "time_s": 2.5}
    assert scalar_tags(row) == {
        "train": {"epoch_loss": 0.5, "epoch_accuracy": 0.8, "epoch_learning_rate": 1e-3, "epoch_time_s": 2.5},
        "validation": {"epoch_loss": 0.7, "epoch_accuracy": 0.75},
        "test": {"epoch_accuracy": 0.7},
    }


def test_a_missing_writer_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CnnkitError, match="pip install 'cnnkit\\[tensorboard\\]'"):
        check_tensorboard()


def test_the_logs_hold_the_history_once_after_a_resume(shapes_npz: Path, tmp_path: Path) -> None:
    from tensorboardX import SummaryWriter

    run = tmp_path / "run"
    cnnkit.train(f"npz:{shapes_npz}", out=run, epochs=1, batch_size=32, val_split=0.2, quiet=True, device="cpu",
                 tensorboard=True)
    # What a process killed after it logged epoch 2, before its checkpoint, would have left behind.
    with SummaryWriter(str(run / "tensorboard" / "train"), filename_suffix=".killed") as killed:
        killed.add_scalar("epoch_loss", 99.0, global_step=2)
    cnnkit.train(resume=run, epochs=2, quiet=True, device="cpu")  # --tensorboard is the run's, inherited
    history = json.loads((run / "history.json").read_text())

    train, validation = read_scalars(run / "tensorboard" / "train"), read_scalars(run / "tensorboard" / "validation")
    assert train["epoch_loss"] == [(row["epoch"], pytest.approx(row["loss"])) for row in history]
    assert validation["epoch_accuracy"] == [(row["epoch"], pytest.approx(row["val_accuracy"])) for row in history]
    assert [step for step, _ in train["epoch_learning_rate"]] == [1, 2]


def test_the_run_says_where_its_logs_are_and_how_to_get_the_viewer(tmp_path: Path) -> None:
    from cnnkit.training.tensorboard import viewing_hint

    hint = viewing_hint(tmp_path / "runs" / "cifar")
    assert f"TensorBoard logs: {tmp_path / 'runs' / 'cifar' / 'tensorboard'}" in hint
    assert f"tensorboard --logdir {tmp_path / 'runs'}" in hint
    missing = importlib.util.find_spec("tensorboard") is None
    assert ("pip install tensorboard" in hint) == missing, "the install hint only where the viewer is missing"
