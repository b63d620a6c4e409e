"""``afictl train``: train a registered architecture with the paper's recipe (or a modern one).

The options come from one table, afictl/train/options.py (light: no torch), one spec per
TrainConfig field; this module turns each spec into a Typer option and adds the ones that are
not part of a run's configuration (--config, --resume, --overwrite, --format, --output).
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from ..render import Format, check_writable, human, render, write_text
from ..train.options import RECIPE, RUN, TRAIN_OPTIONS, OptionSpec
from ._util import FormatOpt, OutputOpt, absolute_path

_TYPES: dict[str, Any] = {
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "path": Path,
    "dir": Path,
}
_PATHS = ("data_root", "pretrained")  # made absolute: the run records where they were


def _option(spec: OptionSpec) -> inspect.Parameter:
    """The Typer parameter of one spec (every one defaults to None: not given)."""
    extra: dict[str, Any] = {"file_okay": False} if spec.kind == "dir" else {}
    if spec.metavar:
        extra["metavar"] = spec.metavar
    # the default is None (not given: the recipe or the config decides), so state the value
    shown = f" [default: {spec.shown_default}]" if spec.shown_default else ""
    info = typer.Option(*spec.flags, help=spec.help + shown, rich_help_panel=spec.panel, **extra)
    annotation = Annotated[_TYPES[spec.kind] | None, info]
    return inspect.Parameter(
        spec.field, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation
    )


_OWN = [
    inspect.Parameter(
        "config",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            Path | None,
            typer.Option(
                "--config",
                help="TOML or JSON file of the same keys (e.g. epochs = 10); YAML with PyYAML.",
                rich_help_panel=RECIPE,
                dir_okay=False,
            ),
        ],
    ),
    inspect.Parameter(
        "resume",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            Path | None,
            typer.Option(
                "--resume",
                help="Continue the run in this folder (its last.pt) exactly where it stopped.",
                rich_help_panel=RUN,
            ),
        ],
    ),
    inspect.Parameter(
        "overwrite",
        inspect.Parameter.KEYWORD_ONLY,
        default=False,
        annotation=Annotated[
            bool,
            typer.Option(
                "--overwrite",
                help="Start afresh in a --run-dir that already holds a run.",
                rich_help_panel=RUN,
            ),
        ],
    ),
    inspect.Parameter(
        "fmt", inspect.Parameter.KEYWORD_ONLY, default=Format.table, annotation=FormatOpt
    ),
    inspect.Parameter("output", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=OutputOpt),
]


def train_cli(**values: Any) -> None:
    """Train ARCH on a dataset with the paper's recipe (section 4.3) or a modern one.

    Writes `<run>/config.json`, metrics.csv, metrics.jsonl, last.pt (every epoch) and best.pt
    (best eval top-1). SIGINT/SIGTERM finish the current step, write last.pt and exit 130/143
    (128 + the signal's number); continue with --resume RUN. One run at a time per folder.
    Under torchrun (`torchrun --nproc_per_node=N -m afictl train ...`) it trains with DDP.
    With --format json stdout is one JSON object; progress and warnings go to stderr.
    """
    config, resume, overwrite = values.pop("config"), values.pop("resume"), values.pop("overwrite")
    fmt, output = values.pop("fmt"), values.pop("output")
    options = {k: absolute_path(k, v) if k in _PATHS else v for k, v in values.items()}
    if options.get("run_dir") is not None:
        options["run_dir"] = str(options["run_dir"])
    if output is not None:  # before training, not after it
        check_writable(output)
    result = _run(options, config, resume, overwrite)
    if int(os.environ.get("RANK", "0")) != 0:
        if result.exit_code:  # stopped by a signal: not a finished run (every process says so)
            raise typer.Exit(result.exit_code)
        return
    _report(result, fmt, output)
    if result.exit_code:  # 143 after SIGTERM, 130 after SIGINT, once last.pt is written
        raise typer.Exit(result.exit_code)


train_cli.__signature__ = inspect.Signature([*map(_option, TRAIN_OPTIONS), *_OWN])  # type: ignore[attr-defined]
train_cli.__annotations__ = {
    p.name: p.annotation for p in train_cli.__signature__.parameters.values()
}  # type: ignore[attr-defined]


def _run(options: dict[str, Any], config: Path | None, resume: Path | None, overwrite: bool):
    from ..train import load_resume, resolve_config, train

    if resume is None:
        cfg = resolve_config(options, config)
        if options.get("model_ema_decay") is not None and not cfg.model_ema:
            from ..errors import UserError

            raise UserError("--model-ema-decay applies to --model-ema only; add --model-ema")
        return train(cfg, overwrite=overwrite)
    _check_resume(options, config, overwrite)
    from ..validate import check_options

    arch = options.pop("arch")
    options.pop("run_dir")
    cfg, ckpt = load_resume(resume, check_options(options), arch=arch)
    return train(cfg, resume=ckpt)


def _check_resume(options: dict[str, Any], config: Path | None, overwrite: bool) -> None:
    """Options that --resume cannot honour: the run keeps its folder and its configuration."""
    from ..errors import UserError

    if config is not None:
        raise UserError(
            "--config cannot be combined with --resume (the run keeps its configuration)"
        )
    if options.get("run_dir") is not None:
        raise UserError(
            "--run-dir cannot be combined with --resume (the run continues in its own folder)"
        )
    if overwrite:
        raise UserError(
            "--overwrite cannot be combined with --resume (it continues the run; to start "
            "afresh, drop --resume and give --run-dir with --overwrite)"
        )


def _report(result, fmt: Format, output: Path | None) -> None:
    row = result.to_dict()
    if fmt is Format.json:  # one object: stdout is exactly one JSON document
        text = json.dumps(row)
        if output is not None:
            write_text(text, output)
        else:
            print(text)
        return
    render(
        [row],
        fmt,
        output,
        columns=[
            "arch",
            "dataset",
            "epochs",
            "eval_top1",
            "eval_top5",
            "best_top1",
            "images_per_sec",
            "params",
            "run_dir",
        ],
        formatters={
            "params": human,
            "eval_top1": "{:.2f}".format,
            "eval_top5": "{:.2f}".format,
            "best_top1": "{:.2f}".format,
            "images_per_sec": "{:.0f}".format,
        },
        title="training run"
        + (f" (interrupted by {result.interrupted})" if result.interrupted else ""),
    )
