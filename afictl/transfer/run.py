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
from .protocol import domain_code, match_classes, resolve_domain

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
    src_classes = _classes(src_dir)
    if not src_classes:
        raise UserError(f"{src_dir} has no class folders")
    match_classes(src_classes, _classes(tgt_dir), target_name=f"the target domain {tgt_dir}")
    return src_classes


def transfer_pair(
    checkpoint: Path,
    data_root: Path,
    source: str,
    target: str,
    out_dir: Path,
    overrides: dict[str, Any] | None = None,
) -> TransferResult:
    """Fine-tune ``checkpoint`` on ``source``, evaluate on ``target`` (resuming if started)."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    pre = validate_checkpoint(load_checkpoint(checkpoint), model=True)  # before any folder is made
    arch = pre["arch"]
    input_size = int((pre.get("config") or {}).get("input_size") or get_model_info(arch).input_size)
    src_classes = check_pair(data_root, source, target)
    src_dir, tgt_dir = resolve_domain(data_root, source), resolve_domain(data_root, target)
    # The transforms of ImageNet-style data: the checkpoint's resolution, ImageNet statistics.
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
    name = f"{arch}-{domain_code(source)}-{domain_code(target)}"
    if Path(name).name != name or "\\" in name:  # a path, not a name: it would leave out_dir
        raise UserError(
            f"the run folder of {source}:{target} would leave --run-root {out_dir}; refused"
        )
    run_dir = out_dir / name
    pair = f"{domain_code(source)}:{domain_code(target)}"

    reused = False
    if (run_dir / "last.pt").is_file():
        cfg, ckpt = load_resume(
            run_dir,
            {
                "epochs": overrides.get("epochs"),
                "device": overrides.get("device"),
                "workers": overrides.get("workers"),
            },
            arch=arch,
        )
        if int(ckpt["epoch"]) >= cfg.epochs:
            reused = True
            history = ckpt.get("metrics") or []
            last = history[-1] if history else {}
            return TransferResult(
                arch,
                source,
                target,
                pair,
                float(last.get("eval_top1", float("nan"))),
                float(last.get("eval_top5", float("nan"))),
                int(ckpt["epoch"]),
                len(train_ds),
                len(eval_ds),
                str(run_dir),
                reused,
            )
        result = train(cfg, resume=ckpt, datasets=(train_ds, eval_ds))
    else:
        options = {
            "arch": arch,
            "dataset": "imagefolder",
            "recipe": "office-home",
            "data_root": str(data_root),
            "input_size": input_size,
            "pretrained": str(checkpoint),
            "run_dir": str(run_dir),
            **overrides,
        }
        kw = pre.get("model_kwargs") or {}  # the pretrained network's AFI options
        if "afi_stages" in kw:
            options["afi_stages"] = kw["afi_stages"]
        for key in ("reduction", "r"):  # "r": checkpoints written before the rename
            if key in kw:
                options["reduction"] = kw[key]
        cfg = resolve_config(options)
        result = train(cfg, datasets=(train_ds, eval_ds), overwrite=True)
    if result.interrupted:
        raise UserError(
            f"interrupted during {pair}; run the same command again to continue from {run_dir}"
        )
    return TransferResult(
        arch,
        source,
        target,
        pair,
        result.eval_top1,
        result.eval_top5,
        result.epochs,
        len(train_ds),
        len(eval_ds),
        str(run_dir),
        reused,
    )


def accuracy_matrix(results: list[TransferResult]) -> pd.DataFrame:
    """Table 3's layout: one row per architecture, one column per A:B pair, and the average."""
    rows: dict[str, dict[str, float]] = {}
    for r in results:
        rows.setdefault(r.arch, {})[r.pair] = round(r.top1, 2)
    df = pd.DataFrame.from_dict(rows, orient="index")
    df["avg"] = df.mean(axis=1).round(2)
    df.index.name = "arch"
    return df.reset_index()
