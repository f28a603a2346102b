"""The value function ``f_w(phi)`` and its loss ``L_v``.

:class:`ValueFunction` maps adapter parameters ``phi`` to a predicted cost
(lower is better, the package's internal direction); fine-tuning follows its
gradient with respect to ``phi``. :func:`value_loss` fits it to one
trajectory's interpolated metric curve ``(M_t, sigma_t)``
(:mod:`metricopt.blackbox.interpolation`).

Units: the network predicts in NORMALISED units; the buffers ``target_offset``
and ``target_scale`` map them to costs, ``cost = offset + scale * f_w(phi)``
(:meth:`ValueFunction.predict_cost`; :meth:`ValueFunction.normalise` is the
inverse). Meta-training sets them once from the spread of the costs it sees, so
one unit is a typical change of the metric whatever its range. ``value_loss``
takes its means and standard deviations in these normalised units.

Stated by the paper: a small differentiable network from ``phi`` to the
metric, trained on the interpolated metric of fine-tuning trajectories.
DECIDED (the paper does not say):

* Network: an MLP ``phi_size -> 256 -> 256 -> 1`` with SiLU activations. A
  smooth activation keeps ``grad_phi f_w`` informative everywhere: with ReLU it
  is piecewise constant in ``phi`` and exactly zero wherever the units are off.
  Weights are drawn (PyTorch's default ``nn.Linear`` scheme, uniform in
  ``+-1/sqrt(fan_in)``) from a ``torch.Generator`` seeded by ``seed``; the global
  random state is neither used nor advanced.
* Loss: an uncertainty-weighted squared error
  ``mean_t (f_t - M_t)^2 / (sigma_t^2 + delta)`` plus ``ranking_weight`` times a
  pairwise logistic ranking term ``mean log(1 + exp(-(f_j - f_i)))`` over the
  pairs whose order is clear given the uncertainty,
  ``M_i < M_j - (sigma_i + sigma_j) - ranking_margin`` (0 when there is no such
  pair). The squared error makes ``f`` match the metric where it is known; the
  ranking term makes ``f`` order trajectory points as the metric does, which is
  what its gradient needs, even where the levels are off.
* Pairs: all pairs, ``O(T^2)`` time and memory, for up to ``max_ranking_points``
  steps (default 512: about 1 MB of float32 per pairwise matrix); longer
  trajectories use that many evenly spaced steps for the ranking term (a
  deterministic subsample; the squared error always uses every step).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metricopt._checks import (
    check_finite,
    check_integer,
    check_nonnegative,
    check_positive,
    check_tensor,
    describe,
)

__all__ = ["DEFAULT_HIDDEN_SIZES", "ValueFunction", "ValueTargets", "value_loss"]

#: The value network's hidden layer widths.
DEFAULT_HIDDEN_SIZES = (256, 256)
#: Longest trajectory whose ranking term uses every pair of steps.
DEFAULT_MAX_RANKING_POINTS = 512


def _scalar(name: str, value: Any) -> float:
    """A finite number (Python, NumPy or a one-element tensor) as a float."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"`{name}` must be a single number; got {describe(value)}")
        value = value.item()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a number; got {describe(value)}")
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite; got {value!r}")
    return float(value)


class ValueFunction(nn.Module):
    """``f_w(phi)``: an MLP predicting the cost (lower is better) of adapter parameters ``phi``.

    Args:
        phi_size: length of ``phi``.
        hidden_sizes: widths of the hidden layers (SiLU after each); ``()`` gives
            a linear model.
        seed: seeds the initial weights (a private ``torch.Generator``).

    Attributes:
        phi_size, hidden_sizes: as given (``hidden_sizes`` a tuple).
        target_offset, target_scale: scalar buffers (0 and 1 initially), the map
            from normalised units to costs (:meth:`set_normalisation`).

    >>> value = ValueFunction(4, hidden_sizes=(8,))
    >>> value(torch.zeros(3, 4)).shape                     # (..., phi_size) -> (...)
    torch.Size([3])
    >>> value.set_normalisation(0.5, 0.1)
    >>> phi = torch.ones(4)
    >>> torch.allclose(value.predict_cost(phi), 0.5 + 0.1 * value(phi))
    True
    >>> torch.allclose(value.normalise(value.predict_cost(phi)), value(phi))
    True
    """

    def __init__(self, phi_size: int, *, hidden_sizes: Sequence[int] = DEFAULT_HIDDEN_SIZES, seed: int = 0) -> None:
        super().__init__()
        self.phi_size = check_integer("phi_size", phi_size, 1)
        if isinstance(hidden_sizes, (str, bytes)) or not isinstance(hidden_sizes, Sequence):
            raise TypeError(f"`hidden_sizes` must be a sequence of integers; got {describe(hidden_sizes)}")
        self.hidden_sizes = tuple(check_integer("hidden_sizes", size, 1) for size in hidden_sizes)
        self.seed = check_integer("seed", seed, 0)
        widths = (self.phi_size, *self.hidden_sizes, 1)
        layers: list[nn.Module] = []
        generator = torch.Generator().manual_seed(self.seed)
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
            # skip_init: nn.Linear's own initialisation would draw from (and advance) the global RNG.
            linear = torch.nn.utils.skip_init(nn.Linear, fan_in, fan_out)
            bound = 1.0 / math.sqrt(fan_in)
            with torch.no_grad():
                linear.weight.copy_(torch.rand(linear.weight.shape, generator=generator) * (2 * bound) - bound)
                linear.bias.copy_(torch.rand(linear.bias.shape, generator=generator) * (2 * bound) - bound)
            layers.append(linear)
            if i < len(widths) - 2:
                layers.append(nn.SiLU())
        self.network = nn.Sequential(*layers)
        self.register_buffer("target_offset", torch.tensor(0.0))
        self.register_buffer("target_scale", torch.tensor(1.0))

    def forward(self, phi: Tensor) -> Tensor:
        """Predicted cost of ``phi`` ``(..., phi_size)`` in normalised units, shape ``(...)``.

        Raises:
            ValueError: ``phi`` has the wrong last dimension, or sits on another
                device than the weights (move the value function:
                ``value.to(phi.device)``; :func:`~metricopt.blackbox.finetune.finetune`
                and :func:`~metricopt.blackbox.learned_objective.unroll` move a copy
                themselves).
        """
        check_tensor("phi", phi)
        if phi.ndim == 0 or phi.shape[-1] != self.phi_size:
            raise ValueError(f"`phi` must have shape (..., {self.phi_size}); got {describe(phi)}")
        device = self.target_offset.device
        if phi.device != device:
            raise ValueError(f"`phi` is on {phi.device} but the value function is on {device}: move it with "
                             f"value.to({str(phi.device)!r}) (finetune and unroll move a copy themselves)")
        return self.network(phi).squeeze(-1)

    def predict_cost(self, phi: Tensor) -> Tensor:
        """Predicted cost of ``phi`` in the metric's units: ``offset + scale * forward(phi)``."""
        prediction = self(phi)
        return self.target_offset.to(prediction) + self.target_scale.to(prediction) * prediction

    def _as_costs(self, name: str, costs: Any) -> Tensor:
        costs = torch.as_tensor(costs, device=self.target_offset.device)
        if not costs.is_floating_point():
            costs = costs.to(self.target_offset.dtype)
        check_finite(name, costs)
        return costs

    def normalise(self, costs: Tensor | np.ndarray | float) -> Tensor:
        """Costs to normalised units, ``(costs - offset) / scale`` (the inverse of :meth:`predict_cost`'s map).

        Accepts a tensor, an array or a number; returns a tensor (floating
        input keeps its dtype) on the buffers' device.
        """
        costs = self._as_costs("costs", costs)
        return (costs - self.target_offset.to(costs)) / self.target_scale.to(costs)

    def normalise_std(self, std: Tensor | np.ndarray | float) -> Tensor:
        """A cost spread (a standard deviation: no offset) to normalised units, ``std / scale``."""
        std = self._as_costs("std", std)
        return std / self.target_scale.to(std)

    def set_normalisation(self, offset: float, scale: float) -> None:
        """Set the map ``cost = offset + scale * prediction`` (``scale > 0``), in place."""
        offset = _scalar("offset", offset)
        scale = _scalar("scale", scale)
        if scale <= 0:
            raise ValueError(f"`scale` must be > 0; got {scale!r}")
        self.target_offset.fill_(offset)
        self.target_scale.fill_(scale)

    def config(self) -> dict[str, Any]:
        """Constructor arguments: ``ValueFunction(**value.config())`` rebuilds the architecture.

        Plain Python values (JSON- and ``torch.load(weights_only=True)``-safe); the
        weights and the normalisation live in ``state_dict()``.
        """
        return {"phi_size": self.phi_size, "hidden_sizes": list(self.hidden_sizes), "seed": self.seed}

    def extra_repr(self) -> str:
        return f"phi_size={self.phi_size}, hidden_sizes={self.hidden_sizes}"


def _as_target(name: str, value: Any, predicted: Tensor) -> Tensor:
    if not isinstance(value, Tensor):
        value = torch.as_tensor(np.asarray(value, dtype=np.float64))
    value = value.detach().to(device=predicted.device, dtype=predicted.dtype)
    if value.shape != predicted.shape:
        raise ValueError(
            f"`{name}` must have the shape of `predicted` {tuple(predicted.shape)}; got {tuple(value.shape)}"
        )
    check_finite(name, value)
    return value


def value_loss(
    predicted: Tensor,
    mean: Tensor,
    std: Tensor,
    *,
    delta: float = 0.01,
    ranking_weight: float = 0.1,
    ranking_margin: float = 0.0,
    max_ranking_points: int | None = DEFAULT_MAX_RANKING_POINTS,
) -> Tensor:
    """``L_v``: uncertainty-weighted squared error plus a pairwise ranking term, in normalised units.

    ``L_v = mean_t (f_t - M_t)^2 / (sigma_t^2 + delta)
    + ranking_weight * mean_{(i, j) in P} log(1 + exp(-(f_j - f_i)))``, with
    ``P = {(i, j): M_i < M_j - (sigma_i + sigma_j) - ranking_margin}``, the pairs
    whose order (``i`` costs less than ``j``) is clear given the uncertainty;
    the ranking term is 0 when ``P`` is empty. ``M`` and ``sigma`` are targets
    (detached). See the module docstring for the pair subsampling.

    Args:
        predicted: ``(T,)`` value-function outputs ``f_t`` along a trajectory.
        mean: ``(T,)`` interpolated cost ``M_t`` (normalised units); tensor or array.
        std: ``(T,)`` its uncertainty ``sigma_t >= 0`` (normalised units).
        delta: added to ``sigma_t^2``: bounds the weight of a point by ``1 / delta``.
        ranking_weight: weight of the ranking term (0 turns it off).
        ranking_margin: extra gap, beyond ``sigma_i + sigma_j``, that two means
            need before their pair enters the ranking term.
        max_ranking_points: the ranking term uses every pair of at most this
            many evenly spaced steps (None: all ``T`` steps, ``O(T^2)`` memory).

    Returns:
        A scalar tensor >= 0, differentiable with respect to ``predicted``.

    >>> mean = torch.tensor([0.0, 1.0, 2.0])
    >>> std = torch.tensor([0.1, 0.1, 0.1])
    >>> round(value_loss(mean.clone(), mean, std).item(), 4)        # exact fit, right order
    0.0251
    >>> round(value_loss(mean.flip(0), mean, std).item(), 4)        # reversed
    133.4918
    """
    check_tensor("predicted", predicted)
    if not predicted.is_floating_point():
        raise TypeError(f"`predicted` must be a floating tensor; got {describe(predicted)}")
    if predicted.ndim != 1 or len(predicted) == 0:
        raise ValueError(f"`predicted` must have shape (T,) with T >= 1; got {describe(predicted)}")
    check_finite("predicted", predicted)
    mean = _as_target("mean", mean, predicted)
    std = _as_target("std", std, predicted)
    if bool((std < 0).any()):
        raise ValueError(f"`std` must be >= 0; got minimum {std.min().item()}")
    delta = check_positive("delta", delta)
    ranking_weight = check_nonnegative("ranking_weight", ranking_weight)
    ranking_margin = check_nonnegative("ranking_margin", ranking_margin)
    if max_ranking_points is not None:
        max_ranking_points = check_integer("max_ranking_points", max_ranking_points, 2)

    return ValueTargets(mean, std, delta=delta, ranking_weight=ranking_weight, ranking_margin=ranking_margin,
                        max_ranking_points=max_ranking_points).loss(predicted)


class ValueTargets:
    """One trajectory's targets of :func:`value_loss`, prepared once for many evaluations of the loss.

    The weights ``1 / (sigma_t^2 + delta)``, the ranking subsample and the mask
    of clear pairs depend on the targets only; an inner loop that takes many
    optimiser steps on one trajectory
    (:func:`~metricopt.blackbox.adaptation.adapt_value`) builds them once and
    calls :meth:`loss` per step. The arguments are taken as checked (by
    :func:`value_loss`, or by a caller that built ``mean`` and ``std`` itself).
    """

    def __init__(self, mean: Tensor, std: Tensor, *, delta: float = 0.01, ranking_weight: float = 0.1,
                 ranking_margin: float = 0.0, max_ranking_points: int | None = DEFAULT_MAX_RANKING_POINTS) -> None:
        self.mean = mean
        self.weight = 1.0 / (std.square() + delta)
        self.ranking_weight = ranking_weight
        self.index: Tensor | None = None
        self.pair_weight: Tensor | None = None
        if ranking_weight == 0 or len(mean) < 2:
            return
        if max_ranking_points is not None and len(mean) > max_ranking_points:
            self.index = torch.linspace(0, len(mean) - 1, max_ranking_points, device=mean.device).round().long()
            mean, std = mean[self.index], std[self.index]
        # clear[i, j]: i's cost is below j's by more than both uncertainties and the margin.
        clear = mean[:, None] < mean[None, :] - (std[:, None] + std[None, :]) - ranking_margin
        count = int(clear.sum())
        if count:
            # The mean over the clear pairs as a weighted sum: no boolean gather (and scatter in the backward).
            self.pair_weight = clear.to(mean.dtype) / count

    def loss(self, predicted: Tensor) -> Tensor:
        """``L_v`` of ``predicted`` ``(T,)`` against these targets (see :func:`value_loss`)."""
        fit = ((predicted - self.mean).square() * self.weight).mean()
        if self.pair_weight is None:
            return fit
        ranked = predicted if self.index is None else predicted[self.index]
        # softplus(f_i - f_j) = log(1 + exp(-(f_j - f_i))), without overflow.
        ranking = (F.softplus(ranked[:, None] - ranked[None, :]) * self.pair_weight).sum()
        return fit + self.ranking_weight * ranking
