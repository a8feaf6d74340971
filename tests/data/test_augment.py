from pathlib import Path

import numpy as np
import pytest
import torch

from cnnkit.data.augment import (
    POLICIES,
    Augmenter,
    AugmentSpec,
    build_augmenter,
    parse_augment,
)
from cnnkit.errors import CnnkitError


def batch() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(8, 3, 32, 32, generator=generator)


@pytest.mark.parametrize("policy", ["standard", "screenshot", "flip", "rotate=0.1", "zoom=0.2", "crop=0.8",
                                    "contrast=0.3", "brightness=0.2", "translate=0.1", "jpeg=1", "shift=2",
                                    "flip,shift=3"])
def test_each_policy_changes_images_keeps_shape_and_range(policy: str) -> None:
    augment = build_augmenter(policy)
    assert augment is not None
    x = batch()
    out = augment(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert (out - x).abs().mean() > 1e-3
    again = augment(x, torch.Generator().manual_seed(1))
    assert torch.allclose(out, again), "same seed, same augmentation"


def test_none_is_no_augmenter_and_flip_mirrors_exactly() -> None:
    assert build_augmenter("none") is None
    x = batch()
    out = Augmenter(AugmentSpec(flip=True))(x, torch.Generator().manual_seed(0))
    for original, flipped in zip(x, out):
        assert torch.allclose(flipped, original, atol=1e-5) or torch.allclose(flipped, original.flip(-1), atol=1e-5)


def test_shift_moves_whole_pixels_without_blur() -> None:
    x = batch()
    out = Augmenter(AugmentSpec(shift=2))(x, torch.Generator().manual_seed(0))
    for original, moved in zip(x, out):
        # every shifted image equals the original at some integer offset (on the part that stayed inside)
        assert any(torch.equal(moved[:, 2:-2, 2:-2], original[:, 2 - dy : 30 - dy, 2 - dx : 30 - dx])
                   for dy in range(-2, 3) for dx in range(-2, 3))


def test_screenshot_policy_never_flips_or_rotates() -> None:
    spec = POLICIES["screenshot"]
    assert not spec.flip and spec.rotate == 0 and spec.crop and spec.jpeg


def test_spec_parsing_and_errors() -> None:
    spec = parse_augment("flip,rotate=0.1,zoom=0.1,contrast=0.1,brightness=0.2,crop=0.9")
    assert spec == AugmentSpec(flip=True, rotate=0.1, zoom=0.1, contrast=0.1, brightness=0.2, crop=0.9)
    with pytest.raises(CnnkitError, match="unknown part 'blur'"):
        parse_augment("flip,blur=2")
    with pytest.raises(CnnkitError, match="rotate=3 is out of range"):
        parse_augment("rotate=3")
    with pytest.raises(CnnkitError, match="whole pixels"):
        parse_augment("shift=1.5")
    with pytest.raises(CnnkitError, match="needs a number"):
        parse_augment("zoom=big")


def test_training_augments_but_evaluation_images_are_untouched(
    shapes_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Evaluation must see the same pixels whatever the augmentation policy of training."""
    from cnnkit.config import TrainConfig
    from cnnkit.training import engine
    from cnnkit.training.fit import train

    seen: dict[str, list[torch.Tensor]] = {"train": [], "eval": []}
    original_forward = engine.StepSettings.prepare

    def spy(self: engine.StepSettings, x: torch.Tensor) -> torch.Tensor:
        seen["train" if torch.is_grad_enabled() else "eval"].append(x.detach().clone())
        return original_forward(self, x)

    results = {}
    for policy in ("none", "standard"):
        seen["train"].clear(), seen["eval"].clear()
        monkeypatch.setattr(engine.StepSettings, "prepare", spy)
        train(TrainConfig(data=f"npz:{shapes_npz}", out=tmp_path / policy, epochs=1, batch_size=64, quiet=True,
                          device="cpu", augment=policy, val_split=0.2, normalize="unit"))
        monkeypatch.undo()
        results[policy] = {k: torch.cat(v) for k, v in seen.items()}
    assert torch.equal(results["none"]["eval"], results["standard"]["eval"])
    assert not torch.allclose(results["none"]["train"], results["standard"]["train"])


def test_augment_preview_writes_a_grid(shapes_npz: Path, tmp_path: Path) -> None:
    from PIL import Image

    from cnnkit.config import PreviewConfig
    from cnnkit.data.preview import augment_preview

    augment_preview(PreviewConfig(data=f"npz:{shapes_npz}", out=tmp_path / "grid.png", augment="standard",
                                  images=3, samples=2))
    with Image.open(tmp_path / "grid.png") as grid:  # 32-px images shown at 96 px (3x), 4 px apart
        assert grid.size == (3 * 100 + 4, 3 * 100 + 4)
        tile = np.asarray(grid)[4:100, 4:100]
        assert (tile[::3, ::3].repeat(3, axis=0).repeat(3, axis=1) == tile).all()  # pixel blocks, not blurred
