"""``shapes``: a procedurally generated, labelled 32x32 image dataset that needs no download.

Every image is one coloured shape (the class) of random size, position and colour on a random
background (flat, gradient, stripes or noise). The shape is the only thing that predicts the
label, so a network must learn shapes, not colours; it learns them within one short epoch.
Generation is deterministic from ``(seed, split)``: the same arguments always give the same
pixels, on any machine.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

__all__ = ["SHAPE_CLASSES", "ShapesDataset", "render_shapes"]

SHAPE_CLASSES = ["circle", "square", "triangle", "diamond", "cross", "ring", "x", "frame"]
IMAGE_SIZE = 32

_GRID = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32) + 0.5  # (2, H, W): y, x


def _mask(kind: int, cy: float, cx: float, r: float) -> np.ndarray:
    """Boolean mask of shape ``kind`` centred at (cy, cx) with half-size r."""
    dy, dx = _GRID[0] - cy, _GRID[1] - cx
    w = max(1.5, r * 0.3)  # stroke half-width of the thin shapes
    name = SHAPE_CLASSES[kind]
    if name == "circle":
        return dy**2 + dx**2 <= r**2
    if name == "square":
        return np.maximum(abs(dy), abs(dx)) <= r * 0.85
    if name == "triangle":  # apex up
        return (dy >= -r) & (dy <= r * 0.8) & (abs(dx) <= (dy + r) * 0.6)
    if name == "diamond":
        return abs(dy) + abs(dx) <= r * 1.1
    if name == "cross":
        return ((abs(dx) <= w) & (abs(dy) <= r)) | ((abs(dy) <= w) & (abs(dx) <= r))
    if name == "ring":
        d = np.sqrt(dy**2 + dx**2)
        return (d <= r) & (d >= r - 1.6 * w)
    if name == "x":
        return ((abs(dx - dy) <= 1.4 * w) | (abs(dx + dy) <= 1.4 * w)) & (
            np.maximum(abs(dx), abs(dy)) <= r * 0.8
        )
    # frame: a hollow square
    m = np.maximum(abs(dy), abs(dx))
    return (m <= r * 0.85) & (m >= r * 0.85 - 1.6 * w)


def _background(rng: np.random.Generator) -> np.ndarray:
    """A (H, W, 3) float background in [0, 1]: flat, gradient, stripes or noise."""
    kind = rng.integers(4)
    c1, c2 = rng.random(3), rng.random(3)
    if kind == 0:
        return np.broadcast_to(c1, (IMAGE_SIZE, IMAGE_SIZE, 3)).copy()
    if kind == 1:
        angle = rng.random() * 2 * np.pi
        t = (np.cos(angle) * _GRID[1] + np.sin(angle) * _GRID[0]) / IMAGE_SIZE
        t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
        return c1 + (c2 - c1) * t[..., None]
    if kind == 2:
        period = rng.uniform(4, 10)
        axis = _GRID[rng.integers(2)]
        t = (np.sin(axis * 2 * np.pi / period) > 0).astype(np.float32)
        return c1 + (c2 - c1) * 0.5 * t[..., None]
    noise = rng.random((IMAGE_SIZE // 4, IMAGE_SIZE // 4, 1))
    noise = np.kron(noise, np.ones((4, 4, 1)))  # blocky texture
    return c1 * 0.7 + 0.3 * noise * c2


def render_shapes(n: int, seed: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (uint8, N x 32 x 32 x 3) and labels (int64), balanced over the classes.

    ``split`` enters the random stream, so the train and eval splits never share an image.
    """
    rng = np.random.default_rng([seed, sum(map(ord, split)), n])
    k = len(SHAPE_CLASSES)
    labels = np.arange(n) % k
    rng.shuffle(labels)
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    for i, label in enumerate(labels):
        # Backgrounds are darker on average than shapes (they overlap: 0-0.6 against 0.4-1).
        # With no such bias a ResNet needs hundreds of steps before it learns anything at all.
        img = _background(rng) * 0.6
        r = rng.uniform(6.0, 12.0)
        cy, cx = rng.uniform(r * 0.8 + 1, IMAGE_SIZE - r * 0.8 - 1, size=2)
        colour = 0.4 + 0.6 * rng.random(3)
        img[_mask(int(label), cy, cx, r)] = colour
        img += rng.normal(0, 0.03, img.shape)  # sensor noise
        images[i] = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    return images, labels.astype(np.int64)


class ShapesDataset(Dataset):
    """``n`` generated images of :data:`SHAPE_CLASSES` (PIL images through ``transform``)."""

    def __init__(self, n: int, seed: int = 0, split: str = "train", transform=None) -> None:
        self.images, self.targets = render_shapes(n, seed, split)
        self.classes = list(SHAPE_CLASSES)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        img = Image.fromarray(self.images[index])
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.targets[index])
