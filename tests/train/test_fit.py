import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from cnnkit.config import ScheduleConfig, TrainConfig
from cnnkit.errors import CnnkitError
from cnnkit.rundir import RunDir
from cnnkit.train.callbacks import BestTracker
from cnnkit.train.fit import train

ARTIFACTS = ["config.json", "classes.json", "preprocess.json", "model.safetensors", "last.safetensors",
             "checkpoint.safetensors", "history.json", "history.csv", "metrics.json", "learning_curves.png",
             "confusion_matrix.png", "confusion_matrix.json", "manifest.json"]


def small_config(data: Path, out: Path, **changes: object) -> TrainConfig:
    base = TrainConfig(data=f"npz:{data}", out=out, epochs=3, batch_size=32, lr=3e-3, val_split=0.2, quiet=True,
                       device="cpu", top_k=2)
    return replace(base, **changes)


def test_training_learns_and_writes_the_whole_run_directory(shapes_npz: Path, tmp_path: Path) -> None:
    result = train(small_config(shapes_npz, tmp_path / "run", epochs=6))
    run = RunDir.open(tmp_path / "run")
    for name in ARTIFACTS:
        assert run.exists(name), name
    assert set(run.manifest()) == set(ARTIFACTS) - {"manifest.json"}
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2, 3, 4, 5, 6]
    assert {"loss", "accuracy", "top2_accuracy", "val_loss", "val_accuracy", "lr", "time_s"} <= set(history[0])
    assert history[-1]["loss"] < history[0]["loss"]
    # chance is 1/3 on three balanced classes
    assert result.metrics["accuracy"] > 0.6
    assert result.metrics["num_samples"] == 60
    assert json.loads((tmp_path / "run" / "preprocess.json").read_text())["input_size"] == 32


def test_existing_run_needs_overwrite(shapes_npz: Path, tmp_path: Path) -> None:
    config = small_config(shapes_npz, tmp_path / "run", epochs=1)
    train(config)
    with pytest.raises(CnnkitError, match="already holds a run; pass --overwrite"):
        train(config)
    train(replace(config, overwrite=True))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "precious.txt").write_text("keep me")
    with pytest.raises(CnnkitError, match="not a cnnkit run"):
        train(replace(config, out=tmp_path / "other", overwrite=True))
    assert (tmp_path / "other" / "precious.txt").exists()


def test_resume_continues_to_the_same_history_as_an_uninterrupted_run(shapes_npz: Path, tmp_path: Path) -> None:
    full = train(small_config(shapes_npz, tmp_path / "full", epochs=3))
    train(small_config(shapes_npz, tmp_path / "part", epochs=2))
    resumed = train(small_config(shapes_npz, tmp_path / "part", epochs=3, resume=True))
    assert len(resumed.history) == 3
    for a, b in zip(full.history, resumed.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["val_accuracy"] == pytest.approx(b["val_accuracy"])
    w_full, _ = RunDir.open(tmp_path / "full").read_tensors("last.safetensors")
    w_part, _ = RunDir.open(tmp_path / "part").read_tensors("last.safetensors")
    assert all(torch.allclose(w_full[k], w_part[k], atol=1e-6) for k in w_full)


def test_plateau_schedule_lowers_the_learning_rate(shapes_npz: Path, tmp_path: Path) -> None:
    # so small an lr barely moves the loss (less than the 1e-4 relative threshold), so val_loss plateaus
    schedule = ScheduleConfig(name="plateau", factor=0.5, patience=1, monitor="val_loss")
    result = train(small_config(shapes_npz, tmp_path / "run", epochs=4, lr=1e-7, schedule=schedule))
    lrs = [row["lr"] for row in result.history]
    assert lrs[0] == 1e-7 and lrs[-1] < lrs[0]


@pytest.mark.parametrize("name", ["cosine", "onecycle"])
def test_per_batch_schedules_change_the_lr_each_epoch(shapes_npz: Path, tmp_path: Path, name: str) -> None:
    schedule = ScheduleConfig(name=name, warmup_epochs=1)
    result = train(small_config(shapes_npz, tmp_path / "run", epochs=3, schedule=schedule))
    lrs = [row["lr"] for row in result.history]
    assert len(set(lrs)) == 3


def test_early_stopping_stops_and_keeps_the_best_weights(shapes_npz: Path, tmp_path: Path) -> None:
    # A huge learning rate makes training diverge after the first epochs, so the best epoch comes early.
    config = small_config(shapes_npz, tmp_path / "run", epochs=12, lr=0.5, optimizer="sgd", early_stopping=2,
                          schedule=ScheduleConfig(monitor="val_accuracy"))
    result = train(config)
    best = result.metrics["best_epoch"]
    assert len(result.history) == best + 2
    run = RunDir.open(tmp_path / "run")
    best_weights, meta = run.read_tensors("model.safetensors")
    assert meta["epoch"] == str(best)


def test_best_tracker_modes() -> None:
    loss = BestTracker(monitor="val_loss", patience=2)
    assert loss.update(1, 1.0) and not loss.update(2, 1.5) and loss.update(3, 0.5)
    acc = BestTracker(monitor="val_accuracy")
    assert acc.update(1, 0.5) and acc.update(2, 0.6) and not acc.update(3, 0.55)
    assert not loss.should_stop
    loss.update(4, 0.9), loss.update(5, 0.9)
    assert loss.should_stop
