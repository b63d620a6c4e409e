"""How ImageFolder datasets (imagenet, imagefolder) decode their files: ``--decode``.

- ``pil``: PIL opens and decodes the full image (torchvision's ``default_loader``).
- ``pil-draft``: JPEGs are decoded by PIL at a reduced scale (``Image.draft``: libjpeg's DCT
  scaling by 1/2, 1/4 or 1/8) chosen so that *both* sides stay at least the size the pipeline
  needs (the train crop size, the eval resize). The field of view of the random resized crop is
  unchanged (the crop is drawn as a fraction of the whole image, as before); what changes is the
  detail inside small crops: a crop of 8% of the image holds 1/2-1/8 as many source pixels per
  side and is upsampled more. Images under twice the target size on their short side (ImageNet's
  typical 500x375 at 224) are decoded at full size, exactly as ``pil``.
- ``torchvision``: ``torchvision.io.decode_jpeg`` of the file's bytes (libjpeg-turbo), then the
  same transforms on the uint8 tensor (antialiased resize in torch instead of PIL's: values
  differ from ``pil`` by about one grey level).
- ``gpu``: workers only read the bytes; batches are decoded on the GPU by
  ``decode_jpeg(list, device="cuda")`` (nvjpeg) and transformed there (:func:`on_device` with the
  dataset's ``device_transform``), one image at a time since their sizes differ. The JPEG
  bytes go to ``decode_jpeg`` from host memory (it copies what it needs itself). JPEGs nvjpeg
  may refuse are screened in the worker from their header alone (:func:`gpu_decodable`: CMYK
  and YCCK, RGB-coded, 12-bit, arithmetic-coded or lossless; ImageNet's train set holds about
  20 CMYK files) and decoded there on the CPU, as other formats are, so one such file does not
  stop the run; a file that fails that decode is handled by ``--bad-images`` like any other.
- ``auto``: :data:`AUTO_DECODE`, the fastest CPU choice measured by
  benchmarks/input_pipeline.py (docs/PERFORMANCE.md, "Input pipeline").

Files that are not JPEGs (PNG, BMP, ...) load under every choice: ``decode_image`` or PIL.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image, decode_jpeg, read_file
from torchvision.transforms.v2.functional import pil_to_tensor

from ..errors import UserError
from .errors import CorruptImageError

__all__ = [
    "AUTO_DECODE",
    "DECODE_CHOICES",
    "gpu_decodable",
    "is_encoded",
    "is_raw",
    "make_loader_fn",
    "on_device",
    "resolve_decode",
]

DECODE_CHOICES = ("auto", "pil", "pil-draft", "torchvision", "gpu")

#: What ``auto`` means: the fastest CPU decoder of benchmarks/input_pipeline.py on 500x375
#: JPEGs (docs/PERFORMANCE.md, "Input pipeline").
AUTO_DECODE = "torchvision"

_JPEG = b"\xff\xd8\xff"
_TORCH_DECODES = (b"\x89PNG", b"GIF8", b"RIFF")  # formats decode_image reads besides JPEG


def resolve_decode(decode: str) -> str:
    """``decode`` checked (one-line UserError otherwise), ``auto`` replaced by its choice;
    ``gpu`` needs CUDA."""
    if decode not in DECODE_CHOICES:
        raise UserError(f"unknown --decode {decode!r}; choose one of {', '.join(DECODE_CHOICES)}")
    if decode == "gpu" and not torch.cuda.is_available():
        raise UserError("--decode gpu needs a CUDA device")
    return AUTO_DECODE if decode == "auto" else decode


def _pil_rgb(img: Image.Image) -> Image.Image:
    return img.convert("RGB")


def pil_load(path: str) -> Image.Image:
    """The whole image, RGB (torchvision's ``pil_loader``)."""
    with open(path, "rb") as f:
        return _pil_rgb(Image.open(f))


def draft_load(path: str, size: int) -> Image.Image:
    """A JPEG decoded at the smallest DCT scale whose both sides are at least ``size``."""
    with open(path, "rb") as f:
        img = Image.open(f)
        if img.format == "JPEG":
            img.draft("RGB", (size, size))  # PIL keeps both sides >= the requested ones
        return _pil_rgb(img)


def _tensor_from_bytes(data: torch.Tensor) -> torch.Tensor:
    """uint8 (3, H, W) from a file's bytes: libjpeg-turbo / libpng via torchvision, else PIL."""
    head = bytes(data[:4].tolist())
    if head.startswith(_JPEG):
        return decode_jpeg(data, mode=ImageReadMode.RGB)
    if head.startswith(_TORCH_DECODES):
        return decode_image(data, mode=ImageReadMode.RGB)
    return pil_to_tensor(_pil_rgb(Image.open(io.BytesIO(data.numpy().tobytes()))))


def torchvision_load(path: str) -> torch.Tensor:
    """The image as a uint8 (3, H, W) tensor, JPEGs through ``torchvision.io.decode_jpeg``."""
    return _tensor_from_bytes(read_file(path))


#: Start-of-frame markers nvjpeg decodes: baseline, extended and progressive Huffman coding.
_NVJPEG_SOF = (0xC0, 0xC1, 0xC2)
#: Markers that are not frame headers although in the SOF range: DHT, JPG, DAC.
_NOT_SOF = (0xC4, 0xC8, 0xCC)


def gpu_decodable(data: bytes | memoryview) -> bool:
    """Whether nvjpeg takes this JPEG: 8-bit Huffman-coded, gray or YCbCr.

    Read from the markers before the first scan, no pixel decoded: the frame header's
    precision and component count, and the Adobe APP14 colour transform (0 on 3 components:
    RGB-coded; 4 components: CMYK, or YCCK with transform 2). False for anything else,
    malformed headers included (the CPU decoder then names the fault).
    """
    i, frame, adobe = 2, None, None
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return False
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        seg = data[i + 4 : i + 2 + length]
        if marker == 0xDA:  # start of scan: the header is over
            break
        if marker == 0xEE and len(seg) >= 12 and bytes(seg[:5]) == b"Adobe":
            adobe = seg[11]
        elif 0xC0 <= marker <= 0xCF and marker not in _NOT_SOF:
            if marker not in _NVJPEG_SOF or len(seg) < 6:
                return False
            frame = (seg[0], seg[5])  # (precision, components)
        i += 2 + length
    if frame is None or frame[0] != 8:
        return False
    return frame[1] == 1 or (frame[1] == 3 and adobe != 0)


def encoded_load(path: str) -> torch.Tensor:
    """A JPEG's bytes (1-D uint8, decoded later on the device); other formats, and JPEGs
    nvjpeg may refuse (:func:`gpu_decodable`), decoded here as uint8 (3, H, W).

    The header is parsed here (cheap, no pixel is decoded) so that a file that is no image at
    all is caught in the worker, where the dataset can mark and skip it."""
    # read_file's tensor lives in a file-backed storage that cannot be sent to the main
    # process (DataLoader workers share tensors by file descriptor): a plain copy can
    data = read_file(path).clone()
    if bytes(data[:3].tolist()) != _JPEG:
        return _tensor_from_bytes(data)
    raw = data.numpy().tobytes()
    with Image.open(io.BytesIO(raw)) as img:
        if img.format != "JPEG":
            raise OSError("not a JPEG file")
    if not gpu_decodable(raw):
        return _tensor_from_bytes(data)  # libjpeg-turbo converts CMYK/YCCK to RGB
    return data


def make_loader_fn(decode: str, size: int) -> Callable[[str], object]:
    """The file loader of ``decode`` (resolved); ``size``: what ``pil-draft`` keeps at least."""
    if decode == "pil":
        return pil_load
    if decode == "pil-draft":
        return _DraftLoader(size)
    if decode == "torchvision":
        return torchvision_load
    if decode == "gpu":
        return encoded_load
    raise ValueError(f"unresolved decode {decode!r}")


class _DraftLoader:
    """A picklable ``draft_load`` bound to a size (DataLoader workers receive the dataset)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, path: str) -> Image.Image:
        return draft_load(path, self.size)


def is_encoded(x: object) -> bool:
    """An undecoded file: a 1-D uint8 tensor (what ``--decode gpu`` datasets yield)."""
    return isinstance(x, torch.Tensor) and x.ndim == 1 and x.dtype == torch.uint8


def is_raw(x: object) -> bool:
    """A sample still to be decoded or transformed on the device (``--decode gpu``): a JPEG's
    bytes, or a uint8 (3, H, W) image of another format decoded in the worker."""
    return isinstance(x, torch.Tensor) and x.dtype == torch.uint8 and x.ndim in (1, 3)


def on_device(
    images: torch.Tensor | Sequence[torch.Tensor],
    device: torch.device | str,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """A batch on ``device``: a tensor is moved (``non_blocking``); a list from a
    ``--decode gpu`` loader is decoded there (JPEG bytes by nvjpeg on CUDA, libjpeg on CPU),
    each image transformed by ``transform`` and the results stacked."""
    if isinstance(images, torch.Tensor):
        return images.to(device, non_blocking=True)
    device = torch.device(device)
    encoded = [i for i, x in enumerate(images) if is_encoded(x)]
    # JPEG bytes stay on the host: decode_jpeg takes CPU data for any device
    decoded = [x if is_encoded(x) else x.to(device, non_blocking=True) for x in images]
    if encoded:
        try:
            out = decode_jpeg([images[i] for i in encoded], mode=ImageReadMode.RGB, device=device)
        except RuntimeError as exc:
            reason = (str(exc).splitlines() or ["decode error"])[0][:120]
            raise CorruptImageError(
                f"a JPEG of this batch failed to decode on {device.type} ({reason}); "
                "--decode torchvision decodes in the workers, where such files can be skipped"
            ) from None
        for i, img in zip(encoded, out, strict=True):
            decoded[i] = img
    if transform is not None:
        decoded = [transform(img) for img in decoded]
    return torch.stack(decoded)
