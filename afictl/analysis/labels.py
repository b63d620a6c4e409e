"""How the analyses write the numbers people read in figures and tables (no torch, no pandas)."""

from __future__ import annotations

__all__ = ["FIGURE_SUFFIXES", "percent"]

#: The figure files the analyses write; the suffix picks the format.
FIGURE_SUFFIXES = (".png", ".pdf", ".svg")


def percent(share: float, digits: int = 1, max_digits: int = 6) -> str:
    """A share in [0, 1] as a percentage with ``digits`` decimals, never rounded to an extreme
    it is not: 0.9994 -> '99.9%', 0.99996 -> '99.996%' (not '100.0%'), 1 -> '100%', 0 -> '0%',
    0.00004 -> '0.004%'. Decimals are added (up to ``max_digits``) only where rounding would
    otherwise show 100% or 0%."""
    value = float(share) * 100.0
    if value == 100.0 or value == 0.0:
        return f"{value:.0f}%"
    d = digits
    text = f"{value:.{d}f}"
    while d < max_digits and (float(text) >= 100.0 or float(text) <= 0.0):
        d += 1
        text = f"{value:.{d}f}"
    return text + "%"
