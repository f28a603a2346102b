"""The obvious alternative to MetricOpt for a threshold metric: tune the pre-trained model's decision threshold.

A user with a binary classifier and a cost or an error rate would first move
the decision threshold: keep the model, pick the threshold that gives the best
metric on validation rows. :func:`tune_threshold` does that for any black-box
metric by shifting the model's logit, ``z -> z - c``: the shifted model
predicts positive (probability above 0.5) exactly where ``z > c``, i.e. where
the original probability is above ``sigmoid(c)``. :class:`ShiftedLogit` is
that model (a metric that takes the model sees it; a metric that takes scores
sees ``sigmoid(z - c)``). A rank metric (AUCPR, AP, AUROC) does not change
with ``c``.

Candidates (DECIDED): ``c = 0`` (the untuned model) and the midpoints between
consecutive distinct validation logits, plus one below the smallest and one
above the largest (every distinct decision the threshold can make on these
rows); when there are more than ``max_candidates``, that many evenly spaced
quantiles of the midpoints. The lowest cost wins; ties go to the candidate
closest to 0 (the least change). Each candidate is one metric evaluation, on
the validation logits (one forward pass) for a metric that takes scores, on
the shifted model for one that takes the model.

The winner on the tuning rows is partly luck: with few positives, a threshold
that gains one or two rows there is as likely to lose on new rows. With
``min_confidence`` > 0 the winner must also beat the untuned model on
``resamples`` bootstrap resamples of the tuning rows (drawn within each class,
so each keeps the rows' class counts) in at least that share of them (ties
count half); otherwise the untuned model is kept. A metric that takes the
model cannot be resampled: it is never guarded (``confidence`` None).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from metricopt._checks import check_integer, check_nonnegative, describe
from metricopt.blackbox.metric import BlackBoxMetric
from metricopt.predict import predict_logits

__all__ = ["MIN_CONFIDENCE", "ShiftedLogit", "ThresholdResult", "tune_threshold"]

#: :func:`tune_threshold`'s default ``min_confidence`` (0: no check). DECIDED by ``python -m
#: benchmarks.threshold_guard`` on the 26 validation tables x seeds 10-14 (mcr and a 20:1 cost, by a rule fixed
#: before the run, ``benchmarks/results/threshold_guard.md``): against the plain winner, 0.9 left 2 instead of 6
#: of 52 (table, metric) cells worse than the untuned model on test, at a mean relative test cost of 0.717
#: instead of 0.711.
MIN_CONFIDENCE = 0.9


class ShiftedLogit(nn.Module):
    """``model(x) - shift``: a binary model with its decision threshold (probability 0.5) moved to ``sigmoid(shift)``.

    >>> model = nn.Linear(1, 1)
    >>> shifted = ShiftedLogit(model, 2.0)
    >>> x = torch.ones(3, 1)
    >>> torch.allclose(shifted(x), model(x) - 2.0)
    True
    """

    def __init__(self, model: nn.Module, shift: float) -> None:
        super().__init__()
        self.model = model
        self.shift = float(shift)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x) - self.shift


@dataclass(frozen=True)
class ThresholdResult:
    """What :func:`tune_threshold` found.

    Attributes:
        shift: the logit threshold ``c`` (0: the untuned model).
        threshold: the same as a probability, ``sigmoid(c)``.
        value: the metric on the tuning rows at ``c`` (raw, in the metric's own direction).
        untuned_value: the metric there at ``c = 0``.
        evaluations: metric calls made (the resamples' included).
        best_shift: the candidate with the best metric on the tuning rows
            (``shift`` unless the guard kept the untuned model).
        confidence: the share of resamples on which ``best_shift`` beat the
            untuned model (None: not resampled, because ``min_confidence`` is
            0, the best candidate is ``c = 0``, or the metric takes the model).
    """

    shift: float
    threshold: float
    value: float
    untuned_value: float
    evaluations: int
    best_shift: float = 0.0
    confidence: float | None = None

    def model(self, model: nn.Module) -> ShiftedLogit:
        """``model`` with this threshold."""
        return ShiftedLogit(model, self.shift)


def _candidates(logits: np.ndarray, max_candidates: int) -> np.ndarray:
    distinct = np.unique(logits)
    cuts = np.concatenate([[distinct[0] - 1.0], (distinct[:-1] + distinct[1:]) / 2, [distinct[-1] + 1.0]])
    if len(cuts) > max_candidates - 1:
        cuts = np.quantile(cuts, np.linspace(0, 1, max_candidates - 1), method="nearest")
    cuts = np.unique(np.concatenate([[0.0], cuts]))
    return cuts[np.argsort(np.abs(cuts), kind="stable")]  # closest to 0 first: ties keep the least change


@torch.no_grad()
def tune_threshold(
    model: nn.Module,
    metric: BlackBoxMetric,
    X: np.ndarray | Tensor,
    y: np.ndarray | Tensor,
    *,
    max_candidates: int = 101,
    min_confidence: float = MIN_CONFIDENCE,
    resamples: int = 200,
    seed: int = 0,
) -> ThresholdResult:
    """The logit threshold of a binary ``model`` with the best ``metric`` on ``(X, y)``.

    Args:
        model: a binary model with one output logit (frozen here: evaluated without gradients).
        metric: the black-box metric (:func:`~metricopt.blackbox.metric.make_metric`).
        X, y: the tuning rows (validation rows: never the rows the result is reported on).
        max_candidates: most thresholds tried, ``c = 0`` included (>= 2).
        min_confidence: the share of bootstrap resamples of the tuning rows on
            which the best threshold must beat the untuned model, in [0, 1)
            (0: no check, the plain winner); see the module notes.
        resamples: bootstrap resamples of that check (>= 10).
        seed: seeds the resamples.

    Returns:
        A :class:`ThresholdResult`; ``result.model(model)`` is the tuned model.

    Raises:
        ValueError: the model has more than one output (multi-class: no single threshold), or no rows.
        MetricError: the metric failed.
    """
    max_candidates = check_integer("max_candidates", max_candidates, 2)
    if not check_nonnegative("min_confidence", min_confidence) < 1:
        raise ValueError(f"`min_confidence` must lie in [0, 1); got {describe(min_confidence)}")
    resamples = check_integer("resamples", resamples, 10)
    seed = check_integer("seed", seed, 0)
    if len(X) == 0:
        raise ValueError("`X` must hold at least one row to tune a threshold on")
    was_training = model.training
    try:
        logits = predict_logits(model, X)
    finally:
        model.train(was_training)
    if logits.ndim != 2 or logits.shape[-1] != 1:
        raise ValueError(f"threshold tuning needs a binary model with one output logit; got outputs of shape "
                         f"{tuple(logits.shape)} ({describe(logits)})")
    z = logits.squeeze(-1).double().cpu().numpy()
    labels = np.asarray(y.cpu() if isinstance(y, Tensor) else y)

    def value_at(shift: float) -> float:
        if metric.takes == "model":
            return metric.score_model(ShiftedLogit(model, shift))
        return metric.score(labels, _outputs(metric, z, shift))

    best_shift, best_value, untuned, calls = 0.0, None, None, 0
    for shift in _candidates(z, max_candidates):
        value = value_at(float(shift))
        calls += 1
        if shift == 0.0:
            untuned = value
        if best_value is None or metric.cost(value) < metric.cost(best_value):
            best_shift, best_value = float(shift), value
    assert best_value is not None and untuned is not None  # c = 0 is always a candidate
    confidence = None
    if min_confidence > 0 and best_shift != 0.0 and metric.takes != "model":
        confidence = _confidence(metric, z, labels, best_shift, resamples=resamples, seed=seed)
        calls += 2 * resamples
    chosen = best_shift if confidence is None or confidence >= min_confidence else 0.0
    return ThresholdResult(chosen, float(1.0 / (1.0 + np.exp(-chosen))), best_value if chosen else untuned, untuned,
                           calls, best_shift, confidence)


def _confidence(metric: BlackBoxMetric, z: np.ndarray, labels: np.ndarray, shift: float, *, resamples: int,
                seed: int) -> float:
    """The share of class-stratified bootstrap resamples on which ``shift`` costs less than 0 (ties: half)."""
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    shifted, untuned = _outputs(metric, z, shift), _outputs(metric, z, 0.0)
    wins = 0.0
    for _ in range(resamples):
        rows = np.concatenate([g[rng.integers(0, len(g), len(g))] for g in groups])
        a = metric.cost(metric.score(labels[rows], shifted[rows]))
        b = metric.cost(metric.score(labels[rows], untuned[rows]))
        wins += 1.0 if a < b else 0.5 if a == b else 0.0
    return wins / resamples


def _outputs(metric: BlackBoxMetric, z: np.ndarray, shift: float) -> np.ndarray:
    """What a scores / outputs metric sees of the model shifted by ``shift``."""
    return (z - shift)[:, None] if metric.takes == "outputs" else 1.0 / (1.0 + np.exp(-(z - shift)))
