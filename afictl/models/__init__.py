"""The model zoo: ``create_model(name, **kwargs)`` and ``list_models()`` over every family.

Importing this package imports every family module, whose builders register themselves, and
puts every model in timm's registry when timm is installed (models/timm_bridge.py: at once if
timm is already imported, else as soon as it is).
"""

from . import (
    densenet,  # noqa: F401  (DenseNet-40/100 baselines, CIFAR)
    mobilenetv2,  # noqa: F401  (MobileNetV2 CIFAR + ImageNet, AFI + attention)
    resnet,  # noqa: F401  (registers the ResNet family)
    resnext,  # noqa: F401  (ResNeXt-29 / ResNeXt-50, built on resnet.py)
    shufflenetv2,  # noqa: F401  (ShuffleNetV2, CIFAR)
    timm_bridge,
)
from ._base import Backbone, ModelOptionError, Stage, StageError
from .features import FeatureInfo, FeatureNet, feature_take_indices
from .registry import (
    AFI_OPTIONS,
    ModelInfo,
    UnknownModelError,
    check_model_options,
    counterpart,
    create_meta_model,
    create_model,
    get_model_info,
    list_models,
    options_of,
    pretrained_cfg,
    register_model,
)

timm_bridge.install()

__all__ = [
    "AFI_OPTIONS",
    "Backbone",
    "FeatureInfo",
    "FeatureNet",
    "ModelInfo",
    "ModelOptionError",
    "Stage",
    "StageError",
    "UnknownModelError",
    "check_model_options",
    "counterpart",
    "create_meta_model",
    "create_model",
    "feature_take_indices",
    "get_model_info",
    "list_models",
    "options_of",
    "pretrained_cfg",
    "register_model",
]
