"""Fine-tune an ImageNet-trained checkpoint on a source domain, evaluate on a target domain.

Each pair is an ordinary ``afictl train`` run (recipe ``office-home``) in its own folder, so it
is checkpointed, interruptible and resumable exactly like training: running the same command
again continues unfinished pairs and reuses finished ones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..checkpoint import load_checkpoint, validate_checkpoint
from ..data import eval_transform, train_transform
from ..data.folders import SafeImageFolder
from ..errors import UserError
from ..models import get_model_info
from ..train import load_resume, resolve_config, train
from .protocol import domain_code, match_classes, pair_average, resolve_domain

__all__ = ["TransferResult", "accuracy_matrix", "check_pair", "transfer_pair"]


@dataclass
class TransferResult:
    """One A:B cell of Table 3."""

    arch: str
    source: str
    target: str
    pair: str  # "Ar:Cl"
    top1: float  # percent on the target domain after the last epoch
    top5: float
    epochs: int
    train_images: int
    eval_images: int
    run_dir: str
    reused: bool  # finished earlier: nothing was trained now

    def to_dict(self) -> dict:
        return asdict(self)


def _classes(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


def check_pair(data_root: Path, source: str, target: str) -> list[str]:
    """The source classes, after checking both domains exist and hold the same classes."""
    src_dir, tgt_dir = resolve_domain(data_root, source), resolve_domain(data_root, target)
    if src_dir.resolve() == tgt_dir.resolve():
        raise UserError(
            f"--source {source} and --target {target} are the same domain ({src_dir.name}); "
            "transfer needs two distinct domains"
        )
    src_classes = _classes(src_dir)
    if not src_classes:
        raise UserError(f"{src_dir} has no class folders")
    match_classes(src_classes, _classes(tgt_dir), target_name=f"the target domain {tgt_dir}")
    return src_classes


def _pair_datasets(data_root: Path, source: str, target: str, input_size: int):
    """(train on source, eval on target), the source's classes on both sides, with the
    transforms of ImageNet-style data: the checkpoint's resolution, ImageNet statistics."""
    src_classes = check_pair(data_root, source, target)
    src_dir, tgt_dir = resolve_domain(data_root, source), resolve_domain(data_root, target)
    train_ds = SafeImageFolder(
        src_dir,
        classes=src_classes,
        on_error="mark",
        transform=train_transform("imagenet", input_size),
    )
    eval_ds = SafeImageFolder(
        tgt_dir,
        classes=src_classes,
        on_error="mark",
        transform=eval_transform("imagenet", input_size),
    )
    return train_ds, eval_ds


def _new_config(
    pre: dict,
    checkpoint: Path,
    data_root: Path,
    run_dir: Path,
    input_size: int,
    overrides: dict[str, Any],
):
    """The ``office-home`` recipe's config of a new pair, with the pretrained network's model
    options (read, under their current names, by :func:`load_checkpoint`)."""
    options = {
        "arch": pre["arch"],
        "dataset": "imagefolder",
        "recipe": "office-home",
        "data_root": str(data_root),
        "input_size": input_size,
        "pretrained": str(checkpoint),
        "run_dir": str(run_dir),
        "model_kwargs": dict(pre.get("model_kwargs") or {}),
        **overrides,
    }
    return resolve_config(options)


def transfer_pair(
    checkpoint: Path,
    data_root: Path,
    source: str,
    target: str,
    out_dir: Path,
    overrides: dict[str, Any] | None = None,
    *,
    arch: str | None = None,
) -> TransferResult:
    """Fine-tune ``checkpoint`` on ``source``, evaluate on ``target`` (resuming if started).

    ``checkpoint`` may be a plain state dict or a ``.safetensors`` file of ``arch``."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    pre = load_checkpoint(checkpoint, state_dict=True, arch=arch)  # before any folder is made
    validate_checkpoint(pre, model=True)
    arch = pre["arch"]
    input_size = int((pre.get("config") or {}).get("input_size") or get_model_info(arch).input_size)
    train_ds, eval_ds = _pair_datasets(data_root, source, target, input_size)
    name = f"{arch}-{domain_code(source)}-{domain_code(target)}"
    if Path(name).name != name or "\\" in name:  # a path, not a name: it would leave out_dir
        raise UserError(
            f"the run folder of {source}:{target} would leave --run-root {out_dir}; refused"
        )
    run_dir = out_dir / name
    pair = f"{domain_code(source)}:{domain_code(target)}"

    def result(top1, top5, epochs, reused) -> TransferResult:
        sizes = (len(train_ds), len(eval_ds))
        return TransferResult(
            arch, source, target, pair, top1, top5, epochs, *sizes, str(run_dir), reused
        )

    if (run_dir / "last.pt").is_file():
        runtime = {k: overrides.get(k) for k in ("epochs", "device", "workers")}
        cfg, ckpt = load_resume(run_dir, runtime, arch=arch)
        if int(ckpt["epoch"]) >= cfg.epochs:  # finished earlier: nothing to train
            last = (ckpt.get("metrics") or [{}])[-1]
            nan = float("nan")
            top1, top5 = float(last.get("eval_top1", nan)), float(last.get("eval_top5", nan))
            return result(top1, top5, int(ckpt["epoch"]), True)
        trained = train(cfg, resume=ckpt, datasets=(train_ds, eval_ds))
    else:
        cfg = _new_config(pre, checkpoint, data_root, run_dir, input_size, overrides)
        trained = train(cfg, datasets=(train_ds, eval_ds), overwrite=True)
    if trained.interrupted:
        raise UserError(
            f"interrupted during {pair}; run the same command again to continue from {run_dir}"
        )
    return result(trained.eval_top1, trained.eval_top5, trained.epochs, False)


def accuracy_matrix(results: list[TransferResult]) -> pd.DataFrame:
    """Table 3's layout: one row per architecture, one column per A:B pair run (in Table 3's
    order), ``avg`` over those pairs (of the unrounded accuracies) and ``avg_of`` saying how
    many of the 12 ("3/12"); every cell rounded to 2 decimals."""
    from ..paper import OFFICE_HOME_PAIRS

    rows: dict[str, dict[str, float]] = {}
    for r in results:
        rows.setdefault(r.arch, {})[r.pair] = r.top1
    ran = {p for cells in rows.values() for p in cells}
    order = [p for p in OFFICE_HOME_PAIRS if p in ran] + sorted(ran - set(OFFICE_HOME_PAIRS))
    out = []
    for arch, cells in rows.items():
        avg, of = pair_average([cells.get(p) for p in order])
        shown = {p: round(cells[p], 2) if p in cells else None for p in order}
        out.append({"arch": arch} | shown | {"avg": avg, "avg_of": of})
    return pd.DataFrame(out)
