"""``afictl models``: the registry."""

from __future__ import annotations

from typing import Annotated

import typer

from ..models.catalog import catalog
from ..render import Format, human, render
from ._util import FormatOpt, OutputOpt


def models_cli(
    include: Annotated[
        str, typer.Argument(help="Wildcard filter, e.g. 'afi_*' or '*resnet*'.")
    ] = "*",
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
) -> None:
    """List the registered architectures: family, input size, parameters, baseline."""
    rows = catalog(include)
    if not rows:  # an empty table looks like an empty registry
        import difflib

        from ..errors import UserError
        from ..models import list_models

        stem = include.replace("*", "").replace("?", "")
        close = difflib.get_close_matches(stem, list_models(), n=4, cutoff=0.3) if stem else []
        hint = (
            f"; closest names: {', '.join(close)}" if close else "; `afictl models` lists them all"
        )
        raise UserError(f"no registered model matches {include!r}{hint}")
    render(
        rows,
        fmt,
        output,
        columns=["name", "family", "input_size", "home_dataset", "params", "baseline"],
        formatters={"params": human},
        title=f"{len(rows)} registered models",
    )
