"""MixUp and CutMix on whole batches (timm's ``--mixup``, ``--cutmix``, ``--mixup-prob``).

torchvision.transforms.v2's ``MixUp``/``CutMix`` pair each image with its neighbour in the
batch (``roll(1)``), with lambda ~ Beta(alpha, alpha); CutMix pastes a box of the neighbour and
sets lambda to the area kept. When both alphas are set, each batch takes one of them with equal
chance (timm's ``switch_prob`` 0.5); with probability ``1 - prob`` a batch is left as it is,
with one-hot targets. Every draw comes from torch's global RNG, which the trainer saves in its
checkpoints: a resumed run mixes its batches exactly as the uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F
from torchvision.transforms import v2

from ..errors import UserError

__all__ = ["BatchMixer", "build_mixer", "dominant_label"]


@dataclass
class BatchMixer:
    """``mixer(images, labels) -> (images, targets)``; targets float (B, num_classes)."""

    num_classes: int
    transform: v2.Transform
    prob: float = 1.0

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # drawn only when it decides something, so prob=1 consumes no extra random numbers
        if self.prob < 1.0 and not bool(torch.rand(()) < self.prob):
            return images, F.one_hot(labels, self.num_classes).to(images.dtype)
        if len(labels) < 2:  # nothing to mix with
            return images, F.one_hot(labels, self.num_classes).to(images.dtype)
        mixed, targets = self.transform(images, labels)
        return mixed.as_subclass(torch.Tensor), targets.to(images.dtype)


def build_mixer(
    *, num_classes: int, mixup: float = 0.0, cutmix: float = 0.0, prob: float = 1.0
) -> BatchMixer | None:
    """A :class:`BatchMixer` for alphas ``mixup``/``cutmix`` (0: off) applied to a batch with
    probability ``prob``; ``None`` when both alphas are 0. Bad values: one-line UserError."""
    for flag, alpha in (("--mixup", mixup), ("--cutmix", cutmix)):
        if alpha < 0:
            raise UserError(f"{flag} must be at least 0 (0: off), got {alpha:g}")
    if not 0.0 <= prob <= 1.0:
        raise UserError(f"--mixup-prob must be between 0 and 1, got {prob:g}")
    if num_classes < 2:
        raise UserError(f"mixing needs at least 2 classes, got {num_classes}")
    parts = []
    if mixup > 0:
        parts.append(v2.MixUp(alpha=mixup, num_classes=num_classes))
    if cutmix > 0:
        parts.append(v2.CutMix(alpha=cutmix, num_classes=num_classes))
    if not parts:
        return None
    transform = parts[0] if len(parts) == 1 else v2.RandomChoice(parts)
    return BatchMixer(num_classes=num_classes, transform=transform, prob=prob)


def dominant_label(targets: torch.Tensor) -> torch.Tensor:
    """The class with the largest weight in each (mixed) target row, for train accuracy;
    integer labels come back as they are."""
    if targets.ndim == 1:
        return targets
    return targets.argmax(dim=1)
