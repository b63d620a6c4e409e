"""The CAM methods ``afictl gradcam --method`` offers: names and titles only, no torch.

Light on purpose (stdlib and :mod:`afictl.errors`): ``afictl gradcam --help`` lists the names
from here without importing torch or pytorch-grad-cam; :mod:`afictl.analysis.gradcam` runs them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError

__all__ = [
    "CAM_BATCH_SIZE",
    "METHODS",
    "METHOD_NAMES",
    "CamMethod",
    "check_target_class",
    "resolve_method",
]


@dataclass(frozen=True)
class CamMethod:
    """One CAM method of pytorch-grad-cam, by the name ``--method`` takes."""

    name: str  # the --method name
    title: str  # how figures and tables name it
    cls: str  # the pytorch_grad_cam class
    gradients: bool = True  # needs a backward pass (else it runs under no_grad)
    per_channel: bool = False  # one forward pass per channel of the target, in batches
    # False: the map does not depend on the class explained (EigenCAM never reads its targets)
    uses_target: bool = True


#: The CAM methods of pytorch-grad-cam 1.5.7 that ``afictl gradcam --method`` offers.
METHODS: dict[str, CamMethod] = {
    m.name: m
    for m in (
        CamMethod("gradcam", "Grad-CAM", "GradCAM"),
        CamMethod("gradcam++", "Grad-CAM++", "GradCAMPlusPlus"),
        CamMethod("xgradcam", "XGrad-CAM", "XGradCAM"),
        CamMethod("hirescam", "HiResCAM", "HiResCAM"),
        CamMethod("scorecam", "Score-CAM", "ScoreCAM", gradients=False, per_channel=True),
        CamMethod("eigencam", "Eigen-CAM", "EigenCAM", gradients=False, uses_target=False),
        CamMethod("eigengradcam", "EigenGrad-CAM", "EigenGradCAM"),
        CamMethod("layercam", "LayerCAM", "LayerCAM"),
        CamMethod("ablationcam", "Ablation-CAM", "AblationCAM", gradients=False, per_channel=True),
        CamMethod("fullgrad", "FullGrad", "FullGrad"),
    )
}

#: The ``--method`` names, in help order.
METHOD_NAMES: tuple[str, ...] = tuple(METHODS)

#: Images per forward pass of Score-CAM and Ablation-CAM (each pass masks or ablates one channel
#: of the target layer: 64 channels on a CIFAR ResNet, 2048 on ResNet-50).
CAM_BATCH_SIZE = 32


def resolve_method(name: str | CamMethod) -> CamMethod:
    """A :data:`METHODS` entry by name; case, ``-``, ``_`` and spaces are ignored
    (``Grad-CAM++``). An unknown name is a :class:`~afictl.errors.UserError` listing them."""
    if isinstance(name, CamMethod):
        return name
    key = "".join(c for c in str(name).lower() if c not in "-_ ")
    if key not in METHODS:
        raise UserError(f"unknown CAM method {name!r}; valid methods: {', '.join(METHODS)}")
    return METHODS[key]


def check_target_class(method: str | CamMethod, target_class: str | None) -> None:
    """``--target-class`` with a class-independent method (Eigen-CAM) is a
    :class:`~afictl.errors.UserError`: the map would be the same for every class."""
    spec = resolve_method(method)
    if target_class is None or spec.uses_target:
        return
    raise UserError(
        f"--target-class does not apply to --method {spec.name}: {spec.title} is "
        "class-independent (the same map for every class); drop --target-class, or use a "
        "class-dependent method such as gradcam"
    )
