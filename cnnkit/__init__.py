"""cnnkit: from a folder of labelled images to an evaluated, deployable CNN classifier.

The public API (see cnnkit.api) is imported on first use, so `import cnnkit` stays light: the ONNX-only server
never loads PyTorch.
"""

from __future__ import annotations

from typing import Any

from cnnkit.errors import CnnkitError

__version__ = "0.1.0"
__all__ = ["Classifier", "CnnkitError", "Prediction", "calibrate", "cross_validate", "export", "load", "lr_find",
           "serve", "train"]
_API = {"Classifier", "Prediction", "calibrate", "cross_validate", "export", "load", "lr_find", "serve", "train"}


def __getattr__(name: str) -> Any:
    if name in _API:
        from cnnkit import api

        return getattr(api, name)
    raise AttributeError(f"module 'cnnkit' has no attribute {name!r}")
