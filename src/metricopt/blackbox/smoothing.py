"""The gradient of a Gaussian-smoothed objective: two unbiased estimators merged by inverse variance.

Method: Metz, Maheswaranathan, Nixon, Freeman and Sohl-Dickstein, "Understanding
and correcting pathologies in the training of learned optimizers", ICML 2019, as
Huang, Zhai, Guo and Susskind, "MetricOpt: Learning to Optimize Black-Box
Evaluation Metrics", CVPR 2021, supplementary section 2 (Eq. 3) uses it to train
its learned optimizer (:mod:`~metricopt.blackbox.learned`). Every choice the two
papers leave open is marked DECIDED below, with its reason.

:func:`smoothed_gradient` estimates the gradient of the Gaussian-smoothed
objective ``E_{w' ~ N(w, sigma^2 I)} L_opt(w')`` (Eq. 3) from Metz et al.'s two
unbiased estimators, merged by inverse-variance weighting; a
:class:`SmoothedGradient` holds the estimate.

Stated by the MetricOpt supplementary:

* The rule is trained on the smoothed objective (Eq. 3) with
  ``sigma^2 = 0.01`` using Metz et al.'s two unbiased gradient estimators.

Taken from Metz et al. (2019), which the supplementary cites for the rule's
training: the reparameterisation (pathwise) estimator, back-propagation through
the unroll at perturbed weights; the evolution-strategies estimator with
antithetic pairs, ``(L(w + sigma e) - L(w - sigma e)) e / (2 sigma)``; their merge
``(g_rp / v_rp + g_es / v_es) / (1 / v_rp + 1 / v_es)`` with the variances
estimated from the samples of the step.

DECIDED here (both papers are silent or leave a choice):

* Estimators: ``samples`` antithetic pairs per update (default 4: 8 unrolls
  with back-propagation); one pair gives one ES sample and one pathwise sample,
  the mean of its two gradients. An estimator's variance is the sum over the
  weights of the per-coordinate sample variances divided by the number of
  samples (the variance of its mean; one number per estimator, not one per
  weight). Weights estimated from the same samples make the merge slightly
  biased; accepted.
* ES alone (``pathwise=False``): for an objective that cannot be
  differentiated, such as the unroll of a once-differentiable loss
  (:mod:`~metricopt.blackbox.learned_objective`); the objective is then only
  evaluated, without a graph: about half the time of the merged estimate
  (measured: ``docs/design.md``, "Black-box metrics (MetricOpt)").
* Non-finite values: a sample whose objective or gradient is not finite is
  dropped and counted; an estimator with fewer than 2 finite samples is left
  out of the merge; when neither is left, the update is skipped (counted in the
  history). NaN never reaches the weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from metricopt._checks import check_integer, check_positive, describe

__all__ = ["SmoothedGradient", "smoothed_gradient"]

_VARIANCE_FLOOR = 1e-30  # inverse-variance weights of a zero-variance estimator


# --------------------------------------------------------------------------- the smoothed gradient


@dataclass
class SmoothedGradient:
    """The gradient of ``E_{w' ~ N(w, sigma^2 I)} L(w')`` estimated by :func:`smoothed_gradient`.

    Attributes:
        gradient: the merged estimate by parameter name; None when no estimator
            had 2 finite samples (skip the update).
        pathwise, evolution: each estimator's mean (None if left out).
        pathwise_variance, evolution_variance: the variance of each mean, summed
            over the weights (NaN if left out).
        objective: mean of the finite objective values at the perturbed weights.
        nonfinite: dropped samples (objective or gradient not finite).
    """

    gradient: dict[str, Tensor] | None
    pathwise: dict[str, Tensor] | None
    evolution: dict[str, Tensor] | None
    pathwise_variance: float
    evolution_variance: float
    objective: float
    nonfinite: int


def _mean_and_variance(samples: list[Tensor]) -> tuple[Tensor, float] | None:
    if len(samples) < 2:
        return None
    stacked = torch.stack(samples)
    return stacked.mean(0), float(stacked.var(0).sum()) / len(samples)


def smoothed_gradient(
    objective: Callable[[dict[str, Tensor]], Tensor],
    parameters: Mapping[str, Tensor],
    *,
    sigma: float = 0.1,
    samples: int = 4,
    generator: torch.Generator,
    pathwise: bool = True,
) -> SmoothedGradient:
    """Merge Metz et al.'s pathwise and ES estimators of the Gaussian-smoothed objective's gradient.

    For ``samples`` antithetic pairs ``w +- sigma e`` (``e ~ N(0, I)`` from
    ``generator``): the pathwise sample is the mean of ``grad L(w + sigma e)``
    and ``grad L(w - sigma e)``, the ES sample
    ``(L(w + sigma e) - L(w - sigma e)) e / (2 sigma)``. Both are unbiased for
    ``grad E L(w + sigma e)``; their means are merged with weights inversely
    proportional to their estimated variances (module docstring).

    Args:
        objective: maps a dict of weights (leaf tensors that require grad) to a scalar.
        parameters: the current weights ``w`` by name (not modified).
        sigma: the smoothing standard deviation (the paper's ``sqrt(0.01)``).
        samples: antithetic pairs, at least 2 (the variances need 2 samples).
        generator: the perturbations' source (a CPU generator: the noise is drawn
            on the CPU and moved to each weight's device, so a seed gives the
            same perturbations on every device).
        pathwise: use the pathwise estimator too (False: the ES estimator
            alone; ``objective`` is then only evaluated, under ``torch.no_grad``,
            so it needs no derivative at all, e.g. an unroll of a
            once-differentiable loss).

    >>> weights = {"w": torch.tensor([0.5, -1.0])}
    >>> estimate = smoothed_gradient(lambda p: (p["w"] ** 2).sum(), weights, samples=8,
    ...                              generator=torch.Generator().manual_seed(0))
    >>> print(estimate.pathwise["w"])   # exact: 2 w (antithetic pairs cancel the noise)
    tensor([ 1., -2.])
    >>> print(estimate.gradient["w"])   # the zero-variance pathwise estimate dominates
    tensor([ 1., -2.])
    """
    sigma = check_positive("sigma", sigma)
    samples = check_integer("samples", samples, 2)
    if not isinstance(pathwise, bool):
        raise TypeError(f"`pathwise` must be True or False; got {describe(pathwise)}")
    names = list(parameters)
    base = {name: parameters[name].detach() for name in names}
    path_samples: list[Tensor] = []
    evolution: list[Tensor] = []
    values: list[float] = []
    nonfinite = 0
    for _ in range(samples):
        noise = {name: torch.randn(w.shape, generator=generator, dtype=w.dtype).to(w.device)
                 for name, w in base.items()}
        pair_values, pair_gradients = [], []
        for sign in (1.0, -1.0):
            perturbed = {name: (w + sign * sigma * noise[name]).requires_grad_(pathwise) for name, w in base.items()}
            if not pathwise:
                with torch.no_grad():
                    pair_values.append(float(objective(perturbed)))
                continue
            with torch.enable_grad():
                value = objective(perturbed)
                gradients = torch.autograd.grad(value, list(perturbed.values()), allow_unused=True)
            pair_values.append(float(value.detach()))
            pair_gradients.append(torch.cat([
                (torch.zeros_like(w) if g is None else g).reshape(-1) for g, w in zip(gradients, base.values())]))
        finite_values = all(math.isfinite(v) for v in pair_values)
        values.extend(v for v in pair_values if math.isfinite(v))
        if pathwise:
            path = (pair_gradients[0] + pair_gradients[1]) / 2
            if finite_values and bool(torch.isfinite(path).all()):
                path_samples.append(path)
            else:
                nonfinite += 1
        flat_noise = torch.cat([noise[name].reshape(-1) for name in names])
        es = (pair_values[0] - pair_values[1]) / (2 * sigma) * flat_noise if finite_values else None
        if es is not None and bool(torch.isfinite(es).all()):
            evolution.append(es)
        else:
            nonfinite += 1

    def unflatten(flat: Tensor) -> dict[str, Tensor]:
        parts = flat.split([w.numel() for w in base.values()])
        return {name: part.reshape(w.shape) for (name, w), part in zip(base.items(), parts)}

    estimates = {"pathwise": _mean_and_variance(path_samples), "evolution": _mean_and_variance(evolution)}
    available = [e for e in estimates.values() if e is not None]
    merged = None
    if available:
        weights = [1.0 / max(variance, _VARIANCE_FLOOR) for _, variance in available]
        merged = sum(w * mean for w, (mean, _) in zip(weights, available)) / sum(weights)
    return SmoothedGradient(
        gradient=None if merged is None else unflatten(merged),
        pathwise=None if estimates["pathwise"] is None else unflatten(estimates["pathwise"][0]),
        evolution=None if estimates["evolution"] is None else unflatten(estimates["evolution"][0]),
        pathwise_variance=math.nan if estimates["pathwise"] is None else estimates["pathwise"][1],
        evolution_variance=math.nan if estimates["evolution"] is None else estimates["evolution"][1],
        objective=sum(values) / len(values) if values else math.nan,
        nonfinite=nonfinite,
    )
