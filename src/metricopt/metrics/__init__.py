"""Exact metrics: the scores that every metricopt loss is measured against.

Confusion-matrix metrics live in :mod:`metricopt.metrics.confusion`; their
formulas (shared with the losses) in :mod:`metricopt.metrics._formulas`.
Rank metrics (average precision, ROC AUC, NDCG, recall@K, MRR, MAP@R and a
retrieval report from embeddings) live in :mod:`metricopt.metrics.ranking`.
"""

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
from metricopt.metrics.ranking import (
    average_precision_score,
    map_at_r,
    mrr_score,
    ndcg_at_k,
    recall_at_k,
    retrieval_report,
    roc_auc_score,
)
from metricopt.metrics.registry import CONFUSION

#: The confusion-matrix metrics (:mod:`metricopt.metrics.registry`; each has a formula in ``_formulas.METRICS``).
METRIC_NAMES: tuple[str, ...] = CONFUSION

__all__ = [
    "METRIC_NAMES",
    "accuracy_score",
    "average_precision_score",
    "balanced_accuracy_score",
    "confusion_matrix",
    "f1_score",
    "fbeta_score",
    "gmean_score",
    "jaccard_score",
    "kappa_score",
    "map_at_r",
    "mcc_score",
    "metric_score",
    "mrr_score",
    "ndcg_at_k",
    "precision_score",
    "recall_at_k",
    "recall_score",
    "resolve_metric",
    "retrieval_report",
    "roc_auc_score",
    "specificity_score",
]
