"""Importing a script that is not part of the package (examples/, benchmarks/) from tests."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).parent.parent


def load_script(path: Path):
    """The module defined by the file at ``path`` (run once, as ``import`` would)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
