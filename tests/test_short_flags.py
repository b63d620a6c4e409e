"""One meaning per short flag across every command: ``-m`` is not --mode here and --method there."""

from collections import defaultdict

import pytest

from afictl.cli.app import COMMANDS, _load


def _short_flags() -> dict[str, set[tuple[str, str]]]:
    """Short flag -> {(long option, command)} over every command's options."""
    meanings: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for name in COMMANDS:
        for param in _load(name).params:
            flags = [*param.opts, *param.secondary_opts]
            longs = [f for f in flags if f.startswith("--")]
            for flag in flags:
                if flag.startswith("-") and not flag.startswith("--"):
                    meanings[flag].add((longs[0] if longs else param.name, name))
    return meanings


def test_each_short_flag_means_one_long_option_everywhere():
    meanings = _short_flags()
    assert {"-a", "-b", "-c", "-f", "-o"} <= set(meanings)  # the walk found the options
    clashes = {
        flag: sorted(uses) for flag, uses in meanings.items() if len({u[0] for u in uses}) > 1
    }
    assert clashes == {}


@pytest.mark.parametrize(
    "flag, option, commands",
    [
        ("-b", "--batch-size", {"train", "transfer", "bench", "export"}),
        ("-e", "--epochs", {"train", "transfer"}),
        ("-j", "--workers", {"train", "transfer", "eval"}),
        ("-m", "--method", {"gradcam"}),
    ],
)
def test_short_flags_where_expected(flag, option, commands):
    uses = _short_flags()[flag]
    assert {u[0] for u in uses} == {option}
    assert commands <= {u[1] for u in uses}


def test_transfer_takes_b_e_j(capsys, tmp_path, monkeypatch):
    """-b/-e/-j reach the fine-tuning as --batch-size/--epochs/--workers do."""
    from cli import run

    from afictl.cli import transfer as transfer_cli

    seen = {}

    def record(checkpoint, data_root, pairs, run_root, overrides, fmt, output, *, arch):
        seen.update(overrides)

    monkeypatch.setattr(transfer_cli, "_run_pairs", record)
    args = ("-c", tmp_path / "w.pt", "--data-root", tmp_path, "--source", "Ar", "--target", "Cl")
    code, _, err = run(capsys, "transfer", *args, "-b", "8", "-e", "3", "-j", "2")
    assert code == 0, err
    assert (seen["batch_size"], seen["epochs"], seen["workers"]) == (8, 3, 2)
