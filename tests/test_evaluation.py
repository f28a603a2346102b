"""Reports and threshold tuning score decisions with the exact metrics."""

from __future__ import annotations

import numpy as np
import pytest

from metricopt.evaluation import report, tune_threshold
from metricopt.metrics import metric_score


def test_report_matches_exact_metrics_at_the_threshold():
    y = np.array([0, 1, 1, 0, 1])
    probs = np.array([0.2, 0.7, 0.4, 0.6, 0.9])
    got = report(y, probs, num_classes=2, metrics=("f1", "mcc"), threshold=0.5)
    predicted = (probs > 0.5).astype(int)
    assert got == {"f1": metric_score(y, predicted, "f1"), "mcc": metric_score(y, predicted, "mcc")}


@pytest.mark.parametrize("metric", ["f1", "gmean", "mcc", "recall", "balanced_accuracy"])
def test_tuned_threshold_is_optimal_over_every_cut(metric):
    rng = np.random.default_rng(3)
    y = (rng.random(60) < 0.3).astype(int)
    probs = np.clip(0.3 * y + rng.random(60) * 0.7, 0, 1)
    best = tune_threshold(y, probs, metric)
    tuned = metric_score(y, (probs > best).astype(int), metric, num_classes=2)
    cuts = np.concatenate([[-1.0], np.unique(probs)])  # every distinct decision, everything positive first
    brute = max(metric_score(y, (probs > c).astype(int), metric, num_classes=2) for c in cuts)
    assert tuned == pytest.approx(brute)


def test_tuning_can_predict_everything_positive():
    assert tune_threshold([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4], "recall") < 0.1


def test_tuning_needs_binary_probabilities():
    with pytest.raises(ValueError, match="`probs`"):
        tune_threshold(np.array([0, 1]), np.array([[0.5, 0.5], [0.2, 0.8]]), "f1")
