"""Scoring trained classifiers with the exact metrics: reports and threshold tuning.

Shared by the CLI and the benchmarks so that every method is scored the same way:
binary decisions at ``p > threshold`` (0.5 unless tuned), multi-class at argmax,
each metric with its ``"auto"`` averaging (binary; macro or scikit-learn's
multi-class definition).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from metricopt.metrics import metric_score
from metricopt.training import predict_labels

#: The metrics printed by the CLI and recorded by the benchmarks.
REPORT_METRICS: tuple[str, ...] = ("f1", "gmean", "balanced_accuracy", "mcc", "accuracy", "precision", "recall")

__all__ = ["REPORT_METRICS", "report", "tune_threshold"]


def report(
    y_true: np.ndarray,
    probs: np.ndarray,
    *,
    num_classes: int,
    metrics: Sequence[str] = REPORT_METRICS,
    threshold: float = 0.5,
) -> dict[str, float]:
    """Exact metrics of the decisions taken from ``probs``.

    Args:
        y_true: ``(N,)`` labels in ``[0, num_classes)``.
        probs: ``(N,)`` positive-class probabilities or ``(N, C)`` rows.
        num_classes: number of classes (fixes the label set).
        metrics: names from ``metricopt.METRIC_NAMES``.
        threshold: binary decision threshold.

    Example:
        >>> report(np.array([0, 1, 1]), np.array([0.2, 0.9, 0.4]), num_classes=2, metrics=("f1", "recall"))
        {'f1': 0.6666666666666666, 'recall': 0.5}
    """
    y_pred = predict_labels(probs, threshold=threshold)
    return {name: float(metric_score(y_true, y_pred, name, num_classes=num_classes)) for name in metrics}


def tune_threshold(y_true: np.ndarray, probs: np.ndarray, metric: str, *, max_candidates: int = 200) -> float:
    """The binary threshold that maximises ``metric`` on ``(y_true, probs)``.

    Candidates are midpoints between sorted distinct probabilities (thinned to
    ``max_candidates`` quantiles), 0.5, and one below the smallest probability
    (everything positive); ties go to the candidate closest to 0.5. This is the
    usual "tune the threshold on validation data" recipe that AnyLoss is
    designed to make unnecessary.

    Example:
        >>> tune_threshold(np.array([1, 1, 0, 0]), np.array([0.1, 0.2, 0.3, 0.4]), "recall") < 0.1
        True
    """
    y_true, probs = np.asarray(y_true), np.asarray(probs, dtype=np.float64)
    if probs.ndim != 1:
        raise ValueError(f"`probs` must be 1-D binary probabilities to tune a threshold; got shape {probs.shape}")
    distinct = np.unique(probs)
    candidates = (distinct[:-1] + distinct[1:]) / 2 if len(distinct) > 1 else distinct
    if len(candidates) > max_candidates:
        candidates = np.quantile(candidates, np.linspace(0, 1, max_candidates))
    candidates = np.concatenate([[0.5, np.nextafter(distinct[0], -np.inf)], candidates])
    best, best_score = 0.5, -np.inf
    for threshold in candidates:
        score = float(metric_score(y_true, predict_labels(probs, threshold=threshold), metric, num_classes=2))
        if score > best_score or (score == best_score and abs(threshold - 0.5) < abs(best - 0.5)):
            best, best_score = float(threshold), score
    return best
