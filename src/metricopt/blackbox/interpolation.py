"""Dense metric curves from sparse observations: a 1-D Gaussian process over the step index.

A fine-tuning run of ``T`` steps observes the black-box metric at only ``K``
steps (the paper: ``K = 5 %`` of ``T``). The value function is trained on every
step, so the observations are interpolated into a mean ``M_t`` and an
uncertainty ``sigma_t`` for each step ``t = 0 .. T - 1``
(:func:`interpolate_metric`, returning a :class:`MetricCurve`). Values are costs
in the package's convention (lower is better), but nothing here depends on the
direction.

Stated by the paper: the sparse observations are interpolated over ``t`` into
``(M_t, sigma_t)``. DECIDED (the paper does not say how):

* Model: a Gaussian process on the step index, kernel
  ``amplitude * exp(-d^2 / (2 length_scale^2)) + noise_level * [d = 0]`` (the
  model of scikit-learn's ``ConstantKernel * RBF + WhiteKernel``, with its
  default ``1e-10`` added to the diagonal), on targets standardised by their
  mean and spread (``normalize_y=True`` semantics, done by hand so that a zero
  spread gets the documented fallback below). Closed form, in numpy: neither
  scikit-learn nor scipy is imported.
* Hyper-parameters: the amplitude (bounds ``[1e-3, 1e3]``) and the length scale
  (bounds ``[smallest gap between observed steps, num_steps]``, so the curve can
  neither wiggle between neighbouring observations nor be flatter than the run is
  long) maximise the log marginal likelihood over a grid, log-spaced in both; no
  gradient, no random start. One symmetric eigendecomposition of the ``K x K``
  correlation matrix per length scale (all of them in one batched
  ``np.linalg.eigh``) gives the likelihood at any amplitude in ``O(K)``, so each
  length scale gets its own best amplitude: 25 amplitudes (a factor 1.78
  apart), then 2 rounds of 25 around the best, one step of the previous grid to
  each side (final spacing a factor 1.004). The length scale: 48 values over its
  bounds, then 3 rounds of 9 around the best (final spacing 1/64 of the first:
  0.23 % for a ratio of 1000 between the bounds). Ties (a flat likelihood) go to
  the first grid point whose likelihood is within ``1e-10`` (relative) of the
  maximum: the longest length scale, then the smallest amplitude. A fixed
  ``length_scale`` leaves only the amplitude to search; the degenerate input
  below searches nothing. Against scikit-learn's L-BFGS optimum (10 restarts)
  on 600 random sets of 2 to 20 observations over 10 to 1000 steps, the
  likelihood was lower by at most ``4e-5``, the mean differed by at most
  ``0.6 %`` of the observed spread and ``sigma`` by ``0.4 %`` of itself.
  scikit-learn from a single start (as before) stopped short of the grid's
  likelihood, by 0.02 to 103, on 17 of those sets; the grid has no start to be
  trapped by. A joint grid of
  Cholesky factorisations (48 length scales x 25 amplitudes) was tried first:
  slower, and its coarse amplitudes misplaced the optimum along flat ridges of
  the likelihood, moving the mean by up to half the observed range.
* Noise: the white-noise variance is fixed at ``noise_level`` (``1e-4`` of the
  observed variance), not fitted. The metric of a given ``phi`` on a fixed
  validation split is deterministic, so the curve should pass through the
  observations; the small noise keeps the fit well conditioned and gives them a
  small, non-zero ``sigma``. Fitting it by likelihood from a handful of points let
  it swallow real changes of the metric.
* Grid: the mean and the standard deviation (of a new observation: the white
  noise included) are predicted at every integer step ``0 .. num_steps - 1``.
* Degenerate input (one observation, or all observed values equal): the mean is
  the observed value at every step, and the model is the same GP with amplitude
  1 and the length scale ``num_steps / K`` within its bounds, or the fixed
  ``length_scale`` (nothing to fit), on the fallback spread
  ``0.1 * |value| + 1e-3``: ``sigma`` is about ``1 %`` of that at the observed
  steps and grows with the distance to them, up to the full fallback spread.

Speed: 75 eigendecompositions of ``K x K`` matrices (``O(K^3)`` each), some
``6000 K`` likelihood terms and one prediction on ``T`` points (``O(T K^2)``).
Measured on one core (median of 200 calls): about 1.1 ms for ``K = 10``,
``T = 201`` or ``1000`` (scikit-learn's L-BFGS fit: 4 ms, and 30 to 55 ms when
its BLAS threads compete on a busy machine), 2.4 ms for ``K = 20``; it grows as
``K^3`` where scikit-learn's fit grows more slowly: 11 ms against 5 ms for
``K = 50``. No warning is raised or filtered here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from metricopt._checks import check_integer, check_positive, describe

__all__ = ["DEFAULT_NOISE_LEVEL", "MetricCurve", "interpolate_metric"]

#: White-noise variance in units of the observed variance (fixed, not fitted).
DEFAULT_NOISE_LEVEL = 1e-4
#: Fallback spread ``relative * |value| + absolute`` when the observations have none.
_FALLBACK_RELATIVE, _FALLBACK_ABSOLUTE = 0.1, 1e-3
#: Bounds of the fitted amplitude (variance, in units of the observed variance).
_AMPLITUDE_BOUNDS = (1e-3, 1e3)
#: Coarse grids: points log-spaced over the bounds of the length scale and of the amplitude.
_LENGTH_POINTS, _AMPLITUDE_POINTS = 48, 25
#: Refinements: rounds of a finer grid of so many points around the best point, one step of the
#: previous grid to each side (each round divides the spacing by ``(points - 1) / 2``).
_LENGTH_ROUNDS, _LENGTH_REFINE_POINTS = 3, 9
_AMPLITUDE_ROUNDS, _AMPLITUDE_REFINE_POINTS = 2, 25
#: Added to the covariance's diagonal, as scikit-learn's default ``alpha``.
_JITTER = 1e-10
#: Likelihoods this close to the maximum (relative, plus as much absolute) count as ties.
_TIE_TOLERANCE = 1e-10
#: Most matrix entries in one batched eigendecomposition (memory for large ``K``).
_BATCH_ENTRIES = 1 << 21


@dataclass(frozen=True)
class MetricCurve:
    """A metric interpolated over every step of a run.

    Attributes:
        mean: ``(T,)`` float64, the interpolated value ``M_t`` at steps ``0 .. T - 1``.
        std: ``(T,)`` float64, its uncertainty ``sigma_t`` (> 0).
        observed_steps: ``(K,)`` int64, the steps where the metric was observed (increasing).
        observed: ``(K,)`` float64, the observed values.
    """

    mean: np.ndarray
    std: np.ndarray
    observed_steps: np.ndarray
    observed: np.ndarray

    def __post_init__(self) -> None:
        if self.mean.ndim != 1 or self.std.shape != self.mean.shape:
            raise ValueError(
                f"`mean` and `std` must be (T,) arrays of one shape; got {self.mean.shape} and {self.std.shape}"
            )
        if self.observed_steps.ndim != 1 or self.observed.shape != self.observed_steps.shape:
            raise ValueError(
                "`observed_steps` and `observed` must be (K,) arrays of one shape; "
                f"got {self.observed_steps.shape} and {self.observed.shape}"
            )

    @property
    def num_steps(self) -> int:
        """``T``, the length of the dense grid."""
        return len(self.mean)


def _as_array(name: str, value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:  # ragged input
        raise TypeError(f"`{name}` must be a 1-D sequence of numbers; got {describe(value)}") from error
    if array.dtype.kind not in "iuf":
        raise TypeError(f"`{name}` must hold numbers; got dtype {array.dtype} ({describe(value)})")
    if array.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D; got shape {array.shape}")
    return array


def _check_steps(steps: Any, num_steps: int) -> np.ndarray:
    array = _as_array("steps", steps)
    if array.dtype.kind == "f" and not (np.isfinite(array).all() and (array == np.round(array)).all()):
        raise ValueError(f"`steps` must hold integers; got {describe(array.tolist())}")
    array = array.astype(np.int64)
    outside = (array < 0) | (array >= num_steps)
    if outside.any():
        raise ValueError(
            f"`steps` must lie in [0, num_steps) = [0, {num_steps}); got {array[outside][:3].tolist()} "
            f"among {describe(array.tolist())}"
        )
    if len(array) > 1 and not (np.diff(array) > 0).all():
        raise ValueError(f"`steps` must be strictly increasing (sorted, no duplicates); got {describe(array.tolist())}")
    return array


def _check_values(values: Any) -> np.ndarray:
    array = _as_array("values", values).astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"`values` must be finite; got {describe(array.tolist())}")
    return array


def interpolate_metric(
    steps: Any,
    values: Any,
    num_steps: int,
    *,
    noise_level: float = DEFAULT_NOISE_LEVEL,
    length_scale: float | None = None,
) -> MetricCurve:
    """Interpolate ``K`` metric observations into a mean and a standard deviation at every step.

    A Gaussian process over the step index (module docstring: RBF kernel plus
    fixed white noise on standardised values, hyper-parameters of maximum
    likelihood on a grid). The mean passes through the observations (up to the
    small noise) with a small ``std`` there, and the ``std`` grows between
    far-apart observations.

    Args:
        steps: ``(K,)`` integer steps where the metric was observed, strictly
            increasing, in ``[0, num_steps)``; a list, array or tensor.
        values: ``(K,)`` finite observed values (costs), same length.
        num_steps: ``T``, the length of the dense grid ``0 .. T - 1``.
        noise_level: white-noise variance in units of the observed variance
            (fixed, not fitted); larger values smooth instead of interpolating.
        length_scale: a fixed RBF length scale in steps; None (default) fits it
            by maximum likelihood within ``[smallest gap between steps, num_steps]``.

    Returns:
        A :class:`MetricCurve` with ``(T,)`` ``mean`` and ``std`` (float64) and
        copies of the observations.

    Raises:
        ValueError: no observation, lengths differ, steps out of range, unsorted
            or repeated, non-integer steps, non-finite values or bad options.

    >>> curve = interpolate_metric([0, 50, 99], [0.5, 0.3, 0.2], 100)
    >>> curve.mean.shape, curve.std.shape
    ((100,), (100,))
    >>> print(np.round(curve.mean[[0, 50, 99]], 3))      # through the observations
    [0.5 0.3 0.2]
    >>> bool(curve.std[25] > curve.std[50])               # less sure between them
    True
    """
    num_steps = check_integer("num_steps", num_steps, 1)
    noise_level = check_positive("noise_level", noise_level)
    if length_scale is not None:
        length_scale = check_positive("length_scale", length_scale)
    step_array = _check_steps(steps, num_steps)
    value_array = _check_values(values)
    if len(step_array) != len(value_array):
        raise ValueError(
            f"`steps` and `values` must have the same length; got {len(step_array)} and {len(value_array)}"
        )
    if len(step_array) == 0:
        raise ValueError("at least one observation is needed; got empty `steps` and `values`")

    count = len(step_array)
    center = float(value_array.mean())
    spread = float(value_array.std())  # ddof=0, as scikit-learn's normalize_y
    # Equal up to rounding counts as equal: standardising rounding noise would invent a curve.
    degenerate = spread <= 1e-9 * float(np.abs(value_array).max())
    if degenerate:
        spread = _FALLBACK_RELATIVE * abs(center) + _FALLBACK_ABSOLUTE
    min_gap = float(np.diff(step_array).min()) if count > 1 else 1.0
    typical_gap = float(np.clip(num_steps / count, min_gap, num_steps))  # the degenerate input's length scale
    mean, std = _gaussian_process(
        step_array.astype(np.float64),
        np.zeros(count) if degenerate else (value_array - center) / spread,
        num_steps,
        noise_level=noise_level,
        length_scale=typical_gap if (degenerate and length_scale is None) else length_scale,
        length_scale_bounds=(min_gap, float(num_steps)),
        fit_amplitude=not degenerate,
    )
    return MetricCurve(
        mean=np.full(num_steps, center) if degenerate else center + spread * mean,
        std=spread * std,
        observed_steps=step_array.copy(),
        observed=value_array.copy(),
    )


def _gaussian_process(
    x: np.ndarray,
    y: np.ndarray,
    num_steps: int,
    *,
    noise_level: float,
    length_scale: float | None,
    length_scale_bounds: tuple[float, float],
    fit_amplitude: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std at steps ``0 .. num_steps - 1`` of a GP fitted to standardised ``y``."""
    sq_dist = (x[:, None] - x[None, :]) ** 2
    if length_scale is None or fit_amplitude:
        length_scale, amplitude = _fit(sq_dist, y, noise_level, length_scale, length_scale_bounds, fit_amplitude)
    else:
        amplitude = 1.0
    # As scikit-learn's GaussianProcessRegressor.predict(..., return_std=True) with these hyper-parameters.
    covariance = amplitude * _correlation(sq_dist, np.array([length_scale]))[0]
    covariance[np.diag_indices_from(covariance)] += noise_level + _JITTER
    factor = np.linalg.cholesky(covariance)
    weights = np.linalg.solve(factor.T, np.linalg.solve(factor, y))  # covariance^-1 y
    grid = np.arange(num_steps, dtype=np.float64)
    cross = amplitude * np.exp((grid[:, None] - x[None, :]) ** 2 * (-0.5 / length_scale**2))  # (T, K)
    reduced = np.linalg.solve(factor, cross.T)  # (K, T)
    variance = amplitude + noise_level - np.einsum("kt,kt->t", reduced, reduced)
    # The white noise bounds the predictive variance from below; rounding can still dent it.
    floor = np.sqrt(noise_level) * 1e-3
    return cross @ weights, np.maximum(np.sqrt(np.maximum(variance, 0.0)), floor)


def _fit(
    sq_dist: np.ndarray,
    y: np.ndarray,
    noise_level: float,
    length_scale: float | None,
    length_scale_bounds: tuple[float, float],
    fit_amplitude: bool,
) -> tuple[float, float]:
    """``(length_scale, amplitude)`` of largest marginal likelihood on nested grids (module docstring).

    The length scale is searched within ``length_scale_bounds`` unless fixed (not None); the
    amplitude within ``_AMPLITUDE_BOUNDS`` if ``fit_amplitude``, else fixed at 1.
    """
    if length_scale is not None:
        amplitudes, _ = _profile(sq_dist, y, np.array([length_scale]), noise_level, fit_amplitude)
        return length_scale, float(amplitudes[0])
    low, high = np.log(length_scale_bounds)
    spacing = (high - low) / (_LENGTH_POINTS - 1)
    axis = np.linspace(high, low, _LENGTH_POINTS)  # longest first: ties go to the smoothest curve
    offsets = np.linspace(1.0, -1.0, _LENGTH_REFINE_POINTS)
    best = axis[0]
    for round_ in range(_LENGTH_ROUNDS + 1):
        if round_:  # a finer grid around the best point, one step of the previous grid to each side
            axis = np.clip(best + spacing * offsets, low, high)
            spacing *= 2.0 / (_LENGTH_REFINE_POINTS - 1)
        amplitudes, likelihood = _profile(sq_dist, y, np.exp(axis), noise_level, fit_amplitude)
        chosen = _first_maximum(likelihood[None])[0]
        best, amplitude = axis[chosen], amplitudes[chosen]
    return float(np.exp(best)), float(amplitude)


def _profile(
    sq_dist: np.ndarray, y: np.ndarray, length_scales: np.ndarray, noise_level: float, fit_amplitude: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``(B,)`` best amplitude (1 unless ``fit_amplitude``) and log marginal likelihood for each length scale.

    One symmetric eigendecomposition per length scale, ``exp(-d^2 / (2 l^2)) = Q diag(lam) Q'``,
    gives the likelihood at every amplitude ``a`` in ``O(K)``: the covariance is
    ``Q diag(a lam + noise) Q'``, so ``y' C^-1 y = sum (Q'y)^2 / (a lam + noise)`` and
    ``log det C = sum log(a lam + noise)``.
    """
    count = len(y)
    eigenvalues = np.empty((len(length_scales), count))
    projections = np.empty((len(length_scales), count))
    chunk = max(1, _BATCH_ENTRIES // count**2)  # bounds the memory of the stack for large K
    for start in range(0, len(length_scales), chunk):
        part = slice(start, start + chunk)
        lambdas, vectors = np.linalg.eigh(_correlation(sq_dist, length_scales[part]))
        eigenvalues[part] = np.maximum(lambdas, 0.0)  # positive semi-definite: clip rounding below 0
        projections[part] = np.einsum("bkj,k->bj", vectors, y) ** 2
    noise = noise_level + _JITTER

    def likelihood(log_amplitudes: np.ndarray) -> np.ndarray:  # (B, A) -> (B, A)
        variances = np.exp(log_amplitudes)[:, :, None] * eigenvalues[:, None, :] + noise
        fit = (projections[:, None, :] / variances + np.log(variances)).sum(axis=2)
        return -0.5 * (fit + count * np.log(2.0 * np.pi))

    if not fit_amplitude:
        return np.ones(len(length_scales)), likelihood(np.zeros((len(length_scales), 1)))[:, 0]
    low, high = np.log(_AMPLITUDE_BOUNDS)
    spacing = (high - low) / (_AMPLITUDE_POINTS - 1)
    grid = np.broadcast_to(np.linspace(low, high, _AMPLITUDE_POINTS), (len(length_scales), _AMPLITUDE_POINTS))
    offsets = np.linspace(-1.0, 1.0, _AMPLITUDE_REFINE_POINTS)
    rows = np.arange(len(length_scales))
    best = grid[:, 0]
    for round_ in range(_AMPLITUDE_ROUNDS + 1):
        if round_:  # per length scale, a finer grid around its best amplitude
            grid = np.clip(best[:, None] + spacing * offsets, low, high)
            spacing *= 2.0 / (_AMPLITUDE_REFINE_POINTS - 1)
        scores = likelihood(grid)
        chosen = _first_maximum(scores)
        best, top = grid[rows, chosen], scores[rows, chosen]
    return np.exp(best), top


def _first_maximum(values: np.ndarray) -> np.ndarray:
    """Index in each row of the first value within rounding of the row's maximum (deterministic ties)."""
    top = values.max(axis=1, keepdims=True)
    return np.argmax(values >= top - _TIE_TOLERANCE * (1.0 + np.abs(top)), axis=1)


def _correlation(sq_dist: np.ndarray, length_scales: np.ndarray) -> np.ndarray:
    """``(B, K, K)``: ``exp(-d^2 / (2 l^2))`` for each length scale."""
    return np.exp(sq_dist[None] * (-0.5 / length_scales**2)[:, None, None])
