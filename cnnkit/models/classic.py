"""The classic small CNNs, written out layer by layer as the tutorials draw them."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from cnnkit.models.registry import ModelSpec, register_model


def _named(*layers: tuple[str, nn.Module]) -> nn.Sequential:
    return nn.Sequential(OrderedDict(layers))


def _conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    return (size + 2 * padding - kernel) // stride + 1


@register_model("simple-cnn", input_size=32, description="Tutorial CNN: Conv 32-64-64 + Dense 64")
def simple_cnn(spec: ModelSpec) -> nn.Module:
    """Conv2D(32)-MaxPool-Conv2D(64)-MaxPool-Conv2D(64)-Flatten-Dense(64)-Dense(N), 3x3 valid convs, ReLU.

    Each ReLU before a max pool runs after it instead: the two commute (ReLU is monotonic, so the max of rectified
    values is the rectified max), outputs and gradients are the same, and the ReLU and its backward see a quarter of
    the values (bench/vs_keras.py)."""
    size = _conv_out(_conv_out(spec.input_size, 3) // 2, 3) // 2
    size = _conv_out(size, 3)
    if size < 1:
        raise ValueError(f"simple-cnn needs an input of at least 18 pixels, got {spec.input_size}")
    return _named(
        ("conv1", nn.Conv2d(spec.in_chans, 32, 3)), ("pool1", nn.MaxPool2d(2)), ("relu1", nn.ReLU(inplace=True)),
        ("conv2", nn.Conv2d(32, 64, 3)), ("pool2", nn.MaxPool2d(2)), ("relu2", nn.ReLU(inplace=True)),
        ("conv3", nn.Conv2d(64, 64, 3)), ("relu3", nn.ReLU(inplace=True)),
        ("flatten", nn.Flatten()),
        ("dense1", nn.Linear(64 * size * size, 64)), ("relu4", nn.ReLU(inplace=True)),
        ("dense2", nn.Linear(64, spec.num_classes)),
    )


@register_model("lenet5", input_size=32, description="LeNet-5 (LeCun et al. 1998), tanh + average pooling")
def lenet5(spec: ModelSpec) -> nn.Module:
    """C1 6@5x5 - S2 - C3 16@5x5 - S4 - F5 120 - F6 84 - output."""
    size = _conv_out(_conv_out(spec.input_size, 5) // 2, 5) // 2
    if size < 1:
        raise ValueError(f"lenet5 needs an input of at least 16 pixels, got {spec.input_size}")
    return _named(
        ("c1", nn.Conv2d(spec.in_chans, 6, 5)), ("tanh1", nn.Tanh()), ("s2", nn.AvgPool2d(2)),
        ("c3", nn.Conv2d(6, 16, 5)), ("tanh2", nn.Tanh()), ("s4", nn.AvgPool2d(2)),
        ("flatten", nn.Flatten()),
        ("f5", nn.Linear(16 * size * size, 120)), ("tanh3", nn.Tanh()),
        ("f6", nn.Linear(120, 84)), ("tanh4", nn.Tanh()),
        ("output", nn.Linear(84, spec.num_classes)),
    )
