"""Options and helpers shared by every command (like spaCy's ``cli/_util.py``).

Light at import (stdlib, typer, click, :mod:`afictl.render`'s ``Format``,
afictl/validate.py): ``--help`` of every command builds its options from here without
importing torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..render import Format
from ..validate import AMP_CHOICES, check_option  # light: stdlib and afictl.errors only

__all__ = [
    "AMP_CHOICES",
    "DEVICE_CHOICES",
    "AmpOpt",
    "ArchOpt",
    "DeviceOpt",
    "FormatOpt",
    "InputSizeOpt",
    "ModelArchOpt",
    "NumClassesOpt",
    "OutputOpt",
    "WEIGHTS_HELP",
    "absolute_path",
    "resolve_device",
]

DEVICE_CHOICES = ("auto", "cpu", "cuda")

FormatOpt = Annotated[
    Format,
    typer.Option(
        "--format",
        "-f",
        help="Results format: table, json, csv or markdown.",
        case_sensitive=False,
    ),
]
OutputOpt = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        help="Write the results (in --format) to this file instead of stdout.",
        dir_okay=False,
    ),
]
ArchOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--arch", "-a", help="Registered architecture name (repeatable); see `afictl models`."
    ),
]
#: What ``--checkpoint`` takes, in every command that takes one (afictl/weights.py).
WEIGHTS_HELP = (
    "A .pt written by afictl train (or its run folder: best.pt, else last.pt), a plain state "
    "dict (.pth/.pt; name its model with --arch) or a .safetensors file."
)
ModelArchOpt = Annotated[
    str | None,
    typer.Option(
        "--arch",
        "-a",
        help="The model of a plain state dict or .safetensors file given to --checkpoint; "
        "with an afictl checkpoint, the expected one (another is an error).",
    ),
]
# One definition for bench and memory, so that their help cannot drift apart
InputSizeOpt = Annotated[
    int | None,
    typer.Option("--input-size", min=8, help="Input resolution (default: the model's)."),
]
NumClassesOpt = Annotated[
    int | None,
    typer.Option("--num-classes", min=1, help="Classes (default: 100 CIFAR, 1000 ImageNet)."),
]


def _checked(name: str):
    """A click callback running afictl/validate.py's check of option ``name``: the same
    one-line message from the command line, a config file and the library."""

    def callback(value: str | None) -> str | None:
        return None if value is None else check_option(name, value)

    return callback


DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device",
        metavar="[auto|cpu|cuda|cuda:N]",
        callback=_checked("device"),
        help="auto (cuda when available, else cpu), cpu, cuda (under torchrun: the GPU of "
        "LOCAL_RANK, or the one GPU a rank sees) or cuda:N (one process only).",
    ),
]
AmpOpt = Annotated[
    str,
    typer.Option(
        "--amp",
        metavar="[none|bf16|fp16]",
        callback=_checked("amp"),
        help="Mixed precision (autocast): none, bf16 or fp16.",
    ),
]


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a CUDA device, else ``cpu``; others unchanged.
    Imports torch: call it inside a command, never at module import."""
    if device.lower() != "auto":
        return device.lower()
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def absolute_path(option: str, path: Path | None) -> str | None:
    """A path option made absolute (``~`` expanded) after its check in afictl/validate.py."""
    if path is None:
        return None
    from ..validate import check_option

    return str(Path(check_option(option, str(path))).expanduser().absolute())
