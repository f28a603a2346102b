"""Tuning the pre-trained model's decision threshold for a black-box metric (metricopt.blackbox.threshold)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from metricopt.blackbox.metric import BlackBoxMetric, make_metric
from metricopt.blackbox.threshold import ShiftedLogit, tune_threshold


def _model_and_rows(seed: int = 0, n: int = 300) -> tuple[nn.Module, np.ndarray, np.ndarray]:
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 3, generator=generator)
    y = (X[:, 0] + 0.7 * torch.randn(n, generator=generator) > 1.0).long()  # about 20 % positives
    model = nn.Linear(3, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0, 0.0]]))
        model.bias.fill_(-0.2)
    return model, X.numpy(), y.numpy()


def _cost(y_true, y_score) -> float:
    """20 per missed positive, 1 per false alarm, per row (decisions at 0.5)."""
    y, predicted = np.asarray(y_true).astype(bool), np.asarray(y_score) > 0.5
    return float((20 * (y & ~predicted).sum() + (~y & predicted).sum()) / len(y))


def test_the_tuned_threshold_is_the_best_of_every_possible_decision_on_the_rows() -> None:
    model, X, y = _model_and_rows()
    metric = BlackBoxMetric(_cost, "cost20", higher_is_better=False)
    result = tune_threshold(model, metric, X, y, max_candidates=10_000)
    logits = model(torch.as_tensor(X)).squeeze(-1).detach().double().numpy()
    # Brute force over the thresholds at every logit (a decision "logit > c" changes only there).
    brute = min(_cost(y, (logits > c).astype(float)) for c in np.concatenate([[-np.inf], logits]))
    assert result.value == pytest.approx(brute)
    assert result.untuned_value == pytest.approx(_cost(y, 1 / (1 + np.exp(-logits))))
    assert result.value < result.untuned_value and result.shift < 0  # a 20:1 cost lowers the threshold
    assert result.threshold == pytest.approx(1 / (1 + np.exp(-result.shift)))
    tuned = result.model(model)
    assert isinstance(tuned, ShiftedLogit)
    assert metric.evaluate(tuned, X, y) == pytest.approx(result.value)
    assert result.evaluations == len(np.unique(logits)) + 2  # every midpoint, both ends and c = 0


def test_candidates_are_capped_and_model_metrics_see_the_shifted_model() -> None:
    model, X, y = _model_and_rows(n=500)
    scores = make_metric("mcr")
    capped = tune_threshold(model, scores, X, y, max_candidates=25)
    assert capped.evaluations <= 25
    seen = []

    def on_model(m: nn.Module) -> float:
        seen.append(m)
        return scores.evaluate(m, X, y)

    by_model = tune_threshold(model, BlackBoxMetric(on_model, "mcr-model", False, takes="model"), X, y,
                              max_candidates=25)
    assert all(isinstance(m, ShiftedLogit) and m.model is model for m in seen)
    assert (by_model.shift, by_model.value) == pytest.approx((capped.shift, capped.value))


def test_a_rank_metric_keeps_the_untuned_model_and_ties_prefer_no_change() -> None:
    model, X, y = _model_and_rows()
    result = tune_threshold(model, make_metric("aucpr"), X, y)
    assert result.shift == 0.0 and result.threshold == 0.5 and result.value == result.untuned_value


def test_errors() -> None:
    model, X, y = _model_and_rows()
    with pytest.raises(ValueError, match="binary model with one output logit"):
        tune_threshold(nn.Linear(3, 4), make_metric("mcr"), X, y)
    with pytest.raises(ValueError, match="at least one row"):
        tune_threshold(model, make_metric("mcr"), X[:0], y[:0])
    with pytest.raises(ValueError, match="`max_candidates`"):
        tune_threshold(model, make_metric("mcr"), X, y, max_candidates=1)
