"""Checkpoint I/O after timm's ``_helpers.py``: the stored layout of the training checkpoint, its
typed fields, the weights fitted on the meta device, and a resume checked by loading the saved
optimizer and scheduler states into what the run's configuration builds (any optimizer)."""

import pytest
import torch

from afictl.checkpoint import CheckpointError, model_from_checkpoint, save_checkpoint
from afictl.checkpoint_format import check_weights, validate_checkpoint
from afictl.models import create_model
from afictl.train import TrainCheckpoint, resolve_config
from afictl.train.checkpointing import validate_resume
from afictl.train.optim import build_optimizer, build_scheduler
from afictl.train.state import RunProgress, get_rng_state

#: The keys every version-2 last.pt has held (model_ema and checkpoint_hist: when present).
STORED = {
    *("arch", "num_classes", "model_kwargs", "model", "epoch", "step", "optimizer", "scheduler"),
    *("scaler", "config", "rng", "class_names", "metrics", "best_top1", "best_epoch", "partial"),
    *("partial_ranks", "partial_seconds", "input_size", "home_dataset", "version"),
}


def _resumable(opt: str) -> tuple[dict, object]:
    """A checkpoint of resnet20 after one optimizer step of ``opt``, and the run's config."""
    cfg = resolve_config({"arch": "resnet20", "dataset": "shapes", "opt": opt})
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=8)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, 4)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    scheduler.step()
    ckpt = TrainCheckpoint(
        arch="resnet20",
        num_classes=8,
        model_kwargs={},
        model=model.state_dict(),
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        scaler={},
        config={**cfg.to_dict(), "num_classes": 8},
        progress=RunProgress(epoch=1, best_top1=50.0, best_epoch=1, metrics=[{"epoch": 1}]),
        partial_ranks=[[0.0] * 5],
        rng=[get_rng_state()],
    )
    return {**ckpt.to_dict(), "path": "last.pt"}, cfg


def test_the_stored_layout_is_every_version_2_key_and_reads_back():
    d, _ = _resumable("sgd")
    assert set(d) - {"path"} == STORED
    back = TrainCheckpoint.from_dict(d)
    assert back.progress.epoch == 1 and back.progress.best_epoch == 1
    assert back.to_dict() == {k: v for k, v in d.items() if k != "path"}


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("best_top1", "high", "last.pt: best_top1 must be float, not str"),
        ("partial_seconds", [1], "last.pt: partial_seconds must be float, not list"),
        ("partial", [1, 2], "partial sums must be five numbers"),
        ("metrics", ["row"], "metrics must be a list of rows"),
        ("rng", {}, "last.pt: rng must be list, not dict"),
    ],
)
def test_a_field_of_the_wrong_type_is_one_line_naming_it(field, value, says):
    d, _ = _resumable("sgd")
    with pytest.raises(CheckpointError, match=says):
        TrainCheckpoint.from_dict({**d, field: value})


@pytest.mark.parametrize("opt", ["sgd", "adamw"])
def test_resume_loads_the_saved_states_of_either_optimizer(opt):
    d, cfg = _resumable(opt)
    assert validate_resume(d, cfg).progress.epoch == 1
    kind = "SGD" if opt == "sgd" else "AdamW"
    with pytest.raises(CheckpointError, match=f"not an {kind} state dict"):
        validate_resume({**d, "optimizer": {"state": {}}}, cfg)
    buffer = "momentum_buffer" if opt == "sgd" else "exp_avg"
    d["optimizer"]["state"][0][buffer] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=f"{buffer} of parameter 0 has shape \\(3,\\)"):
        validate_resume(d, cfg)


def test_a_scheduler_state_of_another_schedule_is_refused():
    d, cfg = _resumable("sgd")
    with pytest.raises(CheckpointError, match="scheduler state does not fit"):
        validate_resume({**d, "scheduler": {"last_epoch": 3}}, cfg)


def test_weights_are_fitted_on_the_meta_device_in_one_line():
    state = create_model("resnet20", num_classes=8).state_dict()
    meta = check_weights("f.pt", "resnet20", 8, {}, state)
    assert next(meta.parameters()).is_meta
    for bad, says in [
        ({**state, "x.weight": torch.zeros(1)}, "unexpected x.weight"),
        ({k: v for k, v in state.items() if k != "fc.bias"}, "missing fc.bias"),
        ({**state, "fc.weight": torch.zeros(8, 3)}, "fc.weight has shape (8, 3), expected (8, 64)"),
    ]:
        with pytest.raises(CheckpointError) as caught:
            check_weights("f.pt", "resnet20", 8, {}, bad)
        assert str(caught.value) == f"f.pt: weights do not fit resnet20 ({says})"


def test_the_legacy_option_name_is_read_as_its_current_one(tmp_path):
    torch.manual_seed(0)
    model = create_model("afi_resnet20", num_classes=8, reduction=2)
    payload = {"arch": "afi_resnet20", "num_classes": 8, "model_kwargs": {"r": 2}}
    path = save_checkpoint(tmp_path / "old.pt", {**payload, "model": model.state_dict()})
    rebuilt, ckpt = model_from_checkpoint(path)
    assert ckpt["model_kwargs"] == {"reduction": 2}
    assert all(map(torch.equal, rebuilt.state_dict().values(), model.state_dict().values()))
    with pytest.raises(CheckpointError, match="model_kwargs reduction must be an integer"):
        validate_checkpoint({**payload, "model_kwargs": {"r": "two"}})
