"""Running a model over data: batched inference and its batch size."""

import torch
from torch import nn

from cnnkit.runtime.allocator import MMAP_THRESHOLD_BYTES
from cnnkit.runtime.engine import StepSettings, inference_batch_size


def test_the_inference_batch_keeps_each_layer_output_under_the_memory_map_threshold_on_a_cpu() -> None:
    cpu = StepSettings(device=torch.device("cpu"))
    wide = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 2))
    per_image = 64 * 256 * 256 * 4  # the convolution's float32 output, the largest
    assert inference_batch_size(wide, input_size=256, settings=cpu) == MMAP_THRESHOLD_BYTES // per_image
    small = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    assert inference_batch_size(small, input_size=32, settings=cpu, default=128) == 128  # capped at the default
    assert inference_batch_size(wide, input_size=256, settings=StepSettings(device=torch.device("cuda"))) == 256
