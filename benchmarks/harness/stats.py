"""Comparisons over many datasets: average ranks and the Wilcoxon signed-rank test (Demšar, JMLR 2006).

The inputs are one task's table of :func:`benchmarks.harness.results.aggregate`,
``table[dataset][metric][method] = {"mean", ...}``: every statistic works on
the per-dataset means over seeds, one paired value per dataset. Wins, ties and
losses are :func:`benchmarks.harness.results.wins_ties_losses`.

Example:
    >>> rank_row([0.9, 0.7, 0.9])
    [1.5, 3.0, 1.5]
    >>> cell = lambda m: {"mean": m}
    >>> table = {d: {"f1": {"a": cell(a), "b": cell(b)}} for d, a, b in [("x", 0.9, 0.5), ("y", 0.6, 0.6)]}
    >>> average_ranks(table, "f1", ["a", "b"])
    {'ranks': {'a': 1.25, 'b': 1.75}, 'n': 2}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["average_ranks", "paired_means", "rank_row", "subtable", "wilcoxon_signed_rank", "wilcoxon_vs"]


def rank_row(values: Sequence[float], *, tolerance: float = 0.0) -> list[float]:
    """Ranks of scores, 1 = the highest; scores within ``tolerance`` of each other are tied (average rank).

    Ties are grouped greedily from the top: a score joins the group of the
    group's highest score when it is within ``tolerance`` of it.
    """
    if tolerance < 0:
        raise ValueError(f"`tolerance` must be >= 0; got {tolerance!r}")
    if not all(math.isfinite(float(v)) for v in values):
        raise ValueError(f"`values` must be finite scores to rank; got {list(values)!r}")
    order = sorted(range(len(values)), key=lambda i: -float(values[i]))
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        top = float(values[order[start]])
        end = start + 1
        while end < len(order) and top - float(values[order[end]]) <= tolerance:
            end += 1
        shared = (start + 1 + end) / 2.0  # mean of the positions start+1 .. end
        for i in order[start:end]:
            ranks[i] = shared
        start = end
    return ranks


def subtable(table: Mapping[str, Any], datasets: Sequence[str]) -> dict[str, Any]:
    """The part of ``table`` for ``datasets`` (those it holds)."""
    return {d: table[d] for d in datasets if d in table}


def average_ranks(table: Mapping[str, Any], metric: str, methods: Sequence[str], *,
                  tolerance: float = 0.0) -> dict[str, Any]:
    """Mean rank of each method over the datasets where every one of ``methods`` has a result.

    Returns ``{"ranks": {method: mean rank or None}, "n": datasets ranked}``
    (rank 1 = best seed-mean on a dataset; ties share the average rank).
    """
    rows = []
    for cells in table.values():
        row = cells.get(metric, {})
        if all(m in row for m in methods):
            rows.append(rank_row([row[m]["mean"] for m in methods], tolerance=tolerance))
    if not rows:
        return {"ranks": {m: None for m in methods}, "n": 0}
    mean = np.mean(np.array(rows), axis=0)
    return {"ranks": {m: float(r) for m, r in zip(methods, mean)}, "n": len(rows)}


def paired_means(table: Mapping[str, Any], metric: str, a: str, b: str) -> tuple[list[str], list[float], list[float]]:
    """Datasets where both ran, and the seed-means of ``a`` and ``b`` on them."""
    names, va, vb = [], [], []
    for dataset, cells in table.items():
        row = cells.get(metric, {})
        if a in row and b in row:
            names.append(dataset)
            va.append(float(row[a]["mean"]))
            vb.append(float(row[b]["mean"]))
    return names, va, vb


def wilcoxon_signed_rank(reference: Sequence[float], baseline: Sequence[float]) -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test of paired values (``scipy.stats.wilcoxon``, zero differences dropped).

    Returns ``{"n", "n_nonzero", "statistic", "p_value", "median_diff"}``;
    ``median_diff`` is the median of ``reference - baseline``. With no
    non-zero difference the test has nothing to rank: ``p_value`` 1.0 and
    ``statistic`` None; with no pair at all both are None.
    """
    from scipy.stats import wilcoxon

    a = np.asarray(reference, dtype=float)
    b = np.asarray(baseline, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"`reference` and `baseline` must be 1-D of one length; got {a.shape} and {b.shape}")
    diff = a - b
    nonzero = int(np.count_nonzero(diff))
    out: dict[str, Any] = {"n": int(diff.size), "n_nonzero": nonzero, "statistic": None, "p_value": None,
                           "median_diff": float(np.median(diff)) if diff.size else None}
    if diff.size == 0:
        return out
    if nonzero == 0:
        out["p_value"] = 1.0
        return out
    result = wilcoxon(a, b, zero_method="wilcox", alternative="two-sided")
    statistic, p_value = float(result.statistic), float(result.pvalue)
    out["statistic"] = statistic if math.isfinite(statistic) else None
    out["p_value"] = p_value if math.isfinite(p_value) else None
    return out


def wilcoxon_vs(table: Mapping[str, Any], reference: str, baseline: str, metric: str) -> dict[str, Any]:
    """:func:`wilcoxon_signed_rank` of ``reference`` against ``baseline`` over the datasets' seed-means."""
    _, a, b = paired_means(table, metric, reference, baseline)
    return wilcoxon_signed_rank(a, b)
