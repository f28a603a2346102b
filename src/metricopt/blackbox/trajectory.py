"""Fine-tuning trajectories with sparse metric observations.

A trajectory records the adapter parameters ``phi_0 .. phi_T`` of one
fine-tuning run (``phi_0`` is the start, ``phi_t`` the value after ``t``
optimiser steps), the training loss of every step and the black-box metric
observed at only ``K`` of the ``T + 1`` points, as an internal *cost* (lower is
better; ``1 - score`` for a higher-is-better score). :meth:`Trajectory.curve`
turns the sparse observations into a dense mean and uncertainty per step with
the Gaussian process of :mod:`metricopt.blackbox.interpolation`; that curve is
what the value function is trained on (MetricOpt, Huang et al. 2021).

:func:`evaluation_steps` fixes where the metric is observed: ``K`` points spread
evenly over ``0 .. T`` including both ends, so the starting point (the
pre-trained model) and the last point are always scored. The paper uses
``K = 5 %`` of ``T``; fewer than 2 observations cannot be interpolated, so
``K >= 2`` (DECIDED).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from metricopt._checks import describe
from metricopt.blackbox.interpolation import MetricCurve, interpolate_metric

__all__ = ["Trajectory", "evaluation_count", "evaluation_steps"]


def evaluation_count(steps: int, evaluations: int | float) -> int:
    """``K``: an integer count, or a fraction of ``steps`` (``0.05`` = 5 %), at least 2.

    Example:
        >>> evaluation_count(200, 0.05), evaluation_count(200, 7), evaluation_count(10, 0.05)
        (10, 7, 2)
    """
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"`steps` must be a positive integer; got {describe(steps)}")
    if isinstance(evaluations, bool) or not isinstance(evaluations, (numbers.Integral, float)):
        raise TypeError(f"`evaluations` must be an integer count or a fraction in (0, 1]; got {describe(evaluations)}")
    if isinstance(evaluations, numbers.Integral):
        if evaluations < 2:
            raise ValueError(f"`evaluations` must be at least 2 (a curve needs two points); got {evaluations}")
        count = int(evaluations)
    else:
        if not 0 < evaluations <= 1:
            raise ValueError(f"`evaluations` as a fraction of the steps must lie in (0, 1]; got {evaluations!r}")
        count = max(2, int(round(evaluations * steps)))
    return min(count, steps + 1)


def evaluation_steps(steps: int, evaluations: int | float) -> np.ndarray:
    """The ``K`` step indices in ``0 .. steps`` where the metric is observed, evenly spread.

    Example:
        >>> evaluation_steps(100, 5).tolist()
        [0, 25, 50, 75, 100]
    """
    count = evaluation_count(steps, evaluations)
    return np.unique(np.round(np.linspace(0, steps, count)).astype(np.int64))


@dataclass(eq=False)  # tensors have no single truth value: identity equality
class Trajectory:
    """One fine-tuning run: ``phi`` per step, losses, sparse metric costs.

    Attributes:
        phis: ``phi_0 .. phi_t`` recorded so far, each ``(phi_size,)``.
        losses: training loss of each step taken.
        observed_steps: step indices where the metric was observed.
        observed_costs: the metric there, as a cost (lower is better).
        predicted_costs: a value function's predictions at the observed steps
            before it trained on this run (held out; empty when none was made:
            :mod:`metricopt.blackbox.diagnostics`).
    """

    phis: list[Tensor] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    observed_steps: list[int] = field(default_factory=list)
    observed_costs: list[float] = field(default_factory=list)
    predicted_costs: list[float] = field(default_factory=list)
    _curve: tuple[tuple[int, int], MetricCurve] | None = field(default=None, repr=False, compare=False)

    def record(self, phi: Tensor) -> None:
        """Append ``phi_t`` (a detached copy)."""
        self.phis.append(phi.detach().to("cpu", torch.float32).clone())

    def observe(self, step: int, cost: float) -> None:
        """Add the metric cost observed at ``step`` (steps must increase)."""
        if self.observed_steps and step <= self.observed_steps[-1]:
            raise ValueError(f"`step` must increase; got {step} after {self.observed_steps[-1]}")
        self.observed_steps.append(int(step))
        self.observed_costs.append(float(cost))

    @property
    def num_points(self) -> int:
        """Number of recorded ``phi`` (steps taken + 1)."""
        return len(self.phis)

    def phi_matrix(self) -> Tensor:
        """``(num_points, phi_size)``: the recorded ``phi`` stacked."""
        return torch.stack(self.phis)

    def curve(self) -> MetricCurve:
        """Dense cost mean and uncertainty over the recorded points (GP interpolation, cached)."""
        if len(self.observed_steps) < 2:
            raise ValueError(f"a metric curve needs at least 2 observations; this trajectory has "
                             f"{len(self.observed_steps)}")
        key = (self.num_points, len(self.observed_steps))
        if self._curve is None or self._curve[0] != key:  # a GP fit per call would dominate Reptile's cost
            curve = interpolate_metric(np.asarray(self.observed_steps), np.asarray(self.observed_costs),
                                       self.num_points)
            self._curve = (key, curve)
        return self._curve[1]

    def state(self) -> dict[str, Tensor]:
        """Tensors only, for checkpoints that load with ``torch.load(weights_only=True)``."""
        return {
            "phis": self.phi_matrix() if self.phis else torch.zeros(0),
            "losses": torch.tensor(self.losses, dtype=torch.float64),
            "observed_steps": torch.tensor(self.observed_steps, dtype=torch.int64),
            "observed_costs": torch.tensor(self.observed_costs, dtype=torch.float64),
            "predicted_costs": torch.tensor(self.predicted_costs, dtype=torch.float64),
        }

    @classmethod
    def from_state(cls, state: dict[str, Tensor]) -> Trajectory:
        """Inverse of :meth:`state`."""
        phis = state["phis"]
        return cls(
            phis=list(phis.unbind(0)) if phis.ndim == 2 else [],
            losses=state["losses"].tolist(),
            observed_steps=[int(s) for s in state["observed_steps"].tolist()],
            observed_costs=state["observed_costs"].tolist(),
            predicted_costs=state["predicted_costs"].tolist() if "predicted_costs" in state else [],
        )
