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

#: The models MetricClassifier and ``metricopt train --model`` train: a PyTorch MLP, LightGBM, or both with their
#: probabilities averaged.
MODELS = ("mlp", "lightgbm", "mlp+lightgbm")


@dataclass
class AveragedClassifier:
    """An MLP and a booster trained on the same rows; their class probabilities averaged.

    Attributes:
        mlp: the ``torch.nn.Module`` (one output logit for binary targets, one per class otherwise).
        booster: the :class:`~metricopt.app.recipes.boosting.BoostedClassifier`.
    """

    mlp: nn.Module
    booster: BoostedClassifier

    def predict_proba(self, X: Any) -> np.ndarray:
        """``(n, K)`` class probabilities: the mean of the two models' (X as both were trained on)."""
        X = np.asarray(X, dtype=np.float32)
        mlp = np.asarray(predict_proba(self.mlp, X), dtype=np.float64)
        if mlp.ndim == 1:  # binary: the positive class's probability
            mlp = np.column_stack([1 - mlp, mlp])
        return (mlp + self.booster.predict_proba(X)) / 2

    def probabilities(self, X: Any) -> np.ndarray:
        """As :func:`metricopt.predict.predict_proba` gives them: ``(n,)`` positive-class (binary), else ``(n, K)``."""
        probs = self.predict_proba(X)
        return probs[:, 1] if self.booster.n_classes == 2 else probs
