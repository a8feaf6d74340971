"""An exported model loaded in ONNX Runtime, for prediction without PyTorch (no torch import here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cnnkit import artifacts as names
from cnnkit.data.preprocess import Preprocess
from cnnkit.errors import CnnkitError
from cnnkit.files import no_such_path, read_json
from cnnkit.runtime.exports import check_current, find_export_dir, read_verified_model


@dataclass
class OnnxModel:
    """model.onnx with the class names, preprocessing and (binary tasks) threshold its export recorded."""

    backend: ClassVar[str] = "onnx"

    session: Any  # onnxruntime.InferenceSession
    preprocess: Preprocess
    class_names: list[str]
    info: dict[str, Any]
    path: Path

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, S, S, 3] -> class probabilities [N, C] (float32)."""
        feed = {self.info["input"]["name"]: images.astype(np.float32)}
        return self.session.run([self.info["output"]["name"]], feed)[0]


def load_export(path: Path) -> OnnxModel:
    """An export directory (or a run directory with a current export/), checksum-verified."""
    import onnxruntime as ort

    export = find_export_dir(path)
    if export is None:
        if not Path(path).exists():
            raise no_such_path(path)
        if not (Path(path) / names.CONFIG).is_file():
            raise CnnkitError(f"{path}: neither a run directory (no config.json) nor an export (no "
                              f"{names.EXPORT_INFO})")
        raise CnnkitError(f"{path}: no exported model (run `cnnkit export {path}` first)")
    check_current(export)
    info, model = read_verified_model(export)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return OnnxModel(session, Preprocess.from_dict(read_json(export / names.PREPROCESS)),
                     read_json(export / names.CLASSES), info, export)
