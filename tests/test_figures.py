"""The analyses' figures as a paper needs them (issue 14): axes fitted to the data, legends
with channel counts, colorbars, legible text, probabilities never rounded to 100 %; and the
analysis commands' conventions (--output results, --figure / --out-dir pictures, progress on
stderr, a light --help)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from cli import run
from matplotlib import pyplot as plt
from test_analyses import ckpts, images  # noqa: F401 - fixtures: tiny trained checkpoints

from afictl.analysis import cam_methods
from afictl.analysis.features import AFIFeatures
from afictl.analysis.gradcam import CamResult, GradCamReport
from afictl.analysis.labels import percent
from afictl.analysis.plots import (
    features_plot,
    gradcam_plot,
    selectivity_plot,
    selectivity_range,
)
from afictl.analysis.runs import free_path

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# --- numbers in figures ------------------------------------------------------------------------


def test_percent_never_shows_an_extreme_it_is_not():
    assert percent(0.9994) == "99.9%"
    assert percent(0.99996) == "99.996%"  # "100.0%" would be false
    assert percent(0.9995) == "99.95%"
    assert percent(1.0) == "100%" and percent(0.0) == "0%"
    assert percent(0.5) == "50.0%" and percent(0.123456) == "12.3%"
    assert percent(0.00004) == "0.004%"
    assert percent(0.184, digits=0) == "18%"
    for k in range(1, 7):
        assert not percent(1 - 10.0**-k).startswith("100"), k
        assert float(percent(10.0**-k).rstrip("%")) > 0, k


def test_free_path_numbers_from_two(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert free_path("gradcam.png") == Path("gradcam.png")
    Path("gradcam.png").write_bytes(b"x")
    assert free_path("gradcam.png") == Path("gradcam-2.png")  # as the README promises
    Path("gradcam-2.png").write_bytes(b"x")
    assert free_path("gradcam.png") == Path("gradcam-3.png")


# --- Figure 6: selectivity ---------------------------------------------------------------------


def _channels(rng: np.random.Generator) -> pd.DataFrame:
    """Two models, three blocks, indices between 0.06 and 0.31 (as trained CIFAR models give)."""
    rows = []
    for ckpt, arch, width in (("a/best.pt", "resnet20", 64), ("b/best.pt", "afi_resnet20", 32)):
        for block in (1, 2, 3):
            values = rng.uniform(0.06, 0.31, width)
            for c, v in enumerate(values):
                dead = ckpt == "a/best.pt" and block == 1 and c < 4
                rows.append(
                    {
                        "checkpoint": ckpt,
                        "arch": arch,
                        "stage": "conv3",
                        "block": block,
                        "channel": c,
                        "index": 0.0 if dead else float(v),
                        "dead": dead,
                    }
                )
    return pd.DataFrame(rows)


def test_selectivity_range():
    assert selectivity_range(np.array([0.12, 0.34])) == pytest.approx((0.1, 0.35))
    assert selectivity_range(np.array([0.1, 0.3])) == pytest.approx((0.1, 0.3))
    assert selectivity_range(np.array([0.2, 0.2])) == pytest.approx((0.2, 0.25))
    assert selectivity_range(np.array([1.0])) == pytest.approx((0.95, 1.0))
    assert selectivity_range(np.array([0.0, 1.0])) == (0.0, 1.0)
    assert selectivity_range(np.array([])) == (0.0, 1.0)


def test_selectivity_hist_axes_follow_the_data_and_legend_counts_channels():
    channels = _channels(np.random.default_rng(0))
    fig = selectivity_plot(channels, kind="hist")
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == 3
    live = channels.loc[~channels["dead"], "index"]
    for ax in panels:
        lo, hi = ax.get_xlim()
        assert lo <= live.min() and hi >= live.max()  # every channel is on the axis
        assert hi - lo < 0.35  # fitted: not the fixed 0..1 of old
        assert ax.get_ylim() == panels[0].get_ylim()  # one scale across panels
        # the bars span the axis: more than 3 bins carry channels
        heights = [p.get_height() for p in ax.patches if hasattr(p, "get_height")]
        assert ax.patches and (len(heights) == 0 or sum(h > 0 for h in heights) > 3)
    labels = [t.get_text() for t in panels[0].get_legend().get_texts()]
    assert labels[0].startswith("resnet20 (n=60, 4 dead): ")
    assert labels[1].startswith("afi_resnet20 (n=32): ")
    mean = live[(channels["checkpoint"] == "b/best.pt") & (channels["block"] == 1)].mean()
    assert labels[1].endswith(f"{mean:.3f}")


def test_selectivity_violin_medians_distinct_and_labelled():
    fig = selectivity_plot(_channels(np.random.default_rng(1)), kind="violin")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["resnet20", "afi_resnet20"]
    (medians,) = [c for c in ax.collections if c.get_gid() == "medians"]
    assert len(medians.get_segments()) == 2
    colors = medians.get_colors()
    assert len({tuple(np.round(c, 3)) for c in colors}) == 2  # one colour per model
    lo, hi = ax.get_ylim()
    assert lo >= 0.0 and hi < 0.7  # fitted to the data, headroom for the legend
    assert all(a.get_ylim() == ax.get_ylim() for a in fig.axes if a.get_visible())


# --- Figure 3: Grad-CAM ------------------------------------------------------------------------


def _cam_report() -> GradCamReport:
    rng = np.random.default_rng(0)
    results = []
    for ckpt, arch, p in (("a.pt", "resnet20", 0.9994), ("b.pt", "afi_resnet20", 0.99996)):
        results.append(
            CamResult(
                image="img.png",
                checkpoint=ckpt,
                arch=arch,
                predicted_index=1,
                predicted_class="ring",
                probability=p,
                target_index=1,
                target_class="ring",
                target_probability=p,
                attention_area=0.25,
                layer="layer3",
                method="gradcam",
                heatmap=rng.random((32, 32), dtype=np.float32),
                view=rng.random((32, 32, 3), dtype=np.float32),  # the model's input
            )
        )
    originals = {"img.png": rng.random((48, 64, 3), dtype=np.float32)}
    return GradCamReport(results, ["img.png"], originals, ["a.pt", "b.pt"], [])


def test_gradcam_figure_has_a_colorbar_and_unrounded_probabilities():
    fig = gradcam_plot(_cam_report())
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1
    assert bars[0].get_ylim() == (0.0, 1.0) and "Grad-CAM" in bars[0].get_ylabel()
    titles = [ax.get_title() for ax in fig.axes]
    assert "resnet20\nring 99.9%\narea 25%" in titles
    assert "afi_resnet20\nring 99.996%\narea 25%" in titles  # not "100%"


# --- Figure 2: features ------------------------------------------------------------------------


def _features() -> AFIFeatures:
    rng = np.random.default_rng(0)
    n, c = 2, 12
    attention = rng.dirichlet(np.ones(n), size=c).T  # (n, C), columns sum to 1
    inputs = [rng.random((c, 8, 8)) for _ in range(n)]
    output = sum(attention[j][:, None, None] * inputs[j] for j in range(n))
    return AFIFeatures(
        "m.pt",
        "afi_resnet20",
        "conv3",
        3,
        "layer3.2.join.afi",
        image="img.png",
        view=rng.random((64, 80, 3)),
        inputs=inputs,
        output=output,
        attention=attention,
        stage_alpha={3: attention.mean(axis=1)},
    )


@pytest.mark.slow  # the figure's layout (constrained, with window extents): seconds
def test_features_figure_legible_with_colour_scales_and_large_thumbnail():
    fig = features_plot(_features(), channels=8)
    fig.canvas.draw()
    texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_text() and t.get_visible()]
    small = sorted({(t.get_text(), t.get_fontsize()) for t in texts if t.get_fontsize() < 8})
    assert not small, small  # every label >= 8 pt at the written size
    assert any(t.get_text().startswith("α=") for t in texts)
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 3  # the tiles, S~, the stage's alphas
    tiles = [ax for ax in fig.axes if ax.get_title().startswith("α=")]
    assert len(tiles) == 16  # 2 inputs x 8 channels
    thumb = next(ax for ax in fig.axes if ax.get_title().startswith("img.png\nmodel input"))
    renderer = fig.canvas.get_renderer()
    assert thumb.get_window_extent(renderer).width > 2 * tiles[0].get_window_extent(renderer).width


# --- the commands' conventions -----------------------------------------------------------------


def test_method_names_come_from_the_light_registry():
    from afictl.analysis import gradcam

    assert cam_methods.METHOD_NAMES == tuple(gradcam.METHODS)
    assert gradcam.METHODS is cam_methods.METHODS and gradcam.resolve_method is (
        cam_methods.resolve_method
    )


def test_help_imports_nothing_heavy():
    """``--help`` of the analysis commands imports neither torch nor matplotlib (nor pandas,
    where afictl.render is light), and lists the CAM methods and the options' short names."""
    code = """
import contextlib, io, sys
light_render = (__import__("afictl.render"), "pandas" not in sys.modules)[1]
from afictl.cli.app import main
out = {}
for cmd in ("gradcam", "selectivity", "features"):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            main([cmd, "--help"])
        except SystemExit:
            pass
    out[cmd] = buf.getvalue()
heavy = [m for m in ("torch", "torchvision", "matplotlib", "pytorch_grad_cam") if m in sys.modules]
if light_render and "pandas" in sys.modules:
    heavy.append("pandas")
print(json.dumps({"heavy": heavy, "help": out}))
"""
    proc = subprocess.run(
        [sys.executable, "-c", "import json\n" + code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["heavy"] == []
    helps = result["help"]
    assert all(name in helps["gradcam"] for name in cam_methods.METHOD_NAMES)
    for cmd in ("gradcam", "selectivity", "features"):
        assert all(o in helps[cmd] for o in ("--checkpoint", "--output", "--format"))
    assert "--figure" in helps["gradcam"] and "--figure" in helps["features"]
    assert "--out-dir" in helps["selectivity"]
    assert "gradcam-2.png" in helps["gradcam"]


def _short_options(cmd: str) -> dict[str, str]:
    from afictl.cli.app import _load

    return {
        o: p.name
        for p in _load(cmd).params
        for o in p.opts
        if o.startswith("-") and not o.startswith("--")
    }


def test_short_options_mean_one_thing():
    for cmd in ("gradcam", "selectivity", "features"):
        short = _short_options(cmd)
        assert short["-c"] == "checkpoint" and short["-o"] == "output" and short["-f"] == "fmt"
        assert "-t" not in short  # -t is --table (report); --target-class has no short name
    assert _short_options("selectivity")["-s"] == _short_options("features")["-s"] == "stage"


@pytest.mark.parametrize(
    "args, message",
    [
        (["gradcam", "x.png", "-c", "m.pt", "-o", "cam.png"], "--figure cam.png"),
        (["features", "x.png", "-c", "m.pt", "--output", "f.svg"], "--figure f.svg"),
        (["gradcam", "x.png", "-c", "m.pt", "--figure", "cam.txt"], "figures are written as"),
        (["selectivity", "-c", "m.pt", "-o", "."], "is a directory"),  # click's check
    ],
)
def test_output_is_the_results_file(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *args)
    assert code == 2 and out == "" and message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # refused before any work


@pytest.mark.slow
def test_json_stdout_with_progress_bars_on_stderr(ckpts, images, tmp_path, capsys, monkeypatch):  # noqa: F811
    """With the bars drawn (rich believes stderr is a terminal) stdout is one JSON document,
    and --output writes the same numbers to a file instead."""
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    good, _ = images
    code, out, err = run(
        capsys,
        "selectivity",
        "-c",
        ckpts["afi_resnet20"],
        "-s",
        "conv3",
        "--out-dir",
        tmp_path / "sel",
        "-f",
        "json",
    )
    assert code == 0, err
    rows = json.loads(out)
    assert [r["block"] for r in rows] == [1, 2, 3]
    assert "afi_resnet20 conv3" in err  # the bar's description, on stderr
    assert (tmp_path / "sel" / "selectivity-conv3.png").is_file()
    code, out, err = run(
        capsys,
        "features",
        good[0],
        "-c",
        ckpts["afi_resnet20"],
        "--data",
        "shapes",
        "--max-batches",
        "1",
        "--figure",
        tmp_path / "f.png",
        "-f",
        "json",
    )
    assert code == 0, err
    assert sum(r["mean_alpha"] for r in json.loads(out)) == pytest.approx(1.0, abs=1e-4)
    assert "attention" in err and (tmp_path / "f.png").is_file()
    code, out, err = run(
        capsys,
        "gradcam",
        *good,
        "-c",
        ckpts["resnet20"],
        "--figure",
        tmp_path / "cam.pdf",
        "-o",
        tmp_path / "cam.csv",
        "-f",
        "csv",
    )
    assert code == 0, err
    assert out == "" and f"wrote {tmp_path / 'cam.csv'}" in err
    table = pd.read_csv(tmp_path / "cam.csv")
    assert len(table) == 2 and table["probability"].between(0, 1).all()
    assert (tmp_path / "cam.pdf").read_bytes().startswith(b"%PDF")
