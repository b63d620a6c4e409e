"""The paper's CIFAR augmentation on whole uint8 batches, on the training device.

Per image in PIL, the 4-pixel pad + random 32 crop + horizontal flip costs more than a ResNet-20
step on two CPU cores; on a batch tensor it is two indexing operations. The randomness comes
from a generator seeded by (seed, epoch, step, rank), so a resumed run draws what the
uninterrupted run drew, whatever the device, without saving generator state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["batch_generator", "normalise", "pad_crop_flip", "per_image", "pixel_scale"]


def batch_generator(
    seed: int, epoch: int, step: int, rank: int = 0, device: torch.device | str = "cpu"
) -> torch.Generator:
    """The generator of one batch's augmentation, from where the batch stands in the run."""
    g = torch.Generator(device=device)
    # distinct streams for distinct (seed, epoch, step, rank): a 64-bit mix, not a sum
    key = ((seed * 1_000_003 + epoch) * 1_000_033 + step) * 1_009 + rank
    g.manual_seed(key % (2**63 - 1))
    return g


def pad_crop_flip(
    images: torch.Tensor, generator: torch.Generator, pad: int = 4, flip: bool = True
) -> torch.Tensor:
    """Each image of ``images`` (B, C, H, W) zero-padded by ``pad``, cropped back to H x W at a
    random offset and mirrored with probability 1/2: torchvision's ``RandomCrop(H, padding=pad)``
    + ``RandomHorizontalFlip()`` per image, for the whole batch at once."""
    b, _, h, w = images.shape
    dev = images.device
    if pad > 0:
        padded = F.pad(images, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
        dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
        rows = (dy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, None, :]
        batch = torch.arange(b, device=dev)[:, None, None, None]
        images = padded[
            batch, torch.arange(images.shape[1], device=dev)[None, :, None, None], rows, cols
        ]
    if flip:
        mirror = torch.rand(b, generator=generator, device=dev) < 0.5
        images = torch.where(mirror[:, None, None, None], images.flip(-1), images)
    return images


def normalise(
    images: torch.Tensor, mean: Sequence[float], std: Sequence[float], dtype=torch.float32
) -> torch.Tensor:
    """uint8 (B, C, H, W) -> ``dtype``, scaled to [0, 1] and normalised per channel."""
    m, s = pixel_scale(mean, std, images.device, dtype)
    return (images.to(dtype) - m) / s


def pixel_scale(
    mean: Sequence[float], std: Sequence[float], device: torch.device | str, dtype=torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """``mean`` and ``std`` in uint8 units, shaped (C, 1, 1): what :func:`normalise` subtracts
    and divides by (a loader builds them once, not per batch)."""
    m = torch.tensor(mean, device=device, dtype=dtype)[:, None, None] * 255
    s = torch.tensor(std, device=device, dtype=dtype)[:, None, None] * 255
    return m, s


def per_image(
    images: torch.Tensor,
    generator: torch.Generator,
    ops: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """``ops`` (torchvision v2 transforms, which draw from torch's global generator) applied to
    each image alone, with the global generator seeded from ``generator`` for the batch and put
    back afterwards: AutoAugment/RandAugment and random erasing differ per image, yet a resumed
    run redraws them exactly."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.stack([ops(img) for img in images])
