"""metricopt: train PyTorch models for the metric you report.

* :func:`confusion_loss` / :class:`ConfusionLoss`: F1, G-mean, MCC, balanced
  accuracy and any f(TP, FP, FN, TN) as a loss (AnyLoss).
* :class:`APLoss`, :class:`RecallLoss`, :class:`NDCGLoss`, :class:`AUROCLoss`
  (and their functions): rank metrics as losses via :func:`blackbox_rank` (RaMBO).
* :mod:`metricopt.metrics`: the exact metrics, equal to scikit-learn's.
* :class:`MetricClassifier`: a scikit-learn classifier trained for a metric.
"""

from metricopt.estimators import MetricClassifier
from metricopt.losses import (
    APLoss,
    AUROCLoss,
    ConfusionLoss,
    NDCGLoss,
    RecallLoss,
    auroc_loss,
    average_precision_loss,
    blackbox_rank,
    confusion_loss,
    ndcg_loss,
    recall_loss,
)
from metricopt.metrics import METRIC_NAMES, metric_score

__version__ = "0.1.0"

__all__ = [
    "APLoss",
    "AUROCLoss",
    "ConfusionLoss",
    "METRIC_NAMES",
    "MetricClassifier",
    "NDCGLoss",
    "RecallLoss",
    "auroc_loss",
    "average_precision_loss",
    "blackbox_rank",
    "confusion_loss",
    "metric_score",
    "ndcg_loss",
    "recall_loss",
    "__version__",
]
