"""Device and thread settings: PyTorch's CPU threads kept within the process's OpenMP limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

# simple-cnn's logits on fixed random images in bf16 (as `--precision auto` runs on CPUs with bf16), after cnnkit's
# thread setting; printed as JSON by a child process so that the environment can differ from this one's.
LOGITS = """
import json, torch
from cnnkit.runtime.device import respect_thread_limit
from cnnkit.models.registry import create_model
changed = respect_thread_limit()
torch.manual_seed(0)
model = create_model("simple-cnn", num_classes=10).eval().to(memory_format=torch.channels_last)
x = torch.rand(64, 3, 32, 32).contiguous(memory_format=torch.channels_last)
with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
    logits = model(x).float()
print(json.dumps({"threads": torch.get_num_threads(), "changed": changed, "logits": logits.tolist()}))
"""


def _child(*, limit: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_THREAD_LIMIT", "OMP_NUM_THREADS")}
    if limit is not None:
        env["OMP_THREAD_LIMIT"] = limit
    out = subprocess.run([sys.executable, "-c", LOGITS], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_under_an_openmp_limit_torch_threads_are_lowered_and_bf16_results_unchanged() -> None:
    """Without the lowering, OMP_THREAD_LIMIT=1 under two PyTorch threads changed these logits by up to 0.05
    (oneDNN's bf16 convolutions; a NaN loss in training)."""
    free = _child(limit=None)
    limited = _child(limit="1")
    assert free["changed"] is None  # no limit: nothing touched
    assert limited["threads"] == 1 and limited["changed"] == (1 if free["threads"] > 1 else None)
    torch.testing.assert_close(torch.tensor(limited["logits"]), torch.tensor(free["logits"]), atol=1e-2, rtol=0)


def test_auto_precision_on_gpus_bf16_fp16_with_loss_scaling_or_fp32(monkeypatch) -> None:
    """bf16 where the GPU computes it (not emulated: a T4 reports bf16 'supported' through emulation, slowly), fp16
    on GPUs with fp16 tensor cores (compute capability 7.x: T4, V100), fp32 before them."""
    from cnnkit.runtime.device import resolve_precision

    cuda = torch.device("cuda")
    for native_bf16, capability, expected in ((True, (8, 0), "bf16"), (False, (7, 5), "fp16"),
                                              (False, (6, 1), "fp32")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True, b=native_bf16: b)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        assert resolve_precision("auto", cuda, trains_depthwise=True)[0] == expected
    assert resolve_precision("fp16", torch.device("cpu"), trains_depthwise=False) == (
        "fp16", "asked for; most CPUs run fp16 slower than bf16 or fp32", False)


def test_auto_precision_on_cpus_bf16_with_depthwise_convolutions_left_in_fp32(monkeypatch) -> None:
    """On a CPU with bf16 in hardware, bf16 speeds ResNet-50's and VGG-16's training but slows EfficientNet's
    depthwise convolutions' backward, while it speeds up the rest of EfficientNet (bench/precision.py): auto
    trains in bf16 and keeps the depthwise convolutions a phase trains in fp32."""
    import cnnkit.runtime.device as device

    cpu = torch.device("cpu")
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: True)
    assert device.resolve_precision("auto", cpu, trains_depthwise=False) == (
        "bf16", "auto: the CPU has AVX512-BF16 or AMX", False)
    mixed = device.resolve_precision("auto", cpu, trains_depthwise=True)
    assert mixed.name == "bf16" and mixed.fp32_depthwise
    assert mixed.describe() == "bf16 with depthwise convolutions in fp32"
    assert not device.resolve_precision("bf16", cpu, trains_depthwise=True).fp32_depthwise  # asked for: as asked
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: False)
    assert device.resolve_precision("auto", cpu, trains_depthwise=True) == (
        "fp32", "auto: the CPU has neither AVX512-BF16 nor AMX", False)
