"""Tests of metricopt.blackbox.interpolation: the GP metric curve."""

from __future__ import annotations

import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch

from metricopt.blackbox import interpolation
from metricopt.blackbox.interpolation import MetricCurve, interpolate_metric

pytestmark = pytest.mark.usefixtures("one_thread")


def _even_steps(count: int, num_steps: int) -> np.ndarray:
    return np.unique(np.linspace(0, num_steps - 1, count).round().astype(np.int64))


def _curves():
    """(steps, values, num_steps): smooth decays, random zigzags, uneven spacing, two points."""
    rng = np.random.default_rng(0)
    cases = []
    for count, num_steps in [(2, 50), (5, 100), (10, 1000), (50, 2000)]:
        steps = _even_steps(count, num_steps)
        cases.append((steps, 0.3 * np.exp(-steps / (num_steps / 3)) + 0.1, num_steps))
        cases.append((steps, rng.uniform(0, 1, len(steps)), num_steps))
    cases.append((np.array([0, 10, 500, 990]), np.array([0.5, 0.45, 0.3, 0.2]), 1000))
    cases.append((np.array([3, 4, 80]), np.array([20.0, 5.0, 7.0]), 81))  # adjacent steps, large costs
    return cases


CURVES = _curves()


@pytest.mark.parametrize("steps, values, num_steps", CURVES)
def test_passes_through_observations_with_small_std(steps, values, num_steps):
    curve = interpolate_metric(steps, values, num_steps)
    spread = values.std()
    assert curve.mean.shape == curve.std.shape == (num_steps,)
    assert curve.mean.dtype == curve.std.dtype == np.float64
    assert np.isfinite(curve.mean).all() and (curve.std > 0).all()
    assert np.abs(curve.mean[steps] - values).max() < 0.02 * spread
    assert curve.std[steps].max() < 0.05 * spread
    np.testing.assert_array_equal(curve.observed_steps, steps)
    np.testing.assert_array_equal(curve.observed, values)
    assert curve.observed_steps.dtype == np.int64 and curve.num_steps == num_steps


def test_std_grows_between_far_apart_observations():
    steps, values = np.array([0, 10, 500, 990]), np.array([0.5, 0.45, 0.3, 0.2])
    curve = interpolate_metric(steps, values, 1000)
    at_observations = curve.std[steps].max()
    assert curve.std[250] > 10 * at_observations
    assert curve.std[750] > 10 * at_observations
    assert curve.std[5] < curve.std[250]  # a small gap is surer than a large one


def test_std_grows_between_observations_of_a_zigzag():
    steps = _even_steps(6, 501)
    values = np.array([0.2, 0.6, 0.1, 0.5, 0.3, 0.7])
    curve = interpolate_metric(steps, values, 501)
    middles = (steps[:-1] + steps[1:]) // 2
    assert (curve.std[middles] > 5 * curve.std[steps].max()).all()


def test_one_observation_constant_mean_std_grows_with_distance():
    curve = interpolate_metric([30], [0.4], 100)
    np.testing.assert_array_equal(curve.mean, np.full(100, 0.4))
    fallback = 0.1 * 0.4 + 1e-3
    assert curve.std[30] < 0.05 * fallback
    assert curve.std.max() <= fallback * (1 + 1e-9)
    right, left = curve.std[30:], curve.std[:31][::-1]
    assert (np.diff(right) >= 0).all() and (np.diff(left) >= 0).all()
    assert curve.std[99] > 10 * curve.std[30]


@pytest.mark.parametrize("value", [0.25, 0.0, -3.0])
def test_identical_values_constant_mean_small_std_no_warning(value):
    steps = _even_steps(8, 400)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        curve = interpolate_metric(steps, np.full(len(steps), value), 400)
    np.testing.assert_array_equal(curve.mean, np.full(400, value))
    assert curve.std.max() <= 0.1 * abs(value) + 1e-3
    assert curve.std[steps].max() < 0.05 * (0.1 * abs(value) + 1e-3)


@pytest.mark.parametrize("steps, values, num_steps", CURVES)
def test_never_warns(steps, values, num_steps):
    # Straight lines push the length scale to its upper bound, zigzags to its lower one.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        interpolate_metric(steps, values, num_steps)
        interpolate_metric(steps, np.linspace(0.0, 1.0, len(steps)), num_steps)


def test_leaves_the_callers_warning_filters_alone():
    # A straight line pushes the length scale to its bound: no warning, and no filter touched to hide one.
    steps, num_steps = _even_steps(10, 1000), 1000
    filters, contents = warnings.filters, list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inside = list(warnings.filters)
        interpolate_metric(steps, np.linspace(0.0, 1.0, len(steps)), num_steps)
        assert warnings.filters == inside
    assert caught == []
    assert warnings.filters is filters and warnings.filters == contents


def test_imports_neither_scikit_learn_nor_scipy():
    # In a fresh interpreter: this one may have loaded them already. A fit (distinct values, not
    # the degenerate input) is what used to import scikit-learn, and with it scipy.
    code = (
        "import sys, metricopt.blackbox.interpolation as m; m.interpolate_metric([0,5,9],[0.3,0.2,0.25],10); "
        "assert 'sklearn' not in sys.modules and 'scipy' not in sys.modules, "
        "sorted(n for n in ('sklearn', 'scipy') if n in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_deterministic_and_input_types():
    steps, values, num_steps = CURVES[5]
    first = interpolate_metric(steps, values, num_steps)
    again = interpolate_metric(list(steps), list(values), num_steps)
    tensors = interpolate_metric(torch.as_tensor(steps), torch.as_tensor(values, dtype=torch.float32), num_steps)
    floats = interpolate_metric(steps.astype(float), values, num_steps)
    np.testing.assert_array_equal(first.mean, again.mean)
    np.testing.assert_array_equal(first.std, again.std)
    np.testing.assert_array_equal(first.mean, floats.mean)
    np.testing.assert_allclose(first.mean, tensors.mean, atol=1e-6)


def test_observations_are_copies():
    steps, values = np.array([0, 5, 9]), np.array([1.0, 2.0, 0.5])
    curve = interpolate_metric(steps, values, 10)
    values[0] = 100.0
    steps[0] = 1
    assert curve.observed[0] == 1.0 and curve.observed_steps[0] == 0


def test_fixed_length_scale_is_used():
    steps, values = np.array([0, 50, 99]), np.array([0.5, 0.1, 0.4])
    short = interpolate_metric(steps, values, 100, length_scale=5.0)
    long = interpolate_metric(steps, values, 100, length_scale=40.0)
    assert short.std[25] > long.std[25]
    assert not np.allclose(short.mean, long.mean)


def test_noise_level_widens_std_at_observations():
    steps, values = _even_steps(6, 200), np.array([0.9, 0.5, 0.4, 0.45, 0.3, 0.2])
    tight = interpolate_metric(steps, values, 200)
    loose = interpolate_metric(steps, values, 200, noise_level=1e-1)
    assert loose.std[steps].min() > tight.std[steps].max()


def test_observation_at_last_step_and_single_step_grid():
    curve = interpolate_metric([0, 9], [1.0, 0.0], 10)
    assert curve.mean[0] > 0.98 and curve.mean[9] < 0.02
    single = interpolate_metric([0], [0.3], 1)
    assert single.mean.tolist() == [0.3] and single.std.shape == (1,)


def test_fast_enough():
    steps = _even_steps(10, 1000)
    values = 0.3 * np.exp(-steps / 300.0) + 0.02 * np.sin(steps / 30.0)
    interpolate_metric(steps, values, 1000)  # warm-up
    times = []
    for _ in range(5):
        start = time.perf_counter()
        interpolate_metric(steps, values, 1000)
        times.append(time.perf_counter() - start)
    # Typically about 1 ms; the bound leaves room for a loaded machine.
    assert np.median(times) < 0.05


def _random_observations(seed: int, count: int | None = None, num_steps: int | None = None):
    """(steps, values, num_steps): K = 2 .. 20 random steps of a run of 10 .. 1000, noise, decay or wave."""
    rng = np.random.default_rng(seed)
    count = int(rng.integers(2, 21)) if count is None else count
    num_steps = int(rng.integers(max(10, 2 * count), 1001)) if num_steps is None else num_steps
    steps = np.sort(rng.choice(num_steps, count, replace=False))
    kind = seed % 3
    if kind == 0:
        values = rng.uniform(0.0, 1.0, count)
    elif kind == 1:
        values = 0.3 * np.exp(-steps / (num_steps / 3)) + 0.01 * rng.normal(size=count)
    else:
        values = np.sin(steps / num_steps * rng.uniform(1.0, 12.0)) + 0.1 * rng.normal(size=count)
    return steps, values, num_steps


SKLEARN_CASES = [(seed, None, None, 1e-4, None) for seed in range(12)] + [
    (12, 2, 10, 1e-4, None),  # the extremes of K and T
    (13, 3, 12, 1e-4, None),
    (14, 20, 1000, 1e-4, None),
    (15, 20, 25, 1e-4, None),
    (2, None, None, 1e-4, 5.0),  # a fixed length scale: only the amplitude is searched
    (3, None, None, 1e-4, 300.0),
    (4, None, None, 1e-2, None),  # more noise: a smoother curve
    (5, None, None, 1e-1, None),
]


@pytest.mark.parametrize("seed, count, num_steps, noise_level, length_scale", SKLEARN_CASES)
def test_matches_scikit_learns_gaussian_process(seed, count, num_steps, noise_level, length_scale):
    """The same model as scikit-learn's GaussianProcessRegressor, fitted by L-BFGS with restarts.

    Tolerances: the grid's final spacing (a factor 1.004 in the amplitude, under 0.25 % in the
    length scale) costs ~1e-5 of log likelihood and moves the std by about half the amplitude's
    relative error; on 600 random sets like these the differences were at most 0.6 % of the
    observed spread in the mean, 0.4 % (relative) in the std and 4e-5 in the log likelihood.
    2 % of the spread, 2 % and 1e-3 leave room for scikit-learn's own stopping tolerance.
    Restarts (a fixed seed) put scikit-learn at its global optimum, which the grid, without a
    start, also finds; from one start it can stop at a local one.
    """
    pytest.importorskip("sklearn")
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    steps, values, num_steps = _random_observations(seed, count, num_steps)
    curve = interpolate_metric(steps, values, num_steps, noise_level=noise_level, length_scale=length_scale)

    center, spread = values.mean(), values.std()
    x, y = steps.astype(np.float64), (values - center) / spread
    bounds = (float(np.diff(steps).min()), float(num_steps))
    start = float(np.clip(num_steps / len(steps), *bounds))
    rbf = RBF(start, bounds) if length_scale is None else RBF(length_scale, "fixed")
    kernel = ConstantKernel(1.0, (1e-3, 1e3)) * rbf + WhiteKernel(noise_level, "fixed")
    model = GaussianProcessRegressor(kernel, n_restarts_optimizer=10, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence at a bound, variances rounded below 0
        model.fit(x[:, None], y)
        mean, std = model.predict(np.arange(num_steps, dtype=np.float64)[:, None], return_std=True)
    std = np.maximum(std, np.sqrt(noise_level) * 1e-3)  # the module's floor

    assert np.abs(curve.mean - (center + spread * mean)).max() <= 0.02 * spread
    np.testing.assert_allclose(curve.std, spread * std, rtol=0.02)

    sq_dist = (x[:, None] - x[None, :]) ** 2
    fitted_length, amplitude = interpolation._fit(sq_dist, y, noise_level, length_scale, bounds, True)
    if length_scale is not None:
        assert fitted_length == length_scale
    theta = np.log([amplitude] if length_scale is not None else [amplitude, fitted_length])
    ours = model.log_marginal_likelihood(theta)
    assert ours >= model.log_marginal_likelihood_value_ - 1e-3
    # The eigendecomposition's likelihood is scikit-learn's (Cholesky) at the same hyper-parameters.
    amplitudes, likelihood = interpolation._profile(sq_dist, y, np.array([fitted_length]), noise_level, True)
    assert amplitudes[0] == amplitude
    assert likelihood[0] == pytest.approx(ours, rel=1e-9, abs=1e-8)


def test_flat_likelihood_ties_go_to_the_first_grid_point():
    # One observation: the correlation matrix is [[1]] at every length scale, the likelihood flat in it.
    length, amplitude = interpolation._fit(np.zeros((1, 1)), np.array([0.5]), 1e-4, None, (1.0, 100.0), True)
    assert length == pytest.approx(100.0, rel=1e-12)  # the longest: the smoothest curve
    assert amplitude == pytest.approx(0.25 - 1e-4, rel=5e-3)  # the maximum in a: a + noise = y^2
    again = interpolation._fit(np.zeros((1, 1)), np.array([0.5]), 1e-4, None, (1.0, 100.0), True)
    assert again == (length, amplitude)
    # Values equal up to rounding count as equal; the first of them wins.
    values = np.array([[1.0, 3.0, 3.0 + 1e-14, 3.0], [2.0, 1.0, 0.0, 2.0]])
    assert interpolation._first_maximum(values).tolist() == [1, 0]


@pytest.mark.parametrize(
    "steps, values, num_steps, match",
    [
        ([0, 10], [0.1, 0.2], 10, r"`steps` must lie in \[0, num_steps\) = \[0, 10\); got \[10\]"),
        ([-1, 5], [0.1, 0.2], 10, r"`steps` must lie in .*got \[-1\]"),
        ([5, 2], [0.1, 0.2], 10, "strictly increasing"),
        ([2, 2], [0.1, 0.2], 10, "strictly increasing"),
        ([1.5, 3], [0.1, 0.2], 10, "`steps` must hold integers"),
        ([1, 3], [0.1, float("nan")], 10, "`values` must be finite"),
        ([1, 3], [0.1, float("inf")], 10, "`values` must be finite"),
        ([1, 3, 5], [0.1, 0.2], 10, "same length; got 3 and 2"),
        ([], [], 10, "at least one observation"),
        ([[1, 3]], [0.1, 0.2], 10, "`steps` must be 1-D"),
        ([1, 3], [0.1, 0.2], 0, "`num_steps` must be an integer >= 1; got 0"),
        ([1, 3], [0.1, 0.2], 10.0, "`num_steps` must be an integer"),
        ([1, 3], [0.1, 0.2], True, "`num_steps` must be an integer"),
    ],
)
def test_errors(steps, values, num_steps, match):
    with pytest.raises(ValueError, match=match):
        interpolate_metric(steps, values, num_steps)


def test_option_and_type_errors():
    with pytest.raises(ValueError, match="`noise_level` must be a finite number > 0; got 0.0"):
        interpolate_metric([1], [0.1], 5, noise_level=0.0)
    with pytest.raises(ValueError, match="`length_scale` must be a finite number > 0"):
        interpolate_metric([1], [0.1], 5, length_scale=-1.0)
    with pytest.raises(TypeError, match="`values` must hold numbers"):
        interpolate_metric([1], ["a"], 5)
    with pytest.raises(TypeError, match="`steps` must hold numbers"):
        interpolate_metric([True], [0.1], 5)


def test_metric_curve_checks_shapes():
    with pytest.raises(ValueError, match="`mean` and `std`"):
        MetricCurve(np.zeros(3), np.zeros(4), np.zeros(1, dtype=np.int64), np.zeros(1))
    with pytest.raises(ValueError, match="`observed_steps` and `observed`"):
        MetricCurve(np.zeros(3), np.zeros(3), np.zeros(2, dtype=np.int64), np.zeros(1))
