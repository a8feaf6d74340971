"""Two gloo processes with global batch B train exactly as one process with batch B."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CLASSES, make_shapes

from cnnkit.rundir import RunDir


@pytest.fixture(scope="module")
def even_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 training images: with val split 0.2 that is 96 = 6 batches of 16, so every batch splits evenly."""
    x, y = make_shapes(40, seed=7)
    xt, yt = make_shapes(6, seed=8)
    path = tmp_path_factory.mktemp("ddp") / "even.npz"
    np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt, class_names=np.array(CLASSES))
    return path


def train(data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "cnnkit", "train", f"npz:{data}", "--out", str(out), "--epochs", "3",
               "--batch-size", "16", "--lr", "3e-3", "--val-split", "0.2", "--device", "cpu", "--seed", "3",
               "--precision", "fp32", *extra]  # exact equality is for fp32; bf16 rounds per rank batch
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_two_processes_match_one(even_npz: Path, tmp_path: Path) -> None:
    single = train(even_npz, tmp_path / "single")
    assert single.returncode == 0, single.stderr
    double = train(even_npz, tmp_path / "double", "--nproc", "2")
    assert double.returncode == 0, double.stdout + double.stderr
    assert double.stdout.count("Epoch 3/3") == 1, "only rank 0 prints"
    assert "Distributed: 2 processes (gloo) on 1 node, 2 a node" in double.stdout
    assert json.loads((tmp_path / "double" / "config.json").read_text())["distributed"] == {
        "world_size": 2, "backend": "gloo", "nodes": 1, "processes_per_node": 2}
    assert json.loads((tmp_path / "single" / "config.json").read_text())["distributed"] is None
    one = json.loads((tmp_path / "single" / "history.json").read_text())
    two = json.loads((tmp_path / "double" / "history.json").read_text())
    for a, b in zip(one, two, strict=True):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (key, a, b)
    w1, _ = RunDir.open(tmp_path / "single").read_tensors("last.safetensors")
    w2, _ = RunDir.open(tmp_path / "double").read_tensors("last.safetensors")
    for key in w1:
        assert torch.allclose(w1[key], w2[key], atol=1e-5), key
    metrics = json.loads((tmp_path / "double" / "metrics.json").read_text())
    assert metrics["num_samples"] == 18


def test_device_choice() -> None:
    from cnnkit.errors import CnnkitError
    from cnnkit.runtime.device import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(CnnkitError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_more_cuda_processes_than_gpus_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two ranks on a one-GPU machine: rank 1 would otherwise die in set_device with "invalid device ordinal".
    from cnnkit.errors import CnnkitError
    from cnnkit.runtime.parallel import launch_torchrun, process_group

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(CnnkitError, match="2 processes on this machine but 1 GPU"), process_group("cuda"):
        pass
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(CnnkitError, match="3 processes on this machine but 1 GPU"):
        launch_torchrun(["train", "cifar10"], nproc=3, device="cuda")  # refused before torchrun starts


def test_every_rank_and_epoch_draws_its_own_augmentation() -> None:
    from cnnkit.data.loader import draw_seed

    seeds = {draw_seed(seed=s, epoch=e, rank=r) for s in range(3) for e in range(1, 60) for r in range(8)}
    assert len(seeds) == 3 * 59 * 8, "no two (seed, epoch, rank) share their draws"
    # Rank 0 (and a single process) draws as before ranks had their own: runs resumed across versions go on alike.
    assert draw_seed(seed=3, epoch=2) == draw_seed(seed=3, epoch=2, rank=0) == 3 * 100_003 + 2 + 7


def test_two_processes_stop_the_head_phase_early_and_fine_tune_as_one_does(even_npz: Path, tmp_path: Path) -> None:
    """Early stopping per phase under torchrun: every rank must see the same stopping epoch (or the ranks would wait
    for each other for ever), and fine-tuning starts from the best head weights, which rank 0 alone reads. (With
    `--monitor` among its arguments, `--nproc` used to fail at once: torchrun's own parser read the option as an
    ambiguous abbreviation of its `--monitor-interval`.)"""
    import timm
    from safetensors.torch import save_file

    save_file(timm.create_model("test_resnet").state_dict(), tmp_path / "base.safetensors")
    transfer = ("--model", "timm/test_resnet", "--weights", str(tmp_path / "base.safetensors"), "--input-size", "32",
                "--freeze-base", "--epochs", "4", "--lr", "1e-9", "--optimizer", "sgd", "--finetune-epochs", "1",
                "--finetune-lr", "1e-3", "--early-stopping", "2", "--monitor", "val_accuracy",
                "--head-dropout", "0")  # dropout draws differ between one process and two
    # The head barely moves at lr 1e-9, so validation accuracy never improves after epoch 1 and the head phase stops
    # after epoch 3 in both runs, whatever rounding the ranks' smaller batches bring.
    single = train(even_npz, tmp_path / "single", *transfer)
    assert single.returncode == 0, single.stderr
    double = train(even_npz, tmp_path / "double", *transfer, "--nproc", "2")
    assert double.returncode == 0, double.stdout + double.stderr
    assert "Early stopping of the head phase" in single.stdout and "Early stopping of the head phase" in double.stdout
    one = json.loads((tmp_path / "single" / "history.json").read_text())
    two = json.loads((tmp_path / "double" / "history.json").read_text())
    assert [row["epoch"] for row in one] == [row["epoch"] for row in two] == [1, 2, 3, 5]
    for a, b in zip(one, two, strict=True):
        for key in ("loss", "val_loss", "val_accuracy"):
            assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-6), (key, a, b)
