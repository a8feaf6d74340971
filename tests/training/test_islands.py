import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnkit.config import TrainConfig
from cnnkit.models.transfer import depthwise_convs
from cnnkit.training.fit import train
from cnnkit.training.islands import Fp32Islands


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 4, 1))


def test_islands_run_their_modules_in_fp32_under_bf16_autocast_while_autograd_records() -> None:
    net = _net()
    dtypes: list[torch.dtype] = []
    for conv in net:
        conv.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    islands = Fp32Islands(depthwise_convs(net), device_type="cpu")
    assert len(islands) == 1
    x = torch.randn(2, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        net(x).float().sum().backward()
        assert dtypes == [torch.bfloat16, torch.float32, torch.bfloat16]  # the 1x1 convs stay in bf16
        assert net[1].weight.grad is not None and torch.is_autocast_enabled("cpu")
        dtypes.clear()
        with torch.no_grad():  # validation, a frozen base's features: as autocast runs the rest
            net(x)
        assert dtypes == [torch.bfloat16] * 3
    islands.remove()
    dtypes.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        net(x)
    assert dtypes == [torch.bfloat16] * 3


def test_an_error_inside_an_island_leaves_autocast_as_it_was() -> None:
    net = _net()
    islands = Fp32Islands([net[1]], device_type="cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.raises(RuntimeError):
            net(torch.randn(2, 5, 8, 8))  # wrong channel count: fails in the first conv, before the island
        with pytest.raises(RuntimeError):
            net[1](torch.randn(2, 3, 8, 8))  # fails inside the island
        assert torch.is_autocast_enabled("cpu") and islands.entered == []


def test_auto_trains_a_depthwise_network_in_bf16_with_its_depthwise_convolutions_in_fp32(
        shapes_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cnnkit.runtime.device as device
    import cnnkit.training.fit as fit

    installed: list[int] = []

    class Recording(Fp32Islands):
        def __init__(self, modules: list[nn.Module], *, device_type: str) -> None:
            super().__init__(modules, device_type=device_type)
            installed.append(len(self))

    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: True)
    monkeypatch.setattr(fit, "Fp32Islands", Recording)
    config = TrainConfig(data=f"npz:{shapes_npz}", out=tmp_path / "run", model="efficientnet_lite0", input_size=32,
                         epochs=1, batch_size=32, lr=1e-3, val_split=0.2, quiet=True, device="cpu")
    result = train(config)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["precision_used"] == {"train": "bf16 with depthwise convolutions in fp32"}
    assert installed[-1] == 16 and all(torch.isfinite(torch.tensor(row["loss"])) for row in result.history)
    train(replace(config, out=tmp_path / "asked", precision="bf16"))  # asked for: bf16 everywhere, no islands
    assert installed[-1] == 0
