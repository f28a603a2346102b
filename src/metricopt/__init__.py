"""metricopt: train PyTorch models for the metric you report.

* :func:`confusion_loss` / :class:`ConfusionLoss`: F1, G-mean, MCC, balanced
  accuracy and any f(TP, FP, FN, TN) as a loss (AnyLoss).
* :mod:`metricopt.metrics`: the exact metrics, equal to scikit-learn's.
* :class:`MetricClassifier`: a scikit-learn classifier trained for a metric.
"""

from metricopt.estimators import MetricClassifier
from metricopt.losses import ConfusionLoss, confusion_loss
from metricopt.metrics import METRIC_NAMES, metric_score

__version__ = "0.1.0"

__all__ = ["ConfusionLoss", "METRIC_NAMES", "MetricClassifier", "confusion_loss", "metric_score", "__version__"]
