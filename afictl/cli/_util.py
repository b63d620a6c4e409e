"""Options and helpers shared by every command (like spaCy's ``cli/_util.py``).

Light at import (stdlib, typer, click, :mod:`afictl.render`'s ``Format``,
afictl/validate.py): ``--help`` of every command builds its options from here without
importing torch.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from ..model_options import MODEL_OPTIONS, ModelOption
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
    "OPTION_TYPES",
    "OutputOpt",
    "WEIGHTS_HELP",
    "absolute_path",
    "model_option_flags",
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


#: the Python type a declared option's kind (afictl/model_options.py, afictl/train/options.py)
#: is read as on the command line
OPTION_TYPES: dict[str, Any] = {
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "stages": str,
    "path": Path,
    "dir": Path,
}
MODEL_PANEL = "Model options"


def model_option_parameter(o: ModelOption, panel: str = MODEL_PANEL) -> inspect.Parameter:
    """The Typer parameter of a model option: its flag, help and type, ``None`` when not
    given (the model's default then)."""
    extra = {"metavar": o.metavar} if o.metavar else {}
    flags = (o.flag, o.short) if o.short else (o.flag,)
    info = typer.Option(*flags, help=o.help, rich_help_panel=panel, **extra)
    annotation = Annotated[OPTION_TYPES[o.kind] | None, info]
    return inspect.Parameter(
        o.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation
    )


def model_option_flags(
    command: Callable[..., Any] | None = None, *, only: tuple[str, ...] | None = None
) -> Any:
    """``command`` with a flag per model option (afictl/model_options.py; ``only``: those
    named) after its own options; those given reach it, checked, as one dict
    ``model_options``. Used bare (``@model_option_flags``) or with ``only``."""
    if command is None:
        return functools.partial(model_option_flags, only=only)
    options = [o for o in MODEL_OPTIONS.values() if only is None or o.name in only]
    hints = typing.get_type_hints(command, include_extras=True)  # the command's own names
    own = [
        p.replace(annotation=hints[n], kind=inspect.Parameter.KEYWORD_ONLY)
        for n, p in inspect.signature(command).parameters.items()
        if n != "model_options"
    ]

    @functools.wraps(command)
    def wrapper(**values: Any) -> Any:
        given = {o.name: values.pop(o.name) for o in options}
        model_options = {k: check_option(k, v) for k, v in given.items() if v is not None}
        return command(**values, model_options=model_options)

    params = own + [model_option_parameter(o) for o in options]
    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    del wrapper.__wrapped__  # typer reads the new signature, not the command's own
    return wrapper
