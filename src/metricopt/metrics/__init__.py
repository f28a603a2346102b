"""Exact metrics: the scores that every metricopt loss is measured against.

Confusion-matrix metrics live in :mod:`metricopt.metrics.confusion`; their
formulas (shared with the losses) in :mod:`metricopt.metrics._formulas`.
"""

from metricopt.metrics._formulas import METRICS
from metricopt.metrics.confusion import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    fbeta_score,
    gmean_score,
    jaccard_score,
    kappa_score,
    mcc_score,
    metric_score,
    precision_score,
    recall_score,
    resolve_metric,
    specificity_score,
)

METRIC_NAMES: tuple[str, ...] = tuple(METRICS)

__all__ = [
    "METRIC_NAMES",
    "accuracy_score",
    "balanced_accuracy_score",
    "confusion_matrix",
    "f1_score",
    "fbeta_score",
    "gmean_score",
    "jaccard_score",
    "kappa_score",
    "mcc_score",
    "metric_score",
    "precision_score",
    "recall_score",
    "resolve_metric",
    "specificity_score",
]
