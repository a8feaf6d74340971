"""Model architectures: a registry of named networks plus every timm model."""

from cnnkit.models import classic, fast, zoo  # noqa: F401  (importing registers the architectures)
from cnnkit.models.registry import (
    MODELS,
    ModelSpec,
    create_model,
    default_input_size,
    register_model,
)
from cnnkit.models.summary import count_params, summary

__all__ = ["MODELS", "ModelSpec", "count_params", "create_model", "default_input_size", "register_model", "summary"]
