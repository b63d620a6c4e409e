"""The Office-Home fine-tuning protocol of the paper (section 4.2, Table 3): its domains, pairs
and class matching.

- 20 epochs of SGD with momentum;
- the new classifier's learning rate ``0.01 * (1 + 10 p) ** -0.75`` with p the training progress
  in [0, 1] (iteration / total iterations), the rest of the network one tenth of that;
- fine-tune on a source domain, evaluate on a target domain; 12 ordered pairs of 4 domains.

The learning rates are training's own, in one place: the ``office-home`` recipe
(:data:`afictl.train.config.RECIPES`: ``lr=0.01``, ``lr_schedule="inv"``,
``backbone_lr_mult=0.1``), :func:`afictl.train.optim.param_groups` (the two groups) and
:func:`afictl.train.optim.inv_factor` (the schedule).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import permutations
from pathlib import Path

from ..errors import UserError

__all__ = [
    "DOMAINS",
    "all_pairs",
    "domain_code",
    "match_classes",
    "pair_average",
    "resolve_domain",
]

#: Office-Home's domains: canonical name -> (short code of Table 3, folder names accepted)
DOMAINS: dict[str, tuple[str, tuple[str, ...]]] = {
    "Art": ("Ar", ("Art",)),
    "Clipart": ("Cl", ("Clipart",)),
    "Product": ("Pr", ("Product",)),
    "Real World": ("Rw", ("Real World", "RealWorld", "Real_World")),
}


def _canonical(name: str) -> str:
    key = name.strip().lower().replace("_", " ")
    for canon, (code, folders) in DOMAINS.items():
        if key in {canon.lower(), code.lower(), *(f.lower().replace("_", " ") for f in folders)}:
            return canon
    return name


def domain_code(name: str) -> str:
    """'Art' -> 'Ar' (Table 3's column names); other domains keep their name."""
    canon = _canonical(name)
    return DOMAINS[canon][0] if canon in DOMAINS else name


def resolve_domain(root: Path, name: str) -> Path:
    """The folder of a domain under ``root``: Office-Home names, codes, or the name of a folder
    directly under ``root``; nothing else (no path: ``Clipart/../..`` is not a domain)."""
    canon = _canonical(name)
    candidates = DOMAINS[canon][1] if canon in DOMAINS else (name,)
    listed = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    for folder in candidates:
        if folder in listed:  # a child of root by name: never a path that leaves it
            return root / folder
    raise UserError(
        f"domain {name!r} not found under {root} (looked for {', '.join(candidates)}; "
        f"found: {', '.join(listed) or 'nothing'})"
    )


def all_pairs(root: Path) -> list[tuple[str, str]]:
    """The 12 ordered (source, target) pairs of the four Office-Home domains."""
    present = [d for d in DOMAINS if any((root / f).is_dir() for f in DOMAINS[d][1])]
    if len(present) != len(DOMAINS):
        missing = sorted(set(DOMAINS) - set(present))
        raise UserError(
            f"--all-pairs needs the four Office-Home domains under {root}; "
            f"missing: {', '.join(missing)}"
        )
    return list(permutations(present, 2))


def match_classes(
    source: Sequence[str], target: Sequence[str], *, target_name: str = "target"
) -> list[int]:
    """For each target class index, the index of the same-named source class.

    Classes are matched by name, never by position; a class missing on either side is an error.
    """
    index = {c: i for i, c in enumerate(source)}
    missing_in_target = sorted(set(source) - set(target))
    missing_in_source = sorted(set(target) - set(source))
    if missing_in_target:
        raise UserError(
            f"class(es) {', '.join(missing_in_target[:5])} of the source "
            f"are missing in {target_name}"
        )
    if missing_in_source:
        raise UserError(
            f"class(es) {', '.join(missing_in_source[:5])} of {target_name} "
            "are missing in the source"
        )
    return [index[c] for c in target]


def pair_average(values: Sequence[float | None]) -> tuple[float | None, str]:
    """The mean of the pairs measured (2 decimals; None when there is none) and how many of the
    12 it covers ("3/12"): a partial Table 3 row still has an average, labelled as partial."""
    have = [v for v in values if v is not None and v == v]  # v == v: not NaN
    avg = round(sum(have) / len(have), 2) if have else None
    return avg, f"{len(have)}/{len(DOMAINS) * (len(DOMAINS) - 1)}"
