"""SGD and the step learning-rate schedule of the paper's recipes, stepped every iteration.

The schedule is a function of the iteration, so it is exact at any point of an epoch (a run
resumed mid-epoch gets the same learning rate it would have had) and a warm-up can last a
fraction of an epoch.
"""

from __future__ import annotations

import bisect

import torch
from torch import nn

from .config import TrainConfig

__all__ = ["build_optimizer", "build_scheduler", "inv_factor", "lr_factor", "param_groups"]


def param_groups(model: nn.Module, lr: float, backbone_lr_mult: float) -> list[dict]:
    """One group, or (backbone at ``lr x backbone_lr_mult``, classifier at ``lr``) for fine-tuning."""
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


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum and weight decay on every parameter, as in the paper (section 4.3)."""
    return torch.optim.SGD(
        param_groups(model, cfg.lr_effective, cfg.backbone_lr_mult),
        lr=cfg.lr_effective,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        nesterov=cfg.nesterov and cfg.momentum > 0,
    )


def inv_factor(step: int, total_steps: int) -> float:
    """(1 + 10 p)^-0.75 with p = step / total_steps (the paper's Office-Home schedule)."""
    p = min(1.0, step / max(1, total_steps))
    return (1.0 + 10.0 * p) ** -0.75


def lr_factor(
    step: int, steps_per_epoch: int, milestones: list[float], gamma: float, warmup_epochs: float
) -> float:
    """Multiplier of the base lr at iteration ``step`` (0-based): linear warm-up, then
    ``gamma`` at each milestone (in epochs) already passed."""
    epoch = step / steps_per_epoch
    factor = gamma ** bisect.bisect_right(milestones, epoch)
    warmup_steps = warmup_epochs * steps_per_epoch
    if step < warmup_steps:
        factor *= (step + 1) / warmup_steps
    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    milestones = cfg.milestone_epochs()
    spe = max(1, steps_per_epoch)

    def factor(step: int) -> float:
        if cfg.lr_schedule == "inv":
            return inv_factor(step, cfg.epochs * spe)
        return lr_factor(step, spe, milestones, cfg.lr_gamma, cfg.warmup_epochs)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
