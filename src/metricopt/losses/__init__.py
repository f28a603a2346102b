"""Losses, one module per method family, each as a function and an ``nn.Module``.

* :mod:`metricopt.losses.confusion`: confusion-matrix metrics (AnyLoss).
* :mod:`metricopt.losses.baselines`: the cross-entropy recipes metricopt is compared with.
"""

from metricopt.losses.baselines import FocalLoss, cross_entropy_loss, focal_loss, inverse_frequency_weights
from metricopt.losses.confusion import ConfusionLoss, confusion_loss

__all__ = [
    "ConfusionLoss",
    "FocalLoss",
    "confusion_loss",
    "cross_entropy_loss",
    "focal_loss",
    "inverse_frequency_weights",
]
