"""Optimizers and per-iteration learning-rate schedules.

Options are named as in timm's ``train.py`` (``--opt``, ``--momentum``, ``--weight-decay``,
``--sched``, ``--warmup-epochs``, ``--min-lr``, ``--clip-grad``); every part is plain torch
(``torch.optim``, ``torch.optim.lr_scheduler.LambdaLR``); ``--clip-grad`` is applied in the
step itself (afictl/train/engine.py, after unscaling under fp16).
The defaults are the paper's recipes (section 4.3): SGD with momentum, weight decay on every
parameter, the lr divided by 10 at milestones.

The schedule is a function of the iteration, so it is exact at any point of an epoch (a run
resumed mid-epoch gets the same learning rate it would have had) and a warm-up can last a
fraction of an epoch. The scheduler is a ``LambdaLR`` over a closure: its ``state_dict`` holds
only the step count and the lrs, and a resumed run continues the same sequence. The count is of
optimizer steps taken: under ``--amp fp16`` a step the GradScaler skips (inf/NaN gradients) is
not counted (afictl/train/engine.py), so such a run ends its schedule that many steps short.
"""

from __future__ import annotations

import bisect
import math
from typing import TYPE_CHECKING

import torch
from torch import nn

# the --opt and --sched choices, declared once with the options' checks
from ..validate import LR_SCHEDULES as SCHEDULES
from ..validate import OPTIMIZERS

if TYPE_CHECKING:
    from .config import TrainConfig

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "build_optimizer",
    "build_scheduler",
    "cosine_factor",
    "inv_factor",
    "lr_factor",
    "param_groups",
    "split_no_decay",
    "warmup_factor",
]


def param_groups(model: nn.Module, lr: float, backbone_lr_mult: float) -> list[dict]:
    """One group, or for fine-tuning two: the backbone at ``lr x backbone_lr_mult`` and the
    classifier at ``lr``."""
    if backbone_lr_mult == 1.0:
        return [{"params": list(model.parameters()), "lr": lr, "name": "all"}]
    head = {id(p) for p in model.get_classifier().parameters()}
    return [
        {
            "params": [p for p in model.parameters() if id(p) not in head],
            "lr": lr * backbone_lr_mult,
            "name": "backbone",
        },
        {
            "params": [p for p in model.parameters() if id(p) in head],
            "lr": lr,
            "name": "classifier",
        },
    ]


def split_no_decay(groups: list[dict]) -> list[dict]:
    """Each group split in two: its >= 2-d parameters (conv and linear weights) keep the weight
    decay, its 1-d ones (norm weights and biases) get ``weight_decay=0`` in a group named
    ``<name>_no_decay``. Empty groups are left out; the order is decay, no-decay per group.

    This is timm's behaviour: ``create_optimizer_v2(..., filter_bias_and_bn=True)`` (the default)
    builds its groups with ``param_groups_weight_decay``, which exempts ``param.ndim <= 1`` and
    names ending in ``.bias``; torchvision's references offer the same through
    ``--norm-weight-decay 0 --bias-weight-decay 0``.
    """
    out = []
    for group in groups:
        decay = [p for p in group["params"] if p.ndim > 1]
        no_decay = [p for p in group["params"] if p.ndim <= 1]
        if decay:
            out.append({**group, "params": decay})
        if no_decay:
            out.append(
                {
                    **group,
                    "params": no_decay,
                    "weight_decay": 0.0,
                    "name": f"{group['name']}_no_decay",
                }
            )
    return out


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer of ``cfg.opt`` (timm's ``--opt``): ``sgd`` (default) or ``adamw``.

    Reads ``cfg.lr_effective``, ``cfg.weight_decay``, ``cfg.backbone_lr_mult``, and for SGD
    ``cfg.momentum`` and ``cfg.nesterov`` (AdamW uses torch's default betas and ignores both).
    ``cfg.wd_norm_bias`` (default True: decay on every parameter, the paper's section 4.3 and
    what afictl always did) set to False exempts norms and biases as timm does
    (:func:`split_no_decay`). Every group has a ``name``: ``all`` (one group) or ``backbone`` and
    ``classifier`` (``backbone_lr_mult != 1``), each with a ``_no_decay`` twin when split.
    With the defaults the SGD built is the one afictl built before these options existed.
    """
    opt = getattr(cfg, "opt", "sgd") or "sgd"
    groups = param_groups(model, cfg.lr_effective, getattr(cfg, "backbone_lr_mult", 1.0))
    if not getattr(cfg, "wd_norm_bias", True):
        groups = split_no_decay(groups)
    if opt == "sgd":
        return torch.optim.SGD(
            groups,
            lr=cfg.lr_effective,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            nesterov=cfg.nesterov and cfg.momentum > 0,
        )
    if opt == "adamw":
        # decoupled weight decay (Loshchilov & Hutter); betas (0.9, 0.999) as timm and torch
        return torch.optim.AdamW(groups, lr=cfg.lr_effective, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {opt!r}; choose one of {', '.join(OPTIMIZERS)}")


def inv_factor(step: int, total_steps: int) -> float:
    """(1 + 10 p)^-0.75 with p = step / total_steps (the paper's Office-Home schedule,
    lr 0.01 (1 + 10 p)^-0.75, after Ganin & Lempitsky's domain-adaptation schedule)."""
    p = min(1.0, step / max(1, total_steps))
    return (1.0 + 10.0 * p) ** -0.75


def warmup_factor(step: int, warmup_steps: float) -> float:
    """Linear warm-up: ``(step + 1) / warmup_steps`` at 0-based ``step``, capped at 1, and 1
    once the warm-up is over (``warmup_steps`` may be fractional or 0)."""
    if step >= warmup_steps:
        return 1.0
    return min(1.0, (step + 1) / warmup_steps)


def lr_factor(
    step: int, steps_per_epoch: int, milestones: list[float], gamma: float, warmup_epochs: float
) -> float:
    """Multiplier of the base lr at iteration ``step`` (0-based) of ``--sched step``: linear
    warm-up, then ``gamma`` at each milestone (in epochs) already passed.

    Kept exactly as afictl always computed it (resumed runs and tests rely on it): during the
    warm-up the factor is ``(step + 1) / warmup_steps`` *uncapped*, so when ``warmup_epochs x
    steps_per_epoch`` is not an integer the last warm-up step overshoots 1 (by less than one
    step's share). The cosine and inv schedules use the capped :func:`warmup_factor`.
    """
    epoch = step / steps_per_epoch
    factor = gamma ** bisect.bisect_right(milestones, epoch)
    warmup_steps = warmup_epochs * steps_per_epoch
    if step < warmup_steps:
        factor *= (step + 1) / warmup_steps
    return factor


def cosine_factor(step: int, total_steps: int, warmup_steps: float, min_ratio: float) -> float:
    """``--sched cosine``: linear warm-up to 1, then ``m + (1 - m) (1 + cos(pi t)) / 2`` with
    ``t = (step - warmup_steps) / (total_steps - warmup_steps)`` in optimizer steps and
    ``m = min_lr / lr``: 1 at the end of the warm-up, ``m`` at ``step == total_steps`` (the
    last step taken, ``total_steps - 1``, is one step's share above it). timm's
    ``CosineLRScheduler`` with ``t_in_epochs=False``, without restarts or noise.
    """
    if step < warmup_steps:
        return warmup_factor(step, warmup_steps)
    span = max(1e-12, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * (1.0 + math.cos(math.pi * t)) / 2.0


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-iteration ``LambdaLR`` for ``cfg.sched`` (``cfg.lr_schedule`` when the config has
    no ``sched``): ``step`` (milestones ``cfg.milestone_epochs()`` x ``cfg.lr_gamma``, as the
    paper), ``cosine`` (down to ``cfg.min_lr`` over ``cfg.epochs``) or ``inv`` (Office-Home),
    each after a linear warm-up of ``cfg.warmup_epochs`` (may be fractional).

    The factor multiplies each group's own lr, so with ``backbone_lr_mult`` the cosine floor of
    the backbone is ``min_lr x backbone_lr_mult`` (its ratio to the peak is that of ``min_lr``
    to ``lr``). ``cosine`` and ``inv`` depend on ``cfg.epochs``: a run resumed with more epochs
    stretches them from there, while ``step`` milestones in epochs do not move.
    """
    sched = getattr(cfg, "sched", None) or getattr(cfg, "lr_schedule", "step")
    if sched not in SCHEDULES:
        raise ValueError(f"unknown schedule {sched!r}; choose one of {', '.join(SCHEDULES)}")
    spe = max(1, steps_per_epoch)
    total = cfg.epochs * spe
    warmup_steps = cfg.warmup_epochs * spe
    milestones = cfg.milestone_epochs()
    lr = cfg.lr_effective
    min_ratio = (getattr(cfg, "min_lr", 0.0) or 0.0) / lr if lr else 0.0

    def factor(step: int) -> float:
        if sched == "inv":  # no warm-up (warmup_epochs 0) is exactly the schedule as it was
            return inv_factor(step, total) * warmup_factor(step, warmup_steps)
        if sched == "cosine":
            return cosine_factor(step, total, warmup_steps, min_ratio)
        return lr_factor(step, spe, milestones, cfg.lr_gamma, cfg.warmup_epochs)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
