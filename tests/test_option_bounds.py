"""Every option is bounded by what the code can compute with: nonsense is one line, exit 2.

Each CLI case below ended in a traceback (exit 1) or was accepted silently (exit 0) before:
now it is refused through the real entry point with one stderr line, exit code 2, and no run
folder. The property-based tests draw values across each numeric option's whole declared range
(:data:`afictl.validate.NUMERIC_BOUNDS`) at the validation function: inside it is accepted,
just outside it is refused with one line naming the option and the range.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from cli import one_line_exit_2, run
from hypothesis import given, settings
from hypothesis import strategies as st

from afictl.errors import UserError
from afictl.train import resolve_config
from afictl.train.config import RECIPES, check_model_input_size
from afictl.train.options import RECIPE_NAMES
from afictl.transfer.run import check_pair
from afictl.validate import (
    EXPORT_TOLERANCE,
    LR_MAX,
    MIX_ALPHA_RANGE,
    NUMERIC_BOUNDS,
    SEED_MAX,
    THREADS_MAX,
    Bound,
    check_option,
    check_value,
)

TRAIN = ["train", "-a", "resnet20", "--data", "shapes", "--data-size", "64"]
FLOAT32_TINY = float(torch.finfo(torch.float32).tiny)

#: (id, argv, what the one line says); {run} is a run folder that must not be made
CASES = [
    ("seed-huge", [*TRAIN, "--seed", "200000000000000"], "--seed must be <= 4294967295"),
    ("seed-max+1", [*TRAIN, "--seed", str(SEED_MAX + 1)], "allowed [0, 4294967295]"),
    ("lr-1e39", [*TRAIN, "--lr", "1e39"], "--lr must be <= 1000"),
    ("lr-inf", [*TRAIN, "--lr", "inf"], "--lr must be a finite number"),
    ("lr-scaled", [*TRAIN, "--lr", "999", "--lr-reference-batch", "1"], "must be <= 1000"),
    ("cutmix-1e-300", [*TRAIN, "--cutmix", "1e-300"], "--cutmix must be >= 1e-06"),
    ("mixup-1e-50", [*TRAIN, "--mixup", "1e-50"], "--mixup must be >= 1e-06"),
    ("mixup-1e39", [*TRAIN, "--mixup", "1e39"], "--mixup must be <= 1000"),
    ("threads-100000", [*TRAIN, "--threads", "100000"], "--threads must be <= 1024"),
    ("grad-accum-100", [*TRAIN, "--grad-accum-steps", "100"], "--grad-accum-steps 100 must be"),
    ("grad-accum-3", [*TRAIN, "--grad-accum-steps", "3"], "the batches of an epoch, 2"),
    ("min-lr-10", [*TRAIN, "--min-lr", "10", "--lr", "0.01"], "--min-lr 10 must be <="),
    ("ema-decay-alone", [*TRAIN, "--model-ema-decay", "0.99"], "--model-ema-decay applies"),
    ("momentum-100", [*TRAIN, "--momentum", "100"], "--momentum must be below 1"),
    ("momentum-1", [*TRAIN, "--momentum", "1"], "allowed [0, 1)"),
    ("smoothing-1", [*TRAIN, "--smoothing", "1"], "smoothing must be below 1"),
    ("recipe-empty", [*TRAIN, "--recipe", ""], "--recipe must be one of"),
    ("recipe-unknown", [*TRAIN, "--recipe", "fast"], "--recipe must be one of"),
    ("resume-run-dir", ["train", "--resume", "{old}", "--run-dir", "{run}"], "--run-dir cannot"),
    ("resume-overwrite", ["train", "--resume", "{old}", "--overwrite"], "--overwrite cannot"),
    ("export-batch", ["export", "-a", "resnet20", "-b", "100000000"], "--batch-size must be <="),
    ("export-tol-nan", ["export", "-a", "resnet20", "--tolerance", "nan"], "--tolerance must"),
    ("export-tol-inf", ["export", "-a", "resnet20", "--tolerance", "inf"], "--tolerance must"),
    ("export-tol-0", ["export", "-a", "resnet20", "--tolerance", "0"], "--tolerance must be > 0"),
    ("export-size", ["export", "-a", "afi_resnet50", "--input-size", "16"], "total stride"),
    ("bench-size", ["bench", "-a", "afi_resnet50", "-b", "1", "--input-size", "8"], "stride"),
    ("bench-batch", ["bench", "-a", "afi_resnet20", "-b", "100000"], "--batch-size must be"),
    ("bench-threads", ["bench", "-a", "afi_resnet20", "--threads", "5000"], "--threads must"),
    (
        "transfer-same",
        ["transfer", "-c", "none.pt", "--data-root", "{run}", "--source", "Ar", "--target", "Ar"],
        "same domain",
    ),
    (
        "transfer-alias",
        ["transfer", "-c", "none.pt", "--data-root", "{run}", "--source", "Ar", "--target", "Art"],
        "same domain",
    ),
]


@pytest.mark.parametrize("argv, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_nonsense_option_is_one_line_exit_2(capsys, tmp_path, monkeypatch, argv, expected):
    monkeypatch.chdir(tmp_path)  # a default run folder would appear here as runs/
    run_dir, old = tmp_path / "run", tmp_path / "old"
    argv = [a.format(run=run_dir, old=old) for a in argv]
    if argv[0] == "train" and "--resume" not in argv:
        argv += ["--run-dir", str(run_dir), "--epochs", "1"]
    line = one_line_exit_2(*run(capsys, *argv)[::2])
    assert expected in line, line
    assert not run_dir.exists() and not (tmp_path / "runs").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing half made


def test_same_domain_by_folder(tmp_path):
    """Two spellings of one folder are one domain, also where the CLI cannot tell by name."""
    (tmp_path / "Art" / "chair").mkdir(parents=True)
    with pytest.raises(UserError, match="same domain"):
        check_pair(tmp_path, "Ar", "Art")
    with pytest.raises(UserError, match="same domain"):
        check_pair(tmp_path, "Art", "Art")


def _resolve(**options) -> object:
    return resolve_config({"arch": "resnet20", "dataset": "shapes", "data_size": 64} | options)


def test_relations_at_their_edges():
    """min-lr up to the lr and accumulation up to the epoch's batches are accepted; beyond not."""
    assert _resolve(lr=0.01, min_lr=0.01, sched="cosine").min_lr == 0.01
    with pytest.raises(UserError, match="--min-lr 0.02 must be <= the learning rate 0.01"):
        _resolve(lr=0.01, min_lr=0.02)
    assert _resolve(batch_size=16, grad_accum_steps=4).grad_accum_steps == 4
    with pytest.raises(UserError, match="must be <= the batches of an epoch, 4"):
        _resolve(batch_size=16, grad_accum_steps=5)
    assert _resolve(batch_size=100, grad_accum_steps=1).batch_size == 100  # one short batch
    with pytest.raises(UserError, match="scaled|must be <= 1000"):
        _resolve(lr=500.0, lr_reference_batch=8, batch_size=32)
    # a previous run's full config (EMA decay recorded without EMA) still resolves
    cfg = _resolve(model_ema_decay=0.99)
    assert not cfg.model_ema and resolve_config(cfg.to_dict()).to_dict() == cfg.to_dict()


def test_declared_bounds_match_the_code():
    """The constants the checks use are those of the code they protect."""
    assert set(RECIPE_NAMES) == set(RECIPES)
    assert MIX_ALPHA_RANGE[0] >= FLOAT32_TINY and float(torch.tensor(MIX_ALPHA_RANGE[0])) > 0
    # the largest seed's derived seeds (per epoch, per DDP rank) stay within torch's range
    torch.Generator().manual_seed(SEED_MAX * 100_003 + 10**9)
    torch.Generator().manual_seed(SEED_MAX + 1000 * 1024 + 10**9)
    torch.set_num_threads(torch.get_num_threads())
    assert THREADS_MAX == NUMERIC_BOUNDS["threads"].hi
    assert LR_MAX == NUMERIC_BOUNDS["lr"].hi
    beta = torch.distributions.Beta(torch.tensor(MIX_ALPHA_RANGE[0]), torch.tensor(1e-6))
    assert math.isfinite(float(beta.sample()))
    with pytest.raises(UserError, match="needs at least 32 pixels"):
        check_model_input_size("resnet50", 31)
    check_model_input_size("resnet50", 32)


def _inside(bound: Bound) -> st.SearchStrategy:
    """Values across the whole range (both ends included where they are)."""
    if bound.integer:
        return st.integers(int(bound.lo), int(bound.hi) if bound.hi is not None else 2**62)
    inside = st.floats(
        bound.lo,
        bound.hi if bound.hi is not None else 1e300,
        exclude_min=bound.lo_open,
        exclude_max=bound.hi_open,
        allow_nan=False,
    )
    return inside | st.just(bound.off) if bound.off is not None else inside


def _outside(bound: Bound) -> list:
    """The values just outside each end (and the gap between ``off`` and the range)."""
    if bound.integer:
        out = [int(bound.lo) - 1] + ([int(bound.hi) + 1] if bound.hi is not None else [])
        return out
    below = bound.lo if bound.lo_open else math.nextafter(bound.lo, -math.inf)
    out = [below, -1e300, math.nan, math.inf, -math.inf]
    if bound.off is not None:  # 0 is off; between 0 and the floor is refused
        out = [math.nextafter(bound.lo, -math.inf), FLOAT32_TINY, -FLOAT32_TINY, *out[2:]]
    if bound.hi is not None:
        out.append(bound.hi if bound.hi_open else math.nextafter(bound.hi, math.inf))
    return out


NUMERIC = sorted(NUMERIC_BOUNDS)


@pytest.mark.parametrize("name", NUMERIC)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_whole_range_accepted_edges_refused(name, data):
    bound = NUMERIC_BOUNDS[name]
    value = data.draw(_inside(bound), label="inside")
    assert check_option(name, value) == value
    bad = data.draw(st.sampled_from(_outside(bound)), label="outside")
    with pytest.raises(UserError) as exc:
        check_option(name, bad)
    message = str(exc.value)
    flag = f"--{name.replace('_', '-')}"
    assert message.startswith(f"{flag} must be ") and len(message.splitlines()) == 1, message
    if bound.hi is not None and isinstance(bad, int | float) and math.isfinite(bad):
        assert f"allowed {bound.text()}" in message, message


@settings(max_examples=50, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_export_tolerance_finite_and_positive(value):
    ok = math.isfinite(value) and value > 0
    if ok:
        assert check_value("--tolerance", EXPORT_TOLERANCE, value) == value
    else:
        with pytest.raises(UserError, match="^--tolerance must be"):
            check_value("--tolerance", EXPORT_TOLERANCE, value)


def test_bounds_state_their_range():
    """Each message names the range; the one of an alpha says 0 is off."""
    assert NUMERIC_BOUNDS["momentum"].text() == "[0, 1)"
    assert NUMERIC_BOUNDS["mixup"].text() == "0 (off) or [1e-06, 1000]"
    assert NUMERIC_BOUNDS["seed"].text() == "[0, 4294967295]"
    assert Path(__file__).name == "test_option_bounds.py"
