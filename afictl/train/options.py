"""Every option of ``afictl train``, declared once: name, flags, help, panel, type, the
recipes' values and the defaults that no recipe sets.

:class:`~afictl.train.config.TrainConfig` holds the values, ``afictl/cli/train.py`` builds the
command's options from :data:`TRAIN_OPTIONS`, and :mod:`.config` reads the recipes, the
aliases and the keys that may change on resume from here. Light on purpose (stdlib and
afictl.validate only, no torch): ``afictl train --help`` imports it, and shows each default
from :data:`RECIPES` and :data:`DEFAULTS` (:attr:`OptionSpec.shown_default`), never a copy.

Adding a training option (say ``--foo``, a float):

1. here, one :class:`OptionSpec` in :data:`TRAIN_OPTIONS` (field ``foo``, flags, help, panel,
   kind); its default, if the help should state it or a recipe may leave it unset, in
   :data:`DEFAULTS`; a recipe's value in :data:`RECIPES`. The command line, the config-file
   keys (``foo``), ``--dry-run`` and ``--help`` follow from the spec;
2. afictl/validate.py: its check, ``"foo": Bound(0.0)`` in ``NUMERIC_BOUNDS`` (or an entry of
   ``OPTION_CHECKS`` for a choice, taking its tuple from there: ``_choice(*FOO_CHOICES)``);
   validate.py cannot read the spec (this module imports it), so the bound stays there;
3. afictl/train/config.py: the field of :class:`~afictl.train.config.TrainConfig`,
   ``foo: float = DEFAULTS["foo"]`` (or a literal where :data:`DEFAULTS` has none);
4. where the run uses it (``cfg.foo``), and a test. tests/test_option_declarations.py checks
   that steps 1-3 agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..validate import (
    AA_FIXED,
    AMP_CHOICES,
    BAD_IMAGES_CHOICES,
    BEST_OF_CHOICES,
    DECODE_CHOICES,
    LR_SCHEDULES,
    OPTIMIZERS,
    PIPELINE_CHOICES,
)
from .recipes import RECIPE_NAMES, RECIPES

__all__ = [
    "CONFIG_ALIASES",
    "CONFIG_KEYS",
    "DEFAULTS",
    "RECIPES",
    "RECIPE_NAMES",
    "RUNTIME_KEYS",
    "TRAIN_OPTIONS",
    "OptionSpec",
    "long_flags",
    "option_for",
]

DATA, RECIPE, REGULARISATION, MODEL, RUN = (
    "Data",
    "Recipe (each overrides the recipe and --config)",
    "Regularisation and augmentation (timm's names)",
    "Model",
    "Run",
)

#: names a config file (or a checkpoint's config) may use for a field: older or timm's spellings
CONFIG_ALIASES = {"lr_schedule": "sched", "smoothing": "label_smoothing"}


#: what a run uses for an option that no recipe, config file or flag sets (TrainConfig's field
#: defaults read these): every option some recipe sets but not all, and those --help states
DEFAULTS: dict[str, Any] = dict(
    sched="step",
    min_lr=0.0,
    backbone_lr_mult=1.0,
    nesterov=False,
    wd_norm_bias=True,  # the paper's: decay on every parameter
    label_smoothing=0.0,
    mixup=0.0,
    cutmix=0.0,
    mixup_prob=1.0,
    aa=None,
    reprob=0.0,
    model_ema=False,
    model_ema_decay=0.9998,  # timm train.py's --model-ema-decay, applied every step
    seed=0,
    device="auto",
    amp="none",
)


@dataclass(frozen=True)
class OptionSpec:
    """One option: ``field`` of TrainConfig, ``flags`` as typer takes them (``--x/--no-x`` for a
    flag), ``kind`` int|float|str|bool|path|dir, and whether it may change on ``--resume``;
    ``show_default``: --help states its :data:`DEFAULTS` value (a recipe's value is always
    stated)."""

    field: str
    flags: tuple[str, ...]
    help: str
    panel: str
    kind: str = "str"
    runtime: bool = False
    metavar: str | None = None  # the choices, shown in --help in place of TEXT
    show_default: bool = False

    @property
    def shown_default(self) -> str | None:
        """What the run uses when the option is not given, as --help states it: each recipe's
        value (:data:`RECIPES`, else :data:`DEFAULTS`) for an option some recipe sets."""
        if any(self.field in r for r in RECIPES.values()):
            return _recipe_values(self.field)
        if self.show_default:
            return _shown(DEFAULTS[self.field])
        return None


def _shown(value: Any) -> str:
    """``value`` as a user writes it: 1e-4 (not 0.0001), on/off, 50%,75%, none."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None or value == []:
        return "none"
    if isinstance(value, list | tuple):
        return ",".join(_shown(v) for v in value)
    if isinstance(value, float) and value and abs(value) < 1e-3:
        return re.sub(r"\.?0*e-0*", "e-", f"{value:e}")
    return f"{value:g}" if isinstance(value, float) else str(value)


def _recipe_values(field: str) -> str:
    """``the recipe's: 1e-4 in paper-cifar, paper-imagenet; 5e-4 in ...`` (recipes grouped by
    value, in :data:`RECIPE_NAMES` order), or ``0.9 in every recipe``."""
    groups: dict[str, list[str]] = {}
    for name, recipe in RECIPES.items():
        groups.setdefault(_shown(recipe.get(field, DEFAULTS.get(field))), []).append(name)
    if len(groups) == 1:
        return f"{next(iter(groups))} in every recipe"
    return "the recipe's: " + "; ".join(f"{v} in {', '.join(n)}" for v, n in groups.items())


def _choices(values: tuple[str, ...]) -> str:
    return ", ".join(f"`{v}`" for v in values)


def _metavar(values: tuple[str, ...]) -> str:
    return f"[{'|'.join(values)}]"


_O = OptionSpec
TRAIN_OPTIONS: tuple[OptionSpec, ...] = (
    _O("arch", ("--arch", "-a"), "Registered architecture (see `afictl models`).", MODEL),
    _O(
        "afi_stages",
        ("--afi-stages",),
        "Stages (1-based, e.g. 1,2) that get AFI blocks (Table 7); AFI models only.",
        MODEL,
    ),
    _O(
        "reduction",
        ("--reduction", "-r"),
        "Reduction ratio r of the AFI modules (Table 8); AFI models only.",
        MODEL,
        "int",
    ),
    _O(
        "pretrained",
        ("--pretrained",),
        "Initial weights from a checkpoint, plain state dict or .safetensors: every tensor "
        "that fits; an AFI model adapts its baseline's (docs/EXPORT.md).",
        MODEL,
        "path",
    ),
    _O(
        "dataset",
        ("--data", "-d"),
        "cifar10, cifar100, imagenet, imagefolder, shapes or synthetic. Default: the "
        "architecture's home dataset (imagenet for 224-pixel models, cifar100 for 32-pixel ones).",
        DATA,
    ),
    _O(
        "data_root",
        ("--data-root",),
        "Folder of the dataset. Default: `$AFICTL_DATA/<dataset>`, else `./data/<dataset>`.",
        DATA,
        "path",
        runtime=True,
    ),
    _O("download", ("--download/--no-download",), "Download CIFAR if missing.", DATA, "bool"),
    _O(
        "data_size",
        ("--data-size",),
        "Images per split: generated for shapes (default 4000), a fixed random subset otherwise.",
        DATA,
        "int",
    ),
    _O(
        "input_size",
        ("--input-size",),
        "Input pixels. Default: the files' size (CIFAR, shapes: 32), else the model's (32 or 224).",
        DATA,
        "int",
    ),
    _O(
        "bad_images",
        ("--bad-images",),
        f"Unreadable image files: {_choices(BAD_IMAGES_CHOICES)} (skip: each named in a "
        "warning, counted in metrics; stop: exit naming the file).",
        DATA,
        runtime=True,
    ),
    _O(
        "decode",
        ("--decode",),
        f"JPEG decoding: {_choices(DECODE_CHOICES)} (auto: the fastest measured on CPU "
        "workers; gpu: nvjpeg on the GPU, CUDA only).",
        DATA,
    ),
    _O(
        "pipeline",
        ("--pipeline",),
        f"Input pipeline: {_choices(PIPELINE_CHOICES)} (tensor: small images decoded once, "
        "cached, augmented in whole batches on the training device; loader: per-image "
        "transforms in worker processes; auto: tensor where it applies).",
        DATA,
    ),
    _O(
        "data_on_device",
        ("--data-on-device/--data-on-host",),
        "Tensor pipeline: keep the decoded images on the training device (default: on CUDA "
        "when they take at most a quarter of its free memory).",
        DATA,
        "bool",
        runtime=True,
    ),
    _O(
        "recipe",
        ("--recipe",),
        f"{_choices(RECIPE_NAMES)}. Default: paper-imagenet for 224-pixel inputs, paper-cifar "
        "for 32-pixel ones, quick for shapes.",
        RECIPE,
    ),
    _O(
        "epochs",
        ("--epochs", "-e"),
        "Epochs in total (with --resume: continue up to this many).",
        RECIPE,
        "int",
        runtime=True,
    ),
    _O(
        "batch_size",
        ("--batch-size", "-b"),
        "Global batch size of one forward pass (split over DDP processes).",
        RECIPE,
        "int",
    ),
    _O(
        "grad_accum_steps",
        ("--grad-accum-steps",),
        "Batches per optimizer step (gradients accumulated): the effective batch is "
        "batch x this, and --lr-reference-batch scales the lr by it.",
        RECIPE,
        "int",
    ),
    _O("opt", ("--opt",), f"Optimizer: {_choices(OPTIMIZERS)}.", RECIPE),
    _O(
        "lr",
        ("--lr",),
        "Base learning rate (scaled by effective batch / --lr-reference-batch when that is set).",
        RECIPE,
        "float",
    ),
    _O(
        "lr_reference_batch",
        ("--lr-reference-batch",),
        "Scale the lr by effective batch / this.",
        RECIPE,
        "int",
    ),
    _O(
        "sched",
        ("--sched",),
        f"Learning-rate schedule, per iteration: {_choices(LR_SCHEDULES)} (step: x --lr-gamma "
        "at each milestone; cosine: to --min-lr; inv: (1 + 10 p)^-0.75).",
        RECIPE,
    ),
    _O(
        "lr_milestones",
        ("--lr-milestones",),
        "Where --sched step multiplies the lr by --lr-gamma: epochs (30,60,80) or percent of "
        "training (50%,75%).",
        RECIPE,
    ),
    _O("lr_gamma", ("--lr-gamma",), "Factor at each milestone.", RECIPE, "float"),
    _O(
        "warmup_epochs",
        ("--warmup-epochs",),
        "Linear lr warm-up, in epochs (may be fractional).",
        RECIPE,
        "float",
    ),
    _O("min_lr", ("--min-lr",), "Last learning rate of --sched cosine.", RECIPE, "float"),
    _O("momentum", ("--momentum",), "SGD momentum.", RECIPE, "float"),
    _O("weight_decay", ("--weight-decay", "--wd"), "Weight decay.", RECIPE, "float"),
    _O("nesterov", ("--nesterov/--no-nesterov",), "Nesterov momentum (SGD).", RECIPE, "bool"),
    _O(
        "wd_norm_bias",
        ("--wd-norm-bias/--no-wd-norm-bias",),
        "Weight decay on norm layers and biases too (the paper's; timm and torchvision's new "
        "recipes exempt them: --no-wd-norm-bias).",
        RECIPE,
        "bool",
    ),
    _O(
        "backbone_lr_mult",
        ("--backbone-lr-mult",),
        "Learning rate of everything but the classifier, relative to --lr (fine-tuning: 0.1).",
        RECIPE,
        "float",
    ),
    _O(
        "clip_grad",
        ("--clip-grad",),
        "Clip the gradients' global L2 norm to this (after unscaling under fp16); 0: off.",
        RECIPE,
        "float",
    ),
    _O(
        "label_smoothing",
        ("--smoothing", "--label-smoothing"),
        "Label smoothing of the training loss.",
        REGULARISATION,
        "float",
    ),
    _O("mixup", ("--mixup",), "MixUp alpha; 0: off.", REGULARISATION, "float"),
    _O("cutmix", ("--cutmix",), "CutMix alpha; 0: off.", REGULARISATION, "float"),
    _O(
        "mixup_prob",
        ("--mixup-prob",),
        "Probability that a batch is mixed (MixUp or CutMix, one of them at random when both).",
        REGULARISATION,
        "float",
    ),
    _O(
        "aa",
        ("--aa",),
        "Augmentation policy of the train split: `rand-m9-mstd0.5` (RandAugment in timm's "
        f"notation), {_choices(AA_FIXED)} or `none`.",
        REGULARISATION,
    ),
    _O(
        "reprob",
        ("--reprob",),
        "Random erasing probability (train split); 0: off.",
        REGULARISATION,
        "float",
    ),
    _O(
        "model_ema",
        ("--model-ema/--no-model-ema",),
        "Keep an exponential moving average of the weights (BN buffers included), evaluated "
        "each epoch (`eval_top1_ema`) and saved in the checkpoints.",
        REGULARISATION,
        "bool",
    ),
    _O(
        "model_ema_decay",
        ("--model-ema-decay",),
        "EMA decay per optimizer step.",
        REGULARISATION,
        "float",
    ),
    _O(
        "best_of",
        ("--best-of",),
        f"Which weights best.pt keeps and ranks by: {_choices(BEST_OF_CHOICES)} (ema needs "
        "--model-ema).",
        REGULARISATION,
    ),
    _O(
        "seed",
        ("--seed",),
        "Seed of weights, data order, augmentation and generated data.",
        RUN,
        "int",
        show_default=True,
    ),
    _O(
        "deterministic",
        ("--deterministic/--no-deterministic",),
        "Deterministic kernels (bit-exact reruns and resumes on CPU).",
        RUN,
        "bool",
    ),
    _O(
        "device",
        ("--device",),
        "`auto` (default: cuda when present), `cpu` or `cuda`.",
        RUN,
        runtime=True,
        metavar="[auto|cpu|cuda]",
        show_default=True,
    ),
    _O(
        "amp",
        ("--amp",),
        f"Mixed precision: {_choices(AMP_CHOICES)} (fp16: CUDA; bf16 also on CPU).",
        RUN,
        metavar=_metavar(AMP_CHOICES),
        show_default=True,
    ),
    _O(
        "channels_last", ("--channels-last/--no-channels-last",), "NHWC memory format.", RUN, "bool"
    ),
    _O("compile", ("--compile/--no-compile",), "torch.compile the model.", RUN, "bool"),
    _O("sync_bn", ("--sync-bn/--no-sync-bn",), "SyncBatchNorm across DDP processes.", RUN, "bool"),
    _O(
        "threads",
        ("--threads",),
        "CPU threads (default: one per core, or one per idle core when other processes keep the "
        "CPU busy; torch's default with --deterministic).",
        RUN,
        "int",
        runtime=True,
    ),
    _O(
        "workers",
        ("--workers", "-j"),
        "Data loading processes (default: 0 for shapes, else up to 8).",
        RUN,
        "int",
        runtime=True,
    ),
    _O(
        "tensorboard",
        ("--tensorboard/--no-tensorboard",),
        "TensorBoard event files (default: when installed).",
        RUN,
        "bool",
        runtime=True,
    ),
    _O(
        "log_interval",
        ("--log-interval",),
        "In a log file (stderr not a terminal): a progress line every N batches (loss, acc, "
        "lr, images/s, eta); default: at least every 30 s. TensorBoard's per-step scalars too.",
        RUN,
        "int",
        runtime=True,
    ),
    _O(
        "checkpoint_hist",
        ("--checkpoint-hist",),
        "Also keep the N best epochs as `epoch-<N>.pt` (besides last.pt and best.pt); 0: none.",
        RUN,
        "int",
    ),
    _O(
        "run_dir",
        ("--run-dir",),
        "Run folder. Default: `runs/<arch>-<dataset>-<time>/`.",
        RUN,
        "dir",
    ),
)

#: keys that may change when a run is resumed (they do not change what is learned)
RUNTIME_KEYS = frozenset(o.field for o in TRAIN_OPTIONS if o.runtime)


def option_for(field: str) -> OptionSpec:
    """The spec of TrainConfig field ``field``."""
    return next(o for o in TRAIN_OPTIONS if o.field == field)


def long_flags(spec: OptionSpec) -> list[str]:
    """The long flags of ``spec`` without their dashes; ``--x/--no-x`` gives ``x`` only (a config
    key ``no_x = true`` would read backwards)."""
    return [f.split("/")[0][2:] for f in spec.flags if f.startswith("--")]


def _config_keys() -> dict[str, str]:
    keys = dict(CONFIG_ALIASES)
    for spec in TRAIN_OPTIONS:
        for name in (spec.field, *long_flags(spec)):
            key = name.replace("-", "_")
            if keys.setdefault(key, spec.field) != spec.field:  # a table error, not a user's
                raise ValueError(f"config key {key!r} would mean {keys[key]} and {spec.field}")
    return keys


#: every name a config file may give an option (``-`` read as ``_``) -> its TrainConfig field:
#: the field (``dataset``), each long flag (``data``, ``batch_size``, ``wd``) and the older
#: spellings of :data:`CONFIG_ALIASES`
CONFIG_KEYS: dict[str, str] = _config_keys()
