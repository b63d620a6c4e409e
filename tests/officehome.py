"""A tiny Office-Home-like ImageFolder made on the fly: 4 domains differing in style."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("bike", "cup", "lamp")


def _image(rng: np.random.Generator, cls: int, domain: str, size: int) -> Image.Image:
    yy, xx = np.mgrid[0:size, 0:size] / size
    shape = [
        (xx - 0.5) ** 2 + (yy - 0.5) ** 2 < 0.08,
        np.abs(xx - yy) < 0.15,
        (yy > 0.35) & (yy < 0.65),
    ][cls]
    base = {
        "Art": (0.8, 0.6, 0.4),
        "Clipart": (1.0, 1.0, 1.0),
        "Product": (0.9, 0.9, 0.9),
        "Real World": (0.3, 0.5, 0.3),
    }[domain]
    img = np.ones((size, size, 3)) * np.array(base)
    colour = np.array([(0.9, 0.1, 0.1), (0.1, 0.2, 0.9), (0.1, 0.7, 0.2)][cls])
    img[shape] = colour
    if domain == "Art":  # brush-like texture
        img += 0.15 * np.sin(xx * 40 + rng.uniform(0, 6))[..., None]
    if domain == "Real World":  # sensor noise
        img += rng.normal(0, 0.12, img.shape)
    if domain == "Product":
        img = img[:, ::-1]
    return Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))


def make_office_home(
    root: Path,
    per_class: int = 4,
    size: int = 40,
    real_world: str = "Real World",
    drop: tuple[str, str] | None = None,
) -> Path:
    """Write <root>/<domain>/<class>/<n>.jpg; ``drop=(domain, class)`` leaves one class out."""
    rng = np.random.default_rng(0)
    for domain in ("Art", "Clipart", "Product", "Real World"):
        folder = root / (real_world if domain == "Real World" else domain)
        for c, name in enumerate(CLASSES):
            if drop == (domain, name):
                continue
            (folder / name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                _image(rng, c, domain, size).save(folder / name / f"{i}.jpg")
    return root
