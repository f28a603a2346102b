"""Cells and rows of the suites' Markdown tables, formatted one way everywhere.

Example:
    >>> row(["method", number(0.71234), number(None), p_value(0.0004), p_value(0.0312)])
    '| method | 0.712 | N/A | <0.001 | 0.031 |'
    >>> sorted(best({"a": 0.7001, "b": 0.6996, "c": None}))   # equal at 3 decimals: both best
    ['a', 'b']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["best", "number", "p_value", "row", "wtl"]


def row(cells: Sequence[str]) -> str:
    """One Markdown table row."""
    return "| " + " | ".join(cells) + " |"


def number(value: float | None, digits: int = 3) -> str:
    """``value`` to ``digits`` decimals, ``"N/A"`` for None."""
    return "N/A" if value is None else f"{value:.{digits}f}"


def p_value(value: float | None) -> str:
    """A p-value to 3 decimals, ``"<0.001"`` below that, ``"N/A"`` for None."""
    if value is None:
        return "N/A"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def best(values: dict[str, float | None], *, low: bool = False) -> set[str]:
    """The keys whose value, rounded to 3 decimals, is the highest (``low``: the lowest); None is skipped."""
    valid = {m: round(v, 3) for m, v in values.items() if v is not None}
    if not valid:
        return set()
    top = min(valid.values()) if low else max(valid.values())
    return {m for m, v in valid.items() if v == top}


def wtl(result: dict[str, Any]) -> str:
    """``"wins/ties/losses"`` of :func:`benchmarks.harness.results.wins_ties_losses`, ``"N/A"`` without a pair."""
    return "N/A" if result["n"] == 0 else f"{result['wins']}/{result['ties']}/{result['losses']}"
