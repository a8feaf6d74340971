"""cnnkit: from a folder of labelled images to an evaluated, deployable CNN classifier.

The public API (see cnnkit.api) is imported on first use, so `import cnnkit` stays light: the ONNX-only server
never loads PyTorch.
"""

from __future__ import annotations

from typing import Any

from cnnkit.errors import CnnkitError

__version__ = "0.1.0"
_API = ("Classifier", "DataCheck", "Prediction", "calibrate", "check_data", "compare", "cross_validate",
        "evaluate_run", "explain", "export", "load", "lr_find", "runs", "serve", "summary", "train")
__all__ = ["CnnkitError", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        from cnnkit import api

        return getattr(api, name)
    raise AttributeError(f"module 'cnnkit' has no attribute {name!r}")
