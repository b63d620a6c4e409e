"""The Typer application and the entry point that turns user errors into one line + exit 2."""

from __future__ import annotations

import sys

import click
import typer

from ..errors import UserError
from ..models import StageError, UnknownModelError
from .bench import bench_cli
from .eval import eval_cli
from .features import features_cli
from .flops import flops_cli
from .gradcam import gradcam_cli
from .memory import memory_cli
from .models import models_cli
from .report import report_cli
from .selectivity import selectivity_cli
from .train import train_cli
from .transfer import transfer_cli

app = typer.Typer(
    name="afictl",
    help="Train, profile and analyse Attentive Feature Integration networks (AFI-Nets).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("models")(models_cli)
app.command("train")(train_cli)
app.command("eval")(eval_cli)
app.command("flops")(flops_cli)
app.command("memory")(memory_cli)
app.command("bench")(bench_cli)
app.command("gradcam")(gradcam_cli)
app.command("selectivity")(selectivity_cli)
app.command("features")(features_cli)
app.command("report")(report_cli)
app.command("transfer")(transfer_cli)

#: Exceptions that mean "the user asked for something impossible", not "afictl has a bug".
USER_ERRORS = (UserError, UnknownModelError, StageError, FileNotFoundError)


def _fail(message: str, code: int = 2) -> None:
    print(f"afictl: error: {message}", file=sys.stderr)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs the app; user errors print one line and exit with 2."""
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=argv, prog_name="afictl", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # bare `afictl`: help, not an error
        print(exc.ctx.get_help() if exc.ctx else "")
        sys.exit(0)
    except click.UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        _fail(exc.format_message().replace("\n", " ") + hint)
    except click.exceptions.Abort:
        _fail("aborted", 130)
    except click.ClickException as exc:
        _fail(exc.format_message().replace("\n", " "))
    except USER_ERRORS as exc:
        _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except BrokenPipeError:
        sys.exit(0)
    if isinstance(rv, int) and rv:
        sys.exit(rv)
