"""Losses, one module per method family, each as a function and an ``nn.Module``.

* :mod:`metricopt.losses.confusion`: confusion-matrix metrics (AnyLoss);
  :mod:`metricopt.losses.count_average` the running average of their counts,
  :mod:`metricopt.losses.constrained` the Lagrange multipliers of constrained
  metrics (``"recall@precision>=0.95"``).
* :mod:`metricopt.losses.ranking`: rank metrics (AP, recall@K, NDCG, AUROC) via
  exact ranks with an interpolated gradient (RaMBO); :mod:`metricopt.losses.ranker`
  holds the ranker, :mod:`metricopt.losses.memory` the batch memory.
* :mod:`metricopt.losses.baselines`: the cross-entropy recipes metricopt is compared with.
"""

from metricopt.losses.baselines import FocalLoss, cross_entropy_loss, focal_loss, inverse_frequency_weights
from metricopt.losses.confusion import ConfusionLoss, confusion_loss
from metricopt.losses.constrained import ConstraintMultipliers
from metricopt.losses.count_average import CountAverage
from metricopt.losses.memory import BatchMemory
from metricopt.losses.ranker import blackbox_rank as blackbox_rank  # deprecated alias, not in __all__
from metricopt.losses.ranker import exact_rank, interpolated_rank
from metricopt.losses.ranking import (
    APLoss,
    AUROCLoss,
    NDCGLoss,
    RecallLoss,
    auroc_loss,
    average_precision_loss,
    ndcg_loss,
    recall_loss,
    recall_loss_scores,
    retrieval_scores,
)

__all__ = [
    "APLoss",
    "AUROCLoss",
    "BatchMemory",
    "ConfusionLoss",
    "ConstraintMultipliers",
    "CountAverage",
    "NDCGLoss",
    "RecallLoss",
    "auroc_loss",
    "average_precision_loss",
    "exact_rank",
    "interpolated_rank",
    "ndcg_loss",
    "recall_loss",
    "recall_loss_scores",
    "retrieval_scores",
    "FocalLoss",
    "confusion_loss",
    "cross_entropy_loss",
    "focal_loss",
    "inverse_frequency_weights",
]
