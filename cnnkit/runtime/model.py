"""A trained run loaded for inference in PyTorch: model, preprocessing and class names together."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnnkit import artifacts as names
from cnnkit.config import TrainConfig
from cnnkit.data.preprocess import Preprocess
from cnnkit.errors import CnnkitError
from cnnkit.models.network import NetworkConfig, build_network
from cnnkit.rundir import RunDir
from cnnkit.runtime.device import resolve_device
from cnnkit.runtime.engine import StepSettings


@dataclass
class TorchModel:
    """A trained model with the preprocessing and class names it was trained with."""

    model: nn.Module
    preprocess: Preprocess
    class_names: list[str]
    config: TrainConfig
    settings: StepSettings
    run: RunDir

    @torch.no_grad()
    def probabilities(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """uint8 images, [N, S, S, 3] NumPy or [N, 3, S, S] tensor -> class probabilities [N, C] (float32)."""
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        self.model.eval()
        x = self.settings.prepare(self.preprocess(images.to(self.settings.device)))
        return self.settings.infer(self.model, x).softmax(dim=1).cpu().numpy()


def load_run_model(run_dir: Path, *, device: str = "auto", weights: str = names.WEIGHTS_BEST) -> TorchModel:
    """Rebuild the model of a run directory and load its (checksum-verified) weights."""
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
    settings = StepSettings(device=target, channels_last=config.channels_last, tta=config.tta)
    model = model.to(target, memory_format=torch.channels_last if config.channels_last else torch.contiguous_format)
    return TorchModel(model.eval(), preprocess, class_names, config, settings, run)
