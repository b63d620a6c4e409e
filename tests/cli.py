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
