"""Options and helpers shared by every command (like spaCy's ``cli/_util.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..render import Format

FormatOpt = Annotated[
    Format,
    typer.Option(
        "--format", "-f", help="Output format: table, json, csv or markdown.", case_sensitive=False
    ),
]
OutputOpt = Annotated[
    Path | None,
    typer.Option(
        "--output", "-o", help="Write the results to this file instead of stdout.", dir_okay=False
    ),
]
ArchOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--arch", "-a", help="Registered architecture name (repeatable); see `afictl models`."
    ),
]


def absolute_path(option: str, path: Path | None) -> str | None:
    """A path option made absolute (``~`` expanded) after its check in afictl/validate.py."""
    if path is None:
        return None
    from ..validate import check_option

    return str(Path(check_option(option, str(path))).expanduser().absolute())
