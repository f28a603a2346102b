"""``metricopt train`` for confusion-matrix metrics: a confusion loss and the ``bce`` baseline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from metricopt.app.cli.common import (
    BASELINE,
    TrainConfig,
    dataset_info,
    load_data,
    log_start,
    methods_of,
    positive_text,
    progress_bar,
    results_of,
)
from metricopt.app.data import Split
from metricopt.app.recipes.classification import FitResult, make_loss, train_classifier
from metricopt.evaluation import REPORT_METRICS, report, tune_threshold
from metricopt.metrics.constrained import DEFAULT_CONFIDENCE, is_constrained
from metricopt.predict import predict_proba

__all__ = ["run_confusion"]


def _train_one(
    name: str,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    split: Split,
    n_classes: int,
    config: TrainConfig,
    *,
    show_progress: bool,
) -> tuple[nn.Module, FitResult]:
    """Train one method; select the epoch with the best validation metric."""
    with progress_bar(name, config, show_progress) as progress:
        return train_classifier(
            loss_fn, split.X_train, split.y_train, num_classes=n_classes, hidden_sizes=config.hidden_sizes,
            X_val=split.X_val, y_val=split.y_val, metric=config.metric, seed=config.seed, epochs=config.epochs,
            batch_size=config.batch_size, learning_rate=config.learning_rate, progress=progress,
        )


def _boost_one(name: str, split: Split, n_classes: int, config: TrainConfig) -> tuple[Any, FitResult]:
    """``--model lightgbm``: one method's boosted trees and their per-round history."""
    from metricopt.app.recipes.boosting import OBJECTIVE_OF_LOSS, fit_lightgbm

    objective, params = OBJECTIVE_OF_LOSS[name]
    booster = fit_lightgbm(split.X_train, split.y_train, split.X_val, split.y_val, config.metric,
                           objective=objective, params=params,
                           amplification=float(config.amplification), seed=config.seed)
    history = [{"round": i + 1, "val_score": score} for i, score in enumerate(booster.history)]
    result = FitResult(history=history, best_epoch=booster.best_iteration, best_score=booster.validation_score)
    return booster, result


def _fit_one(name: str, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], split: Split,
             n_classes: int, config: TrainConfig, *,
             show_progress: bool) -> tuple[Callable[[np.ndarray], np.ndarray], FitResult]:
    """One method's ``--model``; its probabilities of any rows, and its history (the MLP's for mlp+lightgbm)."""
    if config.model == "lightgbm":
        booster, result = _boost_one(name, split, n_classes, config)
        return booster.probabilities, result
    model, result = _train_one(name, loss_fn, split, n_classes, config, show_progress=show_progress)
    if config.model == "mlp+lightgbm":  # the two models' probabilities averaged (the MLP's epochs kept)
        from metricopt.app.recipes.ensemble import AveragedClassifier

        booster, _ = _boost_one(BASELINE, split, n_classes, config)  # the recipe's trees: LightGBM's log-loss
        return AveragedClassifier(model, booster).probabilities, result
    return (lambda X: predict_proba(model, X)), result


def _report_metrics(metric: str) -> tuple[str, ...]:
    return REPORT_METRICS if metric in REPORT_METRICS else (*REPORT_METRICS, metric)


def run_confusion(config: TrainConfig, *, show_progress: bool,
                  log: Callable[[str], None] | None) -> dict[str, Any]:
    """:func:`run_train` for a confusion-matrix metric: the chosen loss and the ``bce`` baseline."""
    data, split = load_data(config)
    n_classes = data.n_classes
    if config.model == "lightgbm" and n_classes > 2 and config.loss == "weighted_bce":
        raise ValueError(f"--model lightgbm --loss weighted_bce weights the classes with LightGBM's is_unbalance, "
                         f"which is for binary targets; the data have {n_classes} classes")
    if config.tune_threshold and n_classes != 2:
        raise ValueError(f"--tune-threshold tunes a binary decision threshold; the data have {n_classes} classes "
                         "(multi-class decisions are the argmax)")
    constrained = is_constrained(config.metric)
    if constrained and n_classes != 2:
        raise ValueError(f"--metric {config.metric} is a constrained metric, whose decision threshold is calibrated "
                         f"for a binary target; the data have {n_classes} classes")
    tune = config.tune_threshold or constrained
    methods = methods_of(config)
    # Build every loss before training, so a bad option fails before any epoch runs.
    losses = {
        name: make_loss(name, metric=config.metric, y_train=split.y_train, num_classes=n_classes,
                        amplification=config.amplification)
        for name in methods
    }
    rate = positive_text(data)
    log_start(log, dataset_info(data), n_classes, split, config, rate)

    fitted: dict[str, tuple[dict[str, float], FitResult]] = {}
    thresholds: dict[str, float] = {}
    for name in methods:
        probabilities, result = _fit_one(name, losses[name], split, n_classes, config, show_progress=show_progress)
        thresholds[name] = config.threshold
        if tune:
            thresholds[name] = tune_threshold(split.y_val, probabilities(split.X_val), config.metric)
        metrics = report(split.y_test, probabilities(split.X_test), num_classes=n_classes,
                         metrics=_report_metrics(config.metric), threshold=thresholds[name])
        fitted[name] = (metrics, result)
    results = results_of(config, dataset_info(data), split, fitted)
    if tune:
        results["thresholds"] = thresholds
        how = (f"calibrated on the validation split so that the constraint holds there at confidence "
               f"{DEFAULT_CONFIDENCE:g}" if constrained else "tuned on the validation split")
        results["scoring"] = f"thresholds {how}: " + ", ".join(
            f"{name} {value:.3g}" for name, value in thresholds.items())
    return results
