"""Runs you can trust: where a run goes, where it resumes, what a failure leaves, and loud divergence."""

import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers import CLASSES, cli_here, make_shapes

from cnnkit.config import TrainConfig, train_config
from cnnkit.errors import CnnkitError
from cnnkit.training.fit import Diverged, resume_config, train
from cnnkit.training.rundirs import resolve_run_dir


def small(data: Path, **changes: object) -> TrainConfig:
    base = TrainConfig(data=f"npz:{data}", epochs=1, batch_size=32, lr=3e-3, val_split=0.2, quiet=True,
                       device="cpu")
    return replace(base, **changes)


def cli(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    return cli_here(*args, cwd=cwd)


def epochs_in(run: Path) -> int:
    return len(json.loads((run / "history.json").read_text()))


def test_named_runs_are_numbered_unless_exist_ok(shapes_npz: Path, tmp_path: Path) -> None:
    config = small(shapes_npz, project=tmp_path / "runs", name="shapes")
    first, second = train(config), train(config)
    assert first.run_dir == (tmp_path / "runs" / "shapes").resolve()
    assert second.run_dir == (tmp_path / "runs" / "shapes-2").resolve()
    assert resolve_run_dir(replace(config, exist_ok=True)) == tmp_path / "runs" / "shapes"
    assert resolve_run_dir(replace(config, name=None)) == tmp_path / "runs" / "simple-cnn"
    again = train(replace(config, exist_ok=True))
    assert again.run_dir == first.run_dir and not (tmp_path / "runs" / "shapes-3").exists()


def test_a_copied_run_resumes_in_the_copy_from_another_directory(shapes_npz: Path, tmp_path: Path) -> None:
    original = tmp_path / "runs" / "a"
    train(small(shapes_npz, out=original))
    shutil.copytree(original, tmp_path / "runs" / "a2")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = cli("train", "--resume", "../runs/a2", "--epochs", "2", "--device", "cpu", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert "Resuming ../runs/a2 after epoch 1 of 2" in result.stdout
    assert epochs_in(tmp_path / "runs" / "a2") == 2 and epochs_in(original) == 1
    saved = json.loads((tmp_path / "runs" / "a2" / "config.json").read_text())
    assert saved["epochs"] == 2  # the plan is updated where the run was resumed, and only there
    assert json.loads((original / "config.json").read_text())["epochs"] == 1


def test_a_moved_run_resumes_where_it_now_is(shapes_npz: Path, tmp_path: Path) -> None:
    train(small(shapes_npz, out=tmp_path / "m"))
    (tmp_path / "m").rename(tmp_path / "m2")
    result = cli("train", "--resume", "--out", "m2", "--epochs", "2", "--device", "cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert epochs_in(tmp_path / "m2") == 2 and not (tmp_path / "m").exists()


def test_cifar10_files_that_moved_resume_from_where_they_now_are(tmp_path: Path) -> None:
    """--data-dir names the one folder read (never another copy silently), and may change on resume: the files' new
    place is saved for evaluate; other images there are refused by the splits' fingerprints."""
    from cnnkit.config import EvaluateConfig
    from cnnkit.evaluate.report import evaluate_run

    def write_cifar(folder: Path, seed: int) -> Path:
        folder.mkdir()
        x, y = make_shapes(10, seed=seed)
        for name in ("train", "test"):
            np.savez(folder / f"{name}.npz", x=x, y=y, class_names=np.array(CLASSES))
        return folder

    first = write_cifar(tmp_path / "first", seed=1)
    run = tmp_path / "run"
    train(TrainConfig(data="cifar10", data_dir=first, out=run, epochs=1, batch_size=16, quiet=True, device="cpu"))
    first.rename(tmp_path / "moved")
    with pytest.raises(CnnkitError, match=r"--data-dir .*first: no such folder"):
        train(resume_config(run, epochs=2))
    other = write_cifar(tmp_path / "other", seed=2)
    with pytest.raises(CnnkitError, match="changed since .* started"):
        train(resume_config(run, epochs=2, data_dir=other))
    assert epochs_in(run) == 1
    train(resume_config(run, epochs=2, data_dir=tmp_path / "moved"))
    assert epochs_in(run) == 2
    assert json.loads((run / "config.json").read_text())["data_dir"] == str(tmp_path / "moved")
    assert evaluate_run(EvaluateConfig(run=run))["num_samples"] == 30


def test_resume_refuses_changed_settings_but_accepts_the_same_command_line(shapes_npz: Path, tmp_path: Path) -> None:
    train(small(shapes_npz, out=tmp_path / "r"))
    with pytest.raises(CnnkitError, match="cannot change --lr when resuming"):
        resume_config(tmp_path / "r", lr=0.5)
    config = resume_config(tmp_path / "r", lr=3e-3, batch_size=32, epochs=3)
    assert config.epochs == 3 and config.out == tmp_path / "r"


@pytest.mark.parametrize("change", [
    {"model": "simple_cnn"}, {"model": "timm/resnet181"}, {"data": "folder:does-not-exist"},
    {"input_size": 4}, {"weights": "missing.safetensors", "model": "resnet50"},
])
def test_a_failing_run_leaves_no_directory(shapes_npz: Path, tmp_path: Path, change: dict[str, object]) -> None:
    out = tmp_path / "runs" / "x"
    with pytest.raises(CnnkitError):
        train(replace(small(shapes_npz, out=out), **change))
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_a_run_that_fails_in_its_first_epoch_removes_its_directory(shapes_npz: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(CnnkitError, match="cannot monitor 'val_nothing'"):
        train(small(shapes_npz, out=out, schedule=replace(small(shapes_npz).schedule, monitor="val_nothing")))
    assert not out.exists()


def test_the_data_check_comes_before_the_old_run_check(shapes_npz: Path, tmp_path: Path) -> None:
    train(small(shapes_npz, out=tmp_path / "run"))
    with pytest.raises(CnnkitError, match="no such directory"):
        train(replace(small(shapes_npz, out=tmp_path / "run"), data=f"folder:{tmp_path / 'nope'}"))


def test_unknown_names_suggest_the_closest() -> None:
    with pytest.raises(CnnkitError, match="did you mean simple-cnn"):
        train(train_config("cifar10", model="simple_cnn", out=Path("/nonexistent/never")))
    with pytest.raises(CnnkitError, match="did you mean timm/resnet18"):
        train(train_config("cifar10", model="timm/resnet181", out=Path("/nonexistent/never")))
    with pytest.raises(CnnkitError, match="did you mean folder"):
        train(train_config("foldr:x"))
    with pytest.raises(CnnkitError, match="did you mean rotate"):
        train_config("cifar10", augment="flip,rotat=0.1")
    with pytest.raises(CnnkitError, match="did you mean warmup_epochs"):
        train_config("cifar10", warmup_epoch=1)
    with pytest.raises(CnnkitError, match="did you mean cosine"):
        train_config("cifar10", scheduler="cosin")


def test_a_class_with_one_image_is_warned_about_and_strict_refuses(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    x, y = make_shapes(12, seed=5)
    keep = np.concatenate([np.flatnonzero(y != 2), np.flatnonzero(y == 2)[:1]])
    path = tmp_path / "lopsided.npz"
    np.savez(path, x=x[keep], y=y[keep], class_names=np.array(CLASSES))
    config = TrainConfig(data=f"npz:{path}", out=tmp_path / "run", epochs=1, device="cpu", test_split=0)
    result = train(config)
    out = capsys.readouterr().out
    assert "Images per class (train/val): circle 11/1, cross 11/1, square 1/0" in out
    assert "Warning: class 'square' has 1 training image(s)" in out
    assert "Warning: class 'square' has no validation images" in out
    assert "top3_accuracy" not in result.metrics and "top3_accuracy" not in result.history[0]
    assert "top-3 accuracy left out (3 classes)" in out
    with pytest.raises(CnnkitError, match="data warnings \\(--strict\\)"):
        train(replace(config, out=tmp_path / "strict", strict=True))
    assert not (tmp_path / "strict").exists()


def test_the_best_so_far_mark_is_explained_once(shapes_npz: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    train(replace(small(shapes_npz, out=tmp_path / "run"), quiet=False))
    assert capsys.readouterr().out.count("a * marks the best val_loss so far") == 1


def test_divergence_stops_loudly_and_keeps_the_last_good_epoch(shapes_npz: Path, tmp_path: Path) -> None:
    from cnnkit.training import fit
    from cnnkit.training.callbacks import Callback

    class Poison(Callback):
        def on_epoch_start(self, trainer: fit.Trainer, epoch: int) -> None:
            if epoch == 3:  # as an exploding LR would: every weight NaN
                for p in trainer.net.parameters():
                    p.data.fill_(float("nan"))

    with pytest.raises(Diverged, match=r"diverged in epoch 3 \(loss nan\); try a lower --lr") as caught:
        train(small(shapes_npz, out=tmp_path / "run", epochs=4), callbacks=[Poison()])
    assert "keeps epoch 2's checkpoint" in str(caught.value)
    run = tmp_path / "run"
    assert epochs_in(run) == 2
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["diverged"].startswith("training diverged in epoch 3") and metrics["accuracy"] > 0


def test_the_fast_recipe_on_plain_colour_images_ends_without_a_traceback(tmp_path: Path) -> None:
    from PIL import Image

    for index, colour in enumerate([(255, 0, 0), (0, 255, 0)]):
        folder = tmp_path / "plain" / f"c{index}"
        folder.mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (32, 32), colour).save(folder / f"{i}.png")
    result = cli("train", f"folder:{tmp_path / 'plain'}", "--recipe", "cifar-fast", "--epochs", "1",
                 "--input-size", "32", "--device", "cpu", "--out", tmp_path / "run", cwd=tmp_path)
    assert "Traceback" not in result.stderr
    if result.returncode:
        assert "cnnkit: error: training diverged in epoch 1" in result.stderr
        assert not (tmp_path / "run").exists()


def test_the_whitening_stem_copes_with_plain_colour_images() -> None:
    import torch

    from cnnkit.models.fast import FastCifarNet

    images = torch.zeros(64, 3, 32, 32)
    images[:32, 0], images[32:, 1] = 1.0, 1.0
    net = FastCifarNet(2)
    net.init_from_data(images)
    assert torch.isfinite(net.whiten.weight).all()
