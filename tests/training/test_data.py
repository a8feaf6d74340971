"""A training config's data (cnnkit.training.data) and `cnnkit check-data`, which checks it without training."""

from pathlib import Path

import numpy as np
import pytest

from cnnkit.cli import main
from cnnkit.config import train_config
from cnnkit.errors import CnnkitError
from cnnkit.training.data import check_training_data


def noise_npz(path: Path, *, copies: int = 0) -> Path:
    """Two classes of random-noise images (nothing separates them); `copies` test images repeat training images."""
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (60, 16, 16, 3), dtype=np.uint8), np.array([0, 1] * 30)
    xt, yt = rng.integers(0, 256, (10, 16, 16, 3), dtype=np.uint8), np.array([0, 1] * 5)
    xt[:copies] = x[:copies]
    np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt, class_names=np.array(["a", "b"]))
    return path


def test_clean_data_passes_and_nothing_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    data = noise_npz(tmp_path / "clean.npz")
    monkeypatch.chdir(tmp_path)
    assert main(["check-data", f"npz:{data}", "--val-split", "0.2"]) == 0
    printed = capsys.readouterr().out
    assert f"Data: npz:{data} (2 classes; train 48, val 12, test 10), decoded at 32px" in printed
    assert "Images per class (train/val/test): a 24/6/5, b 24/6/5" in printed
    assert printed.rstrip().endswith("No warnings")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean.npz"], "no run directory, no files"


def test_warnings_set_the_exit_status_and_strict_makes_them_an_error(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    data = noise_npz(tmp_path / "copies.npz", copies=3)
    assert main(["check-data", f"npz:{data}", "--input-size", "16", "--val-split", "0"]) == 1
    printed = capsys.readouterr().out
    assert "Warning: 3 distinct test image(s) are exact copies of training images" in printed
    assert "decoded at 16px" in printed and printed.rstrip().endswith("1 warning(s)")
    with pytest.raises(CnnkitError, match="data warnings \\(--strict\\)"):
        check_training_data(train_config(f"npz:{data}", strict=True))
