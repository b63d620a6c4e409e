"""Model options, declared once (afictl/model_options.py): create_model's check, the flags of
train/flops/bench/memory/export, config keys, checkpoints and the names they had before all
derive from the declaration."""

import json

import pytest
import torch
from cli import one_line_exit_2, run

from afictl.errors import ModelOptionError
from afictl.model_options import (
    AFI_OPTIONS,
    MODEL_OPTIONS,
    SHUFFLENET_WIDTHS,
    canonical_options,
    fold_model_options,
)
from afictl.models import (
    check_model_options,
    create_meta_model,
    get_model_info,
    list_models,
    options_of,
)
from afictl.models.shufflenetv2 import WIDTHS
from afictl.train.config import TrainConfig, resolve_config

SHAPES = ["--data", "shapes", "--data-size", "16", "--epochs", "1", "--batch-size", "8"]


def test_every_afi_model_takes_the_afi_options_and_baselines_none_of_them():
    for name in list_models():
        info = get_model_info(name)
        afi = {o.name for o in AFI_OPTIONS}
        assert (afi <= set(info.options)) == info.is_afi, name
        assert all(info.options[k] is MODEL_OPTIONS[k] for k in info.options), name


def test_create_model_uses_the_declared_defaults():
    """A model built without options equals one built with every declared default."""
    for name in ("afi_resnet20", "afi_mobilenetv2", "afi_shufflenetv2"):
        defaults = {k: o.default for k, o in get_model_info(name).options.items()}
        torch.manual_seed(0)
        a = create_meta_model(name)
        b = create_meta_model(name, **defaults)
        assert a.afi_stages == b.afi_stages and a.reduction == b.reduction == 4, name
    assert tuple(WIDTHS) == SHUFFLENET_WIDTHS  # the widths table keyed by the declared choices


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("afi_resnet20", {"reduction": 0}, "afi_resnet20: reduction must be > 0"),
        ("afi_resnet20", {"reduction": 5000}, "reduction must be <= 4096"),
        ("afi_resnet20", {"reduction": 2.5}, "reduction must be an integer"),
        ("afi_resnet20", {"memory_efficient": "yes"}, "memory_efficient must be true or false"),
        ("afi_resnet20", {"afi_stages": [4]}, "afi_stages 4 out of range"),
        ("afi_resnet20", {"afi_stages": "1,x"}, "afi_stages takes stage numbers"),
        ("afi_mobilenetv2", {"attn": "nope"}, "attn must be one of se, ge, cbam, eca"),
        ("afi_mobilenetv2", {"dropout": 1.0}, "dropout must be below 1"),
        ("shufflenetv2", {"width": 0.7}, "width must be one of 0.5, 1, 1.5, 2"),
        ("resnet20", {"reduction": 4}, "resnet20 does not take reduction"),
    ],
)
def test_each_value_is_checked_by_its_declaration(name, options, message):
    with pytest.raises(ModelOptionError, match=message):
        check_model_options(name, options)


def test_older_names_and_layouts_map_in_one_place():
    assert canonical_options({"r": 8}) == {"reduction": 8}
    assert canonical_options({"r": 8, "reduction": 2}) == {"reduction": 2}
    assert check_model_options("afi_resnet20", {"r": 8}) == {"reduction": 8}
    # a config.json written before the model options moved into model_kwargs
    old = {"arch": "afi_resnet20", "afi_stages": [1], "r": 2, "model_kwargs": {}}
    assert fold_model_options(old)["model_kwargs"] == {"afi_stages": [1], "reduction": 2}
    assert TrainConfig.from_dict({**old, "dataset": "shapes", "recipe": "quick"}).model_kwargs == {
        "afi_stages": [1],
        "reduction": 2,
    }


def test_config_file_keys_are_the_flag_names(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('arch = "afi_mobilenetv2"\ndata = "shapes"\nattn = "eca"\nafi-stages = "2,3"\n')
    cfg = resolve_config({"reduction": 8}, path)
    assert cfg.model_kwargs == {"attn": "eca", "afi_stages": [2, 3], "reduction": 8}
    # a previous run's config.json (model_kwargs) loads again, the flag still winning
    again = tmp_path / "config.json"
    again.write_text(json.dumps(cfg.to_dict()))
    assert resolve_config({"reduction": 2}, again).model_kwargs["reduction"] == 2


def test_every_model_option_reaches_the_run(capsys, tmp_path):
    """--memory-efficient, --attn, --dropout and --reduction build the trained model, are
    recorded in the checkpoint, and rebuild it in eval."""
    run_dir = tmp_path / "run"
    code, _, err = run(
        capsys,
        "train",
        "-a",
        "afi_mobilenetv2",
        *SHAPES,
        "--memory-efficient",
        "--attn",
        "se",
        "--dropout",
        "0.1",
        "-r",
        "8",
        "--run-dir",
        run_dir,
    )
    assert code == 0, err
    want = {"memory_efficient": True, "attn": "se", "dropout": 0.1, "reduction": 8}
    ckpt = torch.load(run_dir / "last.pt", weights_only=True)
    assert ckpt["model_kwargs"] == want
    assert json.loads((run_dir / "config.json").read_text())["model_kwargs"] == want
    code, out, err = run(capsys, "eval", "-c", run_dir, "--data", "shapes", "-f", "json")
    assert code == 0 and json.loads(out)["images"] > 0, err
    # the same options again on --resume are accepted; another value is one line
    code, _, err = run(capsys, "train", "--resume", run_dir, "--epochs", "1", "-r", "4")
    assert "cannot change reduction when resuming" in one_line_exit_2(code, err)


def test_shufflenet_width_from_train(capsys):
    code, out, err = run(
        capsys, "train", "-a", "shufflenetv2", *SHAPES, "--width", "0.5", "--dry-run", "-f", "json"
    )
    assert code == 0, err
    rows = {r["option"]: r for r in json.loads(out)}
    assert rows["--width"]["value"] == 0.5 and rows["--width"]["source"] == "flag"
    assert "--reduction" not in rows  # a baseline takes no AFI option
    code, _, err = run(capsys, "train", "-a", "afi_resnet20", *SHAPES, "--width", "0.5")
    assert "afi_resnet20 does not take width" in one_line_exit_2(code, err)


def test_flops_bench_and_export_take_the_declared_flags(capsys, tmp_path):
    code, out, err = run(
        capsys, "flops", "-a", "afi_resnet20", "-r", "8", "--afi-stages", "2", "-f", "json"
    )
    assert code == 0, err
    small = json.loads(out)[0]
    code, out, _ = run(capsys, "flops", "-a", "afi_resnet20", "-f", "json")
    assert small["params"] != json.loads(out)[0]["params"]
    code, _, err = run(capsys, "flops", "-a", "resnet20", "-r", "8")
    assert "--reduction: none of resnet20 takes it" in one_line_exit_2(code, err)
    code, out, err = run(
        capsys,
        "bench",
        "-a",
        "afi_resnet20",
        "--memory-efficient",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "-b",
        "2",
        "--mode",
        "infer",
        "-f",
        "json",
    )
    assert code == 0, err
    row = json.loads(out)[0]
    assert row["memory_efficient"] is True and row["model_options"] == {"memory_efficient": True}
    target = tmp_path / "m.safetensors"
    code, _, err = run(
        capsys,
        "export",
        "-a",
        "afi_resnet20",
        "-r",
        "8",
        "--to",
        "safetensors",
        "--export-file",
        target,
    )
    assert code == 0, err
    config = json.loads((tmp_path / "m.config.json").read_text())
    assert config["model_kwargs"] == {"reduction": 8}


def test_a_pair_shares_the_options_both_take(capsys):
    """--width builds both ShuffleNetV2s of a pair (they differ only by AFI); --reduction only
    the AFI one."""
    code, out, err = run(capsys, "flops", "-a", "afi_shufflenetv2", "--width", "0.5", "-f", "json")
    assert code == 0, err
    row = json.loads(out)[0]
    half = create_meta_model("shufflenetv2", width=0.5)
    assert row["baseline_params"] == sum(p.numel() for p in half.parameters())
    assert options_of("shufflenetv2", {"width": 0.5, "reduction": 8}) == {"width": 0.5}
    assert options_of("afi_shufflenetv2", {"width": 0.5, "reduction": 8}) == {
        "width": 0.5,
        "reduction": 8,
    }
