"""Issue 22, the analysis figures: Grad-CAM over the pixels the model saw, class-independent CAMs
refusing --target-class, one set of selectivity bins and a legend that covers nothing, a fixed
colour scale for S~, `afictl features -c AFI.pt` on the checkpoint's dataset, a red note for
unequal budgets, and progress per image."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from cli import one_line_exit_2, run
from matplotlib import pyplot as plt
from matplotlib.image import AxesImage
from PIL import Image
from test_analyses import _train_checkpoint, ckpts, images  # noqa: F401 - fixtures
from test_figures import _channels, _features

import afictl.cli.gradcam as gradcam_cli
from afictl.analysis import plots
from afictl.analysis.cam_methods import METHODS, check_target_class
from afictl.analysis.gradcam import CamResult, GradCamReport
from afictl.analysis.plots import (
    features_plot,
    gradcam_plot,
    selectivity_bins,
    selectivity_plot,
)
from afictl.checkpoint import load_checkpoint, save_checkpoint
from afictl.data import eval_transform
from afictl.errors import UserError

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def saved(monkeypatch):
    """Every figure a command writes, kept (plots._save closes it; its artists stay)."""
    figures: list[plt.Figure] = []
    real = plots._save

    def spy(fig, path, *args, **kwargs):
        figures.append(fig)
        return real(fig, path, *args, **kwargs)

    monkeypatch.setattr(plots, "_save", spy)
    return figures


def _images(ax: plt.Axes) -> list[np.ndarray]:
    return [im.get_array() for im in ax.get_images()]


def _note(fig: plt.Figure) -> str | None:
    notes = [t for t in fig.findobj(matplotlib.text.Text) if t.get_gid() == "note"]
    assert len(notes) <= 1
    if not notes:
        return None
    assert matplotlib.colors.same_color(notes[0].get_color(), "red")
    return " ".join(notes[0].get_text().split())


# --- 1. Grad-CAM over the model's input ------------------------------------------------------


@pytest.mark.slow  # trains the fixture checkpoints and runs a CAM: seconds
def test_gradcam_draws_the_heatmap_over_the_models_input(
    ckpts,  # noqa: F811
    images,  # noqa: F811
    tmp_path,
    capsys,
    saved,
    monkeypatch,
):
    """The 80x64 photo is squashed to 32x32 by the CIFAR pipeline: every panel shows those 32x32
    pixels (un-normalised), the heatmap lies on exactly that grid, the figure says 32x32; and
    the progress hook is ticked once per image and checkpoint."""
    good, _ = images
    ticks: list[tuple[str, int]] = []

    @contextlib.contextmanager
    def recording(**options):
        def start(description, total):
            ticks.append((description, total))
            return lambda *_: ticks.append(("tick", 1))

        yield start

    monkeypatch.setattr(gradcam_cli, "progress_bar", recording)
    code, out, err = run(
        capsys,
        "gradcam",
        *good,
        "-c",
        ckpts["resnet20"],
        "-c",
        ckpts["afi_resnet20"],
        "--figure",
        tmp_path / "cam.png",
        "-f",
        "json",
    )
    assert code == 0, err
    assert ticks[0] == ("Grad-CAM", 4) and ticks.count(("tick", 1)) == 4
    (fig,) = saved
    expected = [
        (eval_transform("shapes", 32)(Image.open(p).convert("RGB")) * 0.25 + 0.5)
        .clamp(0, 1)
        .permute(1, 2, 0)
        .numpy()
        for p in good
    ]
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert len(panels) == 6  # 2 images x (input + 2 checkpoints)
    for ax in panels:
        arrays = _images(ax)
        assert arrays[0].shape == (32, 32, 3)  # the model's input, not the 80x64 photo
        row = next(i for i, e in enumerate(expected) if np.allclose(arrays[0], e, atol=1e-5))
        assert row in (0, 1)
        if len(arrays) == 2:  # a CAM panel: the heatmap on the same grid
            assert arrays[1].shape == (32, 32)
            assert ax.get_images()[1].get_extent() == ax.get_images()[0].get_extent()
    assert "model input 32×32 of 80×64" in panels[0].get_title()
    assert "32×32 input" in fig.get_suptitle()
    assert _note(fig) is None  # same budget: nothing to say
    assert len(json.loads(out)) == 4


def test_gradcam_plot_keeps_the_input_size_and_draws_a_note():
    rng = np.random.default_rng(0)
    results = [
        CamResult(
            image="img.png",
            checkpoint=c,
            arch=a,
            predicted_index=1,
            predicted_class="ring",
            probability=0.5,
            target_index=1,
            target_class="ring",
            target_probability=0.5,
            attention_area=0.25,
            layer="layer3",
            method="gradcam",
            heatmap=rng.random((24, 24), dtype=np.float32),
            view=rng.random((24, 24, 3), dtype=np.float32),
        )
        for c, a in (("a.pt", "resnet20"), ("b.pt", "afi_resnet20"))
    ]
    report = GradCamReport(
        results, ["img.png"], {"img.png": rng.random((300, 400, 3))}, ["a.pt", "b.pt"], []
    )
    report.sizes["img.png"] = (400, 300)
    fig = gradcam_plot(report, note="unequal budgets: resnet20 vs afi_resnet20 differ")
    assert [a.shape for ax in fig.axes for a in _images(ax)] == [
        (24, 24, 3),
        (24, 24, 3),
        (24, 24),
        (24, 24, 3),
        (24, 24),
    ]
    assert fig.axes[0].get_title() == "img.png\nmodel input 24×24 of 400×300"
    assert _note(fig) == "unequal budgets: resnet20 vs afi_resnet20 differ"
    assert _note(gradcam_plot(report)) is None


# --- 2. class-independent CAMs and --target-class --------------------------------------------


def test_only_eigencam_ignores_the_target():
    assert [m.name for m in METHODS.values() if not m.uses_target] == ["eigencam"]
    check_target_class("gradcam", "ring")  # class-dependent: accepted
    check_target_class("eigencam", None)  # no class given: accepted
    with pytest.raises(UserError, match="class-independent"):
        check_target_class("Eigen-CAM", "3")


def test_eigencam_refuses_target_class_in_one_line(tmp_path, capsys, monkeypatch):
    """Refused before any checkpoint is read or figure written (the checkpoint does not exist)."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run(
        capsys, "gradcam", "x.png", "-c", "m.pt", "--method", "eigencam", "--target-class", "2"
    )
    line = one_line_exit_2(code, err)
    assert out == "" and "--target-class does not apply to --method eigencam" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # a CAM per model: seconds
def test_eigencam_without_target_and_gradcam_with_one_run(ckpts, images, capsys, tmp_path):  # noqa: F811
    good, _ = images
    code, out, err = run(
        capsys, "gradcam", good[0], "-c", ckpts["resnet20"], "-m", "eigencam", "-f", "json",
        "--figure", tmp_path / "e.png",
    )  # fmt: skip
    assert code == 0, err
    (row,) = json.loads(out)
    assert row["method"] == "eigencam" and row["target_class"] == "(any)"
    code, out, err = run(
        capsys, "gradcam", good[0], "-c", ckpts["resnet20"], "--target-class", "ring",
        "-f", "json", "--figure", tmp_path / "g.png",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)[0]["target_class"] == "ring"


# --- 3. selectivity: one set of bins, a legend clear of the data -----------------------------


def _step_edges(ax: plt.Axes) -> list[np.ndarray]:
    """The x of every vertical edge of each step histogram of ``ax`` (one array per model)."""
    edges = []
    for patch in ax.patches:
        xs = np.unique(np.round(patch.get_path().vertices[:, 0], 9))
        edges.append(xs)
    return edges


def test_selectivity_models_share_bin_edges_even_with_disjoint_ranges():
    channels = _channels(np.random.default_rng(0))
    # the AFI model's indices far above the baseline's: numpy's "auto" bins would differ
    afi = channels["arch"] == "afi_resnet20"
    channels.loc[afi, "index"] = 0.4 + channels.loc[afi, "index"]
    live = channels.loc[~channels["dead"], "index"].to_numpy()
    bins = selectivity_bins(live)
    assert bins[0] <= live.min() and bins[-1] >= live.max() and len(bins) == 21
    assert 0.0 <= bins[0] and bins[-1] <= 1.0  # the index's own range
    fig = selectivity_plot(channels, kind="hist")
    for ax in (a for a in fig.axes if a.get_visible()):
        per_model = _step_edges(ax)
        assert len(per_model) == 2
        for xs in per_model:  # every edge drawn is one of the shared edges
            assert np.isin(xs, np.round(bins, 9)).all(), xs
        means = [ln for ln in ax.get_lines() if ln.get_gid() == "mean"]
        assert len(means) == 2


@pytest.mark.parametrize("kind", ["hist", "violin"])
def test_selectivity_legend_covers_nothing(kind):
    fig = selectivity_plot(_channels(np.random.default_rng(0)), kind=kind)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in (a for a in fig.axes if a.get_visible()):
        legend = ax.get_legend().get_window_extent(renderer)
        box = ax.get_window_extent(renderer)
        assert legend.y0 >= box.y1 - 1e-6  # above the axes: no bar, mean line or violin under it
        texts = [t.get_text() for t in ax.get_legend().get_texts()]
        assert all(": mean 0." in t for t in texts), texts
        assert ax.get_legend().get_title().get_text().startswith("conv3 block ")


def test_selectivity_note_is_a_red_caption():
    channels = _channels(np.random.default_rng(0))
    note = "unequal budgets: resnet20 vs afi_resnet20 differ in epochs 1 vs 3"
    assert _note(selectivity_plot(channels, note=note)) == note
    assert _note(selectivity_plot(channels, kind="violin")) is None


# --- 4. features: the colour scale of S~ is fixed ----------------------------------------------


def _weights_image(fig: plt.Figure) -> AxesImage:
    (ax,) = [a for a in fig.axes if "tilde{S}" in a.get_title()]
    (image,) = ax.get_images()
    return image


@pytest.mark.parametrize("spread", [0.002, 0.45])
def test_features_weights_scale_is_fixed_whatever_the_data(spread):
    """Near-uniform weights (0.498..0.502) and strong ones get the same scale: [0, 1], white at
    1/n, so near-uniform attention is drawn near-white instead of zoomed into structure."""
    result = _features()
    rng = np.random.default_rng(1)
    first = 0.5 + rng.uniform(-spread, spread, result.attention.shape[1])
    result.attention = np.stack([first, 1 - first])
    result.inputs = result.output = None  # S~ alone (no image): a quick layout
    result.view = None
    result.stage_alpha = {3: result.attention.mean(axis=1)}
    fig = features_plot(result)
    image = _weights_image(fig)
    norm = image.norm
    assert (norm.vmin, norm.vmax, norm.vcenter) == (0.0, 1.0, 0.5)
    assert any("white: 1/2" in a.get_ylabel() for a in fig.axes)  # the colorbar says so
    colors = image.cmap(norm(result.attention))[..., :3]
    if spread < 0.01:  # every cell within 2 % of white
        assert np.abs(colors - 1.0).max() < 0.05
    (stage,) = [a for a in fig.axes if "Eq. 8" in a.get_title()]
    assert stage.get_images()[0].get_clim() == (-0.5, 0.5)


# --- 5. `afictl features -c AFI.pt`: the checkpoint's dataset ----------------------------------


@pytest.mark.slow  # trains the fixture checkpoints and averages over their data: seconds
def test_features_without_image_uses_the_checkpoints_dataset(ckpts, tmp_path, capsys, saved):  # noqa: F811
    code, out, err = run(
        capsys,
        "features",
        "-c",
        ckpts["afi_resnet20"],
        "--figure",
        tmp_path / "f.png",
        "-f",
        "json",
    )
    assert code == 0, err
    rows = json.loads(out)
    # the fixture's run recorded shapes with data_size 48: its evaluation set, 48 images
    assert [r["averaged_over"] for r in rows] == [48, 48]
    assert sum(r["mean_alpha"] for r in rows) == pytest.approx(1.0, abs=1e-4)
    assert "S~ averaged over 48 shapes images" in err
    (fig,) = saved
    assert "mean over 48 shapes images" in " ".join(a.get_title() for a in fig.axes)
    assert _weights_image(fig).norm.vmax == 1.0
    assert (tmp_path / "f.png").is_file()


# --- 6. the note for pairs trained under unequal budgets ---------------------------------------


@pytest.mark.slow  # trains a checkpoint and runs a CAM per model: seconds
def test_gradcam_pair_with_unequal_budgets_gets_a_red_note(tmp_path, images, capsys, saved):  # noqa: F811
    good, _ = images
    paths = []
    for arch, epochs in (("resnet20", 1), ("afi_resnet20", 3)):
        path = _train_checkpoint(tmp_path / f"{arch}.pt", arch, steps=1)
        ckpt = load_checkpoint(path)
        ckpt["config"]["epochs"] = epochs
        paths.append(save_checkpoint(Path(path), ckpt))
    code, out, err = run(
        capsys, "gradcam", good[0], "-c", paths[0], "-c", paths[1], "--figure",
        tmp_path / "cam.png", "-f", "markdown",
    )  # fmt: skip
    assert code == 0, err
    (fig,) = saved
    note = _note(fig)
    assert note and "epochs 1 vs 3" in note
    assert "epochs 1 vs 3" in out.splitlines()[0]  # the table's title too
