"""The Typer application and the entry point that turns user errors into one line + exit 2."""

from __future__ import annotations

import ast
import importlib
import sys
from importlib.resources import files
from typing import Annotated

import click
import typer
from typer.core import TyperGroup

from ..errors import StageError, UnknownModelError, UserError

#: Subcommands in help order: name -> module of ``afictl.cli`` (whose ``<module>_cli`` it runs).
#: A module is imported only when its command runs, so that ``afictl --help`` and commands that
#: need neither torchvision nor matplotlib do not pay for importing them (seconds each).
COMMANDS = (
    "models",
    "train",
    "runs",
    "curves",
    "eval",
    "predict",
    "flops",
    "memory",
    "bench",
    "gradcam",
    "selectivity",
    "features",
    "report",
    "transfer",
    "export",
)


def _summary(name: str) -> str:
    """First line of a command's docstring, read from its source without importing it."""
    tree = ast.parse(files(__package__).joinpath(f"{name}.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == f"{name}_cli":
            return (ast.get_docstring(node) or "").split("\n", 1)[0]
    return ""


def _load(name: str) -> click.Command:
    """The click command of one subcommand, built by Typer from its module's function."""
    module = importlib.import_module(f"{__package__}.{name}")
    single = typer.Typer(**_SETTINGS)
    single.command(name)(getattr(module, f"{name}_cli"))
    return typer.main.get_command(single)


class _LazyGroup(TyperGroup):
    """Typer's group with subcommands imported on use; help lists them from their docstrings."""

    _listing = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        if self._listing:  # the command list of `afictl --help`: name and summary suffice
            return click.Command(cmd_name, short_help=_summary(cmd_name))
        return _load(cmd_name)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


_SETTINGS = dict(
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
app = typer.Typer(
    name="afictl",
    help="Train, profile and analyse Attentive Feature Integration networks (AFI-Nets).",
    no_args_is_help=True,
    cls=_LazyGroup,
    **_SETTINGS,
)


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        print(f"afictl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            callback=_version,
            is_eager=True,
            help="Print `afictl X.Y.Z` and exit.",
        ),
    ] = False,
) -> None:
    # A callback makes Typer build a group (the commands come from _LazyGroup); help= above.
    pass


#: Exceptions that mean "the user asked for something impossible", not "afictl has a bug":
#: besides ours, what the operating system refuses (a missing file, no permission, a full disk:
#: OSError names the path and the reason) and images PIL will not open (see _pil_error).
USER_ERRORS = (UserError, UnknownModelError, StageError, OSError)


def _pil_error(exc: BaseException) -> bool:
    """An image PIL refuses (a decompression bomb; UnidentifiedImageError is an OSError).
    Looked up only when PIL is loaded: commands that read no image never import it."""
    image = sys.modules.get("PIL.Image")
    return image is not None and isinstance(
        exc, image.DecompressionBombError | image.UnidentifiedImageError
    )


def _fail(message: str, code: int = 2) -> None:
    print(f"afictl: error: {message}", file=sys.stderr)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs the app; user errors print one line and exit with 2."""
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=argv, prog_name="afictl", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # bare `afictl`: help, not an error
        # Building the exception called ctx.get_help(), which Typer's rich help prints itself
        # (returning ""); only click's plain help comes back as the message, to print here.
        if exc.format_message():
            print(exc.format_message())
        sys.exit(0)
    except click.UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        _fail(exc.format_message().replace("\n", " ") + hint)
    except click.exceptions.Abort:
        _fail("aborted", 130)
    except click.ClickException as exc:
        _fail(exc.format_message().replace("\n", " "))
    except BrokenPipeError:  # an OSError: `afictl models | head` is not an error
        sys.exit(0)
    except USER_ERRORS as exc:
        _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except Exception as exc:
        if not _pil_error(exc):
            raise
        _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    if isinstance(rv, int) and rv:
        sys.exit(rv)
