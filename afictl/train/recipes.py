"""The training recipes: the values of the options each sets (afictl/train/config.py describes
each recipe). Declared here alone, importing nothing of afictl, so that both the option table
(afictl/train/options.py) and the checks (afictl/validate.py) read them without a cycle.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RECIPES", "RECIPE_NAMES"]

#: the recipes of section 4.3 and ours (afictl/train/config.py describes each), in the order
#: --help lists them: the values of the options they set, under any config file or flag
RECIPES: dict[str, dict[str, Any]] = {
    "paper-cifar": dict(
        epochs=300,
        batch_size=64,
        lr=0.1,
        lr_reference_batch=None,
        lr_milestones=["50%", "75%"],
        lr_gamma=0.1,
        warmup_epochs=0.0,
        momentum=0.9,
        weight_decay=1e-4,
    ),
    "paper-imagenet": dict(
        epochs=90,
        batch_size=64,
        lr=0.1,
        lr_reference_batch=256,
        lr_milestones=[30, 60, 80],
        lr_gamma=0.1,
        warmup_epochs=0.0,
        momentum=0.9,
        weight_decay=1e-4,
    ),
    # modern-imagenet's ideas at CIFAR scale: batch 128, lr 0.1, cosine with 5 warm-up epochs,
    # wd 5e-4 not on norms/biases, Nesterov; CutMix alpha 1 on half the batches (CutMix paper's
    # CIFAR setting), AutoAugment's CIFAR-10 policy, random erasing 0.25 (timm's default), smoothing
    # 0.1, EMA 0.999 (a ~1000-step horizon, 2.5 epochs at 50k images); 300 epochs as the paper.
    "modern-cifar": dict(
        epochs=300,
        batch_size=128,
        lr=0.1,
        lr_reference_batch=None,
        lr_milestones=[],
        lr_gamma=0.1,
        sched="cosine",
        warmup_epochs=5.0,
        min_lr=0.0,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        wd_norm_bias=False,
        label_smoothing=0.1,
        cutmix=1.0,
        mixup_prob=0.5,
        aa="autoaugment-cifar10",
        reprob=0.25,
        model_ema=True,
        model_ema_decay=0.999,
    ),
    # torchvision's ResNet-50 "new recipe" (references/classification/README.md, Vryniotis
    # 2021): lr 0.5 at batch 1024, cosine, 5 warm-up epochs, wd 2e-5 not on norms, smoothing
    # 0.1, mixup 0.2, cutmix 1.0, TrivialAugment, random erasing 0.1, EMA; 600 epochs. Left
    # out (afictl has no such option): ra-sampler, train crop 176 / eval resize 232.
    "modern-imagenet": dict(
        epochs=600,
        batch_size=1024,
        lr=0.5,
        lr_reference_batch=1024,
        lr_milestones=[],
        lr_gamma=0.1,
        sched="cosine",
        warmup_epochs=5.0,
        min_lr=0.0,
        momentum=0.9,
        weight_decay=2e-5,
        wd_norm_bias=False,
        label_smoothing=0.1,
        mixup=0.2,
        cutmix=1.0,
        aa="trivial",
        reprob=0.1,
        model_ema=True,
        model_ema_decay=0.99998,
    ),
    # Office-Home fine-tuning (paper section 4.2): 20 epochs, the new classifier at
    # 0.01 (1 + 10 p)^-0.75, the rest of the network at a tenth of it (`afictl transfer`).
    "office-home": dict(
        epochs=20,
        batch_size=32,
        lr=0.01,
        lr_reference_batch=None,
        lr_milestones=[],
        lr_gamma=0.1,
        warmup_epochs=0.0,
        momentum=0.9,
        weight_decay=5e-4,
        sched="inv",
        backbone_lr_mult=0.1,
    ),
    # Milestones in epochs, not percent: the schedule does not depend on --epochs, so
    # 1 epoch + resume + 1 epoch equals 2 epochs; the drop at 0.75 settles a 1-epoch run.
    "quick": dict(
        epochs=2,
        batch_size=32,
        lr=0.05,
        lr_reference_batch=None,
        lr_milestones=[0.75],
        lr_gamma=0.1,
        warmup_epochs=0.1,
        momentum=0.9,
        weight_decay=5e-4,
    ),
}


RECIPE_NAMES: tuple[str, ...] = tuple(RECIPES)
