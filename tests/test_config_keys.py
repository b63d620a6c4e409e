"""Config files (`afictl train --config`) take the long option names as keys, as well as
TrainConfig's fields; an unknown key or two keys for one option is one line (exit 2)."""

import json

import pytest
from cli import one_line_exit_2, run

from afictl.train import resolve_config

FLAGS = ["-a", "resnet20", "-d", "shapes", "--data-size", "64", "-b", "16", "--wd", "0.001"]
FILES = {
    "toml": 'data = "shapes"\ndata-size = 64\nbatch_size = 16\nwd = 0.001\n',
    "json": '{"data": "shapes", "data-size": 64, "batch_size": 16, "wd": 0.001}',
    "yaml": "data: shapes\ndata-size: 64\nbatch_size: 16\nwd: 0.001\n",
}


def _values(capsys, *args):
    """{option: value} of `afictl train ... --dry-run --format json`, and the sources."""
    code, out, err = run(capsys, "train", *args, "--dry-run", "--format", "json")
    assert code == 0, err
    rows = json.loads(out)
    return {r["option"]: r["value"] for r in rows}, {r["option"]: r["source"] for r in rows}


@pytest.mark.parametrize("suffix", sorted(FILES))
def test_flag_names_as_keys_resolve_like_the_flags(capsys, tmp_path, monkeypatch, suffix):
    if suffix == "yaml":
        pytest.importorskip("yaml")
    monkeypatch.chdir(tmp_path)
    path = tmp_path / f"c.{suffix}"
    path.write_text(FILES[suffix])
    from_file, sources = _values(capsys, "-a", "resnet20", "--config", path)
    from_flags, _ = _values(capsys, *FLAGS)
    from_file.pop("run folder"), from_flags.pop("run folder")  # named after the clock
    assert from_file == from_flags
    assert from_file["--data"] == "shapes" and from_file["--weight-decay"] == 0.001
    for option in ("--data", "--data-size", "--batch-size", "--weight-decay"):
        assert sources[option] == f"config file {path}"
    by_fields = {"dataset": "shapes", "data_size": 64, "batch_size": 16, "weight_decay": 0.001}
    assert (
        resolve_config({"arch": "resnet20"}, path).to_dict()
        == resolve_config({"arch": "resnet20", **by_fields}).to_dict()
    )


def test_unknown_key_names_the_closest(capsys, tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('dat = "shapes"\n')
    line = one_line_exit_2(*run(capsys, "train", "-a", "resnet20", "--config", path)[::2])
    assert "unknown keys dat" in line and "did you mean 'data'" in line
    # a key spelt with dashes gets a suggestion with dashes; the negative flag is no key
    path.write_text("data-sise = 64\nno-download = true\n")
    line = one_line_exit_2(*run(capsys, "train", "-a", "resnet20", "--config", path)[::2])
    assert "did you mean 'data-size'" in line and "did you mean 'download'" in line


@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        ("field-and-flag.toml", 'data = "shapes"\ndataset = "shapes"\n', "'data' and 'dataset'"),
        ("dash-and-underscore.toml", "batch-size = 8\nbatch_size = 8\n", "both set batch_size"),
        ("alias.toml", "label_smoothing = 0.1\nsmoothing = 0.1\n", "both set label_smoothing"),
        ("twice.json", '{"lr": 0.1, "lr": 0.2}', "'lr' is given twice"),
        ("twice.yaml", "lr: 0.1\nlr: 0.2\n", "'lr' is given twice"),
    ],
)
def test_two_keys_for_one_option_are_refused(capsys, tmp_path, name, text, says):
    if name.endswith(".yaml"):
        pytest.importorskip("yaml")
    path = tmp_path / name
    path.write_text(text)
    line = one_line_exit_2(*run(capsys, "train", "-a", "resnet20", "--config", path)[::2])
    assert says in line and str(path) in line


def test_a_runs_config_json_is_a_config_file(tmp_path):
    """config.json of a run (derived keys and all) still reads as --config."""
    cfg = resolve_config({"arch": "resnet20", "dataset": "shapes", "lr": 0.02, "epochs": 3})
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg.to_dict()))
    again = resolve_config({"arch": "resnet20"}, path)
    assert (again.lr, again.epochs, again.data_size) == (0.02, 3, cfg.data_size)
