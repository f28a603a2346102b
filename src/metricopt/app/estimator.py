"""A scikit-learn classifier trained for the metric you report.

:class:`MetricClassifier` with its defaults is the tabular recipe for binary
targets (:data:`BINARY_RECIPE`, chosen on validation tables and measured on
107 others: docs/benchmarks/tabular.md): a PyTorch MLP trained with
class-weighted cross-entropy and LightGBM with its log-loss, their
probabilities averaged, and the decision threshold tuned for ``metric`` on
held-out rows, which also pick the MLP's epoch and stop the boosting.
Multi-class targets get the same two models, deciding by the argmax
(:data:`MULTICLASS_RECIPE`). Every part can
be chosen instead: ``model="mlp"`` / ``"lightgbm"`` / ``"mlp+lightgbm"``,
``loss="anyloss"`` (the metric as the loss, AnyLoss) or a cross-entropy
baseline, ``tune_threshold=False`` (decide at 0.5).

It follows the scikit-learn estimator contract (``fit``, ``predict``,
``predict_proba``, ``score``, ``get_params``/``set_params``, ``clone``), so it
works in ``Pipeline``, ``cross_val_score`` and ``GridSearchCV``, and passes
scikit-learn's ``check_estimator`` except for the one check listed in
:data:`EXPECTED_FAILED_CHECKS` (binary text labels without ``pos_label``, which
this estimator refuses on purpose).
"""

from __future__ import annotations

import numbers
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from metricopt import evaluation
from metricopt._checks import check_choice
from metricopt.app.data.labels import positive_class
from metricopt.app.data.splits import fit_standardization
from metricopt.app.recipes.boosting import (
    DEFAULT_BOOSTING_AMPLIFICATION,
    OBJECTIVE_OF_LOSS,
    BoostedClassifier,
    fit_lightgbm,
)
from metricopt.app.recipes.classification import BATCHINGS, LOSSES, make_loss, train_classifier
from metricopt.app.recipes.ensemble import MODELS, AveragedClassifier
from metricopt.losses.count_average import check_momentum
from metricopt.metrics import METRIC_NAMES, metric_score
from metricopt.metrics.constrained import (
    DEFAULT_CONFIDENCE,
    calibrate_threshold,
    constraint_z,
    is_constrained,
    parse_constrained,
)
from metricopt.predict import predict_labels, predict_proba

__all__ = ["BINARY_RECIPE", "EXPECTED_FAILED_CHECKS", "MODELS", "MULTICLASS_RECIPE", "MetricClassifier"]

#: The ``check_estimator`` checks MetricClassifier fails on purpose, with the reason
#: (pass it as ``check_estimator(MetricClassifier(), expected_failed_checks=EXPECTED_FAILED_CHECKS)``).
EXPECTED_FAILED_CHECKS: dict[str, str] = {
    "check_classifiers_classes": (
        "it fits binary text labels ('one'/'two') without pos_label, and MetricClassifier refuses to guess "
        "the positive class of two labels neither of which is 1 (or True); the same predictions with "
        "pos_label given, and the check's multi-class and -1/1 parts, pass (tests/test_estimator.py)"
    ),
}


#: What ``"auto"`` means for binary targets: the tabular recipe, chosen on 26 validation tables by a rule fixed
#: before the run (docs/benchmarks/tabular.md, "Choosing the recipe"): an MLP trained with class-weighted
#: cross-entropy and LightGBM with its log-loss, their probabilities averaged, the decision threshold tuned for
#: ``metric`` on the held-out rows (which also pick the MLP's epoch and stop the boosting).
BINARY_RECIPE: dict[str, Any] = {"model": "mlp+lightgbm", "loss": "weighted_bce", "booster_loss": "bce",
                                 "tune_threshold": True}
#: What ``"auto"`` means for multi-class targets, chosen the same way on the 5 multi-class validation tables
#: (docs/benchmarks/tabular.md, "Choosing the multi-class defaults"): the binary recipe's two models, averaged,
#: deciding by the argmax (no threshold).
MULTICLASS_RECIPE: dict[str, Any] = {"model": "mlp+lightgbm", "loss": "weighted_bce", "booster_loss": "bce",
                                     "tune_threshold": False}


class MetricClassifier(ClassifierMixin, BaseEstimator):
    """Classifier trained for a confusion-matrix metric: an MLP, boosted trees, or both.

    Args:
        metric: the metric to train for and to report in :meth:`score`
            (``"f1"``, ``"gmean"``, ``"balanced_accuracy"``, ``"mcc"``, ... see
            ``metricopt.METRIC_NAMES``), or, for binary targets, a constrained
            metric such as ``"recall@precision>=0.95"`` or ``"tpr@fpr<=0.01"``
            (:mod:`metricopt.metrics.constrained`): the models train as for any
            metric (``loss="anyloss"``: the constrained loss), the epoch is
            chosen at the calibrated threshold, and the decision threshold is
            calibrated on the validation rows so that the constraints hold
            there with a margin (``constraint_confidence``).
        loss: ``"auto"`` (the recipe's: ``"weighted_bce"``), ``"anyloss"`` (the confusion loss
            for ``metric``), or a cross-entropy: ``"bce"``, ``"weighted_bce"``
            (inverse class frequency weights; LightGBM: ``is_unbalance``),
            ``"focal"`` (MLP only).
        model: ``"auto"`` (the recipe's ``"mlp+lightgbm"``), ``"mlp"``, a PyTorch MLP trained by Adam on
            mini-batches, ``"lightgbm"``, LightGBM boosted trees whose
            objective is AnyLoss on the whole training set
            (``loss="anyloss"``) or a log-loss (``"bce"``, ``"weighted_bce"``),
            stopped early on ``metric`` on the validation rows
            (:func:`metricopt.app.recipes.boosting.fit_lightgbm`), or
            ``"mlp+lightgbm"``, both trained on the same rows and their
            probabilities averaged
            (:class:`~metricopt.app.recipes.ensemble.AveragedClassifier`).
            The MLP's options
            (``hidden_layer_sizes``, ``sharpness``, ``max_epochs``,
            ``batch_size``, ``batching``, ``learning_rate``,
            ``weight_decay``) do not apply to ``"lightgbm"``.
        booster_loss: ``model="mlp+lightgbm"``: LightGBM's loss (one of
            ``"anyloss"``, ``"bce"``, ``"weighted_bce"``); None: the recipe's
            ``"bce"`` with ``model="auto"``, else ``loss``.
        hidden_layer_sizes: widths of the hidden ReLU layers.
        amplification: AnyLoss steepness L for binary targets (float > 0, or
            ``"auto"`` for the MLP); None: the model's default, 73 for the MLP
            (the paper's; 20 for a constrained ``metric``), 20 for LightGBM (measured: the design notes,
            "Gradient boosting with a confusion-metric objective").
        sharpness: multi-class targets and AnyLoss (MLP or LightGBM): the soft
            prediction is ``softmax(sharpness * logits)``.
        beta: weight of recall for ``metric="fbeta"``.
        max_epochs: number of passes over the training data.
        batch_size: mini-batch size. AnyLoss is a batch-level loss; batches
            should hold a few minority samples (the default 256 does for a
            positive rate of a few percent).
        batching: ``"shuffled"`` (a plain shuffle each epoch),
            ``"stratified"`` (class-aware: every batch holds each class in its
            share of the training rows; :func:`metricopt.batches.stratified_batches`)
            or ``"oversampled"`` (each batch topped up to at least 32 rows of
            every class; :func:`metricopt.batches.oversampled_batches`).
        count_momentum: ``loss="anyloss"`` on the MLP: None (the batch's own
            soft counts), or the weight in (0, 1] of each batch in a moving
            average of the soft counts across batches, so that the loss
            follows the dataset's metric rather than the batch's
            (:class:`metricopt.losses.count_average.CountAverage`).
        learning_rate: Adam step size.
        weight_decay: Adam L2 penalty.
        pos_label: the positive class of binary targets, the one ``metric``
            (F1, precision, recall, ...) is about and :meth:`score` reports.
            None: scikit-learn's convention (its default ``pos_label=1``, as
            in ``f1_score`` and ``scoring="f1"``): the label ``1`` (or
            ``True``) when it is one of the two, so ``{0, 1}``, ``{-1, 1}``,
            ``{False, True}`` and ``{1, 2}`` train for ``1``/``True``. Other
            binary labels (such as ``"bad"``/``"good"``) have no convention:
            ``fit`` raises a ValueError naming them instead of guessing
            (:mod:`metricopt.app.data.labels`). Must be None for multi-class
            targets.
        validation_fraction: share of each class held out (at least one
            sample per class) to keep the MLP's epoch with the best
            ``metric``, stop LightGBM and tune the threshold; 0, or a class
            with a single sample (with a warning), keeps the last epoch.
        tune_threshold: ``"auto"`` (True for binary targets, as the recipe;
            False for multi-class), True or False; a constrained ``metric``
            calibrates the threshold instead (``constraint_confidence``). True: after training,
            choose the decision threshold that maximises ``metric`` on the
            validation rows (:func:`metricopt.evaluation.tune_threshold`)
            instead of 0.5. Needs ``validation_fraction > 0`` (``"auto"``
            without validation rows decides at 0.5); with a class too small
            to hold out (the warning above), the threshold stays 0.5. Not for
            multi-class targets (argmax has no threshold).
        constraint_confidence: a constrained ``metric``: each constrained rate's
            one-sided Wilson bound at this confidence must meet its level on
            the validation rows (in [0.5, 1); 0.5: the rate itself, no margin;
            :func:`~metricopt.metrics.constrained.calibrate_threshold`).
        standardize: scale features to zero mean, unit variance (fitted on the
            training data).
        n_jobs: LightGBM's threads: None (1, as scikit-learn's ``n_jobs=None``),
            -1 (every core) or a number. The MLP uses torch's threads
            (``torch.set_num_threads``).
        random_state: seed for initialisation, the split and the batch order:
            an int, a ``numpy.random.RandomState``, or None for a fresh random
            seed (scikit-learn's convention).
        verbose: print one line per epoch.

    Attributes:
        classes_: the class labels, sorted (``predict_proba``'s column order).
        pos_label_: the positive class of a binary target (None for multi-class).
        n_features_in_: number of features seen in ``fit``.
        feature_names_in_: the column names of a DataFrame ``X`` seen in ``fit``
            (only then); ``predict`` requires the same names in the same order.
        model_: the trained ``torch.nn.Module`` (``"lightgbm"``: a
            :class:`~metricopt.app.recipes.boosting.BoostedClassifier`;
            ``"mlp+lightgbm"``: an
            :class:`~metricopt.app.recipes.ensemble.AveragedClassifier`).
        history_: per-epoch training loss and validation score (LightGBM: the
            validation score after each round; ``"mlp+lightgbm"``: the MLP's,
            the booster's are in ``model_.booster.history``).
        best_epoch_: the epoch whose weights are kept (LightGBM: the round;
            ``"mlp+lightgbm"``: the MLP's epoch).
        threshold_: the decision threshold on the positive class's
            probability (0.5 unless tuned; None for multi-class).
        calibration_: a constrained ``metric``: the
            :class:`~metricopt.metrics.constrained.ThresholdChoice` made on the
            validation rows (its ``feasible`` says whether any threshold met
            the constraints there); None otherwise.
        options_: the ``model``, ``loss``, ``booster_loss`` and
            ``tune_threshold`` that ``fit`` used, ``"auto"`` resolved.

    Example:
        >>> from sklearn.datasets import load_breast_cancer
        >>> X, y = load_breast_cancer(return_X_y=True)
        >>> clf = MetricClassifier(metric="f1", max_epochs=5, random_state=0).fit(X, 1 - y)
        >>> clf.predict(X[:3]).tolist()
        [1, 1, 1]
        >>> 0.8 < clf.score(X, 1 - y) <= 1.0
        True
        >>> labels = np.where(y == 0, "malignant", "benign")  # text labels: name the positive class
        >>> MetricClassifier(max_epochs=5, random_state=0, pos_label="malignant").fit(X, labels).pos_label_
        'malignant'
    """

    def __init__(
        self,
        metric: str = "f1",
        loss: str = "auto",
        *,
        model: str = "auto",
        booster_loss: str | None = None,
        hidden_layer_sizes: Sequence[int] = (64, 64),
        amplification: float | str | None = None,
        sharpness: float = 2.0,
        beta: float = 1.0,
        pos_label: Any = None,
        max_epochs: int = 100,
        batch_size: int = 256,
        batching: str = "shuffled",
        count_momentum: float | None = None,
        learning_rate: float = 1e-3,
        weight_decay: float = 0.0,
        validation_fraction: float = 0.25,
        tune_threshold: bool | str = "auto",
        constraint_confidence: float = DEFAULT_CONFIDENCE,
        standardize: bool = True,
        n_jobs: int | None = None,
        random_state: int | None = None,
        verbose: bool = False,
    ) -> None:
        self.metric = metric
        self.loss = loss
        self.model = model
        self.booster_loss = booster_loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.amplification = amplification
        self.sharpness = sharpness
        self.beta = beta
        self.pos_label = pos_label
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.batching = batching
        self.count_momentum = count_momentum
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.tune_threshold = tune_threshold
        self.constraint_confidence = constraint_confidence
        self.standardize = standardize
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose

    def _check_params(self) -> None:
        """Each parameter's own value (combinations: :meth:`_resolve`, once the targets are known)."""
        if is_constrained(self.metric):
            parse_constrained(self.metric)  # a malformed constraint names `metric` and lists the forms
            constraint_z(self.constraint_confidence)
        else:
            check_choice("metric", self.metric, METRIC_NAMES)
        check_choice("loss", self.loss, ("auto", *LOSSES))
        check_choice("model", self.model, ("auto", *MODELS))
        check_choice("batching", self.batching, BATCHINGS)
        if self.count_momentum is not None:
            check_momentum(self.count_momentum)
        if self.booster_loss is not None:
            check_choice("booster_loss", self.booster_loss, tuple(OBJECTIVE_OF_LOSS))
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"`validation_fraction` must be in [0, 1); got {self.validation_fraction!r}")
        if self.tune_threshold not in ("auto", True, False) or not isinstance(self.tune_threshold, (bool, str)):
            raise ValueError(f"`tune_threshold` must be 'auto', True or False; got {self.tune_threshold!r}")
        if self.tune_threshold is True and self.validation_fraction == 0:
            raise ValueError("`tune_threshold=True` tunes on the validation rows: it needs validation_fraction > 0; "
                             "got validation_fraction=0")
        for name in ("max_epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer; got {value!r}")
        if self.n_jobs is not None and (isinstance(self.n_jobs, bool) or not isinstance(self.n_jobs, numbers.Integral)
                                        or not (self.n_jobs >= 1 or self.n_jobs == -1)):
            raise ValueError(f"`n_jobs` must be None, -1 or a positive integer; got {self.n_jobs!r}")

    def _threads(self) -> int:
        """LightGBM's threads: ``n_jobs`` (None: 1, as scikit-learn's ``n_jobs=None``; -1: every core)."""
        if self.n_jobs is None:
            return 1
        return (os.cpu_count() or 1) if self.n_jobs == -1 else int(self.n_jobs)

    def _resolve(self, n_classes: int) -> dict[str, Any]:
        """``model``, ``loss``, ``booster_loss`` and ``tune_threshold`` with ``"auto"`` resolved for the targets
        (:data:`BINARY_RECIPE` or :data:`MULTICLASS_RECIPE`), their combinations checked."""
        constrained = is_constrained(self.metric)
        if constrained and n_classes > 2:
            raise ValueError(f"a constrained `metric` ({self.metric!r}) calibrates a binary decision threshold; `y` "
                             f"has {n_classes} classes (the loss itself, ConfusionLoss, takes multi-class targets)")
        recipe = BINARY_RECIPE if n_classes == 2 else MULTICLASS_RECIPE
        model = recipe["model"] if self.model == "auto" else self.model
        loss = recipe["loss"] if self.loss == "auto" else self.loss
        booster_loss = self.booster_loss
        if booster_loss is None and self.model == "auto":
            booster_loss = recipe["booster_loss"]
        tune = ((recipe["tune_threshold"] or constrained) and self.validation_fraction > 0) \
            if self.tune_threshold == "auto" else self.tune_threshold
        if tune and n_classes > 2:
            raise ValueError(f"`tune_threshold=True` applies to binary targets; `y` has {n_classes} classes "
                             "(multi-class decisions are the argmax)")
        if booster_loss is not None and model != "mlp+lightgbm":
            raise ValueError(f"`booster_loss` is LightGBM's loss in model='mlp+lightgbm'; got it with "
                             f"model={model!r} (use `loss`)")
        if model != "mlp" and (booster_loss or loss) not in OBJECTIVE_OF_LOSS:
            raise ValueError(f"`loss` must be one of {', '.join(map(repr, OBJECTIVE_OF_LOSS))} with "
                             f"model={model!r}; got {loss!r}")
        if model != "mlp" and self.amplification == "auto":
            raise ValueError(f"`amplification='auto'` is for the MLP's batches; with model={model!r} give a "
                             "number or None (its default)")
        if self.count_momentum is not None and (loss != "anyloss" or model == "lightgbm"):
            raise ValueError("`count_momentum` averages the MLP's AnyLoss counts across batches: it needs "
                             f"loss='anyloss' and an MLP; got loss={loss!r}, model={model!r}")
        return {"model": model, "loss": loss, "booster_loss": booster_loss, "tune_threshold": tune}

    def _transform(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.mean_) / self.scale_).astype(np.float32) if self.standardize else X.astype(np.float32)

    def _validation_rows(self, encoded: np.ndarray, seed: int) -> np.ndarray | None:
        """Indices of the validation rows: ``validation_fraction`` of each class, at least one, at most all but one.

        None (train on everything, keep the last epoch) without a validation
        fraction or when a class has a single sample.
        """
        if self.validation_fraction == 0:
            return None
        counts = np.bincount(encoded)
        if counts.min() < 2:
            single = self.classes_.tolist()[int(np.argmin(counts))]
            warnings.warn(
                f"MetricClassifier: class {single!r} has a single sample, too few for both the training and "
                f"the validation split (validation_fraction={self.validation_fraction!r}); training on all "
                "samples and keeping the last epoch", UserWarning, stacklevel=3)
            return None
        rng = np.random.default_rng(seed)
        rows = []
        for label, count in enumerate(counts):
            size = min(max(1, int(np.floor(self.validation_fraction * count + 0.5))), int(count) - 1)
            rows.append(rng.permutation(np.flatnonzero(encoded == label))[:size])
        return np.sort(np.concatenate(rows))

    def fit(self, X: Any, y: Any) -> MetricClassifier:
        """Train on ``X`` ``(n_samples, n_features)`` and labels ``y``.

        Raises:
            ValueError: a bad parameter; ``X``/``y`` not valid (NaN, one
                sample, one class, ...); binary labels without a positive-class
                convention and no ``pos_label``, or a ``pos_label`` that is not
                one of them (see ``pos_label``).
        """
        self._check_params()
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        if X.shape[0] < 2:
            raise ValueError(f"MetricClassifier needs at least 2 samples to fit; got n_samples={X.shape[0]}")
        self.classes_, encoded = np.unique(y, return_inverse=True)
        n_classes = len(self.classes_)
        if n_classes < 2:
            raise ValueError(f"`y` must contain at least 2 classes; got one class: {self.classes_.tolist()}")
        self.options_ = self._resolve(n_classes)
        self.pos_label_ = positive_class(self.classes_.tolist(), self.pos_label)
        if self.pos_label_ is not None:
            # The model's one logit scores the positive class: label 1, whatever its place in classes_.
            encoded = (encoded == self.classes_.tolist().index(self.pos_label_)).astype(np.int64)
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
        rows = self._validation_rows(encoded, seed)
        if rows is not None:
            train = np.ones(len(encoded), dtype=bool)
            train[rows] = False
            X, X_val, encoded, y_val = X[train], X[rows], encoded[train], encoded[rows]

        booster = mlp = None
        model = self.options_["model"]
        if model in ("lightgbm", "mlp+lightgbm"):
            booster = self._fit_booster(X, encoded, X_val, y_val, seed)
            self.history_ = [{"round": i + 1, "val_score": score} for i, score in enumerate(booster.history)]
            self.best_epoch_ = booster.best_iteration
        if model in ("mlp", "mlp+lightgbm"):
            mlp, result = self._fit_mlp(X, encoded, X_val, y_val, n_classes, seed)
            self.history_ = result.history
            self.best_epoch_ = result.best_epoch
        if mlp is None or booster is None:
            self.model_ = booster if mlp is None else mlp
        else:
            self.model_ = AveragedClassifier(mlp, booster)
        self._set_threshold(X_val, y_val, n_classes)
        return self

    def _fit_booster(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None, y_val: np.ndarray | None,
                     seed: int) -> BoostedClassifier:
        """LightGBM with the objective of ``booster_loss`` (or ``loss``), stopped early on validation ``metric``."""
        # a class too small to hold out (warned): stop early on the training rows; the threshold stays 0.5
        stop_X, stop_y = (X, y) if X_val is None else (X_val, y_val)
        objective, params = OBJECTIVE_OF_LOSS[self.options_["booster_loss"] or self.options_["loss"]]
        return fit_lightgbm(
            X, y, stop_X, stop_y, self.metric, objective=objective, params=params,
            amplification=DEFAULT_BOOSTING_AMPLIFICATION if self.amplification is None else self.amplification,
            sharpness=self.sharpness, beta=self.beta, num_threads=self._threads(), seed=seed)

    def _fit_mlp(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None, y_val: np.ndarray | None,
                 n_classes: int, seed: int) -> tuple[Any, Any]:
        """The MLP trained with ``loss``, the epoch with the best validation ``metric`` kept."""
        loss_fn = make_loss(
            self.options_["loss"], metric=self.metric, y_train=y, num_classes=n_classes,
            amplification=self.amplification,  # None: the loss's default for the metric
            sharpness=self.sharpness, beta=self.beta, count_momentum=self.count_momentum,
        )
        progress = (lambda row: print(", ".join(f"{k}={v:.4g}" for k, v in row.items()))) if self.verbose else None
        return train_classifier(
            loss_fn, X, y, num_classes=n_classes, hidden_sizes=self.hidden_layer_sizes,
            X_val=X_val, y_val=y_val, metric=self.metric, beta=self.beta, seed=seed,
            epochs=self.max_epochs, batch_size=self.batch_size, batching=self.batching,
            learning_rate=self.learning_rate, weight_decay=self.weight_decay, progress=progress,
        )

    def _set_threshold(self, X_val: np.ndarray | None, y_val: np.ndarray | None, n_classes: int) -> None:
        """``threshold_``: 0.5, or tuned on the validation rows (``tune_threshold``); None for multi-class."""
        self.threshold_ = None if n_classes > 2 else 0.5
        self.calibration_ = None
        if not (self.options_["tune_threshold"] and X_val is not None):
            return
        probs = self._model_proba(X_val)
        if not is_constrained(self.metric):
            self.threshold_ = evaluation.tune_threshold(y_val, probs, self.metric, beta=self.beta)
            return
        self.calibration_ = calibrate_threshold(y_val, probs, self.metric, beta=self.beta,
                                                confidence=self.constraint_confidence)
        self.threshold_ = self.calibration_.threshold
        if not self.calibration_.feasible:
            warnings.warn(
                f"MetricClassifier: no decision threshold meets {self.metric!r} on the {len(y_val)} validation rows "
                f"at constraint_confidence={self.constraint_confidence!r}; deciding at the threshold closest to "
                "meeting it (calibration_.feasible is False)", UserWarning, stacklevel=3)

    def _model_proba(self, X: np.ndarray) -> np.ndarray:
        """The model's probabilities of standardised rows: ``(n,)`` binary (positive class), ``(n, C)`` else."""
        if isinstance(self.model_, (BoostedClassifier, AveragedClassifier)):
            return self.model_.probabilities(X)
        return predict_proba(self.model_, X)

    def _positive_column(self) -> int:
        return self.classes_.tolist().index(self.pos_label_)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``(n_samples, n_classes)``, columns in ``classes_`` order."""
        check_is_fitted(self, "model_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        probs = self._model_proba(self._transform(X))
        if probs.ndim == 2:
            return probs
        columns = [1 - probs, probs] if self._positive_column() == 1 else [probs, 1 - probs]
        return np.stack(columns, axis=1)

    def predict(self, X: Any) -> np.ndarray:
        """Labels: the positive class where its probability is > ``threshold_`` (binary), argmax (multi-class)."""
        probs = self.predict_proba(X)
        if probs.shape[1] > 2:
            return self.classes_[predict_labels(probs)]
        positive = self._positive_column()
        is_positive = predict_labels(probs[:, positive], threshold=self.threshold_).astype(bool)
        return np.where(is_positive, self.classes_[positive], self.classes_[1 - positive])

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """The chosen ``metric`` of :meth:`predict` on ``(X, y)`` (higher is better).

        Binary targets are scored for ``pos_label_``, the class trained for. A
        constrained metric scores the objective where the constraints hold on
        ``(X, y)`` and its worst value where they do not
        (:mod:`metricopt.metrics.constrained`), negated for an ``fpr`` or
        ``fnr`` objective (scikit-learn's scores are greater-is-better).
        """
        if sample_weight is not None:
            raise ValueError("`sample_weight` is not supported by MetricClassifier.score; got a non-None value")
        check_is_fitted(self, "model_")
        y = np.asarray(y)
        index = {label: i for i, label in enumerate(self.classes_.tolist())}
        unknown = set(np.unique(y).tolist()) - set(index)
        if unknown:
            raise ValueError(f"`y` holds labels unseen in fit: {sorted(unknown, key=str)[:5]}")
        predicted = self.predict(X)
        if self.pos_label_ is not None:
            target = (y == self.pos_label_).astype(np.int64)
            decided = (predicted == self.pos_label_).astype(np.int64)
            value = float(metric_score(target, decided, self.metric, beta=self.beta, num_classes=2))
            return parse_constrained(self.metric).utility(value) if is_constrained(self.metric) else value
        encoded = np.array([index[label] for label in y.tolist()], dtype=np.int64)
        decided = np.searchsorted(self.classes_, predicted)
        return float(metric_score(encoded, decided, self.metric, beta=self.beta, num_classes=len(self.classes_)))
