"""The paper's input pipelines (section 4.3), per-dataset normalisation and timm's recipe options.

- CIFAR: random crop 32 with padding 4 + horizontal flip ("mirroring/shifting") for training;
  the image as is for evaluation.
- ImageNet-style (ImageFolder): random resized crop 224 + flip for training; resize 256 +
  center crop 224 for evaluation.
Images of another size are first resized to the model's input size (CIFAR-style pipelines).

Training may add, under timm's names (``--aa``, ``--reprob``), an automatic augmentation after
the flip and random erasing after the normalisation (torchvision.transforms.v2 only).

Every pipeline takes a PIL image or a uint8 ``(3, H, W)`` tensor (``--decode torchvision`` and
``gpu``; on any device) and returns a plain float tensor; on PIL images the values are those of
torchvision's v1 ``ToTensor`` pipelines bit for bit.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torchvision.transforms import functional as F1
from torchvision.transforms import v2
from torchvision.transforms.v2.functional import get_size

from ..errors import UserError

__all__ = [
    "AA_CHOICES",
    "NORMALIZATION",
    "NoisyRandAugment",
    "ToFloat",
    "auto_augment",
    "eval_transform",
    "is_small",
    "normalization",
    "preprocessing",
    "train_transform",
]

NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "shapes": ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
}

#: ``--aa`` values (``rand-m{M}[-n{N}][-mstd{S}]`` takes any numbers, as timm's does).
AA_CHOICES = (
    "rand-m9-mstd0.5",
    "trivial",
    "autoaugment",
    "autoaugment-cifar10",
    "autoaugment-imagenet",
)

_RAND = re.compile(r"rand(?:-m(?P<m>\d+(?:\.\d+)?)|-n(?P<n>\d+)|-mstd(?P<std>\d+(?:\.\d+)?))*")


def normalization(dataset: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std for a dataset name (ImageNet's for ImageFolder data)."""
    return NORMALIZATION.get(dataset, NORMALIZATION["imagenet"])


def is_small(input_size: int) -> bool:
    """CIFAR-style pipeline (no resize/crop scheme) for inputs up to 64 pixels."""
    return input_size <= 64


class ToFloat(torch.nn.Module):
    """PIL image or uint8 tensor -> float tensor in [0, 1] (v1 ``ToTensor``'s exact values)."""

    def forward(self, img: Any) -> torch.Tensor:
        if isinstance(img, torch.Tensor):
            # ToTensor's own arithmetic (to float, then / 255), so PIL and tensor decoders agree
            return img.as_subclass(torch.Tensor).float().div(255)
        return F1.to_tensor(img)


class NoisyRandAugment(v2.RandAugment):
    """RandAugment on timm's magnitude scale, with timm's ``mstd`` noise (v2 has neither).

    timm's ``rand-m9-mstd0.5`` draws each operation's magnitude from N(9, 0.5) clipped to
    [0, 10], on a scale where 10 is an operation's maximum; torchvision's
    ``RandAugment(magnitude=9)`` indexes 31 bins (9/30 of the maximum, and no noise). Here the
    bins are 11 (level ``m`` = m/10 of the maximum, timm's scale) and the noisy level is
    interpolated between them. The operations and their maxima are torchvision's (timm's set
    differs slightly: it has SolarizeAdd and Invert, no Identity). Noise comes from torch's RNG,
    so it follows the worker seeds like every other augmentation.
    """

    def __init__(self, num_ops: int = 2, magnitude: float = 9, magnitude_std: float = 0.5) -> None:
        super().__init__(num_ops=num_ops, magnitude=int(magnitude), num_magnitude_bins=11)
        self.level, self.magnitude_std = float(magnitude), float(magnitude_std)

    def _value(self, values: torch.Tensor) -> float:
        level = self.level
        if self.magnitude_std > 0:
            level = float(torch.normal(level, self.magnitude_std, ()).clamp(0.0, 10.0))
        lo = min(int(level), len(values) - 1)
        hi = min(lo + 1, len(values) - 1)
        return float(values[lo] + (values[hi] - values[lo]) * (level - lo))

    def forward(self, *inputs: Any) -> Any:
        flat, image = self._flatten_and_extract_image_or_video(inputs)
        height, width = get_size(image)
        for _ in range(self.num_ops):
            op, (values_fn, signed) = self._get_random_item(self._AUGMENTATION_SPACE)
            values = values_fn(self.num_magnitude_bins, height, width)
            magnitude = 0.0
            if values is not None:
                magnitude = self._value(values.float())
                if signed and torch.rand(()) <= 0.5:
                    magnitude = -magnitude
            image = self._apply_image_or_video_transform(
                image, op, magnitude, interpolation=self.interpolation, fill=self._fill
            )
        return self._unflatten_and_insert_image_or_video(flat, image)


def auto_augment(aa: str, input_size: int) -> torch.nn.Module:
    """The ``--aa`` policy ``aa``; ``autoaugment`` picks CIFAR10's policy for the CIFAR-style
    pipeline (inputs up to 64 pixels) and IMAGENET's otherwise. Bad values: one-line UserError."""
    policies = v2.AutoAugmentPolicy
    if aa == "trivial":
        return v2.TrivialAugmentWide()
    if aa == "autoaugment":
        return v2.AutoAugment(policies.CIFAR10 if is_small(input_size) else policies.IMAGENET)
    if aa in ("autoaugment-cifar10", "autoaugment-imagenet"):
        return v2.AutoAugment(policies.CIFAR10 if aa.endswith("cifar10") else policies.IMAGENET)
    match = _RAND.fullmatch(aa)
    if match and aa != "rand":
        m, n, std = match.group("m"), match.group("n"), match.group("std")
        level = float(m) if m is not None else 9.0
        if level <= 10:
            return NoisyRandAugment(
                num_ops=int(n) if n else 2, magnitude=level, magnitude_std=float(std or 0)
            )
    raise UserError(
        f"unknown --aa {aa!r}; choose rand-m9-mstd0.5 (rand-mM[-nN][-mstdS], M <= 10), "
        "trivial, autoaugment, autoaugment-cifar10 or autoaugment-imagenet"
    )


def _check_reprob(reprob: float) -> None:
    if not 0.0 <= reprob <= 1.0:
        raise UserError(f"--reprob must be between 0 and 1, got {reprob:g}")


def train_transform(
    dataset: str, input_size: int, *, aa: str | None = None, reprob: float = 0.0
) -> v2.Compose:
    """The paper's training augmentation, plus ``aa`` after the flip and random erasing with
    probability ``reprob`` after the normalisation (timm's order)."""
    _check_reprob(reprob)
    mean, std = normalization(dataset)
    if is_small(input_size):
        ops: list[Any] = [
            v2.Resize((input_size, input_size)),
            v2.RandomCrop(input_size, padding=input_size // 8),
            v2.RandomHorizontalFlip(),
        ]
    else:
        ops = [v2.RandomResizedCrop(input_size), v2.RandomHorizontalFlip()]
    if aa:
        ops.append(auto_augment(aa, input_size))
    ops += [ToFloat(), v2.Normalize(mean, std)]
    if reprob > 0:
        ops.append(v2.RandomErasing(p=reprob, value=0))
    return v2.Compose(ops)


def eval_transform(dataset: str, input_size: int) -> v2.Compose:
    """Resize (+ center crop for ImageNet-style inputs), to float, normalise: deterministic."""
    mean, std = normalization(dataset)
    if is_small(input_size):
        ops: list[Any] = [v2.Resize((input_size, input_size))]
    else:
        ops = [v2.Resize(eval_resize(input_size)), v2.CenterCrop(input_size)]
    return v2.Compose([*ops, ToFloat(), v2.Normalize(mean, std)])


def eval_resize(input_size: int) -> int:
    """The short side images are resized to before the eval center crop (256 for 224)."""
    return round(input_size * 256 / 224)


def preprocessing(dataset: str, input_size: int) -> dict[str, Any]:
    """:func:`eval_transform` as data, in timm's ``pretrained_cfg`` terms.

    What a model file's metadata, a ``config.json`` and ``pretrained_cfg`` say about the input:
    ``input_size`` (C, H, W), ``interpolation``, ``crop_pct`` and ``crop_mode`` (``squash``:
    the whole image resized to H x W; ``center``: the short side resized to H / crop_pct, then a
    center crop), ``mean`` and ``std`` of the normalisation after scaling pixels to [0, 1].
    """
    mean, std = normalization(dataset)
    small = is_small(input_size)
    return {
        "input_size": (3, input_size, input_size),
        "interpolation": "bilinear",
        "crop_pct": 1.0 if small else input_size / eval_resize(input_size),
        "crop_mode": "squash" if small else "center",
        "mean": tuple(mean),
        "std": tuple(std),
    }
