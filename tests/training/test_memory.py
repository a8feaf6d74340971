"""Memory of a training step: measured activations, gradient checkpointing and micro-batches chosen to fit a
budget, and the same training result whichever of them runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from cnnkit.config import TrainConfig
from cnnkit.errors import CnnkitError
from cnnkit.rundir import RunDir
from cnnkit.runtime.engine import StepSettings
from cnnkit.training import fit, memory

CPU = StepSettings(device=torch.device("cpu"), channels_last=False)
MIB = 1024**2


def _tiny_timm() -> nn.Module:
    return timm.create_model("efficientnet_b0", num_classes=3, pretrained=False)


def test_activations_grow_with_the_images_and_checkpointing_keeps_fewer() -> None:
    model = _tiny_timm()
    blocks = memory.checkpoint_blocks(model)
    assert len(blocks) == 16  # EfficientNet-B0's MBConv blocks, each recomputed on its own
    small = memory.estimate_memory(model, torch.randn(2, 3, 64, 64), settings=CPU, optimizer="adam", blocks=blocks)
    large = memory.estimate_memory(model, torch.randn(2, 3, 128, 128), settings=CPU, optimizer="adam", blocks=blocks)
    assert large.per_image == pytest.approx(4 * small.per_image, rel=0.1)  # 4x the pixels
    assert small.per_image_checkpointed is not None and small.per_image_checkpointed < small.per_image / 2
    params = sum(p.numel() for p in model.parameters()) * 4
    assert small.fixed == 4 * params  # weights, gradients and Adam's two moments, float32


def test_the_saved_activations_match_what_autograd_really_holds() -> None:
    model = nn.Sequential(nn.Linear(1000, 1000), nn.ReLU(), nn.Linear(1000, 10))
    estimate = memory.estimate_memory(model, torch.randn(4, 1000), settings=CPU, optimizer="sgd", blocks=[])
    # Linear saves its input (1000 floats), ReLU its output (1000), the second Linear its input (the same tensor).
    assert estimate.per_image == 2 * 1000 * 4
    assert estimate.per_image_checkpointed is None


def test_the_plan_checkpoints_first_then_splits_the_batch() -> None:
    estimate = memory.MemoryEstimate(fixed=100 * MIB, per_image=40 * MIB, per_image_checkpointed=10 * MIB)
    roomy = memory.plan_memory(estimate, batch_size=64, budget=8192 * MIB, checkpointing="auto", micro_batch=0)
    assert not roomy.checkpointing and roomy.micro_batch is None
    tight = memory.plan_memory(estimate, batch_size=64, budget=1024 * MIB, checkpointing="auto", micro_batch=0)
    assert tight.checkpointing and tight.micro_batch is None
    assert tight.estimate.peak(64, checkpointed=True) <= 1024 * MIB
    tighter = memory.plan_memory(estimate, batch_size=64, budget=400 * MIB, checkpointing="auto", micro_batch=0)
    assert tighter.checkpointing and tighter.micro_batch is not None and tighter.micro_batch < 64
    assert estimate.peak(tighter.micro_batch, checkpointed=True) <= 400 * MIB
    assert "micro-batches of" in tighter.describe() and "checkpointing on" in tighter.describe()
    off = memory.plan_memory(estimate, batch_size=64, budget=1024 * MIB, checkpointing="off", micro_batch=0)
    assert not off.checkpointing and off.micro_batch is not None
    cannot = memory.MemoryEstimate(fixed=0, per_image=40 * MIB, per_image_checkpointed=None)
    assert not memory.plan_memory(cannot, batch_size=8, budget=MIB, checkpointing="auto", micro_batch=0).checkpointing


def test_micro_batches_train_exactly_as_the_whole_batch(shapes_npz: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    # simple-cnn has no BatchNorm: its gradient over a batch is the sum of its micro-batches' gradients. SGD, not
    # Adam, so that a gradient of the wrong scale would show.
    config = dict(data=f"npz:{shapes_npz}", epochs=2, batch_size=32, lr=0.05, optimizer="sgd", device="cpu", seed=3,
                  precision="fp32")
    whole = fit.train(TrainConfig(**config, out=tmp_path / "whole"))
    split = fit.train(TrainConfig(**config, micro_batch=8, out=tmp_path / "split"))
    assert "micro-batches of 8 images, gradients accumulated over the batch of 32" in capsys.readouterr().out
    for a, b in zip(whole.history, split.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    one, _ = RunDir.open(tmp_path / "whole").read_tensors("last.safetensors")
    two, _ = RunDir.open(tmp_path / "split").read_tensors("last.safetensors")
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-5), key


def test_a_small_budget_turns_checkpointing_on_and_the_run_says_so(
        shapes_npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "in_use", lambda device: 0)  # the budget below is the step's alone
    # timm's test_efficientnet: EfficientNet's blocks at a fraction of B0's cost
    config = dict(data=f"npz:{shapes_npz}", model="timm/test_efficientnet", input_size=64, epochs=1, batch_size=16,
                  device="cpu", seed=1, precision="fp32")
    fit.train(TrainConfig(**config, out=tmp_path / "plain"))
    assert "gradient checkpointing on" not in capsys.readouterr().out
    # A budget between the step's peak with checkpointing and without it.
    model = timm.create_model("test_efficientnet", num_classes=3)
    estimate = memory.estimate_memory(model, torch.randn(2, 3, 64, 64), settings=CPU, optimizer="adam",
                                      blocks=memory.checkpoint_blocks(model))
    budget = (estimate.peak(16, checkpointed=True) + estimate.peak(16, checkpointed=False)) / 2 / memory.GIB
    fit.train(TrainConfig(**config, max_memory=budget, out=tmp_path / "tight"))
    printed = capsys.readouterr().out
    assert "Memory: estimated peak of a training step" in printed and "gradient checkpointing on" in printed
    assert "micro-batches" not in printed and "WARNING" not in printed  # BatchNorm trains: no micro-batches for speed
    one, _ = RunDir.open(tmp_path / "plain").read_tensors("last.safetensors")
    two, _ = RunDir.open(tmp_path / "tight").read_tensors("last.safetensors")
    for key in one:  # recomputation gives the same gradients (BatchNorm in training mode recomputes the same batch)
        assert torch.allclose(one[key], two[key], atol=1e-4), key


def test_checkpointing_asked_of_a_model_that_cannot_is_refused(shapes_npz: Path, tmp_path: Path) -> None:
    with pytest.raises(CnnkitError, match="cannot checkpoint"):
        fit.train(TrainConfig(data=f"npz:{shapes_npz}", epochs=1, grad_checkpointing="on", device="cpu",
                              out=tmp_path / "run"))


def test_on_a_cpu_batches_are_split_for_speed_only_where_the_result_cannot_change() -> None:
    big = 200 * MIB  # per image: over malloc's memory-map threshold at any batch size
    frozen = memory.MemoryEstimate(fixed=0, per_image=2 * big, per_image_checkpointed=None,
                                   largest_per_image=16 * MIB, batch_statistics=False)
    plan = memory.plan_memory(frozen, batch_size=64, budget=1 << 50, checkpointing="auto", micro_batch=0,
                              for_speed=True)
    assert plan.micro_batch == 4 and "memory-map threshold" in plan.describe()  # 4 x 16 MB = 64 MB
    assert memory.plan_memory(frozen, batch_size=64, budget=1 << 50, checkpointing="auto", micro_batch=0,
                              for_speed=False).micro_batch is None  # a GPU
    training_norms = memory.MemoryEstimate(fixed=0, per_image=2 * big, per_image_checkpointed=None,
                                           largest_per_image=16 * MIB, batch_statistics=True)
    assert memory.plan_memory(training_norms, batch_size=64, budget=1 << 50, checkpointing="auto", micro_batch=0,
                              for_speed=True).micro_batch is None
    asked = memory.plan_memory(frozen, batch_size=64, budget=1 << 50, checkpointing="auto", micro_batch=32,
                               for_speed=True)
    assert asked.micro_batch == 32
