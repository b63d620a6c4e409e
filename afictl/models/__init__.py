"""The model zoo: ``create_model(name, **kwargs)`` and ``list_models()`` over every family.

Importing this package imports every family module, whose builders register themselves.
"""

from . import (
    densenet,  # noqa: F401  (DenseNet-40/100 baselines, CIFAR)
    mobilenetv2,  # noqa: F401  (MobileNetV2 CIFAR + ImageNet, AFI + attention)
    resnet,  # noqa: F401  (registers the ResNet family)
    resnext,  # noqa: F401  (ResNeXt-29 / ResNeXt-50, built on resnet.py)
    shufflenetv2,  # noqa: F401  (ShuffleNetV2, CIFAR)
)
from ._base import Backbone, Stage, StageError
from .registry import (
    AFI_OPTIONS,
    ModelInfo,
    UnknownModelError,
    counterpart,
    create_meta_model,
    create_model,
    get_model_info,
    list_models,
    register_model,
)

__all__ = [
    "AFI_OPTIONS",
    "Backbone",
    "ModelInfo",
    "Stage",
    "StageError",
    "UnknownModelError",
    "counterpart",
    "create_meta_model",
    "create_model",
    "get_model_info",
    "list_models",
    "register_model",
]
