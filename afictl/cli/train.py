"""``afictl train``: train a registered architecture with the paper's recipe."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from ..render import Format, check_writable, human, render, write_text
from ._util import FormatOpt, OutputOpt, absolute_path

_DATA = "Data"
_RECIPE = "Recipe (each overrides the recipe and --config)"
_MODEL = "Model"
_RUN = "Run"

Opt = typer.Option


def train_cli(
    arch: Annotated[
        str | None,
        Opt(
            "--arch",
            "-a",
            help="Registered architecture (see `afictl models`).",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    data: Annotated[
        str | None,
        Opt(
            "--data",
            "-d",
            help="cifar10, cifar100, imagenet, imagefolder, shapes or synthetic. Default: the architecture's home dataset (imagenet for 224-pixel models, cifar100 for 32-pixel ones).",
            rich_help_panel=_DATA,
        ),
    ] = None,
    data_root: Annotated[
        Path | None,
        Opt(
            "--data-root",
            help="Folder of the dataset. Default: $AFICTL_DATA/<dataset>, else ./data/<dataset>.",
            rich_help_panel=_DATA,
        ),
    ] = None,
    download: Annotated[
        bool | None,
        Opt(
            "--download/--no-download",
            help="Download CIFAR into the data root if missing.",
            rich_help_panel=_DATA,
        ),
    ] = None,
    data_size: Annotated[
        int | None,
        Opt(
            "--data-size",
            help="Images per split: generated for shapes (default 4000), a fixed random subset otherwise.",
            rich_help_panel=_DATA,
        ),
    ] = None,
    input_size: Annotated[
        int | None,
        Opt(
            "--input-size",
            help="Input pixels. Default: the files' size (CIFAR, shapes: 32), else the model's (32 or 224).",
            rich_help_panel=_DATA,
        ),
    ] = None,
    bad_images: Annotated[
        str | None,
        Opt(
            "--bad-images",
            help="Unreadable image files: 'skip' (default; each named in a warning, counted in metrics) or 'stop' (exit naming the file).",
            rich_help_panel=_DATA,
        ),
    ] = None,
    recipe: Annotated[
        str | None,
        Opt(
            "--recipe",
            help="paper-cifar, paper-imagenet or quick. Default: paper-imagenet for 224-pixel inputs, paper-cifar for 32-pixel ones, quick for shapes.",
            rich_help_panel=_RECIPE,
        ),
    ] = None,
    config: Annotated[
        Path | None,
        Opt(
            "--config",
            help="TOML or JSON file of the same keys (e.g. epochs = 10); YAML with PyYAML.",
            rich_help_panel=_RECIPE,
            dir_okay=False,
        ),
    ] = None,
    epochs: Annotated[
        int | None,
        Opt(
            "--epochs",
            "-e",
            help="Epochs in total (with --resume: continue up to this many).",
            rich_help_panel=_RECIPE,
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        Opt(
            "--batch-size",
            "-b",
            help="Global batch size (split over DDP processes).",
            rich_help_panel=_RECIPE,
        ),
    ] = None,
    lr: Annotated[
        float | None,
        Opt(
            "--lr",
            help="Base learning rate (paper-imagenet scales it by batch/256).",
            rich_help_panel=_RECIPE,
        ),
    ] = None,
    lr_milestones: Annotated[
        str | None,
        Opt(
            "--lr-milestones",
            help="Where the lr is multiplied by --lr-gamma: epochs (30,60,80) or percent of training (50%,75%).",
            rich_help_panel=_RECIPE,
        ),
    ] = None,
    lr_gamma: Annotated[
        float | None,
        Opt("--lr-gamma", help="Factor at each milestone (0.1).", rich_help_panel=_RECIPE),
    ] = None,
    lr_reference_batch: Annotated[
        int | None,
        Opt(
            "--lr-reference-batch",
            help="Scale the lr by batch/this (256 in paper-imagenet).",
            rich_help_panel=_RECIPE,
        ),
    ] = None,
    warmup_epochs: Annotated[
        float | None,
        Opt(
            "--warmup-epochs",
            help="Linear lr warm-up, in epochs (may be fractional).",
            rich_help_panel=_RECIPE,
        ),
    ] = None,
    momentum: Annotated[
        float | None, Opt("--momentum", help="SGD momentum (0.9).", rich_help_panel=_RECIPE)
    ] = None,
    weight_decay: Annotated[
        float | None,
        Opt("--weight-decay", "--wd", help="Weight decay (1e-4).", rich_help_panel=_RECIPE),
    ] = None,
    label_smoothing: Annotated[
        float | None,
        Opt(
            "--label-smoothing",
            help="Label smoothing of the training loss (0).",
            rich_help_panel=_RECIPE,
        ),
    ] = None,
    afi_stages: Annotated[
        str | None,
        Opt(
            "--afi-stages",
            help="Stages (1-based, e.g. 1,2) that get AFI blocks (Table 7); AFI models only.",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    reduction: Annotated[
        int | None,
        Opt(
            "--reduction",
            "-r",
            help="Reduction ratio r of the AFI modules (Table 8); AFI models only.",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    seed: Annotated[
        int | None,
        Opt(
            "--seed",
            help="Seed of weights, data order, augmentation and generated data (0).",
            rich_help_panel=_RUN,
        ),
    ] = None,
    deterministic: Annotated[
        bool | None,
        Opt(
            "--deterministic/--no-deterministic",
            help="Deterministic kernels (bit-exact reruns and resumes on CPU).",
            rich_help_panel=_RUN,
        ),
    ] = None,
    device: Annotated[
        str | None, Opt("--device", help="cpu, cuda or auto (default).", rich_help_panel=_RUN)
    ] = None,
    amp: Annotated[
        str | None,
        Opt(
            "--amp",
            help="Mixed precision: bf16 or fp16 (CUDA; bf16 also on CPU), or none.",
            rich_help_panel=_RUN,
        ),
    ] = None,
    channels_last: Annotated[
        bool | None,
        Opt("--channels-last/--no-channels-last", help="NHWC memory format.", rich_help_panel=_RUN),
    ] = None,
    compile_: Annotated[
        bool | None,
        Opt("--compile/--no-compile", help="torch.compile the model.", rich_help_panel=_RUN),
    ] = None,
    sync_bn: Annotated[
        bool | None,
        Opt(
            "--sync-bn/--no-sync-bn",
            help="SyncBatchNorm across DDP processes.",
            rich_help_panel=_RUN,
        ),
    ] = None,
    threads: Annotated[
        int | None,
        Opt(
            "--threads",
            help="CPU threads (default: one per core, or one per idle core when other processes keep the CPU busy; torch's default with --deterministic).",
            rich_help_panel=_RUN,
        ),
    ] = None,
    workers: Annotated[
        int | None,
        Opt(
            "--workers",
            "-j",
            help="Data loading processes (default: 0 for shapes, else up to 8).",
            rich_help_panel=_RUN,
        ),
    ] = None,
    tensorboard: Annotated[
        bool | None,
        Opt(
            "--tensorboard/--no-tensorboard",
            help="TensorBoard event files (default: when installed).",
            rich_help_panel=_RUN,
        ),
    ] = None,
    run_dir: Annotated[
        Path | None,
        Opt(
            "--run-dir",
            help="Run folder. Default: runs/<arch>-<dataset>-<timestamp>/.",
            rich_help_panel=_RUN,
            file_okay=False,
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        Opt(
            "--resume",
            help="Continue the run in this folder (its last.pt) exactly where it stopped.",
            rich_help_panel=_RUN,
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        Opt(
            "--overwrite",
            help="Start afresh in a --run-dir that already holds a run.",
            rich_help_panel=_RUN,
        ),
    ] = False,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
) -> None:
    """Train ARCH on a dataset with the paper's recipe (section 4.3).

    Writes <run>/config.json, metrics.csv, metrics.jsonl, last.pt (every epoch) and best.pt (best
    eval top-1). SIGINT/SIGTERM finish the current step, write last.pt and exit 130/143 (128 + the
    signal's number); continue with --resume RUN. One run at a time per folder. Under torchrun
    (`torchrun --nproc_per_node=N -m afictl train ...`) it trains with DDP. With --format json the last line on stdout is one JSON object.
    """
    from ..train import load_resume, resolve_config, train

    options = dict(
        arch=arch,
        dataset=data,
        data_root=absolute_path("data_root", data_root),
        download=download,
        data_size=data_size,
        input_size=input_size,
        bad_images=bad_images,
        recipe=recipe,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        lr_milestones=lr_milestones,
        lr_gamma=lr_gamma,
        lr_reference_batch=lr_reference_batch,
        warmup_epochs=warmup_epochs,
        momentum=momentum,
        weight_decay=weight_decay,
        label_smoothing=label_smoothing,
        afi_stages=afi_stages,
        reduction=reduction,
        seed=seed,
        deterministic=deterministic,
        device=device,
        amp=amp,
        channels_last=channels_last,
        compile=compile_,
        sync_bn=sync_bn,
        workers=workers,
        threads=threads,
        tensorboard=tensorboard,
        run_dir=str(run_dir) if run_dir else None,
    )
    if output is not None:  # before training, not after it
        check_writable(output)
    if resume is not None:
        if config is not None:
            from ..errors import UserError

            raise UserError(
                "--config cannot be combined with --resume (the run keeps its configuration)"
            )
        from ..validate import check_options

        arch_opt = options.pop("arch")
        options.pop("run_dir")
        options = check_options(options)  # what resolve_config checks for a new run
        cfg, ckpt = load_resume(resume, options, arch=arch_opt)
        result = train(cfg, resume=ckpt)
    else:
        result = train(resolve_config(options, config), overwrite=overwrite)
    if int(os.environ.get("RANK", "0")) != 0:
        if result.exit_code:  # stopped by a signal: not a finished run (every process says so)
            raise typer.Exit(result.exit_code)
        return
    row = result.to_dict()
    if fmt is Format.json:  # one object, so that the last stdout line parses on its own
        text = json.dumps(row)
        if output is not None:
            write_text(text, output)
        else:
            print(text)
        if result.exit_code:
            raise typer.Exit(result.exit_code)
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
    if result.exit_code:  # 143 after SIGTERM, 130 after SIGINT, once last.pt is written
        raise typer.Exit(result.exit_code)
