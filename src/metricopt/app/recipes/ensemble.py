"""The MLP and LightGBM together: their positive-class probabilities averaged.

Averaging two models that err differently (a smooth MLP, axis-aligned
trees) ranks the rows better than either alone; the decision threshold is
then tuned on the validation rows for the target metric
(:func:`metricopt.evaluation.tune_threshold`). ``MetricClassifier(model="mlp+lightgbm")``
and ``metricopt train --model mlp+lightgbm`` train it; why it is the
tabular recipe, with the validation measurements: docs/benchmarks/tabular.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from metricopt.app.recipes.boosting import BoostedClassifier
from metricopt.predict import predict_proba

__all__ = ["MODELS", "AveragedClassifier"]

#: The models MetricClassifier and ``metricopt train --model`` train: a PyTorch MLP, LightGBM (binary
#: targets), or both with their probabilities averaged (binary targets).
MODELS = ("mlp", "lightgbm", "mlp+lightgbm")


@dataclass
class AveragedClassifier:
    """A binary MLP (one logit) and a booster, trained on the same rows; their probabilities averaged.

    Attributes:
        mlp: the ``torch.nn.Module`` (one output logit).
        booster: the :class:`~metricopt.app.recipes.boosting.BoostedClassifier`.
    """

    mlp: nn.Module
    booster: BoostedClassifier

    def predict_proba(self, X: Any) -> np.ndarray:
        """``(n, 2)`` class probabilities: the mean of the two models' (X as both were trained on)."""
        X = np.asarray(X, dtype=np.float32)
        p = (np.asarray(predict_proba(self.mlp, X), dtype=np.float64) + self.booster.predict_proba(X)[:, 1]) / 2
        return np.column_stack([1 - p, p])
