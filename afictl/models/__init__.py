"""The model zoo: ``create_model(name, **kwargs)`` and ``list_models()`` over every family.

Importing this package imports every family module, whose builders register themselves.
"""

from . import resnet  # noqa: F401  (registers the ResNet family)
from ._base import Backbone, Stage, StageError
from .registry import (
    ModelInfo,
    UnknownModelError,
    counterpart,
    create_model,
    get_model_info,
    list_models,
    register_model,
)

__all__ = [
    "Backbone",
    "ModelInfo",
    "Stage",
    "StageError",
    "UnknownModelError",
    "counterpart",
    "create_model",
    "get_model_info",
    "list_models",
    "register_model",
]
