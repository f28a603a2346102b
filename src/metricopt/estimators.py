"""A scikit-learn classifier trained for the metric you report.

:class:`MetricClassifier` trains a small PyTorch MLP with the AnyLoss confusion
loss for ``metric`` (or a cross-entropy baseline) and predicts at threshold 0.5
(argmax for multi-class): the loss already targets the metric, so no threshold
tuning is needed. It follows the scikit-learn estimator contract (``fit``,
``predict``, ``predict_proba``, ``score``, ``get_params``/``set_params``,
``clone``), so it works in ``Pipeline``, ``cross_val_score`` and ``GridSearchCV``.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted, check_X_y

from metricopt._checks import check_choice
from metricopt.data.splits import fit_standardization
from metricopt.metrics import METRIC_NAMES, metric_score
from metricopt.training import LOSSES, make_loss, predict_labels, predict_proba, train_classifier

__all__ = ["MetricClassifier"]


class MetricClassifier(ClassifierMixin, BaseEstimator):
    """MLP classifier trained to maximise a confusion-matrix metric.

    Args:
        metric: the metric to train for and to report in :meth:`score`
            (``"f1"``, ``"gmean"``, ``"balanced_accuracy"``, ``"mcc"``, ... see
            ``metricopt.METRIC_NAMES``).
        loss: ``"anyloss"`` (the confusion loss for ``metric``), or a baseline:
            ``"bce"``, ``"weighted_bce"``, ``"focal"``.
        hidden_layer_sizes: widths of the hidden ReLU layers.
        amplification: AnyLoss steepness L for binary targets (float > 0 or
            ``"auto"``).
        sharpness: multi-class targets: the soft prediction is
            ``softmax(sharpness * logits)``.
        beta: weight of recall for ``metric="fbeta"``.
        max_epochs: number of passes over the training data.
        batch_size: mini-batch size. AnyLoss is a batch-level loss; batches
            should hold a few minority samples (the default 256 does for a
            positive rate of a few percent).
        learning_rate: Adam step size.
        weight_decay: Adam L2 penalty.
        validation_fraction: share of the training data held out (stratified)
            to keep the epoch with the best ``metric``; 0 keeps the last epoch.
        standardize: scale features to zero mean, unit variance (fitted on the
            training data).
        random_state: seed for initialisation, the split and the batch order:
            an int, a ``numpy.random.RandomState``, or None for a fresh random
            seed (scikit-learn's convention).
        verbose: print one line per epoch.

    Attributes:
        classes_: the class labels; for binary targets ``classes_[1]`` is positive.
        n_features_in_: number of features seen in ``fit``.
        model_: the trained ``torch.nn.Module``.
        history_: per-epoch training loss and validation score.
        best_epoch_: the epoch whose weights are kept.

    Example:
        >>> from sklearn.datasets import load_breast_cancer
        >>> X, y = load_breast_cancer(return_X_y=True)
        >>> clf = MetricClassifier(metric="f1", max_epochs=5, random_state=0).fit(X, 1 - y)
        >>> clf.predict(X[:3]).tolist()
        [1, 1, 1]
        >>> 0.8 < clf.score(X, 1 - y) <= 1.0
        True
    """

    def __init__(
        self,
        metric: str = "f1",
        loss: str = "anyloss",
        *,
        hidden_layer_sizes: Sequence[int] = (64, 64),
        amplification: float | str = 73.0,
        sharpness: float = 2.0,
        beta: float = 1.0,
        max_epochs: int = 100,
        batch_size: int = 256,
        learning_rate: float = 1e-3,
        weight_decay: float = 0.0,
        validation_fraction: float = 0.1,
        standardize: bool = True,
        random_state: int | None = None,
        verbose: bool = False,
    ) -> None:
        self.metric = metric
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.amplification = amplification
        self.sharpness = sharpness
        self.beta = beta
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.standardize = standardize
        self.random_state = random_state
        self.verbose = verbose

    def _validate_params(self) -> None:
        check_choice("metric", self.metric, METRIC_NAMES)
        check_choice("loss", self.loss, LOSSES)
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"`validation_fraction` must be in [0, 1); got {self.validation_fraction!r}")
        for name in ("max_epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer; got {value!r}")

    def _transform(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.mean_) / self.scale_).astype(np.float32) if self.standardize else X.astype(np.float32)

    def fit(self, X: Any, y: Any) -> "MetricClassifier":
        """Train on ``X`` ``(n_samples, n_features)`` and labels ``y``."""
        self._validate_params()
        X, y = check_X_y(X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_, encoded = np.unique(y, return_inverse=True)
        n_classes = len(self.classes_)
        if n_classes < 2:
            raise ValueError(f"`y` must contain at least 2 classes; got only {self.classes_.tolist()}")
        self.n_features_in_ = X.shape[1]
        if self.standardize:
            self.mean_, self.scale_ = fit_standardization(X)
        else:
            self.mean_, self.scale_ = np.zeros(X.shape[1]), np.ones(X.shape[1])
        X = self._transform(X)
        seed = (
            int(self.random_state) if isinstance(self.random_state, numbers.Integral)
            else int(check_random_state(self.random_state).randint(2**31 - 1))
        )

        X_val = y_val = None
        if self.validation_fraction > 0:
            X, X_val, encoded, y_val = train_test_split(
                X, encoded, test_size=self.validation_fraction, random_state=seed,
                stratify=encoded if np.bincount(encoded).min() >= 2 else None,
            )

        loss_fn = make_loss(
            self.loss, metric=self.metric, y_train=encoded, num_classes=n_classes,
            amplification=self.amplification, sharpness=self.sharpness, beta=self.beta,
        )
        progress = (lambda row: print(", ".join(f"{k}={v:.4g}" for k, v in row.items()))) if self.verbose else None
        self.model_, result = train_classifier(
            loss_fn, X, encoded, num_classes=n_classes, hidden_sizes=self.hidden_layer_sizes,
            X_val=X_val, y_val=y_val, metric=self.metric, beta=self.beta, seed=seed,
            epochs=self.max_epochs, batch_size=self.batch_size, learning_rate=self.learning_rate,
            weight_decay=self.weight_decay, progress=progress,
        )
        self.history_ = result.history
        self.best_epoch_ = result.best_epoch
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``(n_samples, n_classes)``, columns in ``classes_`` order."""
        check_is_fitted(self, "model_")
        X = check_array(X, dtype=np.float64)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"`X` has {X.shape[1]} features, but MetricClassifier was fitted with {self.n_features_in_}")
        probs = predict_proba(self.model_, self._transform(X))
        return np.stack([1 - probs, probs], axis=1) if probs.ndim == 1 else probs

    def predict(self, X: Any) -> np.ndarray:
        """Labels at threshold 0.5 (binary) or argmax (multi-class)."""
        probs = self.predict_proba(X)
        column = predict_labels(probs[:, 1]) if probs.shape[1] == 2 else predict_labels(probs)
        return self.classes_[column]

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """The chosen ``metric`` of :meth:`predict` on ``(X, y)`` (higher is better)."""
        if sample_weight is not None:
            raise ValueError("`sample_weight` is not supported by MetricClassifier.score; got a non-None value")
        y = np.asarray(y)
        index = {label: i for i, label in enumerate(self.classes_.tolist())}
        unknown = set(np.unique(y).tolist()) - set(index)
        if unknown:
            raise ValueError(f"`y` holds labels unseen in fit: {sorted(unknown)[:5]}")
        encoded = np.array([index[label] for label in y.tolist()], dtype=np.int64)
        predicted = np.searchsorted(self.classes_, self.predict(X))
        return float(metric_score(encoded, predicted, self.metric, beta=self.beta, num_classes=len(self.classes_)))
