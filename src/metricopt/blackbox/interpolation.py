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

* Model: scikit-learn's ``GaussianProcessRegressor`` on the step index, kernel
  ``ConstantKernel * RBF + WhiteKernel``, targets standardised by their mean and
  spread (``normalize_y=True`` semantics, done by hand so that a zero spread gets
  the documented fallback below instead of scikit-learn's silent 1).
* Hyper-parameters: the amplitude and the RBF length scale are fitted by maximum
  likelihood (L-BFGS from one deterministic start: no random restarts), the
  length scale bounded to ``[smallest gap between observed steps, num_steps]``,
  so the curve can neither wiggle between neighbouring observations nor be
  flatter than the run is long; it starts at the typical gap ``num_steps / K``.
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
  1 and the starting length scale (nothing to fit), on the fallback spread
  ``0.1 * |value| + 1e-3``: ``sigma`` is about ``1 %`` of that at the observed
  steps and grows with the distance to them, up to the full fallback spread.

Speed: one fit on ``K`` points (``O(K^3)`` per likelihood evaluation) and one
prediction on ``T`` points (``O(T K^2)``): a few milliseconds for ``K = 10``,
``T = 1000``. scikit-learn's convergence warnings (a hyper-parameter at its
bound is expected here, for example a straight line's length scale) are
caught inside, by filters scoped to the fit (``warnings.catch_warnings``) that
match only scikit-learn's convergence warning and its "predicted variances
smaller than 0" notice: the caller's filters are left as they were and any
other warning still reaches the caller.
"""

from __future__ import annotations

import warnings
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

    A Gaussian process over the step index (module docstring: kernel
    ``ConstantKernel * RBF + WhiteKernel`` on standardised values, maximum
    likelihood hyper-parameters, fixed white noise). The mean passes through the
    observations (up to the small noise) with a small ``std`` there, and the
    ``std`` grows between far-apart observations.

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
    start = float(np.clip(num_steps / count, min_gap, num_steps))
    mean, std = _gaussian_process(
        step_array.astype(np.float64),
        np.zeros(count) if degenerate else (value_array - center) / spread,
        num_steps,
        noise_level=noise_level,
        length_scale=start if (degenerate and length_scale is None) else length_scale,
        length_scale_start=start,
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
    length_scale_start: float,
    length_scale_bounds: tuple[float, float],
    fit_amplitude: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std at steps ``0 .. num_steps - 1`` of a GP fitted to standardised ``y``."""
    # Imported here, on use: the core needs torch and numpy only (docs/developer.md).
    try:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
    except ImportError as error:
        raise ImportError("the black-box family interpolates metric observations with scikit-learn's Gaussian "
                          "process: pip install scikit-learn") from error

    amplitude = ConstantKernel(1.0, _AMPLITUDE_BOUNDS if fit_amplitude else "fixed")
    if length_scale is None:
        rbf = RBF(length_scale_start, length_scale_bounds)
    else:
        rbf = RBF(length_scale, "fixed")
    kernel = amplitude * rbf + WhiteKernel(noise_level, "fixed")
    fits = fit_amplitude or length_scale is None
    model = GaussianProcessRegressor(
        kernel,
        optimizer="fmin_l_bfgs_b" if fits else None,
        n_restarts_optimizer=0,
        normalize_y=False,  # standardised by the caller (module docstring)
        random_state=0,
    )
    grid = np.arange(num_steps, dtype=np.float64)[:, None]
    with warnings.catch_warnings():
        # Scoped (the caller's filters are restored on exit) and narrow: only the two warnings
        # this fit expects, which carry nothing for the user: a hyper-parameter at its bound
        # (ConvergenceWarning) and "predicted variances smaller than 0" (rounding; clipped
        # below). Anything else still reaches the caller.
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        warnings.filterwarnings("ignore", message="Predicted variances smaller than 0", category=UserWarning)
        model.fit(x[:, None], y)
        mean, std = model.predict(grid, return_std=True)
    # The white noise bounds the predictive variance from below; rounding can still dent it.
    floor = np.sqrt(noise_level) * 1e-3
    return np.asarray(mean, dtype=np.float64), np.maximum(np.asarray(std, dtype=np.float64), floor)
