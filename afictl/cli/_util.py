"""Options and helpers shared by every command (like spaCy's ``cli/_util.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..render import Format

FormatOpt = Annotated[
    Format,
    typer.Option("--format", "-f", help="Output format: table, json, csv or markdown.", case_sensitive=False),
]
OutputOpt = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="Write the results to this file instead of stdout.", dir_okay=False),
]
ArchOpt = Annotated[
    list[str] | None,
    typer.Option("--arch", "-a", help="Registered architecture name (repeatable); see `afictl models`."),
]
