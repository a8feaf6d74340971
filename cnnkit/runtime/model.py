"""A trained run loaded for inference in PyTorch: model, preprocessing and class names together."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from cnnkit import artifacts as names
from cnnkit.config import TrainConfig
from cnnkit.data.preprocess import Preprocess
from cnnkit.errors import CnnkitError
from cnnkit.models.network import NetworkConfig, build_network
from cnnkit.rundir import RunDir
from cnnkit.runtime.device import resolve_device, respect_thread_limit
from cnnkit.runtime.engine import StepSettings, inference_batch_size
from cnnkit.runtime.fitted import run_temperature


@dataclass
class TorchModel:
    """A trained model with the preprocessing and class names it was trained with."""

    backend: ClassVar[str] = "torch"

    model: nn.Module
    preprocess: Preprocess
    class_names: list[str]
    config: TrainConfig
    settings: StepSettings
    run: RunDir
    batch_size: int = field(default=0, repr=False)  # images per forward pass; 0: runtime.engine.inference_batch_size

    @torch.no_grad()
    def probabilities(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """uint8 images, [N, S, S, 3] NumPy or [N, 3, S, S] tensor -> class probabilities [N, C] (float32), run
        `batch_size` images at a time."""
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        if len(images) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        self.model.eval()
        if not self.batch_size:
            self.batch_size = inference_batch_size(self.model, input_size=self.preprocess.input_size,
                                                   settings=self.settings)
        parts = [self.settings.infer(self.model, self.settings.prepare(self.preprocess(chunk.to(self.settings.device))))
                 .softmax(dim=1).cpu() for chunk in images.split(self.batch_size)]
        return torch.cat(parts).numpy()


def load_run_model(run_dir: Path, *, device: str = "auto", weights: str = names.WEIGHTS_BEST,
                   calibrated: bool = True) -> TorchModel:
    """Rebuild the model of a run directory and load its (checksum-verified) weights. Its probabilities use the
    run's fitted temperature (`cnnkit calibrate`) for the best weights, unless `calibrated` is False."""
    run = RunDir.open(run_dir)
    config = TrainConfig.from_dict(run.read_json(names.CONFIG))
    class_names = run.read_json(names.CLASSES)
    preprocess = Preprocess.from_dict(run.read_json(names.PREPROCESS))
    if not run.exists(weights):
        raise CnnkitError(f"{run.path}: no {weights}; did training finish an epoch?")
    network = NetworkConfig.of(config, len(class_names), preprocess.input_size)
    model, _ = build_network(network, load_weights=False)
    state, _ = run.read_tensors(weights)
    model.load_state_dict(state)
    target = resolve_device(device)
    respect_thread_limit()
    temperature = run_temperature(run.path) if calibrated and weights == names.WEIGHTS_BEST else 1.0
    settings = StepSettings(device=target, channels_last=config.channels_last, tta=config.tta,
                            temperature=temperature)
    model = model.to(target, memory_format=torch.channels_last if config.channels_last else torch.contiguous_format)
    return TorchModel(model.eval(), preprocess, class_names, config, settings, run)
