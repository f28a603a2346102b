"""``metricopt train`` for confusion-matrix metrics: a confusion loss and the ``bce`` baseline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from metricopt.app.cli.common import (
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
from metricopt.evaluation import REPORT_METRICS, report
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


def _boost_one(name: str, split: Split, n_classes: int, config: TrainConfig) -> tuple[np.ndarray, FitResult]:
    """``--model lightgbm``: one method's boosted trees; their test probabilities and the per-round history."""
    from metricopt.app.recipes.boosting import OBJECTIVE_OF_LOSS, fit_lightgbm

    if n_classes != 2:
        raise ValueError(f"--model {config.model} trains binary targets; the data have {n_classes} classes")
    objective, params = OBJECTIVE_OF_LOSS[name]
    booster = fit_lightgbm(split.X_train, split.y_train, split.X_val, split.y_val, config.metric,
                           objective=objective, params=params,
                           amplification=float(config.amplification), seed=config.seed)
    history = [{"round": i + 1, "val_score": score} for i, score in enumerate(booster.history)]
    result = FitResult(history=history, best_epoch=booster.best_iteration, best_score=booster.validation_score)
    return booster.predict_proba(split.X_test)[:, 1], result


def _report_metrics(metric: str) -> tuple[str, ...]:
    return REPORT_METRICS if metric in REPORT_METRICS else (*REPORT_METRICS, metric)


def run_confusion(config: TrainConfig, *, show_progress: bool,
                  log: Callable[[str], None] | None) -> dict[str, Any]:
    """:func:`run_train` for a confusion-matrix metric: the chosen loss and the ``bce`` baseline."""
    data, split = load_data(config)
    n_classes = data.n_classes
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
    for name in methods:
        if config.model == "lightgbm":
            probs, result = _boost_one(name, split, n_classes, config)
        else:
            if config.model == "mlp+lightgbm":  # fails on multi-class data before the MLP trains
                boosted, _ = _boost_one(name, split, n_classes, config)
            model, result = _train_one(name, losses[name], split, n_classes, config, show_progress=show_progress)
            probs = predict_proba(model, split.X_test)
            if config.model == "mlp+lightgbm":  # the two models' probabilities averaged (the MLP's epochs kept)
                probs = (probs + boosted) / 2
        metrics = report(split.y_test, probs, num_classes=n_classes, metrics=_report_metrics(config.metric),
                         threshold=config.threshold)
        fitted[name] = (metrics, result)
    return results_of(config, dataset_info(data), split, fitted)
