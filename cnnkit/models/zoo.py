"""Well-known ImageNet architectures, built by torchvision or timm (random weights; see pretrained.py).

timm and torchvision are imported by the builders that use them: importing them (timm imports torchvision, which
imports torch._dynamo) costs a command about two seconds that one on the small CNNs never needs.
"""

from __future__ import annotations

from torch import nn

from cnnkit.models.registry import ModelSpec, register_model


@register_model("alexnet", input_size=224, description="AlexNet (torchvision)", weights="alexnet.imagenet")
def alexnet(spec: ModelSpec) -> nn.Module:
    import torchvision

    model = torchvision.models.alexnet(weights=None, num_classes=spec.num_classes)
    _set_in_chans(model.features, 0, spec.in_chans)
    return model


@register_model("vgg16", input_size=224, description="VGG-16 (torchvision)", weights="vgg16.imagenet")
def vgg16(spec: ModelSpec) -> nn.Module:
    import torchvision

    model = torchvision.models.vgg16(weights=None, num_classes=spec.num_classes)
    _set_in_chans(model.features, 0, spec.in_chans)
    return model


@register_model("resnet50", input_size=224, description="ResNet-50 (timm)", weights="resnet50.imagenet",
                drop_path=True)
def resnet50(spec: ModelSpec) -> nn.Module:
    import timm

    return timm.create_model("resnet50", num_classes=spec.num_classes, in_chans=spec.in_chans,
                             drop_path_rate=spec.drop_path)


@register_model("efficientnet_b0", input_size=224, description="EfficientNet-B0 (timm)",
                weights="efficientnet_b0.imagenet", drop_path=True)
def efficientnet_b0(spec: ModelSpec) -> nn.Module:
    import timm

    return timm.create_model("efficientnet_b0", num_classes=spec.num_classes, in_chans=spec.in_chans,
                             drop_path_rate=spec.drop_path)


@register_model("efficientnet_lite0", input_size=224, description="EfficientNet-Lite0, TF-compatible (timm)",
                weights="efficientnet_lite0.imagenet", drop_path=True)
def efficientnet_lite0(spec: ModelSpec) -> nn.Module:
    import timm

    # The tf_ variant (TF "same" padding, BN eps 1e-3) is the one the published Lite0 weights match.
    return timm.create_model("tf_efficientnet_lite0", num_classes=spec.num_classes, in_chans=spec.in_chans,
                             drop_path_rate=spec.drop_path)


def _set_in_chans(features: nn.Sequential, index: int, in_chans: int) -> None:
    conv = features[index]
    if in_chans != conv.in_channels:
        features[index] = nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding)
