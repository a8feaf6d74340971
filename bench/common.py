"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import os
from pathlib import Path

SHARED_CIFAR10 = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


def cifar10_dir() -> Path:
    """The local CIFAR-10 copy: $CNNKIT_DATA, else ../shared/data/cifar10 beside the project."""
    env = os.environ.get("CNNKIT_DATA")
    path = Path(env) if env else SHARED_CIFAR10
    if not (path / "train.npz").is_file():
        raise SystemExit(f"no CIFAR-10 at {path}; set CNNKIT_DATA to a folder with train.npz and test.npz")
    return path


def table(rows: list[dict[str, object]]) -> str:
    """The rows as cnnkit's text table, with benchmark-friendly number formatting."""
    from cnnkit.evaluate.compare import text_table

    return text_table(rows, cell=_fmt)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def imagenet_run(model: str, out: Path) -> Path:
    """A run directory holding a pretrained ImageNet classifier as it is (no training), ready to export."""
    from timm.data import ImageNetInfo

    from cnnkit.config import TrainConfig
    from cnnkit.data.preprocess import Preprocess
    from cnnkit.models.network import NetworkConfig, build_network
    from cnnkit.models.registry import default_input_size
    from cnnkit.rundir import RunDir

    size = default_input_size(model)
    network, info = build_network(NetworkConfig(model, 1000, size, pretrained=True), load_weights=True)
    assert info is not None
    run = RunDir.create(out, overwrite=True)
    config = TrainConfig(data="imagenet", out=out, model=model, input_size=size, pretrained=True, epochs=1)
    run.write_json("config.json", config.to_dict())
    info_names = ImageNetInfo()
    run.write_json("classes.json", [info_names.index_to_description(i) for i in range(1000)])
    preprocess = Preprocess(input_size=size, mean=info.mean, std=info.std, interpolation=info.interpolation,
                            resize="center-crop")
    run.write_json("preprocess.json", preprocess.to_dict())
    run.write_tensors("model.safetensors", network.state_dict())
    return out


def rss_mib(pid: int) -> float:
    """Resident set size of a process, in MiB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_name() -> str:
    """The CPU's model name, for every figure a benchmark prints."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"
