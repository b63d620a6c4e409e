"""`afictl transfer`: the Office-Home protocol on a tiny generated 4-domain ImageFolder."""

import json

import pytest
import torch
from cli import run
from officehome import CLASSES, make_office_home

from afictl.checkpoint import save_checkpoint
from afictl.errors import UserError
from afictl.models import create_model
from afictl.train import resolve_config
from afictl.train.optim import build_optimizer, build_scheduler, inv_factor, param_groups
from afictl.train.pretrained import load_pretrained
from afictl.transfer import protocol
from afictl.transfer.protocol import all_pairs, match_classes, pair_average, resolve_domain


@pytest.fixture(scope="module")
def office(tmp_path_factory):
    return make_office_home(tmp_path_factory.mktemp("oh"), real_world="RealWorld")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    save_checkpoint(
        path,
        {
            "arch": "resnet20",
            "num_classes": 10,
            "model_kwargs": {},
            "model": model.state_dict(),
            "epoch": 1,
            "config": {"input_size": 32, "dataset": "shapes"},
            "class_names": None,
        },
    )
    return path


def test_one_implementation_of_the_protocol_lrs():
    """The schedule and the two groups training uses are the protocol's only ones."""
    assert inv_factor(0, 10) == 1.0 and inv_factor(5, 10) == pytest.approx(6**-0.75)
    assert inv_factor(20, 10) == inv_factor(10, 10) == pytest.approx(11**-0.75)
    assert not hasattr(protocol, "param_groups") and not hasattr(protocol, "transfer_lr")
    model = create_model("resnet20", num_classes=3)
    backbone, head = param_groups(model, 0.01, 0.1)
    assert head["lr"] == 0.01 and backbone["lr"] == pytest.approx(0.001)
    assert pair_average([33.333, None, 50.0]) == (41.67, "2/12")
    assert pair_average([None]) == (None, "0/12")


def test_recipe_param_groups_and_scheduled_lrs():
    cfg = resolve_config(
        {"arch": "resnet20", "dataset": "shapes", "recipe": "office-home", "epochs": 2}
    )
    assert (
        cfg.epochs == 2
        and cfg.lr == 0.01
        and cfg.lr_schedule == "inv"
        and cfg.backbone_lr_mult == 0.1
    )
    model = create_model("resnet20", num_classes=3)
    opt = build_optimizer(model, cfg)
    backbone, head = opt.param_groups
    assert {id(p) for p in head["params"]} == {id(p) for p in model.fc.parameters()}
    assert len(backbone["params"]) + len(head["params"]) == len(list(model.parameters()))
    sched = build_scheduler(opt, cfg, steps_per_epoch=5)  # 10 steps in all
    for step in range(10):
        p = step / 10
        assert head["lr"] == pytest.approx(0.01 * (1 + 10 * p) ** -0.75)
        assert backbone["lr"] == pytest.approx(0.001 * (1 + 10 * p) ** -0.75)
        opt.step()
        sched.step()


def test_pretrained_weights_all_but_classifier(pretrained):
    model = create_model("resnet20", num_classes=3)
    fresh_fc = model.fc.weight.clone()
    ckpt = load_pretrained(model, pretrained, "resnet20")
    torch.testing.assert_close(model.conv1.weight, ckpt["model"]["conv1.weight"])
    torch.testing.assert_close(model.fc.weight, fresh_fc)
    # another model than the arch or its baseline is refused (an AFI model adapts its baseline's)
    with pytest.raises(UserError, match="resnet20 checkpoint, not afi_resnet32 or its baseline"):
        load_pretrained(create_model("afi_resnet32", num_classes=3), pretrained, "afi_resnet32")


def test_domains_and_class_matching(office, tmp_path):
    assert resolve_domain(office, "Real World").name == "RealWorld"
    assert resolve_domain(office, "rw").name == "RealWorld"
    assert len(all_pairs(office)) == 12
    assert match_classes(["a", "b", "c"], ["b", "c", "a"]) == [1, 2, 0]  # by name, not position
    with pytest.raises(UserError, match="cup"):
        match_classes(list(CLASSES), ["bike", "lamp"])
    with pytest.raises(UserError, match="not found"):
        resolve_domain(office, "Sketch")


def test_missing_class_in_target_is_a_clear_error(pretrained, tmp_path, capsys):
    root = make_office_home(tmp_path / "oh", per_class=1, drop=("Clipart", "cup"))
    code, _, err = run(
        capsys,
        "transfer",
        "--checkpoint",
        str(pretrained),
        "--data-root",
        str(root),
        "--source",
        "Art",
        "--target",
        "Clipart",
        "--run-root",
        str(tmp_path / "runs"),
    )
    assert code == 2 and "cup" in err and err.count("\n") == 1


@pytest.mark.slow
def test_all_pairs_matrix_and_resume(office, pretrained, tmp_path, capsys):
    runs = tmp_path / "runs"
    args = [
        "transfer",
        "--checkpoint",
        str(pretrained),
        "--data-root",
        str(office),
        "--all-pairs",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--run-root",
        str(runs),
        "--format",
        "json",
    ]
    code, out, _ = run(capsys, *args)
    assert code == 0
    rows = json.loads(out)
    assert len(rows) == 12 and len({r["pair"] for r in rows}) == 12
    assert {r["pair"] for r in rows} >= {"Ar:Cl", "Rw:Pr", "Pr:Ar"}
    assert all(0 <= r["top1"] <= 100 and r["epochs"] == 1 and r["eval_images"] == 12 for r in rows)
    assert not any(r["reused"] for r in rows)
    assert len(list(runs.glob("*/best.pt"))) == 12
    # the same command again reuses every finished pair
    code, out, _ = run(capsys, *args)
    again = json.loads(out)
    assert all(r["reused"] for r in again)
    assert [r["top1"] for r in again] == [r["top1"] for r in rows]
    code, out, _ = run(capsys, *args[:-2], "--format", "markdown")
    assert code == 0 and "| arch | Ar:Cl |" in out and "| avg | avg_of |" in out
    assert "| 12/12 |" in out
    results = tmp_path / "t3.csv"
    code, out, err = run(capsys, *args[:-2], "--format", "csv", "--output", results)
    assert code == 0 and out == "" and len(results.read_text().splitlines()) == 13
    # one pair: its average is labelled as 1 of the 12
    one = [*args[:5], "--source", "Art", "--target", "Clipart", *args[6:-2], "-f", "json"]
    code, out, _ = run(capsys, *one[:-2], "-f", "table")
    assert code == 0 and "1/12" in out and "avg_of" in out


def test_needs_pair_or_all_pairs(pretrained, office, capsys):
    code, _, err = run(
        capsys, "transfer", "--checkpoint", str(pretrained), "--data-root", str(office)
    )
    assert code == 2 and "--all-pairs" in err
