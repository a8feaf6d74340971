"""MixUp and CutMix (cnnkit.data.mixing): blended images, soft targets that match them, seeded draws."""

import pytest
import torch

from cnnkit.data.mixing import Mixer, build_mixer


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(8, 3, 16, 16, generator=generator), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])


def test_mixup_blends_each_image_with_the_one_before_it_in_the_targets_proportions() -> None:
    images, labels = batch()
    mixed = Mixer(4, mixup=0.4)(images, labels, torch.Generator().manual_seed(3))
    lam = float(mixed.targets[0, labels[0]])  # image 0's own label keeps weight lam (its partner's label differs)
    assert 0 < lam < 1
    assert torch.allclose(mixed.images, lam * images + (1 - lam) * images.roll(1, 0), atol=1e-6)
    expected = torch.zeros(8, 4)
    expected[torch.arange(8), labels] += lam
    expected[torch.arange(8), labels.roll(1, 0)] += 1 - lam
    assert torch.allclose(mixed.targets, expected, atol=1e-6)
    assert torch.equal(mixed.labels, labels if lam >= 0.5 else labels.roll(1, 0))


def test_cutmix_targets_weigh_labels_by_the_pasted_area() -> None:
    images, labels = batch()
    for seed in range(20):
        mixed = Mixer(4, cutmix=1.0)(images, labels, torch.Generator().manual_seed(seed))
        from_partner = (mixed.images == images.roll(1, 0)) & (mixed.images != images)
        assert torch.all((mixed.images == images) | from_partner), "every pixel is the image's or its partner's"
        pasted = float(from_partner[0].all(dim=0).float().mean())  # the box's share of image 0 (its pixels differ)
        assert mixed.targets[0, labels[0]] == pytest.approx(1 - pasted, abs=1e-6)
        assert torch.allclose(mixed.targets.sum(1), torch.ones(8))
        larger = labels if 1 - pasted >= 0.5 else labels.roll(1, 0)
        assert torch.equal(mixed.labels, larger)


def test_the_same_generator_state_mixes_the_same_way_and_both_kinds_occur() -> None:
    images, labels = batch()
    mixer = Mixer(4, mixup=0.2, cutmix=1.0)
    first = mixer(images, labels, torch.Generator().manual_seed(7))
    again = mixer(images, labels, torch.Generator().manual_seed(7))
    assert torch.equal(first.images, again.images) and torch.equal(first.targets, again.targets)
    kinds = set()
    for seed in range(30):
        out = mixer(images, labels, torch.Generator().manual_seed(seed)).images
        whole = (out == images) | (out == images.roll(1, 0))
        kinds.add("cutmix" if bool(whole.all()) else "mixup")
    assert kinds == {"cutmix", "mixup"}
    assert build_mixer(num_classes=4, mixup=0.0, cutmix=0.0) is None
