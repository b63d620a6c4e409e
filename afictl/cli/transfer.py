"""``afictl transfer``: the Office-Home protocol of paper Table 3."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import UserError
from ..render import Format
from ._util import WEIGHTS_HELP, DeviceOpt, FormatOpt, ModelArchOpt, OutputOpt


def transfer_cli(
    checkpoint: Annotated[
        Path, typer.Option("--checkpoint", "-c", help=f"ImageNet-trained weights. {WEIGHTS_HELP}")
    ],
    data_root: Annotated[
        Path, typer.Option(help="Folder holding the domains (Art, Clipart, Product, Real World).")
    ],
    source: Annotated[
        str | None, typer.Option(help="Source domain to fine-tune on (name or Ar/Cl/Pr/Rw).")
    ] = None,
    target: Annotated[str | None, typer.Option(help="Target domain to evaluate on.")] = None,
    arch: ModelArchOpt = None,
    all_pairs_: Annotated[
        bool, typer.Option("--all-pairs", help="All 12 ordered pairs of the four domains.")
    ] = False,
    run_root: Annotated[
        Path, typer.Option(help="Where each pair's run folder goes (resumable).")
    ] = Path("runs/transfer"),
    epochs: Annotated[
        int | None, typer.Option("--epochs", "-e", min=1, help="Fine-tuning epochs (paper: 20).")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", "-b", min=1, help="Batch size (default 32).")
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="Classifier base lr (paper: 0.01; the rest gets a tenth).")
    ] = None,
    device: DeviceOpt = "auto",
    workers: Annotated[
        int | None, typer.Option("--workers", "-j", min=0, help="Data-loading worker processes.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
) -> None:
    """Fine-tune on a source domain and test on a target domain (Office-Home, Table 3).

    Protocol of the paper: 20 epochs of SGD with momentum; the new classifier's learning rate
    is 0.01 (1 + 10 p)^-0.75 (p = training progress), the rest of the network a tenth of it.
    Classes are matched by name across domains. Each pair is a resumable run under --run-root:
    running the same command again continues where it stopped. JSON/CSV print one row per
    pair; the table and Markdown formats print the accuracy matrix with `avg` over the pairs
    run and `avg_of` saying how many of the 12 ("3/12"). --output FILE writes the results.
    """
    if all_pairs_ == (source is not None or target is not None):
        raise UserError("give either --source and --target, or --all-pairs")
    if not all_pairs_ and (source is None or target is None):
        raise UserError("--source needs --target (and the other way round)")
    if not all_pairs_:
        _check_distinct(source, target)
    overrides = {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "device": device,
        "workers": workers,
        "seed": seed,
    }
    pairs = None if all_pairs_ else [(source, target)]
    _run_pairs(checkpoint, data_root, pairs, run_root, overrides, fmt, output, arch=arch)


def _check_distinct(source: str, target: str) -> None:
    """--source and --target name two domains (Ar and Art are one)."""
    from ..transfer.protocol import domain_code

    if domain_code(source) == domain_code(target):
        raise UserError(
            f"--source {source} and --target {target} are the same domain; transfer needs two "
            "distinct domains"
        )


def _run_pairs(checkpoint, data_root, pairs, run_root, overrides, fmt, output, *, arch) -> None:
    """Check everything, fine-tune each pair (``None``: all 12) and print the results."""
    from ..checkpoint import load_checkpoint, validate_checkpoint
    from ..render import check_writable, render
    from ..transfer.protocol import all_pairs
    from ..transfer.run import accuracy_matrix, check_pair, transfer_pair

    pairs = all_pairs(data_root) if pairs is None else pairs
    for src, tgt in pairs:  # every pair's domains and classes, before any training
        check_pair(data_root, src, tgt)
    pre = load_checkpoint(checkpoint, state_dict=True, arch=arch)  # and the checkpoint
    validate_checkpoint(pre, model=True)
    if arch is not None and pre["arch"] != arch:
        raise UserError(f"{pre['path']} holds a {pre['arch']} checkpoint, not {arch}")
    if output is not None:
        check_writable(output)  # before the training, not after it
    results = []
    for i, (src, tgt) in enumerate(pairs, 1):
        typer.echo(f"[{i}/{len(pairs)}] fine-tune on {src}, evaluate on {tgt}", err=True)
        results.append(
            transfer_pair(checkpoint, data_root, src, tgt, run_root, overrides, arch=arch)
        )
    if fmt in (Format.json, Format.csv):
        render(results, fmt, output)
    else:
        render(
            accuracy_matrix(results),
            fmt,
            output,
            title="Office-Home accuracy (%), fine-tuned on A, tested on B",
        )
