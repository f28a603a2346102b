"""The tabular baselines practitioners use, and metricopt's estimators, as one fit-and-predict interface.

Each :class:`TabularPeer` fits on one raw (unstandardised) split of a binary
table and returns the fitted predictor's ``predict`` (labels 0/1 of raw rows):

* ``recipe``: ``metricopt.app.MetricClassifier(metric=...)`` with its defaults
  (the recommended recipe; it standardises and holds out its own validation
  rows), fit on train + validation;
* ``tuned_hgb`` / ``tuned_lr``: scikit-learn's ``TunedThresholdClassifierCV``
  over ``HistGradientBoostingClassifier`` / a standardised
  ``LogisticRegression``, ``scoring`` = the target metric
  (:func:`metric_scorer`: ``"f1"``, ``make_scorer(matthews_corrcoef)`` for
  MCC), fit on train + validation (its own 5-fold CV picks the threshold);
* ``weighted_lr``: standardised ``LogisticRegression(class_weight="balanced")``
  at its default threshold, fit on train + validation (no target: one fit
  scored for every metric);
* ``lgb_unbalance`` / ``lgb_anyloss``: LightGBM log-loss with
  ``is_unbalance=True`` / LightGBM with the AnyLoss objective
  (:func:`metricopt.app.recipes.boosting.fit_lightgbm` defaults), fit on train,
  early-stopped on the target metric of the validation rows;
* for multi-class tables (argmax decisions): ``hgb`` / ``lr``
  (``HistGradientBoostingClassifier``, the standardised ``LogisticRegression``,
  fit on train + validation), ``lgb_logloss`` (LightGBM's ``multiclass``
  log-loss, early-stopped like the other LightGBM peers); ``weighted_lr``,
  ``lgb_anyloss`` and ``recipe`` take multi-class tables as they are.

``candidate_*``: the candidates for the recipe (:data:`RECIPE_CANDIDATES`,
every option that differs from MetricClassifier's constructor defaults spelled
out, so a candidate stays the same when the defaults change), fit as ``recipe``.

Methods fit on train + validation do their own model selection inside those
rows; the others select on the validation rows. A peer whose package is
missing (LightGBM) is reported by :func:`tabular_peer_status` and skipped by
the harness.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from metricopt.app.data import Split

__all__ = [
    "BINARY_CANDIDATES",
    "MULTICLASS_CANDIDATES",
    "RECIPE_CANDIDATES",
    "TABULAR_PEERS",
    "TabularPeer",
    "metric_scorer",
    "tabular_peer_status",
    "tuned_threshold_classifier",
]

Predictor = Callable[[np.ndarray], np.ndarray]


def metric_scorer(metric: str) -> Any:
    """scikit-learn ``scoring`` for a target metric: ``"f1"``, ``make_scorer(matthews_corrcoef)`` for MCC,
    ``"balanced_accuracy"``, else a scorer of :func:`metricopt.metrics.metric_score` (positive label 1)."""
    from sklearn.metrics import make_scorer, matthews_corrcoef

    if metric in ("f1", "balanced_accuracy"):
        return metric
    if metric == "mcc":
        return make_scorer(matthews_corrcoef)
    from metricopt.metrics import metric_score

    def score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
        return float(metric_score(np.asarray(y_true), np.asarray(y_pred), metric))

    return make_scorer(score)


def tuned_threshold_classifier(estimator: Any, metric: str) -> Any:
    """``TunedThresholdClassifierCV(estimator, scoring=metric_scorer(metric))`` (5-fold CV, its defaults)."""
    from sklearn.model_selection import TunedThresholdClassifierCV

    return TunedThresholdClassifierCV(estimator, scoring=metric_scorer(metric))


def _train_and_val(split: Split) -> tuple[np.ndarray, np.ndarray]:
    return np.vstack([split.X_train, split.X_val]), np.concatenate([split.y_train, split.y_val])


def _logistic(**options: Any) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, **options))


def _recipe(split: Split, metric: str | None, seed: int, threads: int, options: Mapping[str, Any]) -> Predictor:
    from metricopt.app import MetricClassifier

    model = MetricClassifier(metric=metric, random_state=seed, **dict(options)).fit(*_train_and_val(split))
    return model.predict


def _options(model: str, loss: str, *, booster_loss: str | None = None, tune_threshold: bool = True,
             validation_fraction: float = 0.25, batching: str = "shuffled",
             count_momentum: float | None = None) -> dict[str, Any]:
    return dict(model=model, loss=loss, booster_loss=booster_loss, tune_threshold=tune_threshold,
                validation_fraction=validation_fraction, batching=batching, count_momentum=count_momentum)


#: The candidates for the recommended recipe, compared on the validation tables by the rule fixed before the
#: run (docs/benchmarks/tabular.md, "Choosing the recipe"): MetricClassifier options, all spelled out.
RECIPE_CANDIDATES: dict[str, dict[str, Any]] = {
    # the defaults before the selection: AnyLoss MLP at p > 0.5, 10 % of the rows held out
    "mlp_anyloss": _options("mlp", "anyloss", tune_threshold=False, validation_fraction=0.1),
    "mlp_anyloss_tuned": _options("mlp", "anyloss"),
    "mlp_anyloss_tuned_averaged": _options("mlp", "anyloss", count_momentum=0.1),
    "ensemble_anyloss_tuned": _options("mlp+lightgbm", "anyloss"),
    "ensemble_weighted_tuned": _options("mlp+lightgbm", "weighted_bce"),
    "ensemble_weighted_mlp_tuned": _options("mlp+lightgbm", "weighted_bce", booster_loss="bce"),
    "ensemble_weighted_tuned_stratified": _options("mlp+lightgbm", "weighted_bce", batching="stratified"),
    # multi-class targets (argmax decisions: no threshold to tune), for `tabular_selection_multiclass`
    "multiclass_mlp_anyloss": _options("mlp", "anyloss", tune_threshold=False),
    "multiclass_mlp_weighted": _options("mlp", "weighted_bce", tune_threshold=False),
    "multiclass_ensemble_anyloss": _options("mlp+lightgbm", "anyloss", booster_loss="bce", tune_threshold=False),
    "multiclass_ensemble_weighted": _options("mlp+lightgbm", "weighted_bce", booster_loss="bce",
                                             tune_threshold=False),
}
#: The candidates of each selection run (binary: the first seven; multi-class: the last four).
BINARY_CANDIDATES = tuple(name for name in RECIPE_CANDIDATES if not name.startswith("multiclass_"))
MULTICLASS_CANDIDATES = tuple(name for name in RECIPE_CANDIDATES if name.startswith("multiclass_"))


def _candidate(options: Mapping[str, Any]) -> Callable[..., Predictor]:
    def fit(split: Split, metric: str | None, seed: int, threads: int, extra: Mapping[str, Any]) -> Predictor:
        return _recipe(split, metric, seed, threads, {**options, **extra})

    return fit


def _tuned_hgb(split: Split, metric: str | None, seed: int, threads: int, options: Mapping[str, Any]) -> Predictor:
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = tuned_threshold_classifier(HistGradientBoostingClassifier(random_state=seed), metric)
    return model.fit(*_train_and_val(split)).predict


def _tuned_lr(split: Split, metric: str | None, seed: int, threads: int, options: Mapping[str, Any]) -> Predictor:
    model = tuned_threshold_classifier(_logistic(), metric)
    return model.fit(*_train_and_val(split)).predict


def _hgb(split: Split, metric: str | None, seed: int, threads: int, options: Mapping[str, Any]) -> Predictor:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(random_state=seed).fit(*_train_and_val(split)).predict


def _lr(split: Split, metric: str | None, seed: int, threads: int, options: Mapping[str, Any]) -> Predictor:
    return _logistic().fit(*_train_and_val(split)).predict


def _weighted_lr(split: Split, metric: str | None, seed: int, threads: int, options: Mapping[str, Any]) -> Predictor:
    return _logistic(class_weight="balanced").fit(*_train_and_val(split)).predict


def _lightgbm(objective: str, params: Mapping[str, Any]) -> Callable[..., Predictor]:
    def fit(split: Split, metric: str | None, seed: int, threads: int, options: Mapping[str, Any]) -> Predictor:
        from metricopt.app.recipes.boosting import fit_lightgbm

        booster = fit_lightgbm(split.X_train, split.y_train, split.X_val, split.y_val, metric, objective=objective,
                               params=dict(params) or None, num_threads=threads, seed=seed)
        return booster.predict

    return fit


@dataclass(frozen=True)
class TabularPeer:
    """One tabular method outside the MLP harness.

    Attributes:
        name: key in results.
        label: column header.
        fit: ``fit(raw_split, metric, seed, threads, options) -> predict``;
            ``metric`` is None for a method without a target.
        per_metric: fit once per target metric (its tuning or early stopping uses it).
        requires: module that must import for the method to run (None: always).
        install: how to install it.
    """

    name: str
    label: str
    fit: Callable[[Split, str | None, int, int, Mapping[str, Any]], Predictor]
    per_metric: bool = True
    requires: str | None = None
    install: str = ""


TABULAR_PEERS: dict[str, TabularPeer] = {
    p.name: p
    for p in (
        TabularPeer("recipe", "MetricClassifier (recipe)", _recipe),
        TabularPeer("tuned_hgb", "tuned HGB", _tuned_hgb),
        TabularPeer("tuned_lr", "tuned LR", _tuned_lr),
        TabularPeer("weighted_lr", "weighted LR", _weighted_lr, per_metric=False),
        TabularPeer("lgb_unbalance", "LightGBM is_unbalance", _lightgbm("binary", {"is_unbalance": True}),
                    requires="lightgbm", install="pip install lightgbm"),
        TabularPeer("lgb_anyloss", "LightGBM AnyLoss", _lightgbm("anyloss", {}), requires="lightgbm",
                    install="pip install lightgbm"),
        # multi-class tables (argmax decisions; scikit-learn's threshold tuner is for binary targets)
        TabularPeer("hgb", "HGB", _hgb, per_metric=False),
        TabularPeer("lr", "LR", _lr, per_metric=False),
        TabularPeer("lgb_logloss", "LightGBM log-loss", _lightgbm("binary", {}), requires="lightgbm",
                    install="pip install lightgbm"),
        *(TabularPeer(f"candidate_{name}", f"candidate {name}", _candidate(options),
                      requires="lightgbm" if options["model"] != "mlp" else None, install="pip install lightgbm")
          for name, options in RECIPE_CANDIDATES.items()),
    )
}


def tabular_peer_status(name: str) -> str | None:
    """None when the method can run here, else ``"not installed: ..."``."""
    peer = TABULAR_PEERS[name]
    if peer.requires is None:
        return None
    try:
        importlib.import_module(peer.requires)
    except ImportError as exc:
        return f"not installed: {exc} (install: {peer.install})"
    return None
