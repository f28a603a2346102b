"""MetricOpt (learned): an MLP update rule trained jointly with the value function.

Method: Huang, Zhai, Guo and Susskind, "MetricOpt: Learning to Optimize Black-Box
Evaluation Metrics", CVPR 2021, supplementary section 2 ("MetricOpt with Jointly
Learned Optimizer", Eq. 1-3, Algorithm 1), which trains its optimizer as Metz,
Maheswaranathan, Nixon, Freeman and Sohl-Dickstein, "Understanding and correcting
pathologies in the training of learned optimizers", ICML 2019. To our knowledge
this is the first public implementation; every choice the two papers leave open
is marked DECIDED below, with its reason.

The pieces:

* :class:`LearnedOptimizer`: the update rule ``m_w`` (an ``nn.Module``; ``w`` are
  its weights). It implements the :class:`~metricopt.blackbox.finetune.UpdateRule`
  protocol (``reset(phi)``, ``step(phi, gradient, loss, cost)``), so the one
  fine-tuning loop :func:`~metricopt.blackbox.finetune.finetune` runs it, and
  :meth:`LearnedOptimizer.update` is the same step as a pure, differentiable
  function of ``(phi, gradient, state, loss, cost)`` and, optionally, of the
  weights (``parameters=``).
* :func:`metric_objective`, :func:`loss_objective`, :func:`optimizer_objective`:
  the paper's ``L_opt = lambda L_metric + L_loss`` (Eq. 2).
* :func:`unroll`: ``L_opt`` of ``T`` differentiable steps of the rule on one
  task, with the (adapted) value function predicting the metric.
* :func:`smoothed_gradient`: the gradient of the Gaussian-smoothed objective
  ``E_{w' ~ N(w, sigma^2 I)} L_opt(w')`` (Eq. 3) from Metz et al.'s two unbiased
  estimators, merged by inverse-variance weighting.
* :func:`meta_train_learned` (Algorithm 1), :class:`LearnedConfig`,
  :class:`LearnedResult`, :func:`load_learned`.

Stated by the MetricOpt supplementary:

* An MLP (not an LSTM: truncated back-propagation through an LSTM optimizer gives
  biased or exploding gradients, Metz et al.) maps the loss gradient
  ``grad_t``, its exponential running average, the current ``phi_t``, the
  scale-normalised loss ``l_t`` and metric ``M_t`` and their relative changes from
  their moving averages to an update direction ``u_t`` and a step size
  ``alpha_t``: ``phi_{t+1} = phi_t + alpha_t u_t`` (Eq. 1; Algorithm 1 writes
  ``-``; a learned ``u`` makes the sign a convention).
* ``L_opt = lambda L_metric + L_loss`` with ``lambda = 50``, ``beta = T / 2``,
  ``L_metric = 1/T sum_{t=1..T} log(1 + exp(beta (M_t - M_t') / M_t))``,
  ``M_t = f_w(phi_t)`` the value function's prediction,
  ``t' = argmin_{i < t} M_i``, and
  ``L_loss = 1/T sum_{t=1..T} (log(l(phi_t) + eps) - log(l(phi_0) + eps))``.
* The rule is trained on the smoothed objective (Eq. 3) with
  ``sigma^2 = 0.01`` using Metz et al.'s two unbiased gradient estimators.
* Algorithm 1, per task: collect the trajectory of the current learned
  optimizer with ``K`` sparse metric observations; interpolate; adapt the value
  function ``w~_v = w_v - alpha grad L_v``; update the optimizer with the
  adapted value function (Eq. 3); Reptile ``w_v <- w_v + eta (w~_v - w_v)``.
  Only the optimizer is kept for meta-testing. The paper reports about 3x the
  meta-training time of the value-only method.

Taken from Metz et al. (2019), which the supplementary cites for the rule and its
training: a per-coordinate MLP shared across coordinates, outputting a direction
and a log step size (``base_step * u * exp(s)``, their ``lambda_1 d exp(lambda_2 m)``);
the reparameterisation (pathwise) estimator, back-propagation through the unroll
at perturbed weights; the evolution-strategies estimator with antithetic pairs,
``(L(w + sigma e) - L(w - sigma e)) e / (2 sigma)``; their merge
``(g_rp / v_rp + g_es / v_es) / (1 / v_rp + 1 / v_es)`` with the variances
estimated from the samples of the step. The supplementary says only "the same
learning rate setting" as Metz et al.; we use Adam on ``w`` (``learning_rate``,
default ``1e-3``: DECIDED).

DECIDED here (both papers are silent or leave a choice):

* Rule inputs, per coordinate ``i`` (7 features; the first three are divided
  by ``rms_t``, a running RMS of the gradient, so that features 1 and 2 do not
  depend on the gradient's scale):

  1. ``grad_t[i] / rms_t``;
  2. ``avg_t[i] / rms_t``, ``avg_t`` the exponential average of the gradient
     with ``beta = 0.9``, bias-corrected as in Adam;
  3. ``phi_t[i] / rms_t`` (unlike 1 and 2 this one does depend on the
     gradient's scale: ``phi`` has its own units; the bound below keeps it
     finite when the gradient vanishes);
  4. ``l_t / l_0``, the loss scaled by the run's first loss;
  5. ``(l_t - lbar) / |lbar|``, the relative change of the loss from its
     moving average ``lbar`` (``beta = 0.9``, over the previous steps);
  6. the latest observed metric cost divided by the run's first observed cost
     (sample-and-hold between the ``K`` sparse observations, 0 before the first);
  7. its relative change from its moving average (``beta = 0.9``, updated every
     step on the held value, so it spikes when a new observation arrives and
     decays while the value is held; 0 before the first observation).

  ``rms_t`` is ONE number per step, ``sqrt`` of the bias-corrected exponential
  average (``beta = 0.99``) of ``mean_i grad_t[i]^2``, not a per-coordinate
  second moment: it keeps the relative sizes of the coordinates, so the
  untrained rule is gradient descent rather than sign descent (Adam at step 1).
  Features 4-7 are the same for every coordinate (broadcast).
* Bounds: every feature passes through ``10 tanh(x / 10)`` (identity near 0, at
  most 10), and the log step size through ``5 tanh(s / 5)``: a huge
  ``phi / rms`` late in a run, or a perturbed weight, cannot produce an
  overflowing step, and gradients stay non-zero (a hard clamp would cut them).
  Denominators have floors: ``1e-6`` for losses, ``1e-3`` for costs.
* Output and initialisation: ``u = -feature_1 + r``, ``alpha = base_step *
  exp(s)``, where ``(r, s)`` is the MLP output ``7 -> 32 -> 32 -> 2`` (SiLU) whose
  last layer starts at zero. The untrained rule is therefore exactly the
  normalised gradient step ``phi - base_step * grad / rms`` (within the
  feature bound; ``base_step = 0.01`` by default), so learning starts from a
  sensible optimizer; the
  residual form keeps that prior at any weights. The hidden layers are drawn
  like PyTorch's ``nn.Linear`` default from a ``torch.Generator`` seeded by
  ``seed``. ``alpha`` is per coordinate.
* ``L_metric`` details: ``M_t`` is ``value.predict_cost`` (raw cost units); the
  division is by ``max(M_t, 1e-3)``; the argmin ``t'`` is chosen on detached
  values but ``M_t'`` stays differentiable; ``eps = 1e-6`` in ``L_loss``. A run
  whose predictions never change scores ``L_metric = log 2`` (``L_opt`` about
  34.7 with ``lambda = 50``): lower means improvement, higher deterioration.
* Losses inside an unroll are the mini-batch losses the rule sees (step ``t``
  draws batch ``b_t``; ``l(phi_T)`` uses one extra batch), so the unroll costs one
  forward and backward pass of the backbone per step; all unrolls of one update
  use the same batches (common random numbers: the estimators then see only the
  effect of the weights). The unroll differentiates through the gradient
  inputs (second order, ``create_graph=True``): only the exact derivative of the
  unrolled objective makes the pathwise estimator unbiased for the same
  smoothed objective that the ES estimator estimates, which their merge requires.
* Truncation: an unroll covers ``T = min(unroll_steps, budget)`` steps (default
  20) of the collected task, from a start ``s`` drawn among
  ``0, T, 2T, ...`` (``s + T <= budget``), starting from the collected
  ``phi_s`` and the rule's recorded state at ``s`` (running averages, first loss
  and cost), with the metric inputs of the collected trajectory held by step.
  A task collected with plain SGD (the last warm-up task) unrolls from ``s = 0``.
* Estimators: ``samples`` antithetic pairs per update (default 4: 8 unrolls
  with back-propagation); one pair gives one ES sample and one pathwise sample,
  the mean of its two gradients. An estimator's variance is the sum over the
  weights of the per-coordinate sample variances divided by the number of
  samples (the variance of its mean; one number per estimator, not one per
  weight). Weights estimated from the same samples make the merge slightly
  biased; accepted.
* Non-finite values: a sample whose objective or gradient is not finite is
  dropped and counted; an estimator with fewer than 2 finite samples is left
  out of the merge; when neither is left, the update is skipped (counted in the
  history). NaN never reaches the weights.
* Meta-training loop: tasks come from
  :meth:`~metricopt.blackbox.meta.TaskDistribution.sample`; the first
  ``warmup_tasks`` are collected with the hand-designed optimizer of the
  fine-tuning config (no value function) and fix the value function's
  normalisation, as in :func:`~metricopt.blackbox.meta.meta_train`; the last
  warm-up task already gets the full Algorithm-1 step. Later tasks are
  collected with the current learned rule (it ignores the task's learning-rate
  factor: it has no learning rate). The inner adaptation is
  :func:`~metricopt.blackbox.adaptation.adapt_value` (several Adam steps, the
  adaptation module's own DECIDED choice); ``optimizer_updates`` Adam updates of
  the rule (default 1, Algorithm 1's one) use the adapted copy; then the Reptile
  interpolation, then ``value.replay`` extra Reptile iterations on stored
  trajectories, as :func:`~metricopt.blackbox.meta.meta_train` does, so that the
  value function gets the same training as in the value-only method and the
  two wall times compare. ``LearnedConfig.value`` is a
  :class:`~metricopt.blackbox.meta.MetaConfig` whose loop fields (tasks,
  warm-up, checkpointing, seed) equal ours: it is the matching value-only run.
* Randomness: every draw of task ``i`` (its data, the truncation start, the
  perturbations, the unroll batches, the replay choices) comes from generators
  seeded by ``(seed, i)``, never the global RNG. Checkpoints (like
  :mod:`~metricopt.blackbox.meta`: atomic, ``torch.load(weights_only=True)``)
  hold the rule, its Adam state, the value function and the trajectories, so a
  killed run resumed from its last checkpoint ends with bitwise the weights of
  an uninterrupted one.
* Wall time: :class:`LearnedResult` reports the seconds spent (summed over
  resumed runs), and each history row splits a task's time into collection,
  value-function and optimizer-learning seconds.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metricopt._checks import (
    check_integer,
    check_nonnegative,
    check_positive,
    check_tensor,
    describe,
)
from metricopt.blackbox.adaptation import adapt_value
from metricopt.blackbox.adapters import Adapter
from metricopt.blackbox.finetune import (
    FineTuneConfig,
    LossFn,
    TaskData,
    finetune,
    logits_for_loss,
)
from metricopt.blackbox.meta import (
    MetaConfig,
    TaskDistribution,
    atomic_save,
    interpolate_weights,
    plain_record,
    read_checkpoint,
    reptile_step,
    resumable_state,
    set_normalisation_from,
)
from metricopt.blackbox.metric import BlackBoxMetric
from metricopt.blackbox.trajectory import Trajectory
from metricopt.blackbox.value import ValueFunction

__all__ = [
    "FEATURES",
    "LEARNED_CHECKPOINT_FORMAT",
    "LearnedConfig",
    "LearnedOptimizer",
    "LearnedResult",
    "SmoothedGradient",
    "load_learned",
    "loss_objective",
    "meta_train_learned",
    "metric_objective",
    "optimizer_objective",
    "smoothed_gradient",
    "unroll",
]

LEARNED_CHECKPOINT_FORMAT = "metricopt.blackbox.learned/1"

#: The rule's inputs per coordinate, in order (module docstring).
FEATURES = ("gradient", "gradient_average", "phi", "loss", "loss_change", "cost", "cost_change")

_AVERAGE = 0.9  # gradient, loss and cost moving averages
_SECOND_MOMENT = 0.99  # the running mean square of the gradient
_FEATURE_BOUND = 10.0  # features pass through B tanh(x / B)
_LOG_STEP_BOUND = 5.0  # log step sizes pass through B tanh(s / B)
_LOSS_EPS = 1e-6  # epsilon of L_loss and floor of loss denominators
_COST_FLOOR = 1e-3  # floor of cost denominators (the metric features and L_metric)
_TINY = 1e-24  # inside sqrt: keeps the RMS and its gradient finite for a zero gradient
_VARIANCE_FLOOR = 1e-30  # inverse-variance weights of a zero-variance estimator


# --------------------------------------------------------------------------- the update rule


class LearnedOptimizer(nn.Module):
    """A per-coordinate MLP update rule for the adapter parameters ``phi`` (MetricOpt Eq. 1).

    Per step: ``phi_{t+1} = phi_t + base_step * u * exp(s)`` with
    ``u = -x_1 + r`` and ``(r, s) = MLP(x)``, where ``x`` holds the 7 features of
    :data:`FEATURES` for each coordinate (module docstring). The MLP's last layer
    starts at zero, so the untrained rule is the normalised gradient step
    ``phi - base_step * grad / rms``.

    Args:
        hidden: width of the two hidden layers.
        base_step: the step size at ``s = 0``.
        seed: seeds the hidden layers' initial weights (a private ``torch.Generator``).

    Attributes:
        state: the running state of the current run (set by :meth:`reset`,
            advanced by :meth:`step`); None before the first :meth:`reset`.

    >>> rule = LearnedOptimizer(base_step=0.1)
    >>> phi = torch.zeros(3)
    >>> rule.reset(phi)
    >>> gradient = torch.tensor([1.0, -2.0, 0.5])
    >>> next_phi = rule.step(phi, gradient, loss=1.0, cost=None)
    >>> normalised = gradient / gradient.square().mean().sqrt()
    >>> torch.allclose(next_phi, -0.1 * 10 * torch.tanh(normalised / 10))  # bounded normalised gradient step
    True
    """

    def __init__(self, *, hidden: int = 32, base_step: float = 0.01, seed: int = 0) -> None:
        super().__init__()
        self.hidden = check_integer("hidden", hidden, 1)
        self.base_step = check_positive("base_step", base_step)
        self.seed = check_integer("seed", seed, 0)
        generator = torch.Generator().manual_seed(self.seed)
        widths = (len(FEATURES), self.hidden, self.hidden, 2)
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
            # skip_init: nn.Linear's own initialisation would draw from (and advance) the global RNG.
            linear = torch.nn.utils.skip_init(nn.Linear, fan_in, fan_out)
            last = i == len(widths) - 2
            bound = 0.0 if last else 1.0 / math.sqrt(fan_in)
            with torch.no_grad():
                linear.weight.copy_((torch.rand(linear.weight.shape, generator=generator) * 2 - 1) * bound)
                linear.bias.copy_((torch.rand(linear.bias.shape, generator=generator) * 2 - 1) * bound)
            layers.append(linear)
            if not last:
                layers.append(nn.SiLU())
        self.network = nn.Sequential(*layers)
        self.state: dict[str, Tensor] | None = None

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """``(..., 7)`` bounded features -> the direction residual ``r`` and the raw log step ``s``, each ``(...)``."""
        output = self.network(features)
        return output[..., 0], output[..., 1]

    def initial_state(self, phi: Tensor) -> dict[str, Tensor]:
        """The state at the start of a run on ``phi`` (zeros; nothing observed yet).

        Keys: ``step`` (steps taken), ``gradient_average`` ``(P,)``,
        ``square_average`` (of ``mean grad^2``), ``first_loss``, ``loss_average``,
        ``has_cost``, ``first_cost``, ``cost_average``.
        """
        check_tensor("phi", phi)
        if phi.ndim != 1 or not phi.is_floating_point():
            raise ValueError(f"`phi` must be a floating (phi_size,) tensor; got {describe(phi)}")
        zero = torch.zeros((), dtype=phi.dtype, device=phi.device)
        return {
            "step": torch.zeros((), dtype=torch.int64),
            "gradient_average": torch.zeros_like(phi).detach(),
            "square_average": zero,
            "first_loss": zero,
            "loss_average": zero,
            "has_cost": torch.zeros((), dtype=torch.bool),
            "first_cost": zero,
            "cost_average": zero,
        }

    def update(
        self,
        phi: Tensor,
        gradient: Tensor,
        state: Mapping[str, Tensor],
        loss: Tensor | float,
        cost: Tensor | float | None,
        *,
        parameters: Mapping[str, Tensor] | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """One step as a pure function: ``(next_phi, new_state)``; ``state`` is not modified.

        Differentiable with respect to every tensor input and to the weights
        (``self``'s, or ``parameters``, a mapping from parameter names to tensors
        used instead, as in ``torch.func.functional_call``).

        Args:
            phi: ``(P,)`` current adapter parameters.
            gradient: ``(P,)`` loss gradient at ``phi``.
            state: from :meth:`initial_state` or a previous call.
            loss: the step's loss (a number or a 0-dim tensor).
            cost: the latest observed metric cost, or None before the first observation.
            parameters: weights to use instead of the module's own.
        """
        if gradient.shape != phi.shape:
            raise ValueError(f"`gradient` must have the shape of `phi` {tuple(phi.shape)}; got {describe(gradient)}")
        like = {"dtype": phi.dtype, "device": phi.device}
        steps_taken = int(state["step"])
        t = steps_taken + 1
        gradient_average = _AVERAGE * state["gradient_average"] + (1 - _AVERAGE) * gradient
        square_average = _SECOND_MOMENT * state["square_average"] + (1 - _SECOND_MOMENT) * gradient.square().mean()
        rms = torch.sqrt(square_average / (1 - _SECOND_MOMENT**t) + _TINY)
        average = gradient_average / (1 - _AVERAGE**t)

        loss = torch.as_tensor(loss, **like)
        first_loss = loss if steps_taken == 0 else state["first_loss"]
        loss_average = loss if steps_taken == 0 else state["loss_average"]
        loss_scaled = loss / (first_loss.abs() + _LOSS_EPS)
        loss_change = (loss - loss_average) / (loss_average.abs() + _LOSS_EPS)

        has_cost, first_cost, cost_average = state["has_cost"], state["first_cost"], state["cost_average"]
        if cost is None:
            cost_scaled = cost_change = torch.zeros((), **like)
        else:
            cost = torch.as_tensor(cost, **like)
            if not bool(has_cost):
                has_cost, first_cost, cost_average = torch.ones((), dtype=torch.bool), cost, cost
            cost_scaled = cost / first_cost.abs().clamp_min(_COST_FLOOR)
            cost_change = (cost - cost_average) / cost_average.abs().clamp_min(_COST_FLOOR)
            cost_average = _AVERAGE * cost_average + (1 - _AVERAGE) * cost

        scalars = torch.stack([loss_scaled, loss_change, cost_scaled, cost_change])
        features = torch.cat(
            [torch.stack([gradient / rms, average / rms, phi / rms], dim=-1), scalars.expand(*phi.shape, 4)], dim=-1
        )
        features = _FEATURE_BOUND * torch.tanh(features / _FEATURE_BOUND)
        if parameters is None:
            residual, log_step = self(features)
        else:
            residual, log_step = torch.func.functional_call(self, dict(parameters), (features,))
        direction = -features[..., 0] + residual
        log_step = _LOG_STEP_BOUND * torch.tanh(log_step / _LOG_STEP_BOUND)
        next_phi = phi + self.base_step * direction * torch.exp(log_step)
        new_state = {
            "step": torch.tensor(t, dtype=torch.int64),
            "gradient_average": gradient_average,
            "square_average": square_average,
            "first_loss": first_loss,
            "loss_average": _AVERAGE * loss_average + (1 - _AVERAGE) * loss,
            "has_cost": has_cost,
            "first_cost": first_cost,
            "cost_average": cost_average,
        }
        return next_phi, new_state

    def reset(self, phi: Tensor) -> None:
        """Start a run at ``phi`` (the :class:`~metricopt.blackbox.finetune.UpdateRule` protocol)."""
        self.state = self.initial_state(phi.detach())

    @torch.no_grad()
    def step(self, phi: Tensor, gradient: Tensor, loss: float, cost: float | None) -> Tensor:
        """The next ``phi`` (no autograd graph); advances :attr:`state`. Call :meth:`reset` first."""
        if self.state is None:
            raise RuntimeError("call reset(phi) before step(): the rule has no running state")
        next_phi, self.state = self.update(phi.detach(), gradient.detach(), self.state, loss, cost)
        return next_phi

    def config(self) -> dict[str, Any]:
        """Constructor arguments: ``LearnedOptimizer(**rule.config())`` rebuilds the architecture."""
        return {"hidden": self.hidden, "base_step": self.base_step, "seed": self.seed}

    def extra_repr(self) -> str:
        return f"hidden={self.hidden}, base_step={self.base_step}"


# --------------------------------------------------------------------------- the objective


def _check_series(name: str, values: Any) -> Tensor:
    check_tensor(name, values)
    if values.ndim != 1 or len(values) < 2 or not values.is_floating_point():
        raise ValueError(f"`{name}` must be a floating (T + 1,) tensor with T >= 1; got {describe(values)}")
    return values


def metric_objective(costs: Tensor, *, beta: float | None = None, floor: float = _COST_FLOOR) -> Tensor:
    """``L_metric = 1/T sum_{t=1..T} log(1 + exp(beta (M_t - M_t') / M_t))``, ``t' = argmin_{i<t} M_i``.

    Penalises every step whose predicted cost is above the best one so far,
    relative to its size (MetricOpt Eq. 2). The choice of ``t'`` is not
    differentiated; ``M_t'`` is.

    Args:
        costs: ``(T + 1,)`` predicted costs ``M_0 .. M_T`` (raw cost units, lower is better).
        beta: sharpness; default ``T / 2`` (the paper's).
        floor: the division uses ``max(M_t, floor)``.

    >>> improving, worsening = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.3, 0.4, 0.5])
    >>> bool(metric_objective(improving) < metric_objective(worsening))
    True
    """
    costs = _check_series("costs", costs)
    steps = len(costs) - 1
    beta = steps / 2 if beta is None else check_positive("beta", beta)
    floor = check_positive("floor", floor)
    best_index = torch.cummin(costs.detach()[:-1], dim=0).indices  # t' for t = 1 .. T
    current = costs[1:]
    return F.softplus(beta * (current - costs[best_index]) / current.clamp_min(floor)).mean()


def loss_objective(losses: Tensor, *, eps: float = _LOSS_EPS) -> Tensor:
    """``L_loss = 1/T sum_{t=1..T} (log(l_t + eps) - log(l_0 + eps))`` for ``(T + 1,)`` losses ``l_0 .. l_T``.

    >>> float(loss_objective(torch.tensor([2.0, 2.0, 2.0])))
    0.0
    """
    losses = _check_series("losses", losses)
    eps = check_positive("eps", eps)
    logs = torch.log(losses + eps)
    return (logs[1:] - logs[0]).mean()


def optimizer_objective(
    costs: Tensor,
    losses: Tensor,
    *,
    metric_weight: float = 50.0,
    beta: float | None = None,
    eps: float = _LOSS_EPS,
    floor: float = _COST_FLOOR,
) -> Tensor:
    """``L_opt = metric_weight * L_metric(costs) + L_loss(losses)`` (MetricOpt Eq. 2, ``lambda = 50``).

    >>> costs, losses = torch.tensor([0.5, 0.4]), torch.tensor([1.0, 0.5])
    >>> round(float(optimizer_objective(costs, losses)), 4)  # 50 * softplus(0.5 * -0.1 / 0.4) + log(0.5)
    30.9368
    """
    metric_weight = check_nonnegative("metric_weight", metric_weight)
    if len(costs) != len(losses):
        raise ValueError(f"`costs` and `losses` must have the same length; got {len(costs)} and {len(losses)}")
    return metric_weight * metric_objective(costs, beta=beta, floor=floor) + loss_objective(losses, eps=eps)


# --------------------------------------------------------------------------- the unroll


def _batch_indices(n: int, batch_size: int, count: int, seed: int) -> list[Tensor]:
    """``count`` mini-batches of shuffled indices, epoch after epoch (the fine-tuning scheme)."""
    generator = torch.Generator().manual_seed(seed)
    batches: list[Tensor] = []
    while len(batches) < count:
        batches.extend(torch.randperm(n, generator=generator).split(min(batch_size, n)))
    return batches[:count]


def unroll(
    rule: LearnedOptimizer,
    adapter: Adapter,
    loss_fn: LossFn,
    value: ValueFunction,
    data: TaskData,
    *,
    steps: int,
    batch_size: int = 128,
    seed: int = 0,
    batches: Sequence[Tensor] | None = None,
    initial_phi: Tensor | None = None,
    state: Mapping[str, Tensor] | None = None,
    costs: Sequence[float | None] | None = None,
    parameters: Mapping[str, Tensor] | None = None,
    metric_weight: float = 50.0,
) -> Tensor:
    """``L_opt`` of ``steps`` steps of ``rule`` on ``data``, differentiable with respect to its weights.

    Step ``t`` takes the loss of mini-batch ``b_t`` at ``phi_t``, its gradient
    (with ``create_graph``, so the result is the exact derivative of the
    unrolled objective) and ``phi_{t+1} = rule.update(...)``; the loss at
    ``phi_T`` uses batch ``b_T``. The value function predicts ``M_t`` for every
    ``phi_t`` and :func:`optimizer_objective` combines the two. Without weights
    that require grad (or under ``torch.no_grad``) the unroll only evaluates.

    Args:
        rule: the learned optimizer.
        adapter: the frozen backbone; ``phi`` is passed as ``adapter(x, phi=...)``,
            ``adapter.phi`` is not touched.
        loss_fn: ``f(logits, target)``.
        value: predicts the metric cost of each ``phi_t`` (its weights are not differentiated).
        data: the task; only ``X_train``, ``y_train`` are used.
        steps: ``T``.
        batch_size, seed: draw the ``T + 1`` mini-batches when ``batches`` is None.
        batches: ``T + 1`` index tensors into ``data.X_train`` (fixed batches).
        initial_phi: ``phi_0`` (default zeros).
        state: the rule's state at ``phi_0`` (default :meth:`LearnedOptimizer.initial_state`).
        costs: the metric cost input of each step ``0 .. T - 1`` (None: not observed yet);
            default: none observed.
        parameters: the rule's weights to use (e.g. perturbed ones), by name.
        metric_weight: ``lambda``.

    Returns:
        The scalar ``L_opt``.

    >>> from metricopt.blackbox.adapters import InputBias
    >>> from metricopt.losses import cross_entropy_loss
    >>> _ = torch.manual_seed(0)
    >>> X = torch.randn(32, 3); y = (X[:, 0] > 0).float()
    >>> adapter = InputBias(nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1)), phi_size=4)
    >>> data = TaskData(X, y, X, y.long().numpy())
    >>> rule = LearnedOptimizer()
    >>> objective = unroll(rule, adapter, cross_entropy_loss, ValueFunction(4, hidden_sizes=(8,)), data,
    ...                    steps=5, batch_size=8)
    >>> objective.shape, objective.requires_grad
    (torch.Size([]), True)
    """
    steps = check_integer("steps", steps, 1)
    device = adapter.phi.device
    X_train, y_train = data.X_train.to(device), data.y_train.to(device)
    if batches is None:
        batches = _batch_indices(len(X_train), check_integer("batch_size", batch_size, 1), steps + 1, seed)
    if len(batches) < steps + 1:
        raise ValueError(f"`batches` must hold steps + 1 = {steps + 1} index tensors; got {len(batches)}")
    if costs is None:
        costs = [None] * steps
    if len(costs) < steps:
        raise ValueError(f"`costs` must hold one entry per step ({steps}); got {len(costs)}")
    weights = dict(rule.named_parameters()) if parameters is None else dict(parameters)
    differentiable = torch.is_grad_enabled() and any(w.requires_grad for w in weights.values())
    phi = (torch.zeros_like(adapter.phi) if initial_phi is None else initial_phi).detach().to(adapter.phi)
    state = rule.initial_state(phi) if state is None else {k: v.to(device) for k, v in state.items()}
    phis: list[Tensor] = []
    losses: list[Tensor] = []
    for t in range(steps + 1):
        if not differentiable:
            phi = phi.detach()
        if not phi.requires_grad:
            phi = phi.requires_grad_(True)
        index = batches[t].to(device)
        with torch.enable_grad():
            loss = loss_fn(logits_for_loss(adapter(X_train[index], phi=phi)), y_train[index])
        phis.append(phi if differentiable else phi.detach())
        losses.append(loss if differentiable else loss.detach())
        if t == steps:
            break
        with torch.enable_grad():
            (gradient,) = torch.autograd.grad(loss, phi, create_graph=differentiable)
        with torch.set_grad_enabled(differentiable):
            phi, state = rule.update(phi, gradient, state, losses[-1], costs[t], parameters=weights)
    predicted = value.predict_cost(torch.stack(phis))
    return optimizer_objective(predicted, torch.stack(losses), metric_weight=metric_weight)


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
        generator: the perturbations' source.

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
    names = list(parameters)
    base = {name: parameters[name].detach() for name in names}
    pathwise: list[Tensor] = []
    evolution: list[Tensor] = []
    values: list[float] = []
    nonfinite = 0
    for _ in range(samples):
        noise = {name: torch.randn(w.shape, generator=generator, dtype=w.dtype).to(w.device)
                 for name, w in base.items()}
        pair_values, pair_gradients = [], []
        for sign in (1.0, -1.0):
            perturbed = {name: (w + sign * sigma * noise[name]).requires_grad_(True) for name, w in base.items()}
            with torch.enable_grad():
                value = objective(perturbed)
                gradients = torch.autograd.grad(value, list(perturbed.values()), allow_unused=True)
            pair_values.append(float(value.detach()))
            pair_gradients.append(torch.cat([
                (torch.zeros_like(w) if g is None else g).reshape(-1) for g, w in zip(gradients, base.values())]))
        finite_values = all(math.isfinite(v) for v in pair_values)
        values.extend(v for v in pair_values if math.isfinite(v))
        path = (pair_gradients[0] + pair_gradients[1]) / 2
        if finite_values and bool(torch.isfinite(path).all()):
            pathwise.append(path)
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

    estimates = {"pathwise": _mean_and_variance(pathwise), "evolution": _mean_and_variance(evolution)}
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


# --------------------------------------------------------------------------- meta-training


@dataclass(frozen=True)
class LearnedConfig:
    """Options of :func:`meta_train_learned`.

    Attributes:
        tasks: fine-tuning tasks (meta-iterations of Algorithm 1).
        warmup_tasks: first tasks collected with the hand-designed optimizer
            (they fix the value function's normalisation); ``<= tasks``.
        unroll_steps: ``T`` of one unroll (truncated to the fine-tuning budget).
        samples: antithetic pairs per optimizer update (>= 2).
        optimizer_updates: Adam updates of the rule per task.
        sigma: smoothing standard deviation (the paper's ``sqrt(0.01) = 0.1``).
        metric_weight: ``lambda`` of ``L_opt`` (the paper's 50).
        learning_rate: Adam's learning rate on the rule's weights.
        hidden: the rule's hidden width.
        base_step: the rule's step size at ``s = 0``.
        seed: seeds the tasks, the rule's and the value function's initialisation
            and every draw of the training.
        checkpoint_every: write a checkpoint every this many tasks.
        value: the value function's Reptile options (``replay``, ``inner_steps``,
            ``inner_learning_rate``, ``meta_step``, ``hidden_sizes``). Its loop
            fields (``tasks``, ``warmup_tasks``, ``checkpoint_every``, ``seed``)
            are set to ours; one set to a non-default value that disagrees is an
            error. Default: ``MetaConfig``'s defaults. After construction it is
            the matching value-only :func:`~metricopt.blackbox.meta.meta_train`
            configuration.

    >>> config = LearnedConfig(tasks=10, warmup_tasks=2)
    >>> config.value.tasks, config.value.warmup_tasks, config.sigma ** 2
    (10, 2, 0.010000000000000002)
    """

    tasks: int = 40
    warmup_tasks: int = 4
    unroll_steps: int = 20
    samples: int = 4
    optimizer_updates: int = 1
    sigma: float = 0.1
    metric_weight: float = 50.0
    learning_rate: float = 1e-3
    hidden: int = 32
    base_step: float = 0.01
    seed: int = 0
    checkpoint_every: int = 5
    value: MetaConfig | None = None

    def __post_init__(self) -> None:
        check_integer("tasks", self.tasks, 1)
        check_integer("warmup_tasks", self.warmup_tasks, 1)
        if self.warmup_tasks > self.tasks:
            raise ValueError(f"`warmup_tasks` must be <= tasks ({self.tasks}) or the optimizer never trains; "
                             f"got {self.warmup_tasks}")
        check_integer("unroll_steps", self.unroll_steps, 1)
        check_integer("samples", self.samples, 2)
        check_integer("optimizer_updates", self.optimizer_updates, 1)
        check_positive("sigma", self.sigma)
        check_nonnegative("metric_weight", self.metric_weight)
        check_positive("learning_rate", self.learning_rate)
        check_integer("hidden", self.hidden, 1)
        check_positive("base_step", self.base_step)
        check_integer("seed", self.seed, 0)
        check_integer("checkpoint_every", self.checkpoint_every, 1)
        loop = {"tasks": self.tasks, "warmup_tasks": self.warmup_tasks,
                "checkpoint_every": self.checkpoint_every, "seed": self.seed}
        if self.value is None:
            value = MetaConfig(**loop)
        elif not isinstance(self.value, MetaConfig):
            raise TypeError(f"`value` must be a MetaConfig or None; got {describe(self.value)}")
        else:
            defaults = MetaConfig()
            for name, ours in loop.items():
                theirs = getattr(self.value, name)
                if theirs != ours and theirs != getattr(defaults, name):
                    raise ValueError(
                        f"`value`.{name}={theirs!r} disagrees with `{name}`={ours!r}: LearnedConfig sets the loop "
                        f"options; leave `value`.{name} at its default")
            value = dataclasses.replace(self.value, **loop)
        object.__setattr__(self, "value", value)


@dataclass
class LearnedResult:
    """What :func:`meta_train_learned` returns.

    Attributes:
        optimizer: the learned update rule (what meta-testing uses).
        value: the meta-learned value function (not needed at test time).
        history: one row per task: ``task``, ``learned_rule`` (1: collected with
            the rule), ``start_cost``, ``best_cost``, ``final_cost``,
            ``value_loss`` (before adaptation), ``unroll_start``, ``objective``
            (mean ``L_opt`` at the perturbed weights of the task's updates),
            ``pathwise_variance``, ``evolution_variance``, ``nonfinite``,
            ``skipped_updates``, ``collect_seconds``, ``value_seconds``,
            ``optimizer_seconds``, ``seconds``; NaN where a task had no update.
        seconds: wall time of the meta-training, summed over resumed runs.
        resumed_from: the task index a checkpoint resumed from (None: fresh start).
    """

    optimizer: LearnedOptimizer
    value: ValueFunction
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: int | None = None


class _Recorder:
    """An update rule that runs ``rule`` and keeps copies of its state after chosen step counts."""

    def __init__(self, rule: LearnedOptimizer, keep: set[int]) -> None:
        self.rule, self.keep = rule, keep
        self.states: dict[int, dict[str, Tensor]] = {}
        self._steps = 0

    def _record(self) -> None:
        if self._steps in self.keep and self.rule.state is not None:
            self.states[self._steps] = {k: v.detach().clone() for k, v in self.rule.state.items()}

    def reset(self, phi: Tensor) -> None:
        self.rule.reset(phi)
        self._steps, self.states = 0, {}
        self._record()

    def step(self, phi: Tensor, gradient: Tensor, loss: float, cost: float | None) -> Tensor:
        next_phi = self.rule.step(phi, gradient, loss, cost)
        self._steps += 1
        self._record()
        return next_phi


def _held_costs(trajectory: Trajectory, start: int, steps: int) -> list[float | None]:
    """The cost input of steps ``start .. start + steps - 1``: the latest observation at or before each."""
    held: list[float | None] = []
    position, latest = 0, None
    observed = list(zip(trajectory.observed_steps, trajectory.observed_costs))
    for step in range(start + steps):
        while position < len(observed) and observed[position][0] <= step:
            latest = observed[position][1]
            position += 1
        if step >= start:
            held.append(latest)
    return held


def _task_seed(seed: int, index: int, stream: int) -> int:
    """A seed for stream ``stream`` of task ``index``, apart from TaskDistribution's ``seed * 1_000_003 + index``."""
    return ((seed * 1_000_033 + index) * 7_919 + stream + 1) % (2**63 - 1)


def _value_config(value: ValueFunction) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in value.config().items()}


def load_learned(path: str | os.PathLike[str]) -> LearnedOptimizer:
    """The learned optimizer stored in a :func:`meta_train_learned` checkpoint (``weights_only`` load)."""
    state = read_checkpoint(Path(path), LEARNED_CHECKPOINT_FORMAT, kind="learned-optimizer")
    rule = LearnedOptimizer(**state["optimizer_config"])
    rule.load_state_dict(state["optimizer_state"])
    return rule


_DEFAULT_FINETUNE, _DEFAULT_CONFIG, _DEFAULT_DISTRIBUTION = FineTuneConfig(), LearnedConfig(), TaskDistribution()


def meta_train_learned(
    adapter: Adapter,
    loss_fn: LossFn,
    metric: BlackBoxMetric,
    pool: TaskData,
    *,
    finetune_config: FineTuneConfig = _DEFAULT_FINETUNE,
    config: LearnedConfig = _DEFAULT_CONFIG,
    distribution: TaskDistribution = _DEFAULT_DISTRIBUTION,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool = True,
    progress: Callable[[dict[str, float]], None] | None = None,
) -> LearnedResult:
    """Jointly meta-train a learned optimizer and the value function (MetricOpt Algorithm 1).

    Per task ``i``: draw it from ``distribution``; fine-tune with the current
    rule (the first ``warmup_tasks`` with ``finetune_config``'s optimizer) and
    observe the metric ``K`` times; adapt a copy of the value function to the
    trajectory; update the rule's weights with :func:`smoothed_gradient` of
    :func:`unroll` on this task, scored by the adapted copy; Reptile-update the
    value function toward the copy, then ``config.value.replay`` Reptile
    iterations on stored trajectories (module docstring).

    Args:
        adapter: the frozen backbone with its adapter (``phi`` is reset per task).
        loss_fn: the fine-tuning loss ``f(logits, target)``.
        metric: the black-box metric.
        pool: training rows tasks draw their subsets from, and the validation
            rows every task's metric is observed on.
        finetune_config: the per-task budget (``steps``, ``evaluations``,
            ``batch_size``; ``optimizer`` and ``learning_rate`` for the warm-up).
        config: the options.
        distribution: how tasks vary.
        checkpoint: file to checkpoint to; with ``resume`` an existing file
            written with the same settings is continued.
        resume: continue from ``checkpoint`` if it exists (False: start over).
        progress: called after each task with its history row.

    Returns:
        A :class:`LearnedResult`.
    """
    if not isinstance(adapter, Adapter):
        raise TypeError(f"`adapter` must be a metricopt.blackbox Adapter; got {type(adapter).__name__}")
    if not isinstance(config, LearnedConfig):
        raise TypeError(f"`config` must be a LearnedConfig; got {describe(config)}")
    started = time.perf_counter()
    device = adapter.phi.device
    meta = cast(MetaConfig, config.value)  # never None after LearnedConfig.__post_init__
    rule = LearnedOptimizer(hidden=config.hidden, base_step=config.base_step, seed=config.seed).to(device)
    value = ValueFunction(adapter.phi_size, hidden_sizes=meta.hidden_sizes, seed=meta.seed).to(device)
    adam = torch.optim.Adam(rule.parameters(), lr=config.learning_rate)
    record = {"learned": plain_record(config), "finetune": plain_record(finetune_config),
              "distribution": plain_record(distribution), "phi_size": adapter.phi_size}
    result = LearnedResult(rule, value)
    trajectories: list[Trajectory] = []
    seconds_before = 0.0
    path = Path(checkpoint) if checkpoint is not None else None
    start = 0
    state = resumable_state(path, resume, LEARNED_CHECKPOINT_FORMAT, record, kind="learned-optimizer")
    if state is not None:
        rule.load_state_dict(state["optimizer_state"])
        value.load_state_dict(state["value_state"])
        adam.load_state_dict(state["adam_state"])
        trajectories = [Trajectory.from_state(s) for s in state["trajectories"]]
        result.history = [dict(row) for row in state["history"]]
        seconds_before = float(state["seconds"])
        start = result.resumed_from = int(state["next_task"])

    def save(next_task: int) -> None:
        if path is not None:
            atomic_save(path, {"format": LEARNED_CHECKPOINT_FORMAT, "next_task": next_task, "config": record,
                         "optimizer_config": rule.config(), "optimizer_state": rule.state_dict(),
                         "adam_state": adam.state_dict(),
                         "value_config": _value_config(value), "value_state": value.state_dict(),
                         "trajectories": [t.state() for t in trajectories], "history": result.history,
                         "seconds": seconds_before + time.perf_counter() - started})

    labels = pool.y_train.long().cpu()
    budget = finetune_config.steps
    length = min(config.unroll_steps, budget)
    starts = list(range(0, budget - length + 1, length))
    for index in range(start, config.tasks):
        task_started = time.perf_counter()
        learned = index >= config.warmup_tasks
        task = distribution.sample(index, seed=config.seed, labels=labels, phi_size=adapter.phi_size, guided=False)
        data = TaskData(pool.X_train[task.indices], pool.y_train[task.indices], pool.X_val, pool.y_val)
        recorder = _Recorder(rule, set(starts)) if learned else None
        task_config = finetune_config if learned else dataclasses.replace(
            finetune_config, learning_rate=finetune_config.learning_rate * task.learning_rate_factor)
        run = finetune(adapter, loss_fn, metric, data, config=task_config, rule=recorder,
                       initial_phi=task.initial_phi, seed=task.seed)
        trajectory = run.trajectory
        costs = trajectory.observed_costs
        row = {"task": float(index), "learned_rule": float(learned),
               "start_cost": costs[0] if costs else math.nan, "best_cost": min(costs, default=math.nan),
               "final_cost": costs[-1] if costs else math.nan, "value_loss": math.nan, "unroll_start": math.nan,
               "objective": math.nan, "pathwise_variance": math.nan, "evolution_variance": math.nan,
               "nonfinite": 0.0, "skipped_updates": 0.0, "collect_seconds": time.perf_counter() - task_started,
               "value_seconds": 0.0, "optimizer_seconds": 0.0}
        usable = len(trajectory.observed_steps) >= 2
        if usable:
            trajectories.append(trajectory)
        started = any(not math.isnan(r["value_loss"]) for r in result.history)  # normalisation is fixed once
        if index + 1 >= config.warmup_tasks and trajectories and not started:
            set_normalisation_from(value, trajectories)
        if index + 1 >= config.warmup_tasks and usable:
            clock = time.perf_counter()
            row["value_loss"] = adapt_value(value, trajectory, steps=0)
            adapted = copy.deepcopy(value)
            adapt_value(adapted, trajectory, steps=meta.inner_steps, learning_rate=meta.inner_learning_rate)
            adapted.requires_grad_(False)
            row["value_seconds"] += time.perf_counter() - clock

            clock = time.perf_counter()
            states = recorder.states if recorder is not None else {}
            candidates = [s for s in starts if s in states] or [0]
            objectives, path_variances, es_variances = [], [], []
            for update in range(config.optimizer_updates):
                generator = torch.Generator().manual_seed(_task_seed(config.seed, index, update))
                begin = candidates[int(torch.randint(len(candidates), (), generator=generator))]
                batches = _batch_indices(len(data.X_train), finetune_config.batch_size, length + 1,
                                         int(torch.randint(2**31 - 1, (), generator=generator)))
                held = _held_costs(trajectory, begin, length)

                unrolled = functools.partial(
                    unroll, rule, adapter, loss_fn, adapted, data, steps=length, batches=batches,
                    initial_phi=trajectory.phis[begin], state=states.get(begin), costs=held,
                    metric_weight=config.metric_weight)
                estimate = smoothed_gradient(lambda weights, unrolled=unrolled: unrolled(parameters=weights),
                                             dict(rule.named_parameters()), sigma=config.sigma,
                                             samples=config.samples, generator=generator)
                row["unroll_start"] = float(begin)
                row["nonfinite"] += estimate.nonfinite
                objectives.append(estimate.objective)
                path_variances.append(estimate.pathwise_variance)
                es_variances.append(estimate.evolution_variance)
                if estimate.gradient is None:
                    row["skipped_updates"] += 1
                    continue
                for name, weight in rule.named_parameters():
                    weight.grad = estimate.gradient[name].to(weight)
                adam.step()
                adam.zero_grad(set_to_none=True)
            row["objective"] = sum(objectives) / len(objectives)
            row["pathwise_variance"] = sum(path_variances) / len(path_variances)
            row["evolution_variance"] = sum(es_variances) / len(es_variances)
            row["optimizer_seconds"] = time.perf_counter() - clock

            clock = time.perf_counter()
            interpolate_weights(value, adapted, meta.meta_step)
            replay = torch.Generator().manual_seed(_task_seed(config.seed, index, config.optimizer_updates))
            for position in torch.randint(0, len(trajectories), (meta.replay,), generator=replay).tolist():
                reptile_step(value, trajectories[position], meta)
            row["value_seconds"] += time.perf_counter() - clock
        row["seconds"] = time.perf_counter() - task_started
        result.history.append(row)
        if (index + 1) % config.checkpoint_every == 0 or index + 1 == config.tasks:
            save(index + 1)
        if progress is not None:
            progress(row)
    result.seconds = seconds_before + time.perf_counter() - started
    return result
