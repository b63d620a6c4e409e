import os

import pytest
import torch

# Two cores on CI: keep intra-op threads fixed so timings and results are stable, and share the
# cores between pytest-xdist's workers rather than oversubscribing them.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1) // _WORKERS))
# Tables wrap to $COLUMNS when it is set (xdist's workers may inherit one): the tests read them
# as a pipe would, unwrapped; a test that wants a width sets it with monkeypatch.
os.environ.pop("COLUMNS", None)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _no_export_stage_lines(monkeypatch):
    """An export error must be the only stderr line in the tests that say so; a loaded machine
    can make a stage outlast the delay after which a log file names it (tests/test_progress.py
    sets its own delay to test those lines)."""
    monkeypatch.setattr("afictl.cli.export.STAGE_LINE_DELAY", 1e9)
