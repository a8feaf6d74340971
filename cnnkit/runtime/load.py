"""Loading a trained model for inference: a run directory in PyTorch, or an export in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from cnnkit import artifacts as names


def load_model(path: Path, *, device: str = "auto", backend: Literal["auto", "torch", "onnx"] = "auto") -> Any:
    """A runtime.model.TorchModel for a run directory (unless `backend="onnx"`), else a runtime.onnx.OnnxModel
    for an export directory or a run's export/. Both answer `probabilities(uint8 [N, S, S, 3])`."""
    path = Path(path)
    if backend == "torch" or (backend == "auto" and (path / names.CONFIG).is_file()):
        from cnnkit.runtime.model import load_run_model

        return load_run_model(path, device=device)
    from cnnkit.runtime.onnx import load_export

    return load_export(path)
