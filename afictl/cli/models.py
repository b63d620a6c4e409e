"""``afictl models``: the registry."""

from __future__ import annotations

from typing import Annotated

import typer

from ..models.catalog import catalog
from ..render import Format, human, render
from ._util import FormatOpt, OutputOpt


def models_cli(
    include: Annotated[str, typer.Argument(help="Wildcard filter, e.g. 'afi_*' or '*resnet*'.")] = "*",
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
) -> None:
    """List the registered architectures: family, input size, parameters, baseline."""
    rows = catalog(include)
    render(
        rows, fmt, output,
        columns=["name", "family", "input_size", "home_dataset", "params", "baseline"],
        formatters={"params": human},
        title=f"{len(rows)} registered models",
    )
