"""The value function's held-out rank correlation and the trust rule (metricopt.blackbox.diagnostics)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metricopt.blackbox.diagnostics import (
    MIN_RANK_CORRELATION,
    MIN_STANDARD_ERRORS,
    pooled_rank_correlation,
    predict_held_out,
    rank_correlation,
    trust_value,
)
from metricopt.blackbox.trajectory import Trajectory
from metricopt.blackbox.value import ValueFunction


def _spearman_reference(a: np.ndarray, b: np.ndarray) -> float:
    stats = pytest.importorskip("scipy.stats")
    return float(stats.spearmanr(a, b).statistic)


@pytest.mark.parametrize("n", [3, 5, 10, 40])
@pytest.mark.parametrize("ties", [False, True])
def test_rank_correlation_matches_scipy(n: int, ties: bool) -> None:
    rng = np.random.default_rng(n)
    for _ in range(20):
        a, b = rng.normal(size=n), rng.normal(size=n)
        if ties:
            a, b = np.round(a), np.round(b * 2)
        if np.ptp(a) == 0 or np.ptp(b) == 0:
            assert math.isnan(rank_correlation(a, b))
            continue
        assert rank_correlation(a, b) == pytest.approx(_spearman_reference(a, b), abs=1e-12)


def test_rank_correlation_edge_cases() -> None:
    assert rank_correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(rank_correlation([1, 2], [1, 2]))            # fewer than 3
    assert math.isnan(rank_correlation([1, 2, 3], [5, 5, 5]))      # constant
    with pytest.raises(ValueError, match="`a` and `b`"):
        rank_correlation([1, 2, 3], [1, 2])


def _trajectory(phis: torch.Tensor, steps: list[int], costs: list[float]) -> Trajectory:
    trajectory = Trajectory()
    for phi in phis:
        trajectory.record(phi)
    for step, cost in zip(steps, costs):
        trajectory.observe(step, cost)
    return trajectory


def test_predict_held_out_records_predictions_at_the_observed_steps() -> None:
    value = ValueFunction(3, hidden_sizes=(8,), seed=0)
    value.set_normalisation(0.5, 0.2)
    phis = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    trajectory = _trajectory(phis, [0, 2, 5], [0.3, 0.2, 0.4])
    rho = predict_held_out(value, trajectory)
    expected = value.predict_cost(phis[[0, 2, 5]]).detach().double().tolist()
    assert trajectory.predicted_costs == pytest.approx(expected)
    assert rho == pytest.approx(rank_correlation(expected, [0.3, 0.2, 0.4]))
    restored = Trajectory.from_state(trajectory.state())
    assert restored.predicted_costs == pytest.approx(expected)


def test_a_value_function_that_knows_the_metric_ranks_it_and_a_reversed_one_does_not() -> None:
    # The metric is the first coordinate of phi; a linear value function reads it (or its negative).
    phis = torch.linspace(-1, 1, 11)[:, None] * torch.tensor([1.0, 0.3])
    costs = phis[:, 0].tolist()
    good, bad = ValueFunction(2, hidden_sizes=()), ValueFunction(2, hidden_sizes=())
    with torch.no_grad():
        for sign, value in ((1.0, good), (-1.0, bad)):
            value.network[0].weight.copy_(torch.tensor([[sign, 0.0]]))
            value.network[0].bias.zero_()
    trajectories = []
    for value in (good, bad):
        trajectory = _trajectory(phis, list(range(11)), costs)
        trajectories.append(trajectory)
        predict_held_out(value, trajectory)
    assert rank_correlation(trajectories[0].predicted_costs, costs) == pytest.approx(1.0)
    assert pooled_rank_correlation(trajectories[:1]) == pytest.approx(1.0)
    assert pooled_rank_correlation(trajectories[1:]) == pytest.approx(-1.0)
    assert math.isnan(pooled_rank_correlation([_trajectory(phis, [0, 5], [0.1, 0.2])]))  # nothing predicted


def _predicted(predicted: list[float], observed: list[float]) -> Trajectory:
    trajectory = _trajectory(torch.zeros(len(observed), 1), list(range(len(observed))), observed)
    trajectory.predicted_costs = list(predicted)
    return trajectory


def test_trust_rule_pools_the_later_half_and_needs_the_threshold_and_significance() -> None:
    assert (MIN_RANK_CORRELATION, MIN_STANDARD_ERRORS) == (0.25, 3.0)
    rng = np.random.default_rng(0)
    costs = [list(rng.normal(size=10)) for _ in range(8)]
    perfect = [_predicted(c, c) for c in costs]
    reversed_ = [_predicted([-x for x in c], c) for c in costs]
    verdict = trust_value(reversed_[:4] + perfect[4:])           # judged on the later half only
    assert verdict.trusted and verdict.tasks == 4 and verdict.points == 40
    assert verdict.rank_correlation == pytest.approx(1.0)
    assert not trust_value(perfect[:4] + reversed_[4:]).trusted
    # rho = 1 on 5 points: 1 * sqrt(4) = 2 standard errors, short of 3.
    few = trust_value([_predicted([1, 2], [1, 2]), _predicted([1, 2, 3, 4, 5], [1, 2, 3, 4, 5])])
    assert few.rank_correlation == pytest.approx(1.0) and few.points == 5 and not few.trusted
    # A weak order on many points: significant, but below the threshold.
    weak = [_predicted(list(np.asarray(c) + rng.normal(scale=3.0, size=10)), c) for c in costs * 40]
    judged = trust_value(weak)
    assert judged.rank_correlation * math.sqrt(judged.points - 1) > 3 and judged.rank_correlation < 0.25
    assert not judged.trusted and "fails" in judged.describe()
    assert not trust_value([]).trusted and "no held-out" in trust_value([]).describe()
