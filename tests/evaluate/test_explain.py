import torch

from cnnkit.evaluate.explain import grad_cam, last_conv
from cnnkit.models import create_model


def test_grad_cam_points_at_the_evidence() -> None:
    """A net whose class-1 logit is the brightness of the top-left quadrant must be explained by that quadrant."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight.fill_(0.1)
        model[0].bias.zero_()
        model[4].weight.copy_(torch.tensor([[-1.0] * 4, [1.0] * 4]))
    x = torch.zeros(1, 3, 32, 32)
    x[..., :16, :16] = 1.0
    heat, index, probability = grad_cam(model, x)
    assert index == 1 and 0.5 < probability <= 1
    assert heat.shape == (32, 32) and heat.max() == 1.0
    assert heat[:14, :14].mean() > 0.9 and heat[18:, 18:].mean() < 0.1


def test_last_conv_and_frozen_weights_still_explain() -> None:
    model = create_model("simple-cnn", num_classes=3)
    assert last_conv(model) is model.conv3
    model.requires_grad_(False)
    heat, _, _ = grad_cam(model, torch.rand(1, 3, 32, 32))
    assert heat.shape == (32, 32)


def test_a_small_image_is_shown_enlarged_pixel_for_pixel() -> None:
    import numpy as np

    from cnnkit.evaluate.explain import _side_by_side

    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    picture = _side_by_side(pixels, np.zeros((32, 32)))
    assert picture.shape == (256, 256 + 8 + 256, 3)
    assert (picture[:256, :256] == pixels.repeat(8, axis=0).repeat(8, axis=1)).all()  # blocks, not blurred
    assert _side_by_side(np.zeros((300, 280, 3), np.uint8), np.zeros((300, 280))).shape == (300, 568, 3)
