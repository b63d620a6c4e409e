"""FLOP conventions (paper Tables 2, 4, 5; Eq. 10) and the shipped counts."""

import csv
import io
import json
import math
import subprocess
import sys

import pytest
import torch
from cli import run
from torch import nn

import afictl.profiling.flops as flops_mod
from afictl.models import create_meta_model, create_model
from afictl.profiling import flops_cache
from afictl.profiling.flops import (
    count_flops,
    flop_counter_count,
    flops_report,
    thop_count,
)
from afictl.profiling.flops_cache import (
    FLOP_COUNTER,
    THOP,
    CountKey,
    CountsCache,
    StaleCountsWarning,
)

PAPER_BASELINE_FLOPS = {
    "resnet32": 2.23e9,
    "resnet110": 8.17e9,
    "resnet50": 131.57e9,
    "resnet101": 250.69e9,
    "resnet152": 369.88e9,
}
PAPER_RATIOS = {
    "afi_resnet50": 121.72 / 131.57,
    "afi_resnet110": 6.23 / 8.17,
    "afi_resnet32": 1.78 / 2.23,
}


@pytest.mark.parametrize("name", PAPER_BASELINE_FLOPS)
def test_baseline_flops_within_2pct_of_paper(name):
    flops = count_flops(name, exact=False).flops
    assert abs(flops / PAPER_BASELINE_FLOPS[name] - 1) < 0.02


@pytest.mark.parametrize("name", PAPER_RATIOS)
def test_afi_to_baseline_flop_ratio_within_2pct(name):
    (row,) = flops_report([name], exact=False)
    ratio = row.flops / row.baseline_flops
    assert abs(ratio / PAPER_RATIOS[name] - 1) < 0.02, ratio


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet20", "afi_resnet20"])
def test_scaled_meta_count_equals_real_batch32_count(name):
    """`flops` counts one image on the meta device and scales; a real batch-32 count agrees."""
    real = thop_count(create_model(name), 32, batch_size=32)
    report = count_flops(name, batch_size=32)
    assert report.flops == real.macs + 0.0
    assert report.afi_aggregation_flops == real.afi_aggregation
    assert report.flops_exact == flop_counter_count(create_model(name), 32, 32)


def test_thop_leaves_the_model_clean():
    model = create_model("afi_resnet20")
    before = set(model.state_dict())
    thop_count(model, 32)
    assert set(model.state_dict()) == before
    assert not any(hasattr(m, "total_ops") for m in model.modules())


def test_afi_scoring_follows_eq10():
    """Eq. 10 per stage of N+1 blocks: C^2/r (N+2)(N-1) MACs, C the halved width."""
    r = count_flops("afi_resnet32", batch_size=32, exact=False)
    n = 4  # 5 blocks per stage
    per_image = sum(c * c / 4 * (n + 2) * (n - 1) for c in (8, 16, 32))
    assert r.afi_scoring_flops == per_image * 32
    # the weighted sum: AFI(i) reads i-1 inputs of C x H x W at blocks i = 3..5
    agg = sum((i - 1) * c * hw * hw for c, hw in ((8, 32), (16, 16), (32, 8)) for i in range(3, 6))
    assert r.afi_aggregation_flops == agg * 32
    assert r.flops_with_aggregation == r.flops + r.afi_aggregation_flops


def test_flop_counter_cross_check():
    """FlopCounterMode counts 2 FLOPs per MAC and skips BN: half of it is close to thop's."""
    for name in ("resnet50", "afi_resnet50"):
        r = count_flops(name)
        assert abs(r.flops_exact / 2 / r.flops - 1) < 0.03


def test_batch_scaling_is_linear():
    a = count_flops("afi_resnet20", batch_size=1, exact=False)
    b = count_flops("afi_resnet20", batch_size=7, exact=False)
    assert b.flops == 7 * a.flops


def test_create_meta_model_builds_no_real_tensors():

    m = create_meta_model("resnet152")
    assert all(p.device.type == "meta" for p in m.parameters())
    assert torch.empty(1).device.type == "cpu"  # the meta context does not leak


def test_meta_counts_equal_real_model_counts():
    """thop runs a meta model on zero-filled CPU storage: the counts of a real model."""
    real = thop_count(create_model("afi_resnet20"), 32)
    meta = thop_count(create_meta_model("afi_resnet20"), 32, copy_model=False)
    assert real.macs == meta.macs > 0
    assert (real.afi_scoring, real.afi_aggregation) == (meta.afi_scoring, meta.afi_aggregation)


# --- the shipped counts (afictl/profiling/counts.json) ---------------------------------------


def _shipped_entry(key: CountKey) -> dict:
    return flops_cache.CountsCache.load().entries[key]


@pytest.mark.parametrize("arch", ["resnet20", "afi_resnet20"])
@pytest.mark.parametrize("method", [THOP, FLOP_COUNTER])
def test_shipped_counts_equal_a_recount(arch, method):
    """A model change that forgets `python -m afictl.profiling.flops_cache --write` fails."""
    key = CountKey.of(arch, 100, 32, method)
    assert flops_cache.compute_entry(key) == _shipped_entry(key)


@pytest.mark.slow
def test_every_shipped_count_equals_a_recount():
    shipped = CountsCache.load().entries
    keys = flops_cache.default_keys()
    assert set(shipped) == set(keys)  # every registered model, nothing else
    stale = [k.arch for k in keys if flops_cache.compute_entry(k) != shipped[k]]
    assert not stale, f"regenerate afictl/profiling/counts.json: {stale}"


def _with_cache(monkeypatch, entries: dict) -> None:
    monkeypatch.setattr(flops_cache, "shipped_cache", lambda: CountsCache(entries))


def test_a_matching_entry_is_used_and_no_cache_counts_live(monkeypatch):
    key = CountKey.of("resnet20", 100, 32, THOP)
    entry = _shipped_entry(key)
    fake = dict(entry, counts={"macs": 1000, "afi_scoring": 0, "afi_aggregation": 0})
    _with_cache(monkeypatch, {key: fake})
    assert count_flops("resnet20", exact=False).flops == 32_000  # from the cache
    live = count_flops("resnet20", exact=False, use_cache=False).flops
    assert live == entry["counts"]["macs"] * 32 != 32_000


def test_a_stale_fingerprint_in_the_file_counts_live(monkeypatch, tmp_path):
    key = CountKey.of("afi_resnet20", 100, 32, THOP)
    entry = _shipped_entry(key)
    doc = json.loads(flops_cache.COUNTS_FILE.read_text())
    doc["entries"] = [dict(entry, fingerprint="0" * 20, counts=dict(entry["counts"], macs=1))]
    path = tmp_path / "counts.json"
    path.write_text(json.dumps(doc))
    _with_cache(monkeypatch, CountsCache.load(path).entries)
    with pytest.warns(StaleCountsWarning, match="afi_resnet20"):
        r = count_flops("afi_resnet20", exact=False)
    assert r.flops == entry["counts"]["macs"] * 32  # live, not the file's 1 MAC


def test_a_changed_model_is_counted_live(monkeypatch):
    """The fingerprint sees a structure change (a wider classifier) and the live count wins."""
    shipped = _shipped_entry(CountKey.of("resnet20", 100, 32, THOP))
    build = flops_mod.create_meta_model

    def changed(name, num_classes=None, **kwargs):
        model = build(name, num_classes, **kwargs)
        with torch.device("meta"):
            model.fc = nn.Linear(model.fc.in_features, 2 * model.fc.out_features)
        return model

    monkeypatch.setattr(flops_mod, "create_meta_model", changed)
    with pytest.warns(StaleCountsWarning):
        r = count_flops("resnet20", exact=False)
    assert r.params == shipped["params"] + 64 * 100 + 100
    assert r.flops == (shipped["counts"]["macs"] + 64 * 100) * 32


def test_each_model_is_counted_once():
    calls = []
    rows = flops_report(
        ["afi_resnet20", "resnet20", "afi_resnet20"], exact=False, progress=calls.append
    )
    assert calls == ["afi_resnet20", "resnet20"]
    assert [r.arch for r in rows] == ["afi_resnet20", "resnet20", "afi_resnet20"]


def test_non_default_options_are_counted_live(monkeypatch):
    _with_cache(monkeypatch, {})  # nothing shipped: what live counting gives
    live = count_flops("afi_resnet20", exact=False, reduction=2)
    monkeypatch.undo()
    assert count_flops("afi_resnet20", exact=False, reduction=2) == live
    assert live.afi_scoring_flops == 2 * count_flops("afi_resnet20", exact=False).afi_scoring_flops
    one_stage = count_flops("afi_resnet20", exact=False, afi_stages=[1])  # a list option
    assert one_stage.flops > count_flops("afi_resnet20", exact=False).flops


def test_no_negative_zero_percent():
    assert math.copysign(1, flops_mod._pct(999_999.999, 1e6)) == 1.0


def _no_negative_zero(text: str) -> bool:
    return not (text.startswith("-") and float(text.rstrip("%")) == 0)


def _check_csv_counts(out: str, counts: tuple[str, ...], pcts: tuple[str, ...]) -> None:
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows
    for r in rows:
        assert all(r[c].isdigit() for c in counts if r[c]), r  # 765460480, not 765460480.0
        assert all(_no_negative_zero(r[c]) for c in pcts if r[c]), r


def test_arch_counts_are_integers_without_negative_zero(capsys):
    code, out, _ = run(capsys, "flops", "-a", "resnet32", "-a", "afi_resnet32", "-f", "csv")
    assert code == 0
    counts = ("params", "flops", "flops_exact", "baseline_params", "baseline_flops")
    _check_csv_counts(out, counts, ("params_delta_pct", "flops_delta_pct"))


@pytest.mark.slow
def test_bare_flops_and_table2_counts_are_integers(capsys):
    code, out, err = run(capsys, "flops", "--format", "json")
    assert code == 0 and out.lstrip().startswith("[")  # progress stays off stdout
    rows = json.loads(out)
    for r in rows:
        assert all(isinstance(r[c], int) for c in ("params", "paper_params", "flops"))
    code, out, _ = run(capsys, "flops", "--format", "csv")
    counts = ("params", "paper_params", "flops", "paper_flops")
    _check_csv_counts(out, counts, ("params_diff_pct", "flops_diff_pct", "flops_delta_pct"))
    code, out, _ = run(capsys, "flops")  # resnet32's params are 472,756 against 472,760
    assert code == 0 and "-0.00%" not in out and "0.00%" in out
    code, out, _ = run(capsys, "flops", "-t", "2", "-f", "csv")  # paper_params 23.36K = 23360
    assert code == 0
    counts = ("params", "flops", "paper_params", "paper_flops")
    _check_csv_counts(out, counts, ("params_diff_pct", "flops_diff_pct"))


def test_arch_json_counts_are_integers_and_match_no_cache(capsys):
    code, out, _ = run(capsys, "flops", "-a", "afi_resnet20", "-f", "json")
    (cached,) = json.loads(out)
    code2, out2, _ = run(capsys, "flops", "-a", "afi_resnet20", "-f", "json", "--no-cache")
    (live,) = json.loads(out2)
    assert code == code2 == 0 and cached == live
    assert isinstance(cached["flops"], int) and isinstance(cached["flops_exact"], int)


def test_flops_help_imports_no_heavy_module():
    code = (
        "import sys\n"
        "from afictl.cli.app import main\n"
        "try:\n    main(['flops', '--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'pandas', 'matplotlib', 'thop') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "--no-cache" in proc.stdout and "--reduction" in proc.stdout and "-r" in proc.stdout
    assert "HEAVY []" in proc.stdout
