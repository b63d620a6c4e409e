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

No file can take the process down (docs/TRAINING.md, "What survives what"):

- PNGs are decoded by PIL under every choice. torchvision's ``decode_image`` crashes the
  process (SIGSEGV) on any libpng error met while reading rows: truncated or corrupt IDAT data
  ("Not enough image data", "incorrect data check"), which no header check can rule out; PIL
  raises an error instead. PNG is lossless: the pixels are the same.
- Every file's claimed size is read from its header before any pixel is decoded (PNG IHDR,
  JPEG SOF, else PIL's lazy ``Image.open``) and a file claiming more than
  :func:`pixel_limit` pixels (PIL's decompression-bomb limit, ``PIL.Image.MAX_IMAGE_PIXELS``,
  about 89 million) is refused: a JPEG claiming 60000x60000 would otherwise make libjpeg
  allocate 10.8 GB. The check costs under 5 us per file (docs/PERFORMANCE.md, "What safe
  decoding costs").

Either way the loader raises, and the dataset handles the file by ``--bad-images``.
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
    "check_claim",
    "claimed_size",
    "gpu_decodable",
    "is_encoded",
    "is_raw",
    "make_loader_fn",
    "on_device",
    "pixel_limit",
    "resolve_decode",
]

DECODE_CHOICES = ("auto", "pil", "pil-draft", "torchvision", "gpu")

#: What ``auto`` means: the fastest CPU decoder of benchmarks/input_pipeline.py on 500x375
#: JPEGs (docs/PERFORMANCE.md, "Input pipeline").
AUTO_DECODE = "torchvision"

_JPEG = b"\xff\xd8\xff"
_PNG = b"\x89PNG\r\n\x1a\n"
#: Formats decode_image reads besides JPEG; not PNG, whose errors crash it (module docstring).
_TORCH_DECODES = (b"GIF8", b"RIFF")


def resolve_decode(decode: str) -> str:
    """``decode`` checked (one-line UserError otherwise), ``auto`` replaced by its choice;
    ``gpu`` needs CUDA."""
    if decode not in DECODE_CHOICES:
        raise UserError(f"unknown --decode {decode!r}; choose one of {', '.join(DECODE_CHOICES)}")
    if decode == "gpu" and not torch.cuda.is_available():
        raise UserError("--decode gpu needs a CUDA device")
    return AUTO_DECODE if decode == "auto" else decode


def pixel_limit() -> int | None:
    """The most pixels an image may claim: PIL's ``Image.MAX_IMAGE_PIXELS`` (read at each call,
    so a program that changes it is followed; ``None``: no limit)."""
    return Image.MAX_IMAGE_PIXELS


def check_claim(size: tuple[int, int] | None) -> None:
    """Raise ``OSError`` when a header's ``(width, height)`` exceeds :func:`pixel_limit`."""
    limit = pixel_limit()
    if size is not None and limit is not None and size[0] * size[1] > limit:
        raise OSError(
            f"claims {size[0]}x{size[1]} pixels, over the {limit:,} of "
            "PIL.Image.MAX_IMAGE_PIXELS: a decompression bomb?"
        )


def _pil_rgb(img: Image.Image) -> Image.Image:
    check_claim(img.size)  # PIL itself refuses only twice its limit, and only warns below
    return img.convert("RGB")


def pil_load(path: str) -> Image.Image:
    """The whole image, RGB (torchvision's ``pil_loader``)."""
    with open(path, "rb") as f:
        return _pil_rgb(Image.open(f))


def draft_load(path: str, size: int) -> Image.Image:
    """A JPEG decoded at the smallest DCT scale whose both sides are at least ``size``."""
    with open(path, "rb") as f:
        img = Image.open(f)
        check_claim(img.size)
        if img.format == "JPEG":
            img.draft("RGB", (size, size))  # PIL keeps both sides >= the requested ones
        return _pil_rgb(img)


def claimed_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """``(width, height)`` from a file's header, no pixel decoded: PNG IHDR, JPEG SOF, else
    PIL's lazy ``Image.open``; ``None`` where the header does not say (the decoder then
    raises)."""
    head = bytes(data[:24])
    if head.startswith(_PNG):
        if head[12:16] != b"IHDR":
            return None
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head.startswith(_JPEG):
        frame = _jpeg_frame(data)[0]
        return None if frame is None else (frame[2], frame[1])
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception:  # noqa: BLE001 - not an image PIL knows: the decoder names the fault
        return None


def _tensor_from_bytes(data: torch.Tensor) -> torch.Tensor:
    """uint8 (3, H, W) from a file's bytes, its claimed size checked first (:func:`check_claim`):
    JPEGs by libjpeg-turbo, GIF and WebP by torchvision, PNGs and the rest by PIL."""
    raw = data.numpy().tobytes()
    check_claim(claimed_size(raw))
    if raw.startswith(_JPEG):
        return decode_jpeg(data, mode=ImageReadMode.RGB)
    if raw.startswith(_TORCH_DECODES):
        return decode_image(data, mode=ImageReadMode.RGB)
    return pil_to_tensor(_pil_rgb(Image.open(io.BytesIO(raw))))


def torchvision_load(path: str) -> torch.Tensor:
    """The image as a uint8 (3, H, W) tensor, JPEGs through ``torchvision.io.decode_jpeg``."""
    return _tensor_from_bytes(read_file(path))


#: Start-of-frame markers nvjpeg decodes: baseline, extended and progressive Huffman coding.
_NVJPEG_SOF = (0xC0, 0xC1, 0xC2)
#: Markers that are not frame headers although in the SOF range: DHT, JPG, DAC.
_NOT_SOF = (0xC4, 0xC8, 0xCC)


_Frame = tuple[int, int, int, int]  # (precision, height, width, components)


def _jpeg_frame(data: bytes | memoryview) -> tuple[_Frame | None, int | None, bool]:
    """A JPEG's frame header, Adobe APP14 transform, and whether nvjpeg codes it (SOF0-2);
    read from the markers before the first scan. No frame: malformed or not found."""
    i, frame, adobe, nv = 2, None, None, True
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None, adobe, False
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
            if len(seg) < 6:
                return None, adobe, False
            nv = nv and marker in _NVJPEG_SOF
            size = (int.from_bytes(seg[1:3], "big"), int.from_bytes(seg[3:5], "big"))
            frame = (seg[0], *size, seg[5])
        i += 2 + length
    return frame, adobe, nv


def gpu_decodable(data: bytes | memoryview) -> bool:
    """Whether nvjpeg takes this JPEG: 8-bit Huffman-coded, gray or YCbCr.

    Read from the markers before the first scan, no pixel decoded: the frame header's
    precision and component count, and the Adobe APP14 colour transform (0 on 3 components:
    RGB-coded; 4 components: CMYK, or YCCK with transform 2). False for anything else,
    malformed headers included (the CPU decoder then names the fault).
    """
    frame, adobe, nv = _jpeg_frame(data)
    if not nv or frame is None or frame[0] != 8:
        return False
    return frame[3] == 1 or (frame[3] == 3 and adobe != 0)


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
        check_claim(img.size)
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
