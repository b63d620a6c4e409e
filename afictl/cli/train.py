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

from ..model_options import MODEL_OPTIONS
from ..render import Format, check_writable, human, render, write_text
from ..train.options import RECIPE, RUN, TRAIN_OPTIONS, OptionSpec
from ._util import OPTION_TYPES, FormatOpt, OutputOpt, absolute_path

_PATHS = ("data_root", "pretrained")  # made absolute: the run records where they were


def _option(spec: OptionSpec) -> inspect.Parameter:
    """The Typer parameter of one spec (every one defaults to None: not given)."""
    extra: dict[str, Any] = {"file_okay": False} if spec.kind == "dir" else {}
    if spec.metavar:
        extra["metavar"] = spec.metavar
    # the default is None (not given: the recipe or the config decides), so state the value
    shown = f" [default: {spec.shown_default}]" if spec.shown_default else ""
    info = typer.Option(*spec.flags, help=spec.help + shown, rich_help_panel=spec.panel, **extra)
    annotation = Annotated[OPTION_TYPES[spec.kind] | None, info]
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
                help="TOML or JSON file whose keys are the long option names (data = 'shapes', "
                "batch-size = 64) or config.json's; YAML with PyYAML.",
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
        "dry_run",
        inspect.Parameter.KEYWORD_ONLY,
        default=False,
        annotation=Annotated[
            bool,
            typer.Option(
                "--dry-run",
                help="Print each resolved value and its source, the data and the run folder; "
                "create nothing (exit 2 with the run's error if it could not start).",
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
    fmt, output, dry_run = values.pop("fmt"), values.pop("output"), values.pop("dry_run")
    options = {k: absolute_path(k, v) if k in _PATHS else v for k, v in values.items()}
    if options.get("run_dir") is not None:
        options["run_dir"] = str(options["run_dir"])
    if output is not None:  # before training, not after it
        check_writable(output)
    if dry_run:
        _dry_run(options, config, resume, overwrite, fmt, output)
        return
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


def _resolve(
    options: dict[str, Any], config: Path | None, resume: Path | None, overwrite: bool
) -> tuple[Any, dict[str, str], dict | None]:
    """The run's config, where each value came from, and the checkpoint to resume (or None)."""
    from ..errors import UserError
    from ..train import load_resume
    from ..train.config import fold_model_options, resolve_config_sources
    from ..validate import check_options

    if resume is None:
        cfg, sources = resolve_config_sources(options, config)
        if options.get("model_ema_decay") is not None and not cfg.model_ema:
            raise UserError("--model-ema-decay applies to --model-ema only; add --model-ema")
        return cfg, sources, None
    _check_resume(options, config, overwrite)
    arch = options.pop("arch")
    options.pop("run_dir")
    given = fold_model_options(check_options(options))
    model_kwargs = given.pop("model_kwargs", {})
    cfg, ckpt = load_resume(resume, given, arch=arch)
    _check_same_model(cfg, model_kwargs)
    from_run = f"run {cfg.run_dir}"
    given |= model_kwargs
    names = [*vars(cfg), *MODEL_OPTIONS]
    return cfg, {k: "flag" if given.get(k) is not None else from_run for k in names}, ckpt


def _check_same_model(cfg: Any, given: dict[str, Any]) -> None:
    """Model options given with --resume: only the run's own values (the weights fit no other)."""
    from ..errors import UserError
    from ..models import check_model_options

    given = check_model_options(cfg.arch, given)
    defaults = {k: o.default for k, o in MODEL_OPTIONS.items()}
    changed = sorted(k for k, v in given.items() if cfg.model_kwargs.get(k, defaults[k]) != v)
    if changed:
        raise UserError(
            f"cannot change {', '.join(changed)} when resuming: the run's model was built with "
            f"{cfg.model_kwargs or 'the defaults'} ({cfg.run_dir}/config.json)"
        )


def _data_plan(cfg: Any, count: bool):
    """What the run would read; the data error it would stop with, ``--download`` named.
    ``count``: count an ImageFolder's files (the dry run; the run's own check skips the walk)."""
    from ..data.datasets import plan_data

    return plan_data(
        cfg.dataset,
        cfg.data_root,
        size=cfg.data_size,
        download=cfg.download,
        download_hint="--download",
        count=count,
    )


def _run(options: dict[str, Any], config: Path | None, resume: Path | None, overwrite: bool):
    from ..data import DataMissingError
    from ..train import train

    cfg, _, ckpt = _resolve(options, config, resume, overwrite)
    # The dry run's check of the files (names only): the same line, before anything is built
    problem = _data_plan(cfg, count=False).problem
    if problem:
        raise DataMissingError(problem)
    return train(cfg, overwrite=overwrite) if ckpt is None else train(cfg, resume=ckpt)


def _dry_run(
    options: dict[str, Any],
    config: Path | None,
    resume: Path | None,
    overwrite: bool,
    fmt: Format,
    output: Path | None,
) -> None:
    """Print the resolved run (values, sources, data, run folder); create nothing. Exit 2 with
    the run's own error line, after the rows, when it could not start."""
    from ..errors import UserError
    from ..train.config import explain_config

    cfg, sources, ckpt = _resolve(options, config, resume, overwrite)
    data = _data_plan(cfg, count=True)
    folder, problem = _run_folder(cfg, sources, ckpt is not None, overwrite)
    rows = [*explain_config(cfg, sources), *data.rows(), folder]
    render(
        rows,
        fmt,
        output,
        columns=["option", "value", "source"],
        formatters={"value": _text},
        title=f"afictl train --dry-run: {cfg.arch} on {cfg.dataset} (nothing created)",
    )
    problem = data.problem or problem
    if problem:
        raise UserError(problem)


def _run_folder(
    cfg: Any, sources: dict[str, str], resumed: bool, overwrite: bool
) -> tuple[dict[str, Any], str | None]:
    """The row of the run folder the run would create (or continue), and the line it would stop
    with when that folder already holds a run."""
    from ..train.run import default_run_dir

    if resumed:
        return dict(option="run folder", value=cfg.run_dir, source="continued (--resume)"), None
    if cfg.run_dir is None:
        # named when the run starts, after its start time (the space lets a table wrap it)
        path = default_run_dir(cfg.arch, cfg.dataset).with_name(f"{cfg.arch}-{cfg.dataset}-")
        how = "default, created when the run starts"
        return dict(option="run folder", value=f"{path}<start time>", source=how), None
    path = Path(cfg.run_dir)
    row = dict(option="run folder", value=str(path), source=f"{sources['run_dir']} (--run-dir)")
    if (path / "last.pt").exists() and not overwrite:  # the run's own check and line
        return row, (
            f"{path} already holds a run; continue it with --resume {path}, or pass --overwrite"
        )
    return row, None


def _text(value: Any) -> str:
    """A value as the options take it: lists comma-joined, true/false (render leaves None
    blank: not set, the run decides)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


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
