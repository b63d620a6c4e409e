"""Every bad input is one line on stderr and exit code 2, never a traceback (issue 13).

Each CLI case below was a traceback or a silent acceptance before; the property-based tests feed
random values of the right and wrong types to the config loader and the option parsers. Last,
what the selectivity probes carry: post-ReLU everywhere but DenseNet, whose values are kept.
"""

from __future__ import annotations

import errno
import json
import math
import struct
import zlib
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from cli import one_line_exit_2, run
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import afictl.train
from afictl.analysis.selectivity import class_means, run_selectivity, selectivity_index
from afictl.checkpoint import save_checkpoint
from afictl.cli.app import main
from afictl.errors import UnknownModelError, UserError
from afictl.models import create_model, get_model_info
from afictl.train import TrainConfig, resolve_config
from afictl.train.config import parse_milestones
from afictl.validate import OPTION_CHECKS, check_option

SHAPES = ["--data", "shapes", "--data-size", "16"]


def _bomb(path: Path, side: int = 30000) -> Path:
    """A tiny PNG whose header claims side x side pixels.

    PIL refuses it as a decompression bomb.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )
    return path


def _checkpoint(path: Path, arch: str) -> Path:
    """An untrained model saved the way `afictl train` saves it, on generated shapes."""
    torch.manual_seed(0)
    model = create_model(arch, num_classes=8)
    config = {
        "arch": arch,
        "dataset": "shapes",
        "data_root": None,
        "input_size": 32,
        "eval_split": "eval",
        "data_size": 32,
        "seed": 0,
        "num_classes": 8,
    }
    return save_checkpoint(
        path,
        {
            "arch": arch,
            "num_classes": 8,
            "model_kwargs": {},
            "model": model.state_dict(),
            "epoch": 1,
            "config": config,
        },
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    (root / "ten.toml").write_text('epochs = "ten"\n')
    (root / "list.json").write_text(json.dumps({"batch_size": [64]}))
    (root / "memory.json").write_text(json.dumps([{"model": "resnet50", "train": 1}]))
    (root / "transfer.json").write_text(
        json.dumps({"arch": "afi_resnet50", "pair": "Ar:Cl", "top1": "high"})
    )
    (root / "runs").mkdir()
    return {
        "root": root,
        "ckpt": _checkpoint(root / "afi.pt", "afi_resnet20"),
        "bomb": _bomb(root / "bomb.png"),
    }


#: (id, argv with {root}/{ckpt}/{bomb} filled in, a piece of the expected message)
CASES = [
    (
        "train-reduction-0",
        ["train", "-a", "afi_resnet20", *SHAPES, "--reduction", "0"],
        "--reduction must be > 0",
    ),
    (
        "train-reduction-neg",
        ["train", "-a", "afi_resnet20", *SHAPES, "--reduction", "-4"],
        "--reduction must be > 0",
    ),
    (
        "train-afi-stages-9",
        ["train", "-a", "afi_resnet20", *SHAPES, "--afi-stages", "9"],
        "has stages 1..3",
    ),
    ("train-afi-stages-0", ["train", "-a", "afi_resnet20", *SHAPES, "--afi-stages", "0"], "from 1"),
    (
        "train-afi-stages-text",
        ["train", "-a", "afi_resnet20", *SHAPES, "--afi-stages", "1,x"],
        "stage numbers",
    ),
    (
        "train-config-epochs-ten",
        ["train", "-a", "afi_resnet20", *SHAPES, "--config", "{root}/ten.toml"],
        "epochs must be an integer, got 'ten'",
    ),
    (
        "train-config-batch-list",
        ["train", "-a", "afi_resnet20", *SHAPES, "--config", "{root}/list.json"],
        "batch_size must be an integer",
    ),
    (
        "train-lr-nan",
        ["train", "-a", "afi_resnet20", *SHAPES, "--lr", "nan"],
        "--lr must be a finite number",
    ),
    (
        "train-lr-inf",
        ["train", "-a", "afi_resnet20", *SHAPES, "--lr", "inf"],
        "--lr must be a finite number",
    ),
    (
        "train-momentum-nan",
        ["train", "-a", "afi_resnet20", *SHAPES, "--momentum", "nan"],
        "--momentum",
    ),
    (
        "train-input-size-0",
        ["train", "-a", "afi_resnet20", *SHAPES, "--input-size", "0"],
        "--input-size must be >= 8",
    ),
    (
        "train-input-size-misfit",
        ["train", "-a", "afi_resnet50", *SHAPES, "--input-size", "100"],
        "afi_resnet50 cannot take 100-pixel inputs",
    ),
    (
        "train-seed-neg",
        ["train", "-a", "afi_resnet20", *SHAPES, "--seed", "-1"],
        "--seed must be >= 0",
    ),
    (
        "train-milestone-nan",
        ["train", "-a", "afi_resnet20", *SHAPES, "--lr-milestones", "nan"],
        "bad lr milestone",
    ),
    (
        "train-label-smoothing-2",
        ["train", "-a", "afi_resnet20", *SHAPES, "--label-smoothing", "2"],
        "below 1",
    ),
    (
        "train-device-cuda-x",
        ["train", "-a", "afi_resnet20", *SHAPES, "--device", "cuda:x"],
        "--device",
    ),
    (
        "train-data-root-no-user",
        ["train", "-a", "afi_resnet20", "--data", "cifar10", "--data-root", "~no_such_user_x/d"],
        "no known user",
    ),
    (
        "train-resume-workers",
        ["train", "--resume", "{ckpt}", "--workers", "-2"],
        "--workers must be >= 0",
    ),
    (
        "eval-batch-size-0",
        ["eval", "-c", "{ckpt}", "--batch-size", "0"],
        "--batch-size must be > 0",
    ),
    (
        "eval-batch-size-neg",
        ["eval", "-c", "{ckpt}", "--batch-size", "-3"],
        "--batch-size must be > 0",
    ),
    ("eval-workers-neg", ["eval", "-c", "{ckpt}", "--workers", "-2"], "--workers must be >= 0"),
    (
        "eval-amp-fp8",
        ["eval", "-c", "{ckpt}", "--amp", "fp8"],
        "--amp must be one of none, bf16, fp16",
    ),
    (
        "eval-bad-images-ignore",
        ["eval", "-c", "{ckpt}", "--bad-images", "ignore"],
        "--bad-images must be one of",
    ),
    (
        "eval-split",
        ["eval", "-c", "{ckpt}", "--split", "test"],
        "--split must be one of eval, train",
    ),
    ("eval-data-size-0", ["eval", "-c", "{ckpt}", "--data-size", "0"], "--data-size must be > 0"),
    (
        "eval-data-root-no-user",
        ["eval", "-c", "{ckpt}", "--data", "cifar10", "--data-root", "~no_such_user_x"],
        "no known user",
    ),
    (
        "flops-afi-stages-text",
        ["flops", "-a", "afi_resnet20", "--afi-stages", "x"],
        "stage numbers",
    ),
    ("flops-afi-stages-4", ["flops", "-a", "afi_resnet20", "--afi-stages", "4"], "has stages 1..3"),
    (
        "gradcam-bomb",
        ["gradcam", "{bomb}", "-c", "{ckpt}", "--figure", "{root}/g.png"],
        "decompression bomb",
    ),
    (
        "features-bomb",
        ["features", "{bomb}", "-c", "{ckpt}", "--figure", "{root}/f.png"],
        "decompression bomb",
    ),
    (
        "report-memory-shape",
        ["report", "--runs", "{root}/runs", "--memory", "{root}/memory.json", "-o", "{root}/rep"],
        "row 1 has no 'arch'",
    ),
    (
        "report-transfer-shape",
        [
            "report",
            "--runs",
            "{root}/runs",
            "--transfer",
            "{root}/transfer.json",
            "-o",
            "{root}/rep",
        ],
        "top1 = 'high'",
    ),
    (
        "report-runs-missing",
        ["report", "--runs", "{root}/no-runs", "-o", "{root}/rep"],
        "no such folder",
    ),
    (
        "models-no-match",
        ["models", "resnet2*x"],
        "no registered model matches 'resnet2*x'; closest names: ",
    ),
    ("models-no-match-far", ["models", "zzz*"], "no registered model matches 'zzz*'"),
]


@pytest.mark.parametrize("argv,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2(files, capsys, tmp_path, argv, expected):
    args = [a.format(**files) for a in argv]
    if args[0] == "train" and "--resume" not in args:
        args += ["--run-dir", tmp_path / "run"]
    line = one_line_exit_2(*run(capsys, *args)[::2])
    assert expected in line, line
    assert not (tmp_path / "run").exists()  # refused before a run folder is made
    assert not (files["root"] / "rep").exists()  # nor a report folder


@pytest.mark.parametrize(
    "exc",
    [
        PermissionError(errno.EACCES, "Permission denied", "/read-only/out.csv"),
        OSError(errno.ENOSPC, "No space left on device", "/full/out.csv"),
        "bomb",
        "unidentified",
    ],
    ids=["permission", "disk-full", "decompression-bomb", "unidentified-image"],
)
def test_error_boundary_covers_os_and_pil_errors(monkeypatch, capsys, exc):
    """An OSError or PIL's refusal from anywhere inside a command is one line, not a traceback."""
    from PIL import Image

    if exc == "bomb":
        exc = Image.DecompressionBombError("Image size (900000000 pixels) exceeds limit")
    elif exc == "unidentified":
        exc = Image.UnidentifiedImageError("cannot identify image file 'x.jpg'")

    def fail(*_a, **_k):
        raise exc

    monkeypatch.setattr("afictl.models.catalog.catalog", fail)  # imported on use
    line = one_line_exit_2(*run(capsys, "models")[::2])
    assert str(exc).splitlines()[0] in line


def test_valid_values_still_pass():
    cfg = resolve_config(
        {
            "arch": "afi_resnet20",
            "dataset": "shapes",
            "afi_stages": "1,3",
            "reduction": 2,
            "amp": "BF16",
            "input_size": 8,
            "lr": 1,
            "lr_milestones": "50%,3",
        }
    )
    kw = cfg.model_kwargs
    assert (kw["afi_stages"], kw["reduction"], cfg.amp, cfg.input_size, cfg.lr) == (
        [1, 3],
        2,
        "bf16",
        8,
        1.0,
    )
    # a previous run's config.json, nulls included, loads again
    assert resolve_config(cfg.to_dict()).to_dict() == cfg.to_dict()


# --- property-based: the config loader and the option parsers -----------------------------------

_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8
)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.integers(-3, 300)
    | st.floats()
    | st.floats(0, 2)
    | _TEXT
)
_PLAUSIBLE = st.sampled_from(
    [
        "none",
        "bf16",
        "fp16",
        "FP8",
        "skip",
        "stop",
        "ignore",
        "cpu",
        "cuda",
        "cuda:1",
        "cuda:x",
        "auto",
        "1,2",
        "1, 9",
        "50%",
        "30,60",
        "nan",
        "inf",
        "-1",
        "0",
        "step",
        "inv",
        "eval",
        "train",
        "~",
        "~no_such_user_x",
        "paper-cifar",
        "quick",
        "shapes",
        "cifar10",
        "imagenet",
        "resnet20",
        "afi_resnet20",
    ]
)
_VALUES = st.recursive(
    _SCALARS | _PLAUSIBLE,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=2),
    max_leaves=6,
)
_FIELDS = [f.name for f in fields(TrainConfig)]
_ARCHS = st.sampled_from(
    ["resnet20", "afi_resnet20", "afi_resnet50", "densenet40", "afi_mobilenetv2", "nope"]
)
_PATHS = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=8)
#: values each option accepts, so that a good share of the random configurations is valid
_GOOD = (
    {
        k: st.integers(1, 500)
        for k in ("epochs", "batch_size", "data_size", "lr_reference_batch", "threads", "reduction")
    }
    | {
        k: st.floats(0, 1)
        for k in (
            "warmup_epochs",
            "momentum",
            "weight_decay",
            "backbone_lr_mult",
            "label_smoothing",
        )
    }
    | {
        k: st.booleans()
        for k in (
            "download",
            "nesterov",
            "deterministic",
            "channels_last",
            "compile",
            "sync_bn",
            "tensorboard",
        )
    }
    | {k: _PATHS for k in ("data_root", "pretrained", "run_dir")}
    | {
        "workers": st.integers(0, 4),
        "seed": st.integers(0, 2**32),
        "input_size": st.integers(8, 256),
        "lr": st.floats(1e-4, 10),
        "lr_gamma": st.floats(1e-3, 1),
        "amp": st.sampled_from(["none", "bf16", "fp16"]),
        "bad_images": st.sampled_from(["skip", "stop"]),
        "lr_schedule": st.sampled_from(["step", "inv"]),
        "device": st.sampled_from(["cpu", "auto", "cuda", "cuda:0"]),
        "eval_split": st.just("eval"),
        "afi_stages": st.lists(st.integers(1, 3), max_size=3) | st.just("1,2"),
        "lr_milestones": st.lists(st.floats(0, 300) | st.just("50%"), max_size=3)
        | st.just("30,60"),
        "dataset": st.sampled_from(
            ["shapes", "cifar10", "cifar100", "imagenet", "imagefolder", "synthetic"]
        ),
        "recipe": st.sampled_from(["paper-cifar", "paper-imagenet", "office-home", "quick"]),
        "arch": _ARCHS,
    }
)


def _mostly_good(key: str):
    good = _GOOD.get(key, _VALUES)
    return st.one_of(good, good, good, _VALUES | _PLAUSIBLE)


_OPTIONS = st.lists(st.sampled_from(_FIELDS), unique=True, max_size=6).flatmap(
    lambda keys: st.fixed_dictionaries({k: _mostly_good(k) for k in keys})
)
_PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _assert_valid(cfg: TrainConfig) -> None:
    """A config that resolved holds only values every option check accepts, unchanged."""
    assert isinstance(cfg, TrainConfig)
    for name in OPTION_CHECKS:
        if hasattr(cfg, name):
            assert check_option(name, getattr(cfg, name)) == getattr(cfg, name), name
    assert all(math.isfinite(m) and m >= 0 for m in cfg.milestone_epochs())
    assert cfg.lr_effective > 0 and math.isfinite(cfg.lr_effective)


def _resolve(options: dict, config_file: Path | None = None) -> None:
    try:
        cfg = resolve_config(options, config_file)
    except (UserError, UnknownModelError):  # an unknown --arch: the CLI's one-line error too
        event("refused")
        return
    event("valid config")
    _assert_valid(cfg)


@_PROPERTY
@given(name=st.sampled_from(sorted(OPTION_CHECKS)), value=_VALUES)
def test_option_checks_accept_or_refuse(name, value):
    try:
        checked = check_option(name, value)
    except UserError as exc:
        assert "\n" not in str(exc)
        return
    assert check_option(name, checked) == checked  # normalised values are fixed points


@_PROPERTY
@given(items=_VALUES, epochs=st.integers(1, 400))
def test_milestone_and_stage_parsers(items, epochs):
    try:
        out = parse_milestones(
            items if isinstance(items, list | str) or items is None else [items], epochs
        )
        assert all(isinstance(m, float) and math.isfinite(m) and m >= 0 for m in out)
    except UserError:
        pass
    try:
        check_option("lr_milestones", items)
    except UserError:
        pass
    try:
        stages = check_option("afi_stages", items)
        assert stages is None or (
            stages == sorted(set(stages)) and all(type(s) is int and s >= 1 for s in stages)
        )
    except UserError:
        pass


@_PROPERTY
@given(arch=_ARCHS, options=_OPTIONS)  # a bad arch comes from options
def test_resolve_config_from_options(arch, options):
    _resolve({"arch": arch, **options})


@_PROPERTY
@given(
    data=_OPTIONS | st.dictionaries(_TEXT, _VALUES, max_size=3),
    raw=st.none() | st.none() | st.binary(max_size=40),
    suffix=st.sampled_from([".json", ".toml"]),
)
def test_resolve_config_from_files(tmp_path_factory, data, raw, suffix):
    path = tmp_path_factory.mktemp("cfg") / f"c{suffix}"
    if raw is not None:  # anything at all in the file
        path.write_bytes(raw)
    elif suffix == ".json":
        path.write_text(json.dumps(data))
    else:  # TOML of the scalar and list values (what tomllib reads back)
        lines = [f"{json.dumps(k)} = {_toml(v)}" for k, v in data.items() if _toml(v) is not None]
        path.write_text("\n".join(lines) + "\n")
    _resolve({"arch": "afi_resnet20", "dataset": "shapes"}, path)


def _toml(value) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {math.inf: "inf", -math.inf: "-inf"}.get(
            value, "nan" if value != value else repr(value)
        )
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        items = [_toml(v) for v in value]
        return None if None in items else f"[{', '.join(items)}]"
    return None


class _Trained(Exception):
    """Raised by the stand-in for training: the command line resolved a configuration."""


_TRAIN_OPTIONS = [
    "--epochs",
    "--batch-size",
    "--lr",
    "--lr-milestones",
    "--lr-gamma",
    "--lr-reference-batch",
    "--warmup-epochs",
    "--momentum",
    "--weight-decay",
    "--label-smoothing",
    "--afi-stages",
    "--reduction",
    "--seed",
    "--device",
    "--amp",
    "--threads",
    "--workers",
    "--input-size",
    "--data-size",
    "--bad-images",
    "--recipe",
    "--data",
    "--data-root",
]
_ARG = (
    st.integers(-(2**66), 2**66).map(str)
    | st.floats().map(str)
    | _PLAUSIBLE
    | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=6)
)


@_PROPERTY
@given(args=st.lists(st.tuples(st.sampled_from(_TRAIN_OPTIONS), _ARG), max_size=4))
def test_train_command_line_is_a_config_or_one_line(monkeypatch, capsys, tmp_path, args):
    def trained(cfg, **_kw):
        try:
            _assert_valid(cfg)
        except UserError as exc:  # not through the CLI's error boundary: that would pass as exit 2
            raise AssertionError(f"resolved an invalid configuration: {exc}") from None
        raise _Trained

    monkeypatch.setattr(afictl.train, "train", trained)
    argv = [
        "train",
        "-a",
        "afi_resnet20",
        "--run-dir",
        str(tmp_path / "run"),
        *(f"{o}={v}" for o, v in args),
    ]
    try:
        main(argv)
    except _Trained:
        event("valid config")
        capsys.readouterr()
        return
    except SystemExit as exc:
        event("refused")
        one_line_exit_2(exc.code, capsys.readouterr().err)
        return
    pytest.fail(f"afictl {' '.join(argv)} neither trained nor failed")


# --- selectivity: what each family's probe carries -------------------------------------------

#: one model of each family (the AFI one where there is one; DenseNet has no AFI variant)
FAMILIES = [
    "resnet20",
    "afi_resnet20",
    "afi_resnext29_32x4d",
    "mobilenetv2",
    "afi_mobilenetv2",
    "shufflenetv2",
    "afi_shufflenetv2",
    "densenet40",
]


def _probe_values(arch: str) -> torch.Tensor:
    torch.manual_seed(0)
    model = create_model(arch, num_classes=8).eval()
    size = min(get_model_info(arch).input_size, 64)
    seen: list[torch.Tensor] = []
    hooks = [
        p.register_forward_hook(lambda _m, _i, out: seen.append(out.detach().flatten()))
        for stage in model.stage_names
        for p in model.probes(stage)
    ]
    with torch.no_grad():
        model(torch.randn(2, 3, size, size))
    for h in hooks:
        h.remove()
    return torch.cat(seen)


@pytest.mark.parametrize("arch", FAMILIES)
def test_probes_are_post_relu_except_densenet(arch):
    """docs/ANALYSES.md's table: every probe is post-ReLU but DenseNet's raw convolution output."""
    negative = (_probe_values(arch) < 0).float().mean().item()
    if get_model_info(arch).family == "densenet":
        assert negative > 0.3  # about half: 54 % for an untrained densenet40
    else:
        assert negative == 0.0


def test_selectivity_keeps_densenet_negative_values(tmp_path):
    """The class means of densenet40's probes keep their sign; indices stay in [0, 1]."""
    ckpt = _checkpoint(tmp_path / "densenet40.pt", "densenet40")
    (result,) = run_selectivity([ckpt], "conv3", batch_size=32, max_batches=1)
    channels = result.channels
    assert (channels["mu_rest"] < 0).any() and (
        channels["mu_max"] < 0
    ).any()  # clamped: never below 0
    live = channels[~channels["dead"]]
    assert len(live) == len(channels)  # a raw probe has no all-zero ("dead") channel
    assert live["index"].between(0, 1).all() and not channels["index"].isna().any()
    # the same means through class_means: some are negative
    model = create_model("densenet40", num_classes=2).eval()
    x, y = torch.randn(8, 3, 32, 32), torch.tensor([0, 1] * 4)
    cm = class_means(model, model.probes("conv1"), [(x, y)], num_classes=2)
    assert min(float(m.min()) for m in cm.means) < 0


def test_selectivity_index_of_signed_means():
    """|mu_max| + |mu_rest| below.

    Morcos et al.'s index for non-negative means, in [0, 1] otherwise.
    """
    means = np.array([[2.0, -1.0, -0.5, 3.0], [1.0, -3.0, -0.5, 1.0], [0.0, -2.0, -0.5, 1.0]])
    index, dead = selectivity_index(means)
    # channel 0: mu_max 2, mu_rest 0.5 -> 1.5 / 2.5; channel 1: mu_max -1, mu_rest -2.5 -> 1.5 / 3.5
    np.testing.assert_allclose(index, [1.5 / 2.5, 1.5 / 3.5, 0.0, 2.0 / 4.0])
    assert not dead.any() and ((index >= 0) & (index <= 1)).all()
