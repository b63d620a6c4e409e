"""The paper's input pipelines (section 4.3) and per-dataset normalisation.

- CIFAR: random crop 32 with padding 4 + horizontal flip ("mirroring/shifting") for training;
  the image as is for evaluation.
- ImageNet-style (ImageFolder): random resized crop 224 + flip for training; resize 256 +
  center crop 224 for evaluation.
Images of another size are first resized to the model's input size (CIFAR-style pipelines).
"""

from __future__ import annotations

from torchvision import transforms as T

__all__ = ["NORMALIZATION", "eval_transform", "is_small", "normalization", "train_transform"]

NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "shapes": ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
}


def normalization(dataset: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std for a dataset name (ImageNet's for ImageFolder data)."""
    return NORMALIZATION.get(dataset, NORMALIZATION["imagenet"])


def is_small(input_size: int) -> bool:
    """CIFAR-style pipeline (no resize/crop scheme) for inputs up to 64 pixels."""
    return input_size <= 64


def train_transform(dataset: str, input_size: int) -> T.Compose:
    mean, std = normalization(dataset)
    if is_small(input_size):
        ops = [
            T.Resize((input_size, input_size)),
            T.RandomCrop(input_size, padding=input_size // 8),
            T.RandomHorizontalFlip(),
        ]
    else:
        ops = [T.RandomResizedCrop(input_size), T.RandomHorizontalFlip()]
    return T.Compose([*ops, T.ToTensor(), T.Normalize(mean, std)])


def eval_transform(dataset: str, input_size: int) -> T.Compose:
    mean, std = normalization(dataset)
    if is_small(input_size):
        ops = [T.Resize((input_size, input_size))]
    else:
        ops = [T.Resize(round(input_size * 256 / 224)), T.CenterCrop(input_size)]
    return T.Compose([*ops, T.ToTensor(), T.Normalize(mean, std)])
