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
