"""Gradient boosting for a confusion-matrix metric: LightGBM with the AnyLoss objective.

:func:`fit_lightgbm` trains a LightGBM booster on binary or multi-class targets with the
full-training-set soft confusion loss of :func:`metricopt.losses.boosting.confusion_objective`
(``objective="anyloss"``) or LightGBM's own log-loss (``objective="binary"``,
the baseline; pass ``params={"is_unbalance": True}`` for its class weighting),
stops early on the *exact* target metric of the validation rows at the
decision ``p > 0.5`` (multi-class: the argmax) and keeps the best round. The returned
:class:`BoostedClassifier` predicts with ``p > 0.5`` or the argmax: no threshold tuning.
Multi-class targets get :func:`metricopt.losses.boosting.multiclass_confusion_objective`
(``objective="anyloss"``) or LightGBM's ``multiclass`` log-loss (``"binary"``).

Defaults (start at raw score 0, steepness, curvature, learning rate) were
chosen on validation datasets: docs/design.md, "Gradient boosting with a
confusion-metric objective".

LightGBM is a dependency of the application (the estimator's default recipe trains it), imported
when a fit starts, so that the core never loads it.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(400, 3)); y = (X[:, 0] + 0.5 * rng.normal(size=400) > 1.2).astype(int)
    >>> model = fit_lightgbm(X[:300], y[:300], X[300:], y[300:], "f1", num_threads=1)  # doctest: +SKIP
    >>> model.predict(X[:5]).tolist()  # doctest: +SKIP
    [0, 0, 0, 1, 0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from metricopt._checks import check_choice, check_integer, check_positive
from metricopt.evaluation import selection_score
from metricopt.losses.boosting import (
    DEFAULT_MIN_HESSIAN,
    HESSIANS,
    MULTICLASS_HESSIANS,
    confusion_objective,
    multiclass_confusion_objective,
)
from metricopt.losses.confusion import DEFAULT_SHARPNESS
from metricopt.metrics.confusion import MetricArg, metric_score, resolve_metric
from metricopt.metrics.constrained import is_constrained

__all__ = ["DEFAULT_BOOSTING_AMPLIFICATION", "BoostedClassifier", "fit_lightgbm", "import_lightgbm"]

#: The steepness L of the boosting objective (a validation sweep; the MLP's default is the paper's 73).
DEFAULT_BOOSTING_AMPLIFICATION = 20.0
OBJECTIVES = ("anyloss", "binary")
#: LightGBM's objective and parameters for each loss it takes: AnyLoss; its own log-loss for ``bce``; the
#: log-loss with ``is_unbalance`` for ``weighted_bce`` (positives weighted by negatives / positives: the
#: inverse class frequencies of the MLP's ``weighted_bce``, up to a constant factor).
OBJECTIVE_OF_LOSS: dict[str, tuple[str, dict[str, Any]]] = {
    "anyloss": ("anyloss", {}), "bce": ("binary", {}), "weighted_bce": ("binary", {"is_unbalance": True}),
}
STARTS = ("zero", "prior")
LIGHTGBM_INSTALL = "pip install 'lightgbm>=4' (a dependency of metricopt; missing from this environment)"


def import_lightgbm() -> Any:
    """``import lightgbm``, or an ImportError that says how to install it."""
    try:
        import lightgbm
    except ImportError as error:
        raise ImportError(f"gradient boosting needs the optional package 'lightgbm', which is not installed; "
                          f"fix: {LIGHTGBM_INSTALL}") from error
    return lightgbm


@dataclass
class BoostedClassifier:
    """A fitted booster and how it decides: ``p = sigmoid(raw + init_score) > 0.5``.

    Attributes:
        booster: the ``lightgbm.Booster``.
        init_score: the constant start added to the booster's raw scores.
        best_iteration: the round kept (best validation metric).
        metric: the target metric's name (or callable).
        validation_score: the exact metric on the validation rows at the best round.
        history: the validation metric after each round.
    """

    booster: Any
    init_score: float
    best_iteration: int
    metric: MetricArg
    validation_score: float
    history: list[float] = field(default_factory=list)
    n_classes: int = 2

    def decision_function(self, X: Any) -> np.ndarray:
        """Raw scores of the kept rounds: ``(n,)`` log-odds (binary), ``(n, K)`` (multi-class)."""
        raw = self.booster.predict(np.asarray(X, dtype=np.float64), raw_score=True,
                                   num_iteration=self.best_iteration or None)
        return np.asarray(raw, dtype=np.float64) + self.init_score

    def predict_proba(self, X: Any) -> np.ndarray:
        """``(n, K)`` class probabilities (multi-class: the softmax of the raw scores, as LightGBM's own)."""
        z = self.decision_function(X)
        if self.n_classes > 2:
            e = np.exp(z - z.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)
        p = 0.5 * (1 + np.tanh(0.5 * z))  # sigmoid without overflow
        return np.column_stack([1 - p, p])

    def probabilities(self, X: Any) -> np.ndarray:
        """As :func:`metricopt.predict.predict_proba` gives them: ``(n,)`` positive-class (binary), else ``(n, K)``."""
        probs = self.predict_proba(X)
        return probs[:, 1] if self.n_classes == 2 else probs

    def predict(self, X: Any) -> np.ndarray:
        """Labels at ``p > 0.5`` (raw score > 0); multi-class: the argmax."""
        z = self.decision_function(X)
        return (np.argmax(z, axis=1) if self.n_classes > 2 else z > 0).astype(np.int64)


def _class_labels(name: str, y: Any, n: int, n_classes: int | None = None) -> np.ndarray:
    """Integer classes ``0 .. K-1`` (binary: 0 and 1); ``n_classes`` given: each below it."""
    labels = np.asarray(y)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"`{name}` must be 1-D with one label per row ({n}); got shape {labels.shape}")
    whole = labels.dtype.kind in "biu" or (labels.dtype.kind == "f" and np.all(np.mod(labels, 1) == 0))
    if not whole or labels.size == 0 or labels.min() < 0 or (n_classes is not None and labels.max() >= n_classes):
        bound = "0 and 1 for binary targets" if n_classes in (None, 2) else f"0 .. {n_classes - 1}"
        raise ValueError(f"`{name}` must hold integer class labels ({bound}, the classes of `y_train`)")
    return labels.astype(np.int64)


def _start(start: str | float, y: np.ndarray) -> float:
    if isinstance(start, str):
        check_choice("start", start, STARTS)
        if start == "zero":
            return 0.0
        rate = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
        return math.log(rate / (1 - rate))
    if isinstance(start, bool) or not isinstance(start, (int, float)) or not math.isfinite(start):
        raise ValueError(f"`start` must be 'zero', 'prior' or a finite raw score; got {start!r}")
    return float(start)


def fit_lightgbm(
    X_train: Any,
    y_train: Any,
    X_val: Any,
    y_val: Any,
    metric: MetricArg = "f1",
    *,
    objective: str = "anyloss",
    amplification: float = DEFAULT_BOOSTING_AMPLIFICATION,
    hessian: str = "gauss_newton",
    min_hessian: float = DEFAULT_MIN_HESSIAN,
    start: str | float = "zero",
    sharpness: float = DEFAULT_SHARPNESS,
    beta: float = 1.0,
    learning_rate: float = 0.1,
    num_boost_round: int = 1000,
    early_stopping_rounds: int = 50,
    params: dict[str, Any] | None = None,
    num_threads: int = 2,
    seed: int = 0,
) -> BoostedClassifier:
    """Fit LightGBM for a confusion metric, stopping early on that metric's exact validation value.

    Args:
        X_train, y_train: training rows and class labels: 0/1 (1 = positive), or
            ``0 .. K-1`` for multi-class (every class present).
        X_val, y_val: validation rows, for early stopping only.
        metric: the target metric (registry name or callable ``f(tp, fp, fn, tn)``):
            the AnyLoss objective's metric and the early-stopping criterion.
        objective: ``"anyloss"`` (the soft confusion loss) or ``"binary"``
            (LightGBM's log-loss, the baseline; its early stopping is on ``metric`` too).
        amplification: AnyLoss's steepness L (> 0).
        hessian: the curvature rule of :func:`~metricopt.losses.boosting.confusion_objective`
            (multi-class: of :func:`~metricopt.losses.boosting.multiclass_confusion_objective`).
        min_hessian: the floor of ``hessian="exact"``.
        start: the constant raw score boosting starts from: ``"zero"`` (p = 0.5,
            where every sample's amplified prediction has a gradient),
            ``"prior"`` (the training log-odds) or a number. AnyLoss only;
            ``"binary"`` starts at LightGBM's own average; multi-class AnyLoss starts at 0.
        sharpness: multi-class AnyLoss: ``s`` of the soft prediction ``softmax(s z)``.
        beta: recall's weight for ``metric="fbeta"``.
        learning_rate, num_boost_round, early_stopping_rounds: LightGBM's.
        params: further LightGBM parameters (e.g. ``num_leaves``, ``is_unbalance``);
            they override the ones set here.
        num_threads: LightGBM's threads.
        seed: LightGBM's seed.

    Returns:
        The fitted :class:`BoostedClassifier` (the best round on validation).

    Raises:
        ValueError: a bad argument (named); ImportError: lightgbm is not installed.
    """
    check_choice("objective", objective, OBJECTIVES)
    resolve_metric(metric, beta)
    if objective == "anyloss" and is_constrained(metric):
        raise ValueError(f"LightGBM's AnyLoss objective has no constrained form; got metric={metric!r}: boost with "
                         "objective='binary' (loss 'bce' or 'weighted_bce') and calibrate the threshold")
    amplification = check_positive("amplification", amplification)
    sharpness = check_positive("sharpness", sharpness)
    min_hessian = check_positive("min_hessian", min_hessian)
    learning_rate = check_positive("learning_rate", learning_rate)
    num_boost_round = check_integer("num_boost_round", num_boost_round)
    early_stopping_rounds = check_integer("early_stopping_rounds", early_stopping_rounds)
    num_threads = check_integer("num_threads", num_threads)
    X_train = np.asarray(X_train, dtype=np.float64)
    X_val = np.asarray(X_val, dtype=np.float64)
    y_train = _class_labels("y_train", y_train, X_train.shape[0])
    n_classes = max(2, int(y_train.max()) + 1)
    if n_classes > 2 and len(np.unique(y_train)) < n_classes:
        raise ValueError(f"`y_train` must hold every class 0 .. {n_classes - 1} (multi-class); missing "
                         f"{sorted(set(range(n_classes)) - set(np.unique(y_train).tolist()))}")
    y_val = _class_labels("y_val", y_val, X_val.shape[0], n_classes)
    check_choice("hessian", hessian, HESSIANS if n_classes == 2 else MULTICLASS_HESSIANS)
    if n_classes > 2 and (params or {}).get("is_unbalance"):
        raise ValueError("`is_unbalance` is LightGBM's binary class weighting; it does not apply to "
                         f"{n_classes} classes")
    init = _start(start, y_train) if objective == "anyloss" and n_classes == 2 else 0.0
    lgb = import_lightgbm()

    settings: dict[str, Any] = {
        "learning_rate": learning_rate, "num_threads": num_threads, "seed": seed, "deterministic": True,
        "force_col_wise": True, "verbosity": -1, "metric": "None",
    }
    if n_classes > 2:
        settings["num_class"] = n_classes
    if objective == "anyloss" and n_classes == 2:
        def anyloss(preds: np.ndarray, data: Any) -> tuple[np.ndarray, np.ndarray]:
            return confusion_objective(preds, y_train, metric, amplification=amplification, beta=beta,
                                       hessian=hessian, min_hessian=min_hessian)

        settings["objective"] = anyloss
    elif objective == "anyloss":
        def multiclass_anyloss(preds: np.ndarray, data: Any) -> tuple[np.ndarray, np.ndarray]:
            return multiclass_confusion_objective(preds, y_train, metric, sharpness=sharpness, beta=beta,
                                                  hessian=hessian)

        settings["objective"] = multiclass_anyloss
    else:
        settings["objective"] = "binary" if n_classes == 2 else "multiclass"
    settings.update(params or {})

    name = metric if isinstance(metric, str) else getattr(metric, "__name__", "metric")
    history: list[float] = []

    def exact_metric(preds: np.ndarray, data: Any) -> tuple[str, float, bool]:
        # custom objective: raw scores (with the validation init_score); built-in binary: probabilities;
        # multi-class: (n, K) either way, decided by the argmax
        if n_classes == 2 and is_constrained(metric):  # scored at the threshold its calibration would choose
            score = selection_score(y_val, np.asarray(preds), metric, beta=beta)  # a monotone score will do
        else:
            decisions = (np.asarray(preds).reshape(len(y_val), n_classes).argmax(axis=1) if n_classes > 2
                         else (preds > 0) if objective == "anyloss" else (preds > 0.5))
            score = float(metric_score(y_val, decisions.astype(np.int64), metric, beta=beta,
                                       num_classes=n_classes))
        history.append(score)
        return name, score, True

    train_set = lgb.Dataset(X_train, label=y_train, init_score=np.full(len(y_train), init) if init else None)
    val_set = lgb.Dataset(X_val, label=y_val, reference=train_set,
                          init_score=np.full(len(y_val), init) if init else None)
    booster = lgb.train(
        settings, train_set, num_boost_round=num_boost_round, valid_sets=[val_set], valid_names=["validation"],
        feval=exact_metric, callbacks=[lgb.early_stopping(early_stopping_rounds, verbose=False)],
    )
    best = int(booster.best_iteration) or len(history)
    score = history[best - 1] if history else float("nan")
    return BoostedClassifier(booster, init, best, metric, score, history, n_classes)
