"""Every option of ``afictl train``, declared once: the field of :class:`TrainOptions` that
holds it, with its flags, help, panel, kind, check and default (:func:`option`), and the model
options of afictl/model_options.py.

Everything else derives from these declarations: the command line (afictl/cli/train.py turns
:data:`TRAIN_OPTIONS` into Typer options), the config-file keys (:data:`CONFIG_KEYS`), every
value's check (:data:`OPTION_CHECKS`, read through :func:`afictl.validate.check_option`),
``--dry-run`` and ``--help``, which states a default from :data:`RECIPES` or the field's
default (:attr:`OptionSpec.shown_default`), never a copy. Light on purpose (stdlib and afictl's
checks, no torch): ``afictl train --help`` imports it.
:class:`~afictl.train.config.TrainConfig` adds to :class:`TrainOptions` what a run derives.

Adding a training option (say ``--foo``, a float that is off at 0) is one declaration here::

    foo: float = option(
        0.0, "--foo", help="What it does; 0: off.", panel=REGULARISATION, kind="float",
        check=Bound(0.0),
    )

plus its use (``cfg.foo``) and a test; a recipe's value, if some recipe sets it, goes in
afictl/train/recipes.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any

from .. import checks
from ..checks import (
    AA_FIXED,
    AMP_CHOICES,
    BAD_IMAGES_CHOICES,
    BEST_OF_CHOICES,
    DECODE_CHOICES,
    INPUT_SIZE_RANGE,
    LR_MAX,
    LR_SCHEDULES,
    MIX_ALPHA_RANGE,
    OPTIMIZERS,
    PIPELINE_CHOICES,
    SEED_MAX,
    THREADS_MAX,
    Bound,
)
from ..model_options import LEGACY_NAMES, MODEL_OPTIONS, ModelOption
from .recipes import RECIPE_NAMES, RECIPES

__all__ = [
    "CONFIG_ALIASES",
    "CONFIG_KEYS",
    "DECLARED_CHECKS",
    "DEFAULTS",
    "OPTION_CHECKS",
    "RECIPES",
    "RECIPE_NAMES",
    "RUNTIME_KEYS",
    "TRAIN_OPTIONS",
    "OptionSpec",
    "TrainOptions",
    "long_flags",
    "option",
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


@dataclass(frozen=True)
class OptionSpec:
    """One option: ``field`` it sets, ``flags`` as typer takes them (``--x/--no-x`` for a flag),
    ``kind`` int|float|str|bool|path|dir, its ``check`` (:mod:`afictl.checks`), whether it may
    change on ``--resume``; ``show_default``: --help states its default (a recipe's value is
    always stated); ``model``: an option of the model (held in ``model_kwargs``)."""

    field: str
    flags: tuple[str, ...]
    help: str
    panel: str
    kind: str = "str"
    check: Callable[[Any], Any] = checks.text
    runtime: bool = False
    metavar: str | None = None
    show_default: bool = False
    default: Any = None
    model: bool = False

    @property
    def shown_default(self) -> str | None:
        """What the run uses when the option is not given, as --help states it: each recipe's
        value (:data:`RECIPES`, else :data:`DEFAULTS`) for an option some recipe sets."""
        if any(self.field in r for r in RECIPES.values()):
            return _recipe_values(self.field)
        if self.show_default:
            return _shown(self.default)
        return None


def option(
    default: Any = MISSING,
    *flags: str,
    help: str = "",
    panel: str = RUN,
    kind: str = "str",
    check: Callable[[Any], Any],
    runtime: bool = False,
    metavar: str | None = None,
    show_default: bool = False,
) -> Any:
    """A field of :class:`TrainOptions` with its option's declaration (no ``flags``: a field
    that config files set but the command line does not)."""
    spec = OptionSpec("", flags, help, panel, kind, check, runtime, metavar, show_default)
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata={"option": spec})
    return field(default=default, metadata={"option": spec})


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


UNIT = Bound(0.0, 1.0)  # a probability
BELOW_ONE = Bound(0.0, 1.0, hi_open=True)
ALPHA = Bound(*MIX_ALPHA_RANGE, off=0.0)  # Beta(alpha, alpha) needs alpha > 0 in float32
POSITIVE = Bound(1, integer=True)
COUNT = Bound(0, integer=True)


@dataclass(frozen=True)
class TrainOptions:
    """Every value of a run that a user sets (flag, config file, recipe), one declaration
    each; ``None`` means not given (the recipe, the data or the machine decides)."""

    arch: str = option(
        MISSING,
        "--arch",
        "-a",
        help="Registered architecture (see `afictl models`).",
        panel=MODEL,
        check=checks.text,
    )
    dataset: str = option(
        MISSING,
        "--data",
        "-d",
        help="cifar10, cifar100, imagenet, imagefolder, shapes or synthetic. Default: the "
        "architecture's home dataset (imagenet for 224-pixel models, cifar100 for 32-pixel ones).",
        panel=DATA,
        check=checks.text,
    )
    recipe: str = option(
        MISSING,
        "--recipe",
        help=f"{_choices(RECIPE_NAMES)}. Default: paper-imagenet for 224-pixel inputs, paper-cifar "
        "for 32-pixel ones, quick for shapes.",
        panel=RECIPE,
        check=checks.choice(*RECIPE_NAMES),
    )
    pretrained: str | None = option(
        None,
        "--pretrained",
        help="Initial weights from a checkpoint, plain state dict or .safetensors: every tensor "
        "that fits; an AFI model adapts its baseline's (docs/EXPORT.md).",
        panel=MODEL,
        kind="path",
        check=checks.path,
    )  # initial weights (all but the classifier) from a checkpoint
    data_root: str | None = option(
        None,
        "--data-root",
        help="Folder of the dataset. Default: `$AFICTL_DATA/<dataset>`, else `./data/<dataset>`.",
        panel=DATA,
        kind="path",
        check=checks.path,
        runtime=True,
    )
    download: bool = option(
        False,
        "--download/--no-download",
        help="Download CIFAR if missing.",
        panel=DATA,
        kind="bool",
        check=checks.flag,
    )
    data_size: int | None = option(
        None,
        "--data-size",
        help="Images per split: generated for shapes (default 4000), a fixed random subset "
        "otherwise.",
        panel=DATA,
        kind="int",
        check=POSITIVE,
    )
    input_size: int | None = option(
        None,
        "--input-size",
        help="Input pixels. Default: the files' size (CIFAR, shapes: 32), else the model's (32 or "
        "224).",
        panel=DATA,
        kind="int",
        check=Bound(*INPUT_SIZE_RANGE, integer=True),
    )
    bad_images: str = option(
        "skip",
        "--bad-images",
        help=f"Unreadable image files: {_choices(BAD_IMAGES_CHOICES)} (skip: each named in a "
        "warning, counted in metrics; stop: exit naming the file).",
        panel=DATA,
        check=checks.choice(*BAD_IMAGES_CHOICES),
        runtime=True,
    )
    decode: str = option(
        "auto",
        "--decode",
        help=f"JPEG decoding: {_choices(DECODE_CHOICES)} (auto: the fastest measured on CPU "
        "workers; gpu: nvjpeg on the GPU, CUDA only).",
        panel=DATA,
        check=checks.choice(*DECODE_CHOICES),
    )
    pipeline: str = option(
        "auto",
        "--pipeline",
        help=f"Input pipeline: {_choices(PIPELINE_CHOICES)} (tensor: small images decoded once, "
        "cached, augmented in whole batches on the training device; loader: per-image "
        "transforms in worker processes; auto: tensor where it applies).",
        panel=DATA,
        check=checks.choice(*PIPELINE_CHOICES),
    )  # auto | tensor | loader (afictl/data/pipeline.py)
    data_on_device: bool | None = option(
        None,
        "--data-on-device/--data-on-host",
        help="Tensor pipeline: keep the decoded images on the training device (default: on CUDA "
        "when they take at most a quarter of its free memory).",
        panel=DATA,
        kind="bool",
        check=checks.flag,
        runtime=True,
    )  # tensor pipeline; None: on CUDA when it fits
    epochs: int = option(
        1,
        "--epochs",
        "-e",
        help="Epochs in total (with --resume: continue up to this many).",
        panel=RECIPE,
        kind="int",
        check=POSITIVE,
        runtime=True,
    )
    batch_size: int = option(
        64,
        "--batch-size",
        "-b",
        help="Global batch size of one forward pass (split over DDP processes).",
        panel=RECIPE,
        kind="int",
        check=POSITIVE,
    )  # global: split across DDP processes
    grad_accum_steps: int = option(
        1,
        "--grad-accum-steps",
        help="Batches per optimizer step (gradients accumulated): the effective batch is "
        "batch x this, and --lr-reference-batch scales the lr by it.",
        panel=RECIPE,
        kind="int",
        check=POSITIVE,
    )  # batches per optimizer step
    opt: str = option(
        "sgd",
        "--opt",
        help=f"Optimizer: {_choices(OPTIMIZERS)}.",
        panel=RECIPE,
        check=checks.choice(*OPTIMIZERS),
    )
    lr: float = option(
        0.1,
        "--lr",
        help="Base learning rate (scaled by effective batch / --lr-reference-batch when that is "
        "set).",
        panel=RECIPE,
        kind="float",
        check=Bound(0.0, LR_MAX, lo_open=True),
    )
    lr_reference_batch: int | None = option(
        None,
        "--lr-reference-batch",
        help="Scale the lr by effective batch / this.",
        panel=RECIPE,
        kind="int",
        check=POSITIVE,
    )  # lr x effective batch / this, when set
    sched: str = option(
        "step",
        "--sched",
        help=f"Learning-rate schedule, per iteration: {_choices(LR_SCHEDULES)} (step: x --lr-gamma "
        "at each milestone; cosine: to --min-lr; inv: (1 + 10 p)^-0.75).",
        panel=RECIPE,
        check=checks.choice(*LR_SCHEDULES),
    )
    lr_milestones: list = option(
        [],
        "--lr-milestones",
        help="Where --sched step multiplies the lr by --lr-gamma: epochs (30,60,80) or percent of "
        "training (50%,75%).",
        panel=RECIPE,
        check=checks.milestones,
    )  # epochs (30) or percent of training ("50%")
    lr_gamma: float = option(
        0.1,
        "--lr-gamma",
        help="Factor at each milestone.",
        panel=RECIPE,
        kind="float",
        check=Bound(0.0, lo_open=True),
    )
    warmup_epochs: float = option(
        0.0,
        "--warmup-epochs",
        help="Linear lr warm-up, in epochs (may be fractional).",
        panel=RECIPE,
        kind="float",
        check=Bound(0.0),
    )
    min_lr: float = option(
        0.0,
        "--min-lr",
        help="Last learning rate of --sched cosine.",
        panel=RECIPE,
        kind="float",
        check=Bound(0.0, LR_MAX),
    )
    momentum: float = option(
        0.9,
        "--momentum",
        help="SGD momentum.",
        panel=RECIPE,
        kind="float",
        check=BELOW_ONE,
    )
    weight_decay: float = option(
        1e-4,
        "--weight-decay",
        "--wd",
        help="Weight decay.",
        panel=RECIPE,
        kind="float",
        check=Bound(0.0),
    )
    nesterov: bool = option(
        False,
        "--nesterov/--no-nesterov",
        help="Nesterov momentum (SGD).",
        panel=RECIPE,
        kind="bool",
        check=checks.flag,
    )
    wd_norm_bias: bool = option(
        True,
        "--wd-norm-bias/--no-wd-norm-bias",
        help="Weight decay on norm layers and biases too (the paper's; timm and torchvision's new "
        "recipes exempt them: --no-wd-norm-bias).",
        panel=RECIPE,
        kind="bool",
        check=checks.flag,
    )
    backbone_lr_mult: float = option(
        1.0,
        "--backbone-lr-mult",
        help="Learning rate of everything but the classifier, relative to --lr (fine-tuning: 0.1).",
        panel=RECIPE,
        kind="float",
        check=Bound(0.0),
    )
    clip_grad: float | None = option(
        None,
        "--clip-grad",
        help="Clip the gradients' global L2 norm to this (after unscaling under fp16); 0: off.",
        panel=RECIPE,
        kind="float",
        check=Bound(0.0),
    )  # max global gradient norm; None or 0: off
    label_smoothing: float = option(
        0.0,
        "--smoothing",
        "--label-smoothing",
        help="Label smoothing of the training loss.",
        panel=REGULARISATION,
        kind="float",
        check=BELOW_ONE,
    )
    mixup: float = option(
        0.0,
        "--mixup",
        help="MixUp alpha; 0: off.",
        panel=REGULARISATION,
        kind="float",
        check=ALPHA,
    )
    cutmix: float = option(
        0.0,
        "--cutmix",
        help="CutMix alpha; 0: off.",
        panel=REGULARISATION,
        kind="float",
        check=ALPHA,
    )
    mixup_prob: float = option(
        1.0,
        "--mixup-prob",
        help="Probability that a batch is mixed (MixUp or CutMix, one of them at random when "
        "both).",
        panel=REGULARISATION,
        kind="float",
        check=UNIT,
    )
    aa: str | None = option(
        None,
        "--aa",
        help="Augmentation policy of the train split: `rand-m9-mstd0.5` (RandAugment in timm's "
        f"notation), {_choices(AA_FIXED)} or `none`.",
        panel=REGULARISATION,
        check=checks.augment_policy,
    )  # augmentation policy of the train split; None or "none": off
    reprob: float = option(
        0.0,
        "--reprob",
        help="Random erasing probability (train split); 0: off.",
        panel=REGULARISATION,
        kind="float",
        check=UNIT,
    )
    model_ema: bool = option(
        False,
        "--model-ema/--no-model-ema",
        help="Keep an exponential moving average of the weights (BN buffers included), evaluated "
        "each epoch (`eval_top1_ema`) and saved in the checkpoints.",
        panel=REGULARISATION,
        kind="bool",
        check=checks.flag,
    )
    model_ema_decay: float = option(
        0.9998,
        "--model-ema-decay",
        help="EMA decay per optimizer step.",
        panel=REGULARISATION,
        kind="float",
        check=Bound(0.0, 1.0, lo_open=True, hi_open=True),
    )
    best_of: str = option(
        "raw",
        "--best-of",
        help=f"Which weights best.pt keeps and ranks by: {_choices(BEST_OF_CHOICES)} (ema needs "
        "--model-ema).",
        panel=REGULARISATION,
        check=checks.choice(*BEST_OF_CHOICES),
    )  # the weights best.pt keeps: raw or ema
    seed: int = option(
        0,
        "--seed",
        help="Seed of weights, data order, augmentation and generated data.",
        panel=RUN,
        kind="int",
        check=Bound(0, SEED_MAX, integer=True),
        show_default=True,
    )
    deterministic: bool = option(
        False,
        "--deterministic/--no-deterministic",
        help="Deterministic kernels (bit-exact reruns and resumes on CPU).",
        panel=RUN,
        kind="bool",
        check=checks.flag,
    )
    device: str = option(
        "auto",
        "--device",
        help="`auto` (default: cuda when present), `cpu` or `cuda`.",
        panel=RUN,
        check=checks.device,
        runtime=True,
        metavar="[auto|cpu|cuda]",
        show_default=True,
    )
    amp: str = option(
        "none",
        "--amp",
        help=f"Mixed precision: {_choices(AMP_CHOICES)} (fp16: CUDA; bf16 also on CPU).",
        panel=RUN,
        check=checks.choice(*AMP_CHOICES),
        metavar=_metavar(AMP_CHOICES),
        show_default=True,
    )
    channels_last: bool = option(
        False,
        "--channels-last/--no-channels-last",
        help="NHWC memory format.",
        panel=RUN,
        kind="bool",
        check=checks.flag,
    )
    compile: bool = option(
        False,
        "--compile/--no-compile",
        help="torch.compile the model.",
        panel=RUN,
        kind="bool",
        check=checks.flag,
    )
    sync_bn: bool = option(
        False,
        "--sync-bn/--no-sync-bn",
        help="SyncBatchNorm across DDP processes.",
        panel=RUN,
        kind="bool",
        check=checks.flag,
    )
    threads: int | None = option(
        None,
        "--threads",
        help="CPU threads (default: one per core, or one per idle core when other processes keep "
        "the "
        "CPU busy; torch's default with --deterministic).",
        panel=RUN,
        kind="int",
        check=Bound(1, THREADS_MAX, integer=True),
        runtime=True,
    )  # CPU threads; None: torch's default, or 1 on a busy machine
    workers: int | None = option(
        None,
        "--workers",
        "-j",
        help="Data loading processes (default: 0 for shapes, else up to 8).",
        panel=RUN,
        kind="int",
        check=COUNT,
        runtime=True,
    )
    tensorboard: bool | None = option(
        None,
        "--tensorboard/--no-tensorboard",
        help="TensorBoard event files (default: when installed).",
        panel=RUN,
        kind="bool",
        check=checks.flag,
        runtime=True,
    )
    log_interval: int | None = option(
        None,
        "--log-interval",
        help="In a log file (stderr not a terminal): a progress line every N batches (loss, acc, "
        "lr, images/s, eta); default: at least every 30 s. TensorBoard's per-step scalars too.",
        panel=RUN,
        kind="int",
        check=POSITIVE,
        runtime=True,
    )  # batches between progress lines; None: every 30 s
    checkpoint_hist: int = option(
        0,
        "--checkpoint-hist",
        help="Also keep the N best epochs as `epoch-<N>.pt` (besides last.pt and best.pt); 0: "
        "none.",
        panel=RUN,
        kind="int",
        check=COUNT,
    )
    run_dir: str | None = option(
        None,
        "--run-dir",
        help="Run folder. Default: `runs/<arch>-<dataset>-<time>/`.",
        panel=RUN,
        kind="dir",
        check=checks.path,
    )
    eval_split: str = option("eval", check=checks.choice("eval"))

    # the model's options (afictl/model_options.py), given as --reduction etc.
    model_kwargs: dict = option({}, check=checks.options_dict)


def _field_spec(f: Any) -> OptionSpec:
    default = f.default_factory() if f.default_factory is not MISSING else f.default
    return replace(f.metadata["option"], field=f.name, default=default)


def _model_spec(o: ModelOption) -> OptionSpec:
    """A model option as an option of ``afictl train`` (its value goes to ``model_kwargs``)."""
    return OptionSpec(
        o.name,
        (o.flag, *([o.short] if o.short else [])),
        o.help + (" AFI models only." if o.afi else ""),
        MODEL,
        "str" if o.kind == "stages" else o.kind,
        o.check,
        metavar=o.metavar,
        show_default=o.default is not None,
        default=o.default,
        model=True,
    )


_FIELD_SPECS = [_field_spec(f) for f in fields(TrainOptions)]
_NONE_MEANS_UNSET = {s.field for s in _FIELD_SPECS if s.default is None} | set(MODEL_OPTIONS)
#: the options of ``afictl train`` in --help's order: the fields with flags, and after --arch
#: the model options
TRAIN_OPTIONS: tuple[OptionSpec, ...] = (
    _FIELD_SPECS[0],
    *map(_model_spec, MODEL_OPTIONS.values()),
    *(s for s in _FIELD_SPECS[1:] if s.flags),
)
#: what a run uses for an option that no recipe, config file or flag sets
DEFAULTS: dict[str, Any] = {s.field: s.default for s in _FIELD_SPECS if s.default is not MISSING}
#: options that may change on --resume
RUNTIME_KEYS = frozenset(o.field for o in TRAIN_OPTIONS if o.runtime)
#: each option's check as declared (the older spellings of CONFIG_ALIASES included)
DECLARED_CHECKS: dict[str, Callable[[Any], Any]] = {
    s.field: s.check for s in (*_FIELD_SPECS, *TRAIN_OPTIONS)
}
DECLARED_CHECKS.update({alias: DECLARED_CHECKS[name] for alias, name in CONFIG_ALIASES.items()})
#: the checks as values arrive: None means not given where the default is None, and for the
#: model options (the model's default then)
OPTION_CHECKS: dict[str, Callable[[Any], Any]] = {
    name: checks.optional(c) if name in _NONE_MEANS_UNSET else c
    for name, c in DECLARED_CHECKS.items()
}


def option_for(field: str) -> OptionSpec:
    """The spec of option ``field`` (a TrainOptions field or a model option)."""
    return next(o for o in (*TRAIN_OPTIONS, *_FIELD_SPECS) if o.field == field)


def long_flags(spec: OptionSpec) -> list[str]:
    """The long flags of ``spec`` without their dashes; ``--x/--no-x`` gives ``x`` only (a config
    key ``no_x = true`` would read backwards)."""
    return [f.split("/")[0][2:] for f in spec.flags if f.startswith("--")]


def _config_keys() -> dict[str, str]:
    keys = dict(CONFIG_ALIASES) | dict(LEGACY_NAMES)
    for spec in (*TRAIN_OPTIONS, *_FIELD_SPECS):
        for name in (spec.field, *long_flags(spec)):
            key = name.replace("-", "_")
            if keys.setdefault(key, spec.field) != spec.field:  # a declaration error
                raise ValueError(f"config key {key!r} would mean {keys[key]} and {spec.field}")
    return keys


#: every name a config file may give an option (``-`` read as ``_``) -> its field or model
#: option: the name (``dataset``), each long flag (``data``, ``batch_size``, ``wd``) and the
#: older spellings of :data:`CONFIG_ALIASES` and :data:`~afictl.model_options.LEGACY_NAMES`
CONFIG_KEYS: dict[str, str] = _config_keys()
