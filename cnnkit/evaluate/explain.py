"""`cnnkit explain`: a Grad-CAM heatmap of what drove a prediction (Selvaraju et al., 2017)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from cnnkit.config import ExplainConfig
from cnnkit.data.images import enlarged
from cnnkit.errors import CnnkitError
from cnnkit.files import write_atomic
from cnnkit.runtime.model import load_run_model

OVERLAY_ALPHA = 0.45  # weight of the heatmap over the image
DISPLAY_PIXELS = 256  # the smallest side the written picture shows an image at


@dataclass(frozen=True)
class Explanation:
    label: str
    probability: float
    heatmap: np.ndarray  # [H, W] in [0, 1], at the model's input size


def last_conv(model: nn.Module) -> nn.Conv2d:
    """The last convolution in forward order: its feature maps are the finest that still keep space."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise CnnkitError("Grad-CAM needs a convolutional layer; this model has none")
    return convs[-1]


def grad_cam(model: nn.Module, x: torch.Tensor, *, target: int | None = None,
             temperature: float = 1.0) -> tuple[np.ndarray, int, float]:
    """Heatmap [H, W] for one normalised input [1, 3, H, W]; returns (heatmap, class index, probability: the
    softmax of the logits divided by `temperature`, as the run states its probabilities)."""
    layer = last_conv(model)
    saved: dict[str, torch.Tensor] = {}

    def keep(_: nn.Module, __: object, output: torch.Tensor) -> None:
        saved["activation"] = output
        output.register_hook(lambda grad: saved.__setitem__("gradient", grad))

    handle = layer.register_forward_hook(keep)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            x = x.clone().requires_grad_(True)  # gradients flow even where the weights are frozen
            logits = model(x)
            index = int(logits.argmax(dim=1)) if target is None else target
            logits[0, index].backward()
    finally:
        handle.remove()
        model.train(was_training)
    weights = saved["gradient"].mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * saved["activation"]).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    cam = cam / cam.max() if cam.max() > 0 else cam
    probability = float((logits.detach() / temperature).softmax(dim=1)[0, index])
    return cam.detach().cpu().numpy(), index, probability


def explain(config: ExplainConfig) -> Explanation:
    """Write the image with its Grad-CAM heatmap beside it to `config.out`; return the explained prediction."""
    classifier = load_run_model(config.run, device="cpu")
    pixels = classifier.preprocess.load(config.image)
    batch = torch.from_numpy(pixels).permute(2, 0, 1)[None]
    x = classifier.settings.prepare(classifier.preprocess(batch))
    target = None
    if config.label is not None:
        if config.label not in classifier.class_names:
            raise CnnkitError(f"--label {config.label!r} is not a class; classes: {', '.join(classifier.class_names)}")
        target = classifier.class_names.index(config.label)
    heatmap, index, probability = grad_cam(classifier.model, x, target=target,
                                          temperature=classifier.settings.temperature)
    picture = _side_by_side(pixels, heatmap)
    write_atomic(config.out, lambda tmp: Image.fromarray(picture).save(tmp, format="PNG"))
    return Explanation(classifier.class_names[index], probability, heatmap)


def _side_by_side(pixels: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """The image and its overlay side by side, small inputs (CIFAR-10's 32 px) enlarged by a whole factor to at
    least DISPLAY_PIXELS, each pixel a square block: a 32-px picture is otherwise too small to look at."""
    from matplotlib import colormaps

    colours = (colormaps["jet"](heatmap)[..., :3] * 255).astype(np.float32)
    overlay = ((1 - OVERLAY_ALPHA) * pixels.astype(np.float32) + OVERLAY_ALPHA * colours).clip(0, 255).astype(np.uint8)
    pixels, overlay = (enlarged(panel, at_least=DISPLAY_PIXELS) for panel in (pixels, overlay))
    gap = np.full((pixels.shape[0], 8, 3), 255, np.uint8)
    return np.concatenate([pixels, gap, overlay], axis=1)
