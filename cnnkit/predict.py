"""Loading a trained run as a classifier, and `cnnkit predict` on image files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cnnkit.config import PredictConfig, TrainConfig
from cnnkit.data.preprocess import Preprocess
from cnnkit.data.sources import decode_images
from cnnkit.errors import CnnkitError
from cnnkit.models.network import NetworkConfig, build_network
from cnnkit.rundir import RunDir
from cnnkit.train.distributed import resolve_device
from cnnkit.train.engine import StepSettings


@dataclass
class Classifier:
    """A trained model with the preprocessing and class names it was trained with."""

    model: nn.Module
    preprocess: Preprocess
    class_names: list[str]
    config: TrainConfig
    settings: StepSettings

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N, 3, H, W] images -> class probabilities [N, C] on the CPU."""
        self.model.eval()
        x = self.settings.prepare(self.preprocess(images.to(self.settings.device)))
        return self.settings.infer(self.model, x).softmax(dim=1).cpu()


def load_classifier(run_dir: Path, *, device: str = "auto", weights: str = "model.safetensors") -> Classifier:
    """Rebuild the model of a run directory and load its (checksum-verified) weights."""
    run = RunDir.open(run_dir)
    config = TrainConfig.from_dict(run.read_json("config.json"))
    class_names = run.read_json("classes.json")
    preprocess = Preprocess.from_dict(run.read_json("preprocess.json"))
    if not run.exists(weights):
        raise CnnkitError(f"{run.path}: no {weights}; did training finish an epoch?")
    network = NetworkConfig.of(config, len(class_names), preprocess.input_size)
    model, _ = build_network(network, load_weights=False)
    state, _ = run.read_tensors(weights)
    model.load_state_dict(state)
    target = resolve_device(device)
    settings = StepSettings(device=target, channels_last=config.channels_last, tta=config.tta)
    model = model.to(target, memory_format=torch.channels_last if config.channels_last else torch.contiguous_format)
    return Classifier(model.eval(), preprocess, class_names, config, settings)


@dataclass(frozen=True)
class Prediction:
    path: str
    top: list[tuple[str, float]]  # (label, probability), most likely first


def predict(config: PredictConfig) -> list[Prediction]:
    """Top-k labels for each image file."""
    if not config.images:
        raise CnnkitError("no images given")
    classifier = load_classifier(config.run, device=config.device)
    images = decode_images(list(config.images), preprocess=classifier.preprocess)
    probs = classifier.probabilities(images)
    k = min(config.top_k, probs.shape[1])
    values, indices = probs.topk(k, dim=1)
    return [
        Prediction(str(path), [(classifier.class_names[i], float(p)) for p, i in zip(vals.tolist(), idx.tolist())])
        for path, vals, idx in zip(config.images, values, indices)
    ]
