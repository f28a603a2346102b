"""Tests of metricopt.blackbox.trajectory: where the metric is observed, and the Trajectory record."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from metricopt.blackbox.interpolation import MetricCurve, interpolate_metric
from metricopt.blackbox.trajectory import Trajectory, evaluation_count, evaluation_steps

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- evaluation_count / evaluation_steps


@pytest.mark.parametrize(
    ("steps", "evaluations", "expected"),
    [
        (200, 0.05, 10),  # the paper's 5 %
        (100, 0.05, 5),
        (10, 0.05, 2),  # 0.5 rounds to 0: at least two observations
        (10, 0.15, 2),  # round(1.5) in Python = 2
        (30, 0.1, 3),
        (20, 1.0, 20),  # a fraction counts steps, not points
        (200, 7, 7),
        (10, 2, 2),
        (10, 11, 11),  # every point 0 .. 10
        (10, 50, 11),  # more than the points there are: clipped to steps + 1
        (1, 2, 2),
        (1, 0.5, 2),
        (200, np.int64(4), 4),  # NumPy integers are integers
        (200, np.float64(0.05), 10),  # NumPy floats are fractions
    ],
)
def test_evaluation_count(steps, evaluations, expected):
    count = evaluation_count(steps, evaluations)
    assert count == expected and isinstance(count, int)


@pytest.mark.parametrize("steps", [1, 2, 3, 7, 10, 19, 20, 30, 99, 100, 101, 200])
@pytest.mark.parametrize("evaluations", [2, 3, 4, 5, 7, 11, 0.05, 0.1, 0.33, 0.5, 1.0])
def test_evaluation_steps_even_both_ends_and_exactly_k(steps, evaluations):
    points = evaluation_steps(steps, evaluations)
    count = evaluation_count(steps, evaluations)
    assert points.dtype == np.int64 and points.ndim == 1
    assert len(points) == count >= 2  # rounding never merges two points
    assert points[0] == 0 and points[-1] == steps  # the pre-trained start and the end are always scored
    gaps = np.diff(points)
    assert (gaps > 0).all()
    assert gaps.max() - gaps.min() <= 1  # evenly spread up to rounding
    np.testing.assert_array_equal(points, np.round(np.linspace(0, steps, count)))


def test_evaluation_steps_examples():
    assert evaluation_steps(100, 5).tolist() == [0, 25, 50, 75, 100]
    assert evaluation_steps(10, 0.05).tolist() == [0, 10]
    assert evaluation_steps(3, 10).tolist() == [0, 1, 2, 3]
    assert evaluation_steps(1, 2).tolist() == [0, 1]


@pytest.mark.parametrize("steps", [0, -3, 2.0, True, "10", None])
def test_evaluation_count_bad_steps(steps):
    with pytest.raises(ValueError, match="`steps`"):
        evaluation_count(steps, 3)
    with pytest.raises(ValueError, match="`steps`"):
        evaluation_steps(steps, 3)


@pytest.mark.parametrize("evaluations", [0, 1, -2, np.int64(1)])
def test_evaluation_count_too_few(evaluations):
    with pytest.raises(ValueError, match=r"`evaluations` must be at least 2"):
        evaluation_count(100, evaluations)


@pytest.mark.parametrize("evaluations", [0.0, -0.1, 1.5, 2.0, math.nan, math.inf])
def test_evaluation_count_bad_fraction(evaluations):
    with pytest.raises(ValueError, match=r"`evaluations` as a fraction.*\(0, 1\]"):
        evaluation_count(100, evaluations)


@pytest.mark.parametrize("evaluations", ["5", None, True, [5], torch.tensor(5)])
def test_evaluation_count_bad_type(evaluations):
    with pytest.raises(TypeError, match="`evaluations`"):
        evaluation_count(100, evaluations)


# ---------------------------------------------------------------- Trajectory: record / observe


def _trajectory(points: int = 11, phi_size: int = 4, observed=(0, 5, 10)) -> Trajectory:
    generator = torch.Generator().manual_seed(0)
    trajectory = Trajectory()
    for t in range(points):
        trajectory.record(torch.randn(phi_size, generator=generator))
        if t < points - 1:
            trajectory.losses.append(1.0 / (t + 1))
    for step in observed:
        trajectory.observe(step, 0.5 - 0.02 * step + 0.001 * step**2)
    return trajectory


def test_record_stores_a_detached_float32_cpu_copy():
    trajectory = Trajectory()
    phi = torch.ones(3, dtype=torch.float64, requires_grad=True)
    trajectory.record(phi)
    with torch.no_grad():
        phi.add_(1.0)
    (stored,) = trajectory.phis
    assert stored.dtype == torch.float32 and not stored.requires_grad and stored.device.type == "cpu"
    torch.testing.assert_close(stored, torch.ones(3))  # not aliased to the caller's tensor
    assert trajectory.num_points == 1
    assert trajectory.phi_matrix().shape == (1, 3)


def test_observe_appends_plain_numbers():
    trajectory = Trajectory()
    trajectory.observe(np.int64(0), np.float32(0.25))
    trajectory.observe(3, 0.5)
    assert trajectory.observed_steps == [0, 3] and trajectory.observed_costs == [0.25, 0.5]
    assert all(type(s) is int for s in trajectory.observed_steps)
    assert all(type(c) is float for c in trajectory.observed_costs)


@pytest.mark.parametrize("second", [4, 3])
def test_observe_steps_must_increase(second):
    trajectory = Trajectory()
    trajectory.observe(2, 0.1)
    trajectory.observe(4, 0.2)
    with pytest.raises(ValueError, match=rf"`step` must increase; got {second} after 4"):
        trajectory.observe(second, 0.3)
    assert trajectory.observed_steps == [2, 4] and trajectory.observed_costs == [0.1, 0.2]  # nothing appended


def test_phi_matrix_stacks_in_order():
    trajectory = _trajectory(points=6, phi_size=3)
    matrix = trajectory.phi_matrix()
    assert matrix.shape == (6, 3)
    for row, phi in zip(matrix, trajectory.phis):
        assert torch.equal(row, phi)


# ---------------------------------------------------------------- curve()


def test_curve_needs_two_observations():
    trajectory = _trajectory(observed=())
    with pytest.raises(ValueError, match="at least 2 observations; this trajectory has 0"):
        trajectory.curve()
    trajectory.observe(0, 0.5)
    with pytest.raises(ValueError, match="at least 2 observations; this trajectory has 1"):
        trajectory.curve()


def test_curve_is_the_gp_interpolation_over_every_recorded_point():
    trajectory = _trajectory(points=11, observed=(0, 5, 10))
    curve = trajectory.curve()
    expected = interpolate_metric(np.array([0, 5, 10]), np.array(trajectory.observed_costs), 11)
    assert isinstance(curve, MetricCurve)
    assert curve.mean.shape == curve.std.shape == (11,)
    np.testing.assert_array_equal(curve.mean, expected.mean)
    np.testing.assert_array_equal(curve.std, expected.std)
    np.testing.assert_allclose(curve.mean[[0, 5, 10]], trajectory.observed_costs, atol=1e-3)


def test_curve_is_cached_until_a_new_observation():
    trajectory = _trajectory(points=11, observed=(0, 5))
    first = trajectory.curve()
    assert trajectory.curve() is first  # no second GP fit
    assert trajectory.curve() is first
    trajectory.observe(10, 0.2)
    second = trajectory.curve()
    assert second is not first
    assert second.observed_steps.tolist() == [0, 5, 10]
    assert trajectory.curve() is second


def test_curve_cache_follows_new_points():
    # finetune records phi_t, observes, then asks for the curve: a longer run needs a longer curve.
    trajectory = _trajectory(points=6, observed=(0, 5))
    short = trajectory.curve()
    assert short.mean.shape == (6,)
    trajectory.record(torch.zeros(4))
    longer = trajectory.curve()
    assert longer is not short and longer.mean.shape == (7,)
    assert trajectory.curve() is longer


def test_curve_cache_is_not_part_of_state():
    trajectory = _trajectory()
    trajectory.curve()
    assert set(trajectory.state()) == {"phis", "losses", "observed_steps", "observed_costs", "predicted_costs"}


def test_comparing_trajectories_does_not_raise():
    a, b = _trajectory(), _trajectory()
    assert (a == b) in (True, False)


# ---------------------------------------------------------------- state() / from_state()


def _assert_same(a: Trajectory, b: Trajectory) -> None:
    assert len(a.phis) == len(b.phis)
    for x, y in zip(a.phis, b.phis):
        assert torch.equal(x, y) and x.dtype == y.dtype
    assert a.losses == b.losses
    assert a.observed_steps == b.observed_steps
    assert a.observed_costs == b.observed_costs  # float64 in the state: bitwise equal floats


def test_state_round_trip():
    trajectory = _trajectory(points=11, phi_size=5, observed=(0, 3, 7, 10))
    trajectory.observed_costs[1] = 0.1 + 0.2  # not representable in float32: float64 must survive
    state = trajectory.state()
    assert state["phis"].shape == (11, 5) and state["phis"].dtype == torch.float32
    assert state["losses"].dtype == torch.float64 and state["observed_costs"].dtype == torch.float64
    assert state["observed_steps"].dtype == torch.int64
    restored = Trajectory.from_state(state)
    _assert_same(trajectory, restored)
    assert all(type(s) is int for s in restored.observed_steps)
    # The curve of the restored run is the same curve.
    np.testing.assert_array_equal(restored.curve().mean, trajectory.curve().mean)
    np.testing.assert_array_equal(restored.curve().std, trajectory.curve().std)


def test_state_round_trip_through_a_weights_only_file():
    trajectory = _trajectory(points=8, phi_size=3, observed=(0, 7))
    buffer = io.BytesIO()
    torch.save(trajectory.state(), buffer)
    buffer.seek(0)
    restored = Trajectory.from_state(torch.load(buffer, weights_only=True))
    _assert_same(trajectory, restored)


def test_state_holds_tensors_only():
    state = _trajectory().state()
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_state_round_trip_of_an_empty_trajectory():
    empty = Trajectory()
    restored = Trajectory.from_state(empty.state())
    assert restored.phis == [] and restored.losses == []
    assert restored.observed_steps == [] and restored.observed_costs == []
    assert restored.num_points == 0


def test_state_round_trip_without_observations():
    trajectory = _trajectory(points=4, observed=())
    restored = Trajectory.from_state(trajectory.state())
    _assert_same(trajectory, restored)


def test_restored_trajectory_keeps_recording():
    trajectory = _trajectory(points=5, observed=(0, 4))
    restored = Trajectory.from_state(trajectory.state())
    restored.record(torch.zeros(4))
    restored.observe(5, 0.3)
    assert restored.num_points == 6 and restored.observed_steps == [0, 4, 5]
    assert trajectory.num_points == 5  # the original is independent
    with pytest.raises(ValueError, match="`step` must increase"):
        restored.observe(5, 0.3)
