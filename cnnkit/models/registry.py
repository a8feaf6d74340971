"""The model registry: named architectures, and any timm model by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.models.weights import WEIGHTS, WeightsSpec, timm_weights
from cnnkit.options import did_you_mean
from cnnkit.registry import Registry


@dataclass(frozen=True)
class ModelSpec:
    """What a builder needs to know to build a network."""

    num_classes: int = 10
    in_chans: int = 3
    input_size: int = 32
    drop_path: float = 0.0  # stochastic depth: the rate at which the deepest residual block is skipped in training


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[[ModelSpec], nn.Module]
    input_size: int  # default square input side, pixels
    description: str
    weights: str | None = None  # the name of its pretrained weights spec (models.weights)
    drop_path: bool = False  # whether its builder takes ModelSpec.drop_path (it has residual blocks to skip)


MODELS: Registry[ModelEntry] = Registry("model")
TIMM_PREFIX = "timm/"


def register_model(
    name: str, *, input_size: int, description: str = "", weights: str | None = None, drop_path: bool = False
) -> Callable[[Callable[[ModelSpec], nn.Module]], Callable[[ModelSpec], nn.Module]]:
    """Decorator: register `builder(spec) -> nn.Module` under `name`; `weights` names its pretrained weights,
    `drop_path` says that the builder applies `spec.drop_path`."""

    def wrap(builder: Callable[[ModelSpec], nn.Module]) -> Callable[[ModelSpec], nn.Module]:
        MODELS.register(name, ModelEntry(name, builder, input_size, description or (builder.__doc__ or ""), weights,
                                         drop_path))
        return builder

    return wrap


def default_input_size(name: str) -> int:
    """The input side a model is usually trained at."""
    if name.startswith(TIMM_PREFIX) or name not in MODELS:
        check_model_name(name)
        return _timm_input_size(_timm_name(name))
    return MODELS.get(name).input_size


def create_model(name: str, *, num_classes: int, input_size: int | None = None, in_chans: int = 3,
                 drop_path: float = 0.0) -> nn.Module:
    """Build a registered model, or a timm model (``timm/NAME`` or a bare timm name), with random weights;
    `drop_path` > 0 adds stochastic depth to a model with residual blocks (refused for one without)."""
    if name in MODELS:
        entry = MODELS.get(name)
        if drop_path and not entry.drop_path:
            able = [n for n in MODELS if MODELS.get(n).drop_path]
            raise CnnkitError(f"--drop-path: {name} has no residual blocks to skip; models that do: {', '.join(able)} "
                              "and timm's ResNets, EfficientNets, ConvNeXts and ViTs (timm/NAME)")
        spec = ModelSpec(num_classes=num_classes, in_chans=in_chans, input_size=input_size or entry.input_size,
                         drop_path=drop_path)
        try:
            return entry.builder(spec)
        except ValueError as exc:
            raise CnnkitError(str(exc)) from None
    import timm

    timm_name = _timm_name(name)
    check_model_name(name)
    extra = {"drop_path_rate": drop_path} if drop_path else {}
    try:
        return timm.create_model(timm_name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **extra)
    except TypeError as exc:
        if not extra:
            raise
        raise CnnkitError(f"--drop-path: timm's {timm_name} does not take a drop-path rate ({exc})") from None


def weights_spec(name: str) -> WeightsSpec:
    """The pretrained weights spec of a model, or a clear error when it has none."""
    if name in MODELS:
        entry = MODELS.get(name)
        if entry.weights is None:
            raise CnnkitError(f"{name} has no pretrained weights; use --weights PATH or another model")
        return WEIGHTS.get(entry.weights)
    return timm_weights(_timm_name(name))


def _timm_name(name: str) -> str:
    return name[len(TIMM_PREFIX):] if name.startswith(TIMM_PREFIX) else name


def check_model_name(name: str) -> None:
    """A clear error, with the closest names, for a model that is neither registered nor in timm."""
    import timm

    if name in MODELS or timm.list_models(_timm_name(name)):
        return
    if name.startswith(TIMM_PREFIX):
        hint = did_you_mean(name, [TIMM_PREFIX + n for n in timm.list_models()])
    else:
        hint = did_you_mean(name, list(MODELS)) or did_you_mean(name, [TIMM_PREFIX + n for n in timm.list_models()])
    raise CnnkitError(f"unknown model {name!r}; valid: {', '.join(MODELS)}, or any timm model as timm/NAME "
                      f"(see `cnnkit models --timm`){hint}")


def _timm_input_size(timm_name: str) -> int:
    import timm

    cfg = timm.get_pretrained_cfg(timm_name)
    return int(cfg.input_size[-1]) if cfg is not None else 224
