"""Registry models that differ in structure, for the tests that export or trace whole models.

Depth repeats a network's blocks; it adds no operator a tracer or exporter has not met in the
shallower sibling. Exporting ResNet-152 to ONNX takes 80-330 s on two cores and teaches nothing
ResNet-50 does not, so the whole-model export and tracing tests run one REPRESENTATIVE of each
structure (module types, grouped convolutions, input size). ``test_representatives_cover_the_zoo``
re-derives the grouping from the registry, so a new model with a new structure is not left out.
"""

from afictl.models import create_meta_model, get_model_info, list_models

#: deeper model -> the shallower model with the same structure that stands in for it
COVERED_BY = {
    **{f"resnet{d}": "resnet20" for d in (32, 44, 56, 110)},
    **{f"afi_resnet{d}": "afi_resnet20" for d in (32, 44, 56, 110)},
    **{f"resnet{d}": "resnet50" for d in (101, 152)},
    **{f"afi_resnet{d}": "afi_resnet50" for d in (101, 152)},
    "densenet100": "densenet40",
}


def representatives() -> list[str]:
    """One registered model per structure, in registry order."""
    return [n for n in list_models() if n not in COVERED_BY]


def structure(name: str) -> tuple:
    """What an exporter meets in a model: its module types, grouped convs and input size."""
    model = create_meta_model(name)
    kinds = frozenset(type(m).__name__ for m in model.modules())
    grouped = any(getattr(m, "groups", 1) > 1 for m in model.modules())
    return kinds, grouped, get_model_info(name).input_size
