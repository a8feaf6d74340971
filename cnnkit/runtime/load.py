"""Loading a trained model for inference: a run directory in PyTorch, or an export in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from cnnkit import artifacts as names

if TYPE_CHECKING:
    import numpy as np

    from cnnkit.data.preprocess import Preprocess


class LoadedModel(Protocol):
    """What prediction needs of a model, whichever runs it: runtime.model.TorchModel (a run directory, in PyTorch)
    or runtime.onnx.OnnxModel (an export, in ONNX Runtime, without PyTorch)."""

    backend: str  # "torch" or "onnx"
    class_names: list[str]
    preprocess: Preprocess

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, S, S, 3] -> class probabilities [N, C] (float32)."""
        ...


def load_model(path: Path, *, device: str = "auto",
               backend: Literal["auto", "torch", "onnx"] = "auto") -> LoadedModel:
    """A runtime.model.TorchModel for a run directory (unless `backend="onnx"`), else a runtime.onnx.OnnxModel
    for an export directory or a run's export/. Both answer `probabilities(uint8 [N, S, S, 3])`."""
    path = Path(path)
    if backend == "torch" or (backend == "auto" and (path / names.CONFIG).is_file()):
        from cnnkit.runtime.model import load_run_model

        return load_run_model(path, device=device)
    from cnnkit.runtime.onnx import load_export

    return load_export(path)
