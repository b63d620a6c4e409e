"""Each training option is declared once, as a field of TrainOptions (afictl/train/options.py:
flags, help, panel, kind, check, default), each model option once (afictl/model_options.py):
the command line, the config keys, the checks and --help derive from them, and --help states a
recipe-dependent default as each recipe's value."""

import dataclasses
import re

import pytest
from cli import run

from afictl import validate
from afictl.model_options import MODEL_OPTIONS
from afictl.models import get_model_info, list_models
from afictl.train import optim
from afictl.train.config import RECIPES as CONFIG_RECIPES
from afictl.train.config import TrainConfig
from afictl.train.ema import DEFAULT_EMA_DECAY
from afictl.train.options import (
    DEFAULTS,
    RECIPE_NAMES,
    RECIPES,
    TRAIN_OPTIONS,
    TrainOptions,
    option_for,
)
from afictl.train.options import _shown as shown_value

_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
#: fields whose TrainConfig default is a choice of validate.py's tuples
_CHOICES = {
    "opt": validate.OPTIMIZERS,
    "sched": validate.LR_SCHEDULES,
    "amp": validate.AMP_CHOICES,
    "bad_images": validate.BAD_IMAGES_CHOICES,
    "decode": validate.DECODE_CHOICES,
    "pipeline": validate.PIPELINE_CHOICES,
    "best_of": validate.BEST_OF_CHOICES,
}


def _help_text(capsys) -> str:
    """``afictl train --help`` with rich's boxes and wrapping undone: one line of words."""
    code, out, _ = run(capsys, "train", "--help")
    assert code == 0
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", out).split())


def test_trainconfig_defaults_are_the_declared_ones():
    """TrainConfig's field defaults are DEFAULTS' values, the choices' defaults are among
    validate.py's choices, and every default passes its own check unchanged."""
    for name, value in DEFAULTS.items():
        f = _FIELDS[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        assert default == value, name
    for name, choices in _CHOICES.items():
        assert _FIELDS[name].default in choices, name
    for name, f in _FIELDS.items():
        if f.default not in (None, dataclasses.MISSING) and name in validate.OPTION_CHECKS:
            assert validate.check_option(name, f.default) == f.default, name
    assert DEFAULT_EMA_DECAY == DEFAULTS["model_ema_decay"]  # afictl/train/ema.py's own


def test_choices_and_recipes_are_one_object_each():
    """optim's choices are validate's tuples; config's recipes are recipes.py's; the recipe
    check and --help read the recipes' names; every recipe's value passes its check."""
    assert optim.OPTIMIZERS is validate.OPTIMIZERS
    assert optim.SCHEDULES is validate.LR_SCHEDULES
    assert CONFIG_RECIPES is RECIPES and RECIPE_NAMES == tuple(RECIPES)
    assert validate.RECIPE_NAMES is RECIPE_NAMES  # read from afictl/train/recipes.py
    for name in RECIPE_NAMES:
        assert validate.check_option("recipe", name) == name
        for key, value in RECIPES[name].items():
            assert key in _FIELDS, (name, key)
            if key in validate.OPTION_CHECKS and value is not None:
                validate.check_option(key, value)
    with pytest.raises(validate.UserError, match="one of paper-cifar, paper-imagenet"):
        validate.check_option("recipe", "paper")


def test_help_states_each_recipes_value_of_every_recipe_option(capsys):
    text = _help_text(capsys)
    recipe_fields = {k for r in RECIPES.values() for k in r}
    assert recipe_fields >= {"weight_decay", "model_ema_decay", "momentum", "aa", "epochs"}
    for field in sorted(recipe_fields):
        shown = option_for(field).shown_default
        assert shown is not None and f"[default: {shown}]" in text, field
        values = {r: RECIPES[r].get(field, DEFAULTS.get(field)) for r in RECIPE_NAMES}
        if len(set(map(repr, values.values()))) == 1:
            continue  # "0.9 in every recipe"
        for group in shown.removeprefix("the recipe's: ").split("; "):
            value, names = group.split(" in ", 1)
            for name in names.split(", "):
                assert shown_value(values.pop(name)) == value, (field, name)
        assert not values, field  # every recipe named once
    # the value as a user writes it, per recipe
    assert "1e-4 in paper-cifar, paper-imagenet; 5e-4 in modern-cifar, office-home, quick" in text
    assert (
        "0.9998 in paper-cifar, paper-imagenet, office-home, quick; 0.999 in modern-cifar" in text
    )
    assert "Weight decay (1e-4)" not in text and "(0.9998)" not in text
    assert "SGD momentum. [default: 0.9 in every recipe]" in text
    assert "[default: 0]" in text and "[default: none]" in text  # --seed, --amp


def test_shown_default_of_options_no_recipe_sets():
    assert option_for("seed").shown_default == "0"
    assert option_for("amp").shown_default == "none" and option_for("amp").metavar == (
        "[" + "|".join(validate.AMP_CHOICES) + "]"
    )
    assert option_for("clip_grad").shown_default is None  # None: off, said in its help
    assert all(
        o.shown_default is None
        for o in TRAIN_OPTIONS
        if not o.show_default and not any(o.field in r for r in RECIPES.values())
    )


def test_each_option_has_its_field_and_its_check():
    """One declaration per option: every TrainOptions field carries its spec and check (a bound
    for a number), the command line has a spec per field with flags and per model option, and
    no field a user sets lacks one (eval_split, model_kwargs: config files only; num_classes,
    world_size: derived)."""
    specs = {o.field: o for o in TRAIN_OPTIONS}
    assert set(_FIELDS) - set(specs) == {"eval_split", "model_kwargs", "num_classes", "world_size"}
    assert set(MODEL_OPTIONS) <= set(specs)  # every registered model option reachable
    for field, spec in specs.items():
        assert field in validate.OPTION_CHECKS, field
        if spec.kind in ("int", "float") and field != "width":  # width: a set of multipliers
            assert field in validate.NUMERIC_BOUNDS, field
    for f in dataclasses.fields(TrainOptions):
        assert f.metadata["option"].check is option_for(f.name).check, f.name
    assert set(DEFAULTS) <= set(_FIELDS)


def test_every_registered_model_option_is_declared_and_a_train_flag(capsys):
    """Each option a registered builder takes is one of afictl/model_options.py's, and
    `afictl train --help` lists every one."""
    taken = {o for name in list_models() for o in get_model_info(name).options}
    assert taken == set(MODEL_OPTIONS)
    text = _help_text(capsys)
    for option in MODEL_OPTIONS.values():
        assert option.flag in text, option.name
