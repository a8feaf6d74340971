import pytest
import torch
from torch import nn

from cnnkit.config import TrainConfig
from cnnkit.models.tta import tta_logits


class TopLeftPixel(nn.Module):
    """Logits = the top-left pixel's channels: which pixel each view puts there shows what the view is."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, 0, 0]


def test_each_mode_averages_the_views_it_names() -> None:
    x = torch.randn(2, 3, 6, 7)
    model, w = TopLeftPixel(), x.shape[-1]
    torch.testing.assert_close(tta_logits(model, x, "none"), x[:, :, 0, 0])
    flip = 0.5 * (x[:, :, 0, 0] + x[:, :, 0, w - 1])
    torch.testing.assert_close(tta_logits(model, x, "flip"), flip)
    # Shifted one pixel up-left or down-right with reflect padding, the top-left corner (and the mirrored one) come
    # from row 1: columns 1 and w - 2.
    shifted = 0.5 * (x[:, :, 1, 1] + x[:, :, 1, w - 2])
    torch.testing.assert_close(tta_logits(model, x, "flip-shift"), 0.5 * flip + 0.5 * shifted)
    with pytest.raises(ValueError, match="valid: none, flip, flip-shift"):
        tta_logits(model, x, "rotate")


def test_runs_saved_with_the_old_boolean_tta_still_load() -> None:
    base = {"data": "cifar10", "out": "runs/x"}
    assert TrainConfig.from_dict({**base, "tta": True}).tta == "flip"
    assert TrainConfig.from_dict({**base, "tta": False}).tta == "none"
