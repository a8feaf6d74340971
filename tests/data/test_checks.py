"""Data sanity checks: class balance, small classes, and shortcuts a model could learn instead of the content."""

import torch

from cnnkit.data.checks import shortcut_warnings


def pages(n: int, *, frame: bool, seed: int) -> torch.Tensor:
    """White pages with random dark content; `frame` adds a flat grey top band, as a browser's tab strip."""
    g = torch.Generator().manual_seed(seed)
    images = torch.full((n, 3, 64, 64), 250, dtype=torch.uint8)
    images[:, :, 10:] = torch.where(torch.rand(n, 1, 54, 64, generator=g) < 0.2, 30, 250).to(torch.uint8)
    if frame:
        images[:, :, :5] = 200
    return images


def test_a_browser_frame_on_one_class_is_flagged_as_a_shortcut() -> None:
    from cnnkit.data.datasets import ArrayData

    images = torch.cat([pages(20, frame=True, seed=0), pages(20, frame=False, seed=1)])
    data = ArrayData(images, torch.tensor([0] * 20 + [1] * 20))
    warnings = shortcut_warnings(data, ["legitimate", "phishing"])
    assert any(w.startswith("top-band brightness alone separates 'legitimate' from 'phishing'") for w in warnings)
    same = ArrayData(torch.cat([pages(20, frame=False, seed=2), pages(20, frame=False, seed=3)]), data.labels)
    assert shortcut_warnings(same, ["legitimate", "phishing"]) == []
