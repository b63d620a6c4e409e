"""Running `afictl` in-process from tests: (exit code, stdout, stderr)."""

from afictl.cli.app import main


def run(capsys, *args):
    """``afictl ARGS...`` through the real entry point; SystemExit becomes the exit code."""
    code = 0
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_exit_2(code: int, err: str) -> str:
    """The contract: exit 2, exactly one stderr line `afictl: error: ...`, no traceback."""
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("afictl: error: "), err
    return lines[0]
