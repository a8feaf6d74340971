"""k-fold cross-validation (cnnkit.training.cv, `cnnkit cv`, `--fold I/K`)."""

import json
from pathlib import Path

import pytest
import torch

import cnnkit
from cnnkit.cli import main
from cnnkit.config import TrainConfig
from cnnkit.data.datasets import kfold_split
from cnnkit.errors import CnnkitError


def test_folds_partition_the_images_and_keep_every_class_in_each() -> None:
    labels = torch.tensor([0] * 9 + [1] * 6 + [2] * 12)
    tested = [kfold_split(labels, folds=3, fold=i, seed=4)[1] for i in (1, 2, 3)]
    assert sorted(torch.cat(tested).tolist()) == list(range(27)), "each image in exactly one fold"
    for held in tested:
        assert torch.bincount(labels[held]).tolist() == [3, 2, 4]
    rest, held = kfold_split(labels, folds=3, fold=2, seed=4)
    assert sorted(rest.tolist() + held.tolist()) == list(range(27))
    with pytest.raises(CnnkitError, match="at least 10 images of every class; class\\(es\\) a, b have 9, 6"):
        kfold_split(labels, folds=10, fold=1, seed=0, class_names=["a", "b", "c"])


@pytest.mark.parametrize("fold", ["0/5", "6/5", "1/1", "2-5", "a/b"])
def test_a_malformed_fold_is_an_error(fold: str) -> None:
    with pytest.raises(CnnkitError, match="expected I/K"):
        TrainConfig(data="cifar10", fold=fold)


def test_cv_trains_a_run_per_fold_tests_every_image_once_and_goes_on_where_it_stopped(
        shapes_npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    options = dict(epochs=1, batch_size=32, device="cpu", quiet=True, out=tmp_path / "cv")
    result = cnnkit.cross_validate(f"npz:{shapes_npz}", folds=3, **options)
    assert [row["fold"] for row in result.folds] == ["1/3", "2/3", "3/3"]
    assert sum(row["test_images"] for row in result.folds) == 300 == result.summary["test_images"]  # 240 + 60 pooled
    pooled = sum(row["accuracy"] * row["test_images"] for row in result.folds) / 300
    assert result.summary["pooled_accuracy"] == pytest.approx(pooled)
    low, high = result.summary["pooled_accuracy_ci95"]
    assert low < pooled < high and result.summary["accuracy"]["sd"] >= 0
    saved = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert saved["summary"]["test_images"] == 300 and len(saved["per_fold"]) == 3
    # The second fold's run is an ordinary run: evaluate re-cuts the same test fold.
    assert main(["evaluate", str(tmp_path / "cv" / "fold-2")]) == 0
    assert f"Accuracy: {result.folds[1]['accuracy']:.4f}" in capsys.readouterr().out
    assert main(["runs", str(tmp_path / "cv")]) == 0
    assert "fold 2/3" in capsys.readouterr().out
    # Run again: nothing is trained again and the figures are the same; other settings are refused.
    weights = [(tmp_path / "cv" / f"fold-{i}" / "model.safetensors").read_bytes() for i in (1, 2, 3)]
    again = cnnkit.cross_validate(f"npz:{shapes_npz}", folds=3, **options)
    assert weights == [(tmp_path / "cv" / f"fold-{i}" / "model.safetensors").read_bytes() for i in (1, 2, 3)]
    assert again.summary["pooled_accuracy"] == result.summary["pooled_accuracy"]
    assert again.summary["accuracy"]["mean"] == pytest.approx(result.summary["accuracy"]["mean"])
    with pytest.raises(CnnkitError, match="fold-1 holds fold 1/3 trained with other settings.*--lr"):
        cnnkit.cross_validate(f"npz:{shapes_npz}", folds=3, lr=0.01, **options)


def test_cv_runs_every_fold_data_parallel_under_torchrun(shapes_npz: Path, tmp_path: Path) -> None:
    """`cnnkit cv --nproc 2`: each fold trained by two gloo ranks in one process group, rank 0 testing, writing
    cv.json and printing the table once; run again, it goes on from the folds on disk as one process does."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "cnnkit", "cv", f"npz:{shapes_npz}", "--folds", "2", "--epochs", "1",
               "--batch-size", "32", "--device", "cpu", "--quiet", "--out", str(tmp_path / "cv"), "--nproc", "2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("Pooled accuracy") == 1
    saved = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert [row["fold"] for row in saved["per_fold"]] == ["1/2", "2/2"] and saved["summary"]["test_images"] == 300
    weights = [(tmp_path / "cv" / f"fold-{i}" / "model.safetensors").read_bytes() for i in (1, 2)]
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert weights == [(tmp_path / "cv" / f"fold-{i}" / "model.safetensors").read_bytes() for i in (1, 2)]
    assert json.loads((tmp_path / "cv" / "cv.json").read_text())["summary"] == saved["summary"]
