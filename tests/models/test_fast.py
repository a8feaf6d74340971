import torch
import torch.nn.functional as F

from cnnkit.models.fast import FastCifarNet


def correlated_images(n: int = 64, seed: int = 0) -> torch.Tensor:
    # Neighbouring pixels and channels correlate, as in photos: blurred noise plus a shared grey level.
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, 3, 34, 34, generator=generator)
    x = F.avg_pool2d(noise, 3, stride=1) + torch.randn(n, 1, 32, 32, generator=generator)
    return (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)


def test_the_stem_whitens_the_patches_it_was_set_from() -> None:
    net = FastCifarNet(num_classes=10)
    images = correlated_images()
    net.init_from_data(images)
    out = F.conv2d(images, net.whiten.weight)  # without the bias
    half = out.shape[1] // 2
    torch.testing.assert_close(out[:, half:], -out[:, :half])  # each direction and its negative
    flat = out[:, :half].permute(0, 2, 3, 1).reshape(-1, half)
    covariance = flat.T @ flat / len(flat)
    # Uncorrelated, unit variance (a little less along the weakest directions, which the epsilon damps).
    variances = covariance.diag()
    torch.testing.assert_close(covariance - torch.diag(variances), torch.zeros(half, half), atol=0.02, rtol=0)
    assert variances.max() < 1.01 and variances.min() > 0.9 and variances[: half // 2].min() > 0.99
    assert not net.whiten.weight.requires_grad and net.whiten.bias.requires_grad


def test_convolutions_start_as_identities_and_batchnorm_learns_only_its_shift() -> None:
    net = FastCifarNet(num_classes=10)
    conv = net.groups[1][4]  # the second convolution of the second group: 256 -> 256
    x = torch.randn(2, conv.in_channels, 8, 8)
    out = conv(x)
    torch.testing.assert_close(out[:, : conv.in_channels], x)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(not m.weight.requires_grad and m.bias.requires_grad for m in norms)
