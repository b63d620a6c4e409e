"""Shipped counts of the registry's models at their default options (``counts.json``).

thop's traced forward is the slow part of ``afictl flops`` (about 15 s for Tables 4 and 5 on a
quiet 2-core machine, a minute when loaded); building a model on ``meta`` is cheap (about 1.3 s
for all 22). The counts are deterministic, so they ship with the package, keyed by
(arch, num_classes, input size, model options, counting method, batch), each with a
fingerprint of the model's structure. A lookup builds the model, fingerprints it and uses the
entry only when the fingerprint matches; otherwise it counts live and warns that the file is
stale. Regenerate with::

    python -m afictl.profiling.flops_cache --write

tests/test_flops.py recomputes entries and compares them with this file (all of them in a
``slow`` test), so a model change that forgets to regenerate fails CI.
"""

from __future__ import annotations

import hashlib
import json
import sys
import warnings
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from ..fileio import atomic_write
from .counting import FLOP_COUNTER, THOP, count, count_params

__all__ = [
    "COUNTS_FILE",
    "FLOP_COUNTER",
    "THOP",
    "CountKey",
    "CountsCache",
    "StaleCountsWarning",
    "compute_entries",
    "compute_entry",
    "counts",
    "default_keys",
    "model_fingerprint",
    "shipped_cache",
    "write_counts",
]

COUNTS_FILE = Path(__file__).with_name("counts.json")
#: Batches the entries are counted at: thop counts are linear in the batch (one image is
#: profiled and scaled, as live counting does); FlopCounterMode is counted at the paper's 32.
METHOD_BATCH = {THOP: 1, FLOP_COUNTER: 32}
_FORMAT = 1


class StaleCountsWarning(UserWarning):
    """A shipped count no longer describes the model: it was counted live instead."""


@dataclass(frozen=True)
class CountKey:
    """What a count depends on besides the model's code."""

    arch: str
    num_classes: int
    input_size: int
    method: str
    batch_size: int
    kwargs: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, arch: str, num_classes: int, input_size: int, method: str, **kwargs) -> CountKey:
        items = tuple(sorted((k, _hashable(v)) for k, v in kwargs.items()))
        return cls(arch, num_classes, input_size, method, METHOD_BATCH[method], items)

    def to_dict(self) -> dict:
        return {
            "arch": self.arch,
            "num_classes": self.num_classes,
            "input_size": self.input_size,
            "method": self.method,
            "batch_size": self.batch_size,
            "kwargs": dict(self.kwargs),
        }

    @classmethod
    def from_dict(cls, d: dict) -> CountKey:
        kwargs = tuple(sorted((k, _hashable(v)) for k, v in d["kwargs"].items()))
        return cls(
            d["arch"], d["num_classes"], d["input_size"], d["method"], d["batch_size"], kwargs
        )


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


#: Attributes of torch.nn layers that change a count but not a state-dict shape.
_GEOMETRY = ("kernel_size", "stride", "padding", "dilation", "groups", "output_size", "ceil_mode")


def _geometry(m: Any) -> str:
    """A module's counted geometry in a form no torch release changes: afictl's own modules
    by their ``extra_repr``, torch's by :data:`_GEOMETRY` (their ``extra_repr`` text has
    changed between releases, which made the shipped cache look stale on torch 2.6)."""
    if type(m).__module__.startswith("afictl."):
        return m.extra_repr()
    return ",".join(f"{a}={getattr(m, a)!r}" for a in _GEOMETRY if hasattr(m, a))


def model_fingerprint(model) -> str:
    """A hash of the model's structure, computed without running it: every module's name,
    class and geometry (widths, strides, groups, AFI inputs and r) and every state-dict
    entry's name, shape and dtype. A forward that changes while the structure does not is
    not seen; the recomputing tests are the guard for that."""
    h = hashlib.sha256()
    for name, m in model.named_modules():
        h.update(f"{name}:{type(m).__qualname__}({_geometry(m)})\n".encode())
    for key, value in model.state_dict().items():
        h.update(f"{key}:{tuple(value.shape)}:{value.dtype}\n".encode())
    return h.hexdigest()[:20]


@dataclass
class CountsCache:
    """Entries of a counts file: key -> {"fingerprint", "params", "counts"}."""

    entries: dict[CountKey, dict] = field(default_factory=dict)
    path: Path | None = None

    @classmethod
    def load(cls, path: Path = COUNTS_FILE) -> CountsCache:
        """The entries of ``path``; empty when it is missing or of another format."""
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            return cls(path=Path(path))
        if doc.get("format") != _FORMAT:
            return cls(path=Path(path))
        entries = {CountKey.from_dict(e["key"]): e for e in doc.get("entries", [])}
        return cls(entries, Path(path))

    def lookup(self, key: CountKey, model) -> dict | None:
        """The counts of ``key`` when its fingerprint matches ``model``'s, else None (and a
        :class:`StaleCountsWarning` when an entry exists but no longer matches)."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        if entry["fingerprint"] != model_fingerprint(model):
            warnings.warn(
                f"shipped counts of {key.arch} ({key.method}) do not match the model: counted "
                "live; regenerate with `python -m afictl.profiling.flops_cache --write`",
                StaleCountsWarning,
                stacklevel=3,
            )
            return None
        return entry["counts"]


@cache
def shipped_cache() -> CountsCache:
    """The package's counts file, read once per process."""
    return CountsCache.load(COUNTS_FILE)


def default_keys() -> list[CountKey]:
    """Keys of every registered model at its default options, both methods."""
    from ..models import get_model_info, list_models

    keys = []
    for arch in list_models():
        info = get_model_info(arch)
        for method in (THOP, FLOP_COUNTER):
            keys.append(CountKey.of(arch, info.num_classes, info.input_size, method))
    return keys


def counts(key: CountKey, model, cache: CountsCache | None) -> dict[str, int | float]:
    """The counts of ``key`` for ``model``: ``cache``'s when it holds an entry that matches the
    model, else counted live (:func:`afictl.profiling.counting.count`)."""
    hit = cache.lookup(key, model) if cache is not None else None
    if hit is not None:
        return hit
    return count(model, key.input_size, key.method, key.batch_size)


def compute_entry(key: CountKey) -> dict:
    """Count ``key`` live: the entry a counts file holds for it."""
    from ..models import create_meta_model

    model = create_meta_model(key.arch, key.num_classes, **dict(key.kwargs))
    return {
        "key": key.to_dict(),
        "fingerprint": model_fingerprint(model),
        "params": count_params(model),
        "counts": count(model, key.input_size, key.method, key.batch_size),
    }


def compute_entries(keys: list[CountKey] | None = None, *, verbose: bool = False) -> list[dict]:
    """Entries of ``keys`` (default: every registered model at its default options)."""
    keys = default_keys() if keys is None else keys
    out = []
    for i, key in enumerate(keys, 1):
        out.append(compute_entry(key))
        if verbose:
            print(f"[{i}/{len(keys)}] {key.arch} {key.method}", file=sys.stderr)
    return out


def write_counts(entries: list[dict], path: Path = COUNTS_FILE) -> Path:
    """Write a counts file (sorted, one entry per key) and return its path."""
    entries = sorted(entries, key=lambda e: (e["key"]["arch"], e["key"]["method"]))
    doc = {
        "format": _FORMAT,
        "regenerate": "python -m afictl.profiling.flops_cache --write",
        "entries": entries,
    }
    return atomic_write(path, json.dumps(doc, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    """``python -m afictl.profiling.flops_cache [--write | --check] [--file PATH]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m afictl.profiling.flops_cache")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="recount and write the file")
    group.add_argument("--check", action="store_true", help="recount and compare (exit 1)")
    parser.add_argument("--file", type=Path, default=COUNTS_FILE)
    args = parser.parse_args(argv)
    entries = compute_entries(verbose=True)
    if args.write:
        print(f"wrote {write_counts(entries, args.file)}", file=sys.stderr)
        return 0
    shipped = CountsCache.load(args.file).entries
    stale = [e["key"]["arch"] for e in entries if shipped.get(CountKey.from_dict(e["key"])) != e]
    if stale or len(shipped) != len(entries):
        print(f"stale counts: {', '.join(stale) or 'extra entries'}", file=sys.stderr)
        return 1
    print(f"{args.file}: {len(entries)} entries up to date", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
