"""Gradient boosting for a confusion-matrix metric: LightGBM with the AnyLoss objective.

:func:`fit_lightgbm` trains a LightGBM booster on binary targets with the
full-training-set soft confusion loss of :func:`metricopt.losses.boosting.confusion_objective`
(``objective="anyloss"``) or LightGBM's own log-loss (``objective="binary"``,
the baseline; pass ``params={"is_unbalance": True}`` for its class weighting),
stops early on the *exact* target metric of the validation rows at the
decision ``p > 0.5`` and keeps the best round. The returned
:class:`BoostedClassifier` predicts with ``p > 0.5``: no threshold tuning.

Defaults (start at raw score 0, steepness, curvature, learning rate) were
chosen on validation datasets: docs/design.md, "Gradient boosting with a
confusion-metric objective".

LightGBM is optional (``pip install 'metricopt[boosting]'``), imported when a fit starts.

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
from metricopt.losses.boosting import DEFAULT_MIN_HESSIAN, HESSIANS, confusion_objective
from metricopt.metrics.confusion import MetricArg, metric_score, resolve_metric

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
LIGHTGBM_INSTALL = "pip install 'metricopt[boosting]' (or: pip install lightgbm>=4)"


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

    def decision_function(self, X: Any) -> np.ndarray:
        """Raw scores (log-odds) of the kept rounds."""
        raw = self.booster.predict(np.asarray(X, dtype=np.float64), raw_score=True,
                                   num_iteration=self.best_iteration or None)
        return np.asarray(raw, dtype=np.float64) + self.init_score

    def predict_proba(self, X: Any) -> np.ndarray:
        """``(n, 2)`` class probabilities."""
        z = self.decision_function(X)
        p = 0.5 * (1 + np.tanh(0.5 * z))  # sigmoid without overflow
        return np.column_stack([1 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        """Labels at ``p > 0.5`` (raw score > 0)."""
        return (self.decision_function(X) > 0).astype(np.int64)


def _binary_labels(name: str, y: Any, n: int) -> np.ndarray:
    labels = np.asarray(y)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"`{name}` must be 1-D with one label per row ({n}); got shape {labels.shape}")
    if labels.dtype.kind not in "biuf" or not np.isin(labels, (0, 1)).all():
        raise ValueError(f"`{name}` must hold binary labels 0 and 1 (multi-class boosting is not supported yet)")
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
        X_train, y_train: training rows and binary labels (1 = positive).
        X_val, y_val: validation rows, for early stopping only.
        metric: the target metric (registry name or callable ``f(tp, fp, fn, tn)``):
            the AnyLoss objective's metric and the early-stopping criterion.
        objective: ``"anyloss"`` (the soft confusion loss) or ``"binary"``
            (LightGBM's log-loss, the baseline; its early stopping is on ``metric`` too).
        amplification: AnyLoss's steepness L (> 0).
        hessian: the curvature rule of :func:`~metricopt.losses.boosting.confusion_objective`.
        min_hessian: the floor of ``hessian="exact"``.
        start: the constant raw score boosting starts from: ``"zero"`` (p = 0.5,
            where every sample's amplified prediction has a gradient),
            ``"prior"`` (the training log-odds) or a number. AnyLoss only;
            ``"binary"`` starts at LightGBM's own average.
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
    check_choice("hessian", hessian, HESSIANS)
    resolve_metric(metric, beta)
    amplification = check_positive("amplification", amplification)
    min_hessian = check_positive("min_hessian", min_hessian)
    learning_rate = check_positive("learning_rate", learning_rate)
    num_boost_round = check_integer("num_boost_round", num_boost_round)
    early_stopping_rounds = check_integer("early_stopping_rounds", early_stopping_rounds)
    num_threads = check_integer("num_threads", num_threads)
    X_train = np.asarray(X_train, dtype=np.float64)
    X_val = np.asarray(X_val, dtype=np.float64)
    y_train = _binary_labels("y_train", y_train, X_train.shape[0])
    y_val = _binary_labels("y_val", y_val, X_val.shape[0])
    init = _start(start, y_train) if objective == "anyloss" else 0.0
    lgb = import_lightgbm()

    settings: dict[str, Any] = {
        "learning_rate": learning_rate, "num_threads": num_threads, "seed": seed, "deterministic": True,
        "force_col_wise": True, "verbosity": -1, "metric": "None",
    }
    if objective == "anyloss":
        def anyloss(preds: np.ndarray, data: Any) -> tuple[np.ndarray, np.ndarray]:
            return confusion_objective(preds, y_train, metric, amplification=amplification, beta=beta,
                                       hessian=hessian, min_hessian=min_hessian)

        settings["objective"] = anyloss
    else:
        settings["objective"] = "binary"
    settings.update(params or {})

    name = metric if isinstance(metric, str) else getattr(metric, "__name__", "metric")
    history: list[float] = []

    def exact_metric(preds: np.ndarray, data: Any) -> tuple[str, float, bool]:
        # custom objective: raw scores (with the validation init_score); built-in binary: probabilities
        decisions = (preds > 0) if objective == "anyloss" else (preds > 0.5)
        score = float(metric_score(y_val, decisions.astype(np.int64), metric, beta=beta))
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
    return BoostedClassifier(booster, init, best, metric, score, history)
