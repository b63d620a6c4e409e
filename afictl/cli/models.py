"""``afictl models``: the registry."""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import UserError
from ..render import Format
from ._util import FormatOpt, OutputOpt


def models_cli(
    include: Annotated[
        str,
        typer.Argument(
            metavar="PATTERN",
            help="Names to list: a bare word matches anywhere in the name (`afi`, `resnet5`), "
            "`*` and `?` are wildcards (`afi_*`, `resnet?0`); case-insensitive.",
        ),
    ] = "*",
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
) -> None:
    """List the registered architectures: family, input size, parameters, baseline.

    `afictl models afi` lists the AFI models; a pattern that matches nothing is an error
    (exit 2) naming the closest registered names.
    """
    from ..models.catalog import catalog
    from ..render import human, plural, render

    rows = catalog(include)
    if not rows:  # an empty table looks like an empty registry
        from ..models.catalog import closest_names

        raise UserError(_no_match(include, closest_names(include)))
    render(
        rows,
        fmt,
        output,
        columns=["name", "family", "input_size", "home_dataset", "params", "baseline"],
        formatters={"params": human},
        title=plural(len(rows), "registered model"),
    )


def _no_match(pattern: str, close: list[str]) -> str:
    hint = f"; closest names: {', '.join(close)}" if close else "; `afictl models` lists them all"
    return f"no registered model matches {pattern!r}{hint}"
