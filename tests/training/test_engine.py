"""The training step: class weights (--class-weight balanced) and gradient clipping (--clip-grad-norm)."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnkit.config import TrainConfig
from cnnkit.data.checks import imbalance
from cnnkit.data.datasets import ArrayData
from cnnkit.data.loader import shard_batches
from cnnkit.data.preprocess import Preprocess
from cnnkit.models.registry import create_model
from cnnkit.runtime.engine import StepSettings
from cnnkit.training.engine import StepConfig, _backward, balanced_class_weights, train_one_epoch
from cnnkit.training.fit import train


def test_balanced_weights_give_every_class_the_same_total() -> None:
    labels = torch.tensor([0, 0, 0, 1, 2, 2])
    weights = balanced_class_weights(labels, 4)
    assert weights.tolist() == pytest.approx([6 / 9, 6 / 3, 6 / 6, 0.0])  # class 3 has no images
    assert torch.bincount(labels, weights=weights[labels].double()).tolist() == pytest.approx([2, 2, 2])
    assert balanced_class_weights(torch.tensor([0, 1, 0, 1]), 2).tolist() == [1.0, 1.0]


def test_a_weighted_batch_has_the_gradients_of_its_minority_images_repeated() -> None:
    """Weights 2/3 and 2 for three images of class 0 and one of class 1 are, up to the factor 2/3, the batch with
    the class-1 image three times over."""
    torch.manual_seed(0)
    model = create_model("simple-cnn", num_classes=2)
    x, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 0, 0, 1])
    settings = StepSettings(device=torch.device("cpu"), precision="fp32", channels_last=False)
    step = StepConfig(Preprocess(input_size=32), settings, class_weights=balanced_class_weights(labels, 2))

    def gradients(step: StepConfig, x: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
        model.zero_grad()
        _backward(model, x, labels, step=step, scale=1.0)
        return [p.grad.clone() for p in model.parameters()]

    weighted = gradients(step, x, labels)
    repeated = gradients(StepConfig(Preprocess(input_size=32), settings), x[[0, 1, 2, 3, 3, 3]],
                         labels[[0, 1, 2, 3, 3, 3]])
    for a, b in zip(weighted, repeated):
        torch.testing.assert_close(a, b * 2 / 3, rtol=1e-4, atol=1e-6)


def test_imbalanced_training_data_is_noted_and_balanced_weights_are_saved(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    labels = np.array([0] * 60 + [1] * 12)
    x = rng.integers(0, 60, (72, 32, 32, 3), dtype=np.uint8) + (labels * 120)[:, None, None, None].astype(np.uint8)
    np.savez(tmp_path / "skewed.npz", x=x, y=labels, class_names=np.array(["legit", "phish"]))
    assert "'legit' has 60 training images, 'phish' 12" in imbalance(ArrayData.from_numpy(x, labels, source="x"),
                                                                      ["legit", "phish"])
    base = TrainConfig(data=f"npz:{tmp_path / 'skewed.npz'}", epochs=1, batch_size=16, device="cpu", val_split=0.2,
                       test_split=0)
    train(replace(base, out=tmp_path / "plain"))
    assert "Note: the classes are imbalanced" in capsys.readouterr().out
    train(replace(base, out=tmp_path / "weighted", class_weight="balanced"))
    printed = capsys.readouterr().out
    assert "Class weights (balanced, training loss only): legit 0.604, phish 2.9" in printed
    assert "Note: the classes are imbalanced" not in printed
    assert json.loads((tmp_path / "weighted" / "config.json").read_text())["class_weight"] == "balanced"


def test_clipped_gradients_move_plain_sgd_at_most_lr_times_the_norm() -> None:
    """--clip-grad-norm C: one SGD step (no momentum) moves the weights by lr x C at most, in global L2 norm, where
    the unclipped step moves them further."""
    def one_step(clip: float) -> float:
        torch.manual_seed(0)
        model = create_model("simple-cnn", num_classes=3)
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        settings = StepSettings(device=torch.device("cpu"), precision="fp32", channels_last=False)
        step = StepConfig(Preprocess(input_size=32), settings, show_progress=False, clip_grad_norm=clip)
        data = ArrayData.from_numpy(np.random.default_rng(0).integers(0, 255, (16, 32, 32, 3), dtype=np.uint8),
                                    np.arange(16) % 3, source="x")
        batches = shard_batches(torch.arange(16), batch_size=16)
        train_one_epoch(model, data, batches, optimizer=optimizer, step=step)
        after = torch.cat([p.detach().flatten() for p in model.parameters()])
        return float((after - before).norm())

    assert one_step(0.0) > 0.1 * 0.05 * 2
    assert one_step(0.05) == pytest.approx(0.1 * 0.05, rel=1e-3)


def test_a_balanced_sampler_draws_every_class_equally_from_seed_and_epoch_alone(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from cnnkit.data.loader import balanced_order

    labels = torch.tensor([0] * 900 + [1] * 100)
    order = balanced_order(labels, seed=1, epoch=3)
    assert len(order) == 1000 and torch.equal(order, balanced_order(labels, seed=1, epoch=3))
    assert not torch.equal(order, balanced_order(labels, seed=1, epoch=4))
    drawn = torch.bincount(labels[order]).tolist()
    assert abs(drawn[0] - drawn[1]) < 120  # 500 each expected; sd 16
    assert len(set(order[labels[order] == 1].tolist())) < 100 <= int((labels[order] == 1).sum())  # minority recurs

    rng = np.random.default_rng(0)
    skewed = np.array([0] * 60 + [1] * 12)
    x = rng.integers(0, 60, (72, 32, 32, 3), dtype=np.uint8) + (skewed * 120)[:, None, None, None].astype(np.uint8)
    np.savez(tmp_path / "skewed.npz", x=x, y=skewed, class_names=np.array(["legit", "phish"]))
    config = TrainConfig(data=f"npz:{tmp_path / 'skewed.npz'}", epochs=2, batch_size=16, device="cpu",
                         val_split=0.2, test_split=0, sampler="balanced", out=tmp_path / "run")
    train(config)
    printed = capsys.readouterr().out
    assert ("Sampler: balanced: 58 draws an epoch, with replacement, each class equally likely (training images: "
            "legit 48, phish 10)") in printed
    assert "Note: the classes are imbalanced" not in printed
    with pytest.raises(Exception, match="--sampler balanced and --class-weight balanced both correct"):
        replace(config, class_weight="balanced")
