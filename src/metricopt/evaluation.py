"""Scoring trained classifiers with the exact metrics: reports and threshold tuning.

Shared by the CLI and the benchmarks so that every method is scored the same way:
binary decisions at ``p > threshold`` (0.5 unless tuned), multi-class at argmax,
each metric with its ``"auto"`` averaging (binary; macro or scikit-learn's
multi-class definition).

Constrained metrics (``"recall@precision>=0.95"``,
:mod:`metricopt.metrics.constrained`): :func:`tune_threshold` calibrates the
threshold so that the constraints hold on the rows it is given with a margin
(:func:`~metricopt.metrics.constrained.calibrate_threshold`), :func:`report`
gives the constrained score and, under ``"<metric> held"``, 1.0 or 0.0, and
:func:`selection_score` scores a model's validation probabilities at the
threshold calibration would choose.

Rank metrics (:data:`THRESHOLD_FREE_METRICS`: ``"ap"``, average precision, and
``"auroc"``, area under the ROC curve) are threshold-free: :func:`report`
computes them exactly from the probabilities themselves
(:mod:`metricopt.metrics.ranking`, equal to scikit-learn's), never from
decisions, and :func:`tune_threshold` refuses them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from metricopt.metrics import average_precision_score, metric_score, roc_auc_score
from metricopt.metrics.constrained import (
    DEFAULT_CONFIDENCE,
    calibrate_threshold,
    constrained_report,
    is_constrained,
    parse_constrained,
)
from metricopt.metrics.registry import REPORTED, THRESHOLD_FREE
from metricopt.predict import predict_labels

#: The metrics printed by the CLI and recorded by the benchmarks.
REPORT_METRICS: tuple[str, ...] = REPORTED

#: Threshold-free metrics :func:`report` computes from the probabilities, not from decisions.
THRESHOLD_FREE_METRICS: tuple[str, ...] = THRESHOLD_FREE

__all__ = ["REPORT_METRICS", "THRESHOLD_FREE_METRICS", "rank_score", "report", "selection_score", "tune_threshold"]


def __getattr__(name: str) -> tuple[str, ...]:
    if name == "RANK_METRICS":  # its old name: the rank-loss recipes' RANK_METRICS also holds ndcg and recall@K
        import warnings

        warnings.warn("metricopt.evaluation.RANK_METRICS is now THRESHOLD_FREE_METRICS; the old name will be removed",
                      DeprecationWarning, stacklevel=2)
        return THRESHOLD_FREE_METRICS
    raise AttributeError(f"module 'metricopt.evaluation' has no attribute {name!r}")


def rank_score(y_true: np.ndarray, probs: np.ndarray, metric: str, *, num_classes: int = 2) -> float:
    """A rank metric (``"ap"`` or ``"auroc"``) of the scores ``probs``; no threshold involved.

    Binary ``(N,)`` positive-class probabilities give the binary AP / AUROC;
    ``(N, C)`` rows give the macro one-vs-rest mean over the C classes (AP of a
    class without a positive is 0, as in scikit-learn; AUROC leaves out a class
    that is absent or alone).

    Example:
        >>> rank_score(np.array([0, 1, 1, 0]), np.array([0.1, 0.8, 0.4, 0.4]), "ap")
        0.8333333333333333
    """
    if metric not in THRESHOLD_FREE_METRICS:
        raise ValueError(f"`metric` must be one of {THRESHOLD_FREE_METRICS}; got {metric!r}")
    y_true, probs = np.asarray(y_true), np.asarray(probs, dtype=np.float64)
    if probs.ndim == 1:
        positive = (y_true == 1).astype(np.int64)
        if metric == "ap":
            return float(average_precision_score(positive, probs))
        return float(roc_auc_score(positive, probs))
    if probs.ndim != 2 or probs.shape[1] != num_classes:
        raise ValueError(f"`probs` must be (N,) or (N, {num_classes}); got shape {probs.shape}")
    onehot = (y_true[:, None] == np.arange(num_classes)[None, :]).astype(np.int64)
    if metric == "ap":
        return float(average_precision_score(onehot, probs, average="macro"))
    present = [c for c in range(num_classes) if 0 < onehot[:, c].sum() < len(onehot)]
    if not present:
        raise ValueError("`y_true` must hold at least two classes for AUROC")
    return float(np.mean([roc_auc_score(onehot[:, c], probs[:, c]) for c in present]))


def report(
    y_true: np.ndarray,
    probs: np.ndarray,
    *,
    num_classes: int,
    metrics: Sequence[str] = REPORT_METRICS,
    threshold: float = 0.5,
) -> dict[str, float]:
    """Exact metrics of the decisions taken from ``probs`` (rank metrics: of ``probs`` itself).

    Args:
        y_true: ``(N,)`` labels in ``[0, num_classes)``.
        probs: ``(N,)`` positive-class probabilities or ``(N, C)`` rows.
        num_classes: number of classes (fixes the label set).
        metrics: names from ``metricopt.METRIC_NAMES`` or :data:`THRESHOLD_FREE_METRICS`.
        threshold: binary decision threshold (rank metrics ignore it).

    Example:
        >>> report(np.array([0, 1, 1]), np.array([0.2, 0.9, 0.4]), num_classes=2, metrics=("f1", "recall"))
        {'f1': 0.6666666666666666, 'recall': 0.5}
    """
    out: dict[str, float] = {}
    y_pred = None
    for name in metrics:
        if name in THRESHOLD_FREE_METRICS:
            out[name] = rank_score(y_true, probs, name, num_classes=num_classes)
            continue
        if y_pred is None:
            y_pred = predict_labels(probs, threshold=threshold)
        out[name] = float(metric_score(y_true, y_pred, name, num_classes=num_classes))
        if is_constrained(name) and num_classes == 2:
            out[f"{name} held"] = float(constrained_report(y_true, y_pred, name)["held"])
    return out


def tune_threshold(y_true: np.ndarray, probs: np.ndarray, metric: str, *, beta: float = 1.0,
                   max_candidates: int = 200, confidence: float = DEFAULT_CONFIDENCE) -> float:
    """The binary threshold that maximises ``metric`` on ``(y_true, probs)``.

    Candidates are midpoints between sorted distinct probabilities (thinned to
    ``max_candidates`` quantiles), 0.5, and one below the smallest probability
    (everything positive); ties go to the candidate closest to 0.5. This is the
    usual "tune the threshold on validation data" recipe that AnyLoss is
    designed to make unnecessary. ``beta``: the weight of recall for
    ``metric="fbeta"``.

    A constrained metric (``"recall@precision>=0.95"``) is calibrated instead:
    the exact best threshold among all whose decisions meet the constraints
    at ``confidence`` (:func:`~metricopt.metrics.constrained.calibrate_threshold`;
    0.5: on the rows themselves, no margin).

    Example:
        >>> tune_threshold(np.array([1, 1, 0, 0]), np.array([0.1, 0.2, 0.3, 0.4]), "recall") < 0.1
        True
    """
    if metric in THRESHOLD_FREE_METRICS:
        raise ValueError(f"`metric` {metric!r} is a rank metric: it has no threshold to tune")
    y_true, probs = np.asarray(y_true), np.asarray(probs, dtype=np.float64)
    if probs.ndim != 1:
        raise ValueError(f"`probs` must be 1-D binary probabilities to tune a threshold; got shape {probs.shape}")
    if is_constrained(metric):
        return calibrate_threshold(y_true, probs, metric, beta=beta, confidence=confidence).threshold
    distinct = np.unique(probs)
    candidates = (distinct[:-1] + distinct[1:]) / 2 if len(distinct) > 1 else distinct
    if len(candidates) > max_candidates:
        candidates = np.quantile(candidates, np.linspace(0, 1, max_candidates))
    candidates = np.concatenate([[0.5, np.nextafter(distinct[0], -np.inf)], candidates])
    best, best_score = 0.5, -np.inf
    for threshold in candidates:
        score = float(metric_score(y_true, predict_labels(probs, threshold=threshold), metric, beta=beta,
                                   num_classes=2))
        if score > best_score or (score == best_score and abs(threshold - 0.5) < abs(best - 0.5)):
            best, best_score = float(threshold), score
    return best


def selection_score(y_true: np.ndarray, probs: np.ndarray, metric: str, *, num_classes: int = 2, beta: float = 1.0,
                    confidence: float = DEFAULT_CONFIDENCE) -> float:
    """How good a model's validation probabilities are for ``metric``, higher is better: what picks an epoch.

    A constrained metric is scored at the threshold calibration would choose
    (the objective there, negated for ``fpr``/``fnr``; the worst value where
    no threshold meets the constraints), since its decisions will be taken
    there, not at 0.5; any other metric at ``p > 0.5`` or the argmax.

    Example:
        >>> selection_score(np.array([0, 1, 1, 0]), np.array([0.1, 0.8, 0.4, 0.3]), "recall@precision>=0.9",
        ...                 confidence=0.5)
        1.0
    """
    if is_constrained(metric):
        if num_classes != 2:
            raise ValueError(f"a constrained metric calibrates a binary threshold; got {num_classes} classes")
        parsed = parse_constrained(metric)
        return parsed.utility(calibrate_threshold(y_true, probs, parsed, beta=beta, confidence=confidence).score)
    return float(metric_score(y_true, predict_labels(probs), metric, beta=beta, num_classes=num_classes))
