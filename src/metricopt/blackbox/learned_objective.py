"""MetricOpt (learned), the objective: ``L_opt`` of a differentiable unroll of the update rule.

Method: Huang, Zhai, Guo and Susskind, "MetricOpt: Learning to Optimize Black-Box
Evaluation Metrics", CVPR 2021, supplementary section 2 (Eq. 2). The rule of
:mod:`~metricopt.blackbox.learned_rule` is meta-trained
(:mod:`~metricopt.blackbox.learned`) on this objective, Gaussian-smoothed
(:mod:`~metricopt.blackbox.smoothing`) as in Metz, Maheswaranathan, Nixon,
Freeman and Sohl-Dickstein, "Understanding and correcting pathologies in the
training of learned optimizers", ICML 2019. Every choice the papers leave open
is marked DECIDED below, with its reason.

The pieces:

* :func:`metric_objective`, :func:`loss_objective`, :func:`optimizer_objective`:
  the paper's ``L_opt = lambda L_metric + L_loss`` (Eq. 2).
* :func:`unroll`: ``L_opt`` of ``T`` differentiable steps of the rule on one
  task, with the (adapted) value function predicting the metric;
  :func:`batch_indices` draws its mini-batches.

Stated by the MetricOpt supplementary:

* ``L_opt = lambda L_metric + L_loss`` with ``lambda = 50``, ``beta = T / 2``,
  ``L_metric = 1/T sum_{t=1..T} log(1 + exp(beta (M_t - M_t') / M_t))``,
  ``M_t = f_w(phi_t)`` the value function's prediction,
  ``t' = argmin_{i < t} M_i``, and
  ``L_loss = 1/T sum_{t=1..T} (log(l(phi_t) + eps) - log(l(phi_0) + eps))``.

DECIDED here (both papers are silent or leave a choice):

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
* Once-differentiable losses: metricopt's rank losses (built on
  :func:`~metricopt.losses.interpolated_rank`) have a gradient with no derivative
  of its own; their backward marks it with a node whose Function says
  ``second_derivative = False`` (and raises if a double backward reaches it).
  A loss whose backward pass is marked ``@once_differentiable`` has a
  gradient that autograd cannot differentiate again either, and it does
  not say so: the double backward never runs that backward (its error node is
  cut off from the inputs, or absent when the gradient of a scalar loss comes
  in), so the loss's curvature would silently be missing from the pathwise
  gradient. :func:`unroll` looks for such a backward in the graphs of its first
  loss and gradient and raises :class:`SecondOrderError` (a ``ValueError``
  naming ``loss_fn``); :func:`check_second_order` also runs one double
  backward, so a Function that raises there is reported the same way. A custom
  Function whose backward is not differentiable but is not marked cannot be
  recognised.
  ``LearnedConfig(estimator="evolution")`` trains with the ES estimator alone,
  which needs no derivative of the unroll (:mod:`~metricopt.blackbox.learned`).
* Devices follow ``phi`` (the adapter's): the data, the batches, the rule's
  weights and state (:meth:`LearnedOptimizer.update`) and the value function (a
  copy, when it sits elsewhere) move to ``adapter.phi``'s device.
"""

from __future__ import annotations

import copy
import functools
import itertools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from metricopt._checks import (
    check_integer,
    check_nonnegative,
    check_positive,
    check_tensor,
    describe,
)
from metricopt.batches import shuffled_batches
from metricopt.blackbox.adapters import Adapter
from metricopt.blackbox.finetune import LossFn, TaskData, logits_for_loss
from metricopt.blackbox.learned_rule import COST_FLOOR, LOSS_EPS, LearnedOptimizer
from metricopt.blackbox.value import ValueFunction

__all__ = [
    "SecondOrderError",
    "batch_indices",
    "check_second_order",
    "loss_objective",
    "metric_objective",
    "optimizer_objective",
    "unroll",
]


# --------------------------------------------------------------------------- the objective


def _check_series(name: str, values: Any) -> Tensor:
    check_tensor(name, values)
    if values.ndim != 1 or len(values) < 2 or not values.is_floating_point():
        raise ValueError(f"`{name}` must be a floating (T + 1,) tensor with T >= 1; got {describe(values)}")
    return values


def metric_objective(costs: Tensor, *, beta: float | None = None, floor: float = COST_FLOOR) -> Tensor:
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


def loss_objective(losses: Tensor, *, eps: float = LOSS_EPS) -> Tensor:
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
    eps: float = LOSS_EPS,
    floor: float = COST_FLOOR,
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


# --------------------------------------------------------------------------- second derivatives


class SecondOrderError(ValueError):
    """The fine-tuning loss cannot be differentiated twice, which the pathwise estimator needs."""


def _name(function: Any) -> str:
    while isinstance(function, functools.partial):
        function = function.func
    return getattr(function, "__name__", type(function).__name__)


def _advice(loss_fn: Any, found: str) -> str:
    return (
        f"`loss_fn` ({_name(loss_fn)}) cannot be differentiated twice: its gradient with respect to phi {found}. "
        "The learned optimizer's pathwise estimator differentiates through that gradient, so it would get the "
        "loss's second derivative wrong (autograd leaves it out without an error). metricopt's rank losses (built "
        "on interpolated_rank) and the confusion loss (fused soft counts) are once-differentiable. Train with "
        "LearnedConfig(estimator='evolution') (the evolution-strategies estimator alone needs no derivative of the "
        "unroll), or fine-tune with a twice-differentiable loss such as cross_entropy_loss"
    )


#: The code every ``@once_differentiable`` backward runs (the decorator's wrapper): how such a backward is recognised.
_ONCE_DIFFERENTIABLE_CODE = once_differentiable(lambda ctx, *grads: None).__code__


def _nodes(root: Tensor) -> Iterator[Any]:
    """Every autograd node of ``root``'s graph, each once."""
    stack, seen = [root.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        yield node
        stack.extend(following for following, _ in node.next_functions)


def _once_differentiable(loss: Tensor, gradient: Tensor) -> list[str]:
    """The once-differentiable backward passes in ``loss``'s graph and in that of its ``gradient``.

    Two signs: a custom Function of ``loss``'s graph whose backward is wrapped
    by ``@once_differentiable``, and the error node that the wrapper puts into
    the gradient's graph when its inputs require grad. Neither raises on a
    double backward: the error node is cut off from the inputs, and when the
    inputs do not require grad (the gradient of a scalar loss), there is no
    node at all; autograd then differentiates the rest and leaves that
    backward's own derivative out.
    """
    found = []
    for node in _nodes(loss):
        backward = getattr(getattr(node, "_forward_cls", None), "backward", None)
        if getattr(backward, "__code__", None) is _ONCE_DIFFERENTIABLE_CODE:
            found.append(type(node).__name__)
    if gradient.requires_grad:
        for node in _nodes(gradient):
            if node.name().rsplit("::", 1)[-1] in ("Error", "DelayedError"):
                found.append("an @once_differentiable error node")
            elif getattr(getattr(node, "_forward_cls", None), "second_derivative", True) is False:
                found.append(type(node).__name__)
    return sorted(set(found))


def _check_gradient_graph(loss: Tensor, gradient: Tensor, loss_fn: Any) -> None:
    found = _once_differentiable(loss, gradient)
    if found:
        where = (f"passes through a backward with no second derivative ({', '.join(found)}, in the loss or the "
                 "backbone)")
        raise SecondOrderError(_advice(loss_fn, where))


def check_second_order(loss_fn: LossFn, adapter: Adapter, inputs: Tensor, target: Tensor) -> None:
    """Raise :class:`SecondOrderError` unless ``loss_fn``'s gradient in ``phi`` can be differentiated again.

    Takes the loss of ``adapter`` on one batch at its current ``phi``, its
    gradient with ``create_graph=True`` and one more backward pass: the cost
    of two training steps. Catches the two ways a second derivative goes wrong:
    a ``@once_differentiable`` backward in the graph (autograd would leave it
    out silently) and a backward that raises when differentiated.

    Args:
        loss_fn: ``f(logits, target)``.
        adapter: the frozen backbone with its adapter (``phi`` is not changed).
        inputs, target: one batch (moved to ``adapter.phi``'s device).

    >>> from metricopt.blackbox.adapters import InputBias
    >>> from torch import nn
    >>> from metricopt.losses import cross_entropy_loss
    >>> adapter = InputBias(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)), phi_size=2)
    >>> check_second_order(cross_entropy_loss, adapter, torch.randn(8, 3), torch.tensor([0.0, 1.0] * 4))
    """
    device = adapter.phi.device
    phi = adapter.phi.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(logits_for_loss(adapter(inputs.to(device), phi=phi)), target.to(device))
        (gradient,) = torch.autograd.grad(loss, phi, create_graph=True)
        _check_gradient_graph(loss, gradient, loss_fn)
        if not gradient.requires_grad:
            return  # the gradient does not depend on phi: a zero second derivative, nothing to check
        try:
            torch.autograd.grad(gradient, phi, grad_outputs=torch.ones_like(gradient), allow_unused=True)
        except RuntimeError as error:
            raise SecondOrderError(_advice(loss_fn, f"cannot be differentiated ({error})")) from error


# --------------------------------------------------------------------------- the unroll


def batch_indices(n: int, batch_size: int, count: int, seed: int) -> list[Tensor]:
    """The first ``count`` mini-batches of :func:`~metricopt.batches.shuffled_batches` seeded with ``seed``.

    The fine-tuning's scheme: shuffled indices, epoch after epoch, from a fresh generator.
    """
    batches = shuffled_batches(n, batch_size, torch.Generator().manual_seed(seed))
    return list(itertools.islice(batches, check_integer("count", count, 0)))


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
        value: predicts the metric cost of each ``phi_t`` (its weights are not
            differentiated; a copy moves to ``adapter.phi``'s device if it sits elsewhere).
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
        The scalar ``L_opt``, on ``adapter.phi``'s device.

    Raises:
        SecondOrderError: differentiable unroll with a once-differentiable
            ``loss_fn`` (module docstring); under ``torch.no_grad`` it only
            evaluates and any loss works.

    >>> from metricopt.blackbox.adapters import InputBias
    >>> from torch import nn
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
        batches = batch_indices(len(X_train), check_integer("batch_size", batch_size, 1), steps + 1, seed)
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
    value_device = next(value.parameters()).device
    if value_device != device:  # devices follow phi: a loaded value function may sit on the CPU
        value = copy.deepcopy(value).to(device)
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
        if differentiable and t == 0:
            _check_gradient_graph(loss, gradient, loss_fn)
        with torch.set_grad_enabled(differentiable):
            phi, state = rule.update(phi, gradient, state, losses[-1], costs[t], parameters=weights)
    predicted = value.predict_cost(torch.stack(phis))
    return optimizer_objective(predicted, torch.stack(losses), metric_weight=metric_weight)
