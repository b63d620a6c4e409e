"""Classify an image with an ONNX file from `afictl export`, using only what the file says.

    afictl export -c runs/afi_resnet20-shapes-<time>/ --export-file model.onnx
    python examples/onnx_predict.py model.onnx image.jpg --top 3

The file's metadata (`afictl.preprocessing`, `afictl.class_names`) says how to resize and
normalise the image and what each output is; this script needs onnxruntime, NumPy and Pillow
only (not torch, not afictl). Its preprocessing is afictl's evaluation transform, value for
value: `squash` resizes the whole image to H x W; `center` resizes the short side to
round(H / crop_pct) (256 for 224) and crops the center H x W; then pixels / 255, minus mean,
over std.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import onnxruntime as ort
from PIL import Image

RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


def preprocess(image: Image.Image, pre: dict) -> np.ndarray:
    """The (1, 3, H, W) float32 batch the model was evaluated on."""
    _, height, width = pre["input_size"]
    resample = RESAMPLE[pre["interpolation"]]
    image = image.convert("RGB")
    if pre["crop_mode"] == "squash":
        image = image.resize((width, height), resample)
    else:  # "center": as torchvision's Resize(short side) + CenterCrop
        short = round(height / pre["crop_pct"])
        w, h = image.size
        size = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
        image = image.resize(size, resample)
        left, top = round((size[0] - width) / 2.0), round((size[1] - height) / 2.0)
        image = image.crop((left, top, left + width, top + height))
    x = np.asarray(image, dtype=np.float32) / 255
    x = (x - np.asarray(pre["mean"], np.float32)) / np.asarray(pre["std"], np.float32)
    return x.transpose(2, 0, 1)[None]


def predict(model: str, image: str, top: int = 5) -> list[tuple[str, float]]:
    """The ``top`` classes of ``image`` (name, or index without names, and probability)."""
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    pre = json.loads(meta["afictl.preprocessing"])
    names = json.loads(meta.get("afictl.class_names", "null"))
    x = preprocess(Image.open(image), pre)
    logits = session.run(None, {session.get_inputs()[0].name: x})[0][0].astype(np.float64)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    best = np.argsort(-probs)[:top]
    return [(names[i] if names else str(i), float(probs[i])) for i in best]


def main(argv: list[str] | None = None) -> list[tuple[str, float]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="an .onnx file written by afictl export")
    p.add_argument("image", help="an image file (JPEG, PNG, ...)")
    p.add_argument("--top", type=int, default=5, help="classes to print (default 5)")
    args = p.parse_args(argv)
    ranked = predict(args.model, args.image, args.top)
    for name, prob in ranked:
        print(f"{prob:7.2%}  {name}")
    return ranked


if __name__ == "__main__":
    main()
