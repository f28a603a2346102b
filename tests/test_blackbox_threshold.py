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
    result = tune_threshold(model, metric, X, y, max_candidates=10_000, min_confidence=0.0)  # the plain winner
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
    capped = tune_threshold(model, scores, X, y, max_candidates=25, min_confidence=0.0)
    assert capped.evaluations <= 25
    seen = []

    def on_model(m: nn.Module) -> float:
        seen.append(m)
        return scores.evaluate(m, X, y)

    by_model = tune_threshold(model, BlackBoxMetric(on_model, "mcr-model", False, takes="model"), X, y,
                              max_candidates=25, min_confidence=0.0)
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
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match="`min_confidence`"):
            tune_threshold(model, make_metric("mcr"), X, y, min_confidence=bad)
    with pytest.raises(ValueError, match="`resamples`"):
        tune_threshold(model, make_metric("mcr"), X, y, min_confidence=0.5, resamples=5)


def test_the_guard_keeps_the_winner_only_when_resamples_confirm_it() -> None:
    model, X, y = _model_and_rows(n=400)
    metric = BlackBoxMetric(_cost, "cost20", higher_is_better=False)
    plain = tune_threshold(model, metric, X, y, min_confidence=0.0)
    assert plain.confidence is None and plain.best_shift == plain.shift < 0
    guarded = tune_threshold(model, metric, X, y, min_confidence=0.9, resamples=100, seed=1)
    # Brute-force confidence: the same class-stratified resamples, drawn here again.
    logits = model(torch.as_tensor(X)).squeeze(-1).detach().double().numpy()
    rng = np.random.default_rng(1)
    groups = [np.flatnonzero(y == c) for c in (0, 1)]
    wins = 0.0
    for _ in range(100):
        rows = np.concatenate([g[rng.integers(0, len(g), len(g))] for g in groups])
        a = _cost(y[rows], (logits[rows] > plain.best_shift).astype(float))
        b = _cost(y[rows], (logits[rows] > 0).astype(float))
        wins += 1.0 if a < b else 0.5 if a == b else 0.0
    assert guarded.confidence == pytest.approx(wins / 100)
    assert guarded.best_shift == plain.best_shift and guarded.evaluations == plain.evaluations + 200
    assert guarded.confidence >= 0.9 and guarded.shift == plain.shift  # a 20:1 cost: a clear gain, kept
    # A winner that gains by luck: balanced labels unrelated to the logit, the metric the error rate.
    noise = np.random.default_rng(0).permutation(np.arange(len(y)) % 2)
    lucky = tune_threshold(model, make_metric("mcr"), X, noise, min_confidence=0.0)
    doubted = tune_threshold(model, make_metric("mcr"), X, noise, min_confidence=0.9)
    assert lucky.shift != 0.0 and lucky.value < lucky.untuned_value
    assert doubted.confidence is not None and doubted.confidence < 0.9
    assert (doubted.shift, doubted.threshold, doubted.value) == (0.0, 0.5, doubted.untuned_value)
    assert doubted.best_shift == lucky.shift


def test_model_metrics_are_never_resampled() -> None:
    model, X, y = _model_and_rows()
    scores = make_metric("mcr")
    by_model = BlackBoxMetric(lambda m: scores.evaluate(m, X, y), "mcr-model", False, takes="model")
    result = tune_threshold(model, by_model, X, y, min_confidence=0.99)
    assert result.confidence is None and result.shift == result.best_shift
