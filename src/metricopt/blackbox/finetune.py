"""Value-guided fine-tuning of adapter parameters (MetricOpt (SGD) / (Adam)).

One loop serves every fine-tuning run of the black-box family: the loss-only
baseline (no value function), MetricOpt on a new task, and the trajectories
that meta-training collects. Per step ``t = 0 .. T - 1``::

    g_t     = grad_phi loss(phi_t) + value_weight * grad_phi f_w(phi_t)
    phi_t+1 = optimizer step (SGD with momentum, or Adam) along g_t

The black-box metric is observed at ``K`` evenly spread points of ``0 .. T``
(:func:`~metricopt.blackbox.trajectory.evaluation_steps`, start and end
included) on the validation data. After each observation the value function
(a private copy: the meta-learned weights are never touched) adapts to the
observations so far (:func:`~metricopt.blackbox.adaptation.adapt_value`), and
the ``phi`` with the best observed metric is kept (the starting ``phi`` counts,
so the observed validation metric never ends worse than where it started).
With selection rows in the data (:class:`TaskData`), the metric is observed
there too at the same steps, and those observations alone pick the kept
``phi``: the rows that guide the run then do not also choose its result.

Stated by the paper: frozen backbone, only ``phi`` moves; the value function's
gradient augments the loss gradient inside SGD/Adam. DECIDED: ``f_w`` predicts
the cost in normalised units (the meta-training spread of the costs is 1), so
``value_weight`` (``lambda_v``) is the weight of one unit of "typical metric
change" against the loss; the online adaptation; keeping the best observed
``phi``; evaluation steps including both ends.

Devices follow the adapter's ``phi``: the training data, a copy of the value
function and the learned rule's computation move to its device; the
trajectory is kept on the CPU (float32), the validation data goes to the
metric as given (:func:`metricopt.predict.predict_proba` moves it to the
model).

A metric evaluation that fails (raises, NaN, inf) raises by default
(``on_error="raise"``); with ``on_error="warn"`` it is skipped with a warning
and never reaches the value function or the kept ``phi``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from metricopt._checks import check_choice, check_integer, check_nonnegative, check_positive, describe
from metricopt.batches import shuffled_batches
from metricopt.blackbox.adaptation import adapt_value
from metricopt.blackbox.adapters import Adapter
from metricopt.blackbox.metric import BlackBoxMetric
from metricopt.blackbox.trajectory import Trajectory, evaluation_count, evaluation_steps
from metricopt.blackbox.value import ValueFunction

__all__ = ["OPTIMIZERS", "FineTuneConfig", "FineTuneResult", "TaskData", "UpdateRule", "finetune", "logits_for_loss"]

#: Hand-designed optimisers the value gradient plugs into.
OPTIMIZERS = ("sgd", "adam")

LossFn = Callable[[Tensor, Tensor], Tensor]


@runtime_checkable
class UpdateRule(Protocol):
    """A learned update rule that replaces SGD/Adam (MetricOpt (learned)).

    ``reset(phi)`` starts a run; ``step(phi, gradient, loss, cost)`` returns the
    next ``phi`` from the current one, the loss gradient, the step's loss and
    the latest observed metric cost (None before the first observation).
    """

    def reset(self, phi: Tensor) -> None: ...

    def step(self, phi: Tensor, gradient: Tensor, loss: float, cost: float | None) -> Tensor: ...


def logits_for_loss(logits: Tensor) -> Tensor:
    """Binary models have one output: the losses take ``(B,)`` logits, multi-class ``(B, C)``."""
    return logits.squeeze(-1) if logits.shape[-1] == 1 else logits


@dataclass(frozen=True)
class TaskData:
    """One fine-tuning task's data: the loss sees the training part, the metric the validation part.

    ``X_*`` are model inputs (``(N, d)`` features or ``(N, C, H, W)`` images),
    ``y_*`` integer labels (``y_train`` as the loss wants it: float for binary).

    The validation part guides: its metric observations form the trajectory
    (what the value function learns from and adapts to). With a selection part
    (``X_select``, ``y_select``), the kept ``phi`` is chosen by the metric on
    those rows instead, observed at the same steps, so that the rows that guide
    are not also the rows that pick the result (:func:`finetune`).
    """

    X_train: Tensor
    y_train: Tensor
    X_val: Tensor
    y_val: np.ndarray
    X_select: Tensor | None = None
    y_select: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.X_train) != len(self.y_train) or len(self.X_train) == 0:
            raise ValueError(f"`X_train` and `y_train` must be non-empty with equal lengths; got "
                             f"{len(self.X_train)} and {len(self.y_train)}")
        if len(self.X_val) != len(self.y_val) or len(self.X_val) == 0:
            raise ValueError(f"`X_val` and `y_val` must be non-empty with equal lengths; got "
                             f"{len(self.X_val)} and {len(self.y_val)}")
        if (self.X_select is None) != (self.y_select is None):
            raise ValueError("`X_select` and `y_select` must be given together (or neither)")
        if self.X_select is not None and (len(self.X_select) != len(self.y_select) or len(self.X_select) == 0):
            raise ValueError(f"`X_select` and `y_select` must be non-empty with equal lengths; got "
                             f"{len(self.X_select)} and {len(self.y_select)}")

    def train_subset(self, indices: Tensor) -> TaskData:
        """This data with only the training rows ``indices`` (a task's share of a pool); the same validation part."""
        return dataclasses.replace(self, X_train=self.X_train[indices], y_train=self.y_train[indices])

    def guiding_only(self) -> TaskData:
        """This data without its selection rows (what meta-training observes: it never picks a ``phi``)."""
        return dataclasses.replace(self, X_select=None, y_select=None)


@dataclass(frozen=True)
class FineTuneConfig:
    """The budget and options of one fine-tuning run.

    Attributes:
        steps: ``T``, optimiser steps on ``phi``.
        evaluations: ``K``, metric observations: a count or a fraction of
            ``T`` (default 5 %, the paper's), at least 2.
        optimizer: ``"sgd"`` (with ``momentum``) or ``"adam"``.
        learning_rate: step size on ``phi``.
        momentum: SGD momentum.
        batch_size: training examples per step.
        value_weight: ``lambda_v``, weight of the value function's gradient
            (0 or no value function: loss-only fine-tuning). DECIDED: 1; the
            ``blackbox_defaults`` benchmark found none of 0.3, 3, 10 clearly
            better on validation tasks (``benchmarks/results/blackbox_defaults.md``).
        adapt_steps: value-function Adam steps after each new observation (0: no online adaptation).
        adapt_learning_rate: their learning rate.
        keep_best: end with the ``phi`` of the best observed metric (else the last ``phi``).
        on_error: ``"raise"`` or ``"warn"`` (skip) when the metric fails.
    """

    steps: int = 200
    evaluations: int | float = 0.05
    optimizer: str = "sgd"
    learning_rate: float = 0.05
    momentum: float = 0.9
    batch_size: int = 128
    value_weight: float = 1.0
    adapt_steps: int = 10
    adapt_learning_rate: float = 1e-3
    keep_best: bool = True
    on_error: str = "raise"

    def __post_init__(self) -> None:
        check_integer("steps", self.steps, 1)
        evaluation_count(self.steps, self.evaluations)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_positive("learning_rate", self.learning_rate)
        if not 0 <= check_nonnegative("momentum", self.momentum) < 1:
            raise ValueError(f"`momentum` must lie in [0, 1); got {describe(self.momentum)}")
        check_integer("batch_size", self.batch_size, 1)
        check_nonnegative("value_weight", self.value_weight)
        check_integer("adapt_steps", self.adapt_steps, 0)
        check_positive("adapt_learning_rate", self.adapt_learning_rate)
        check_choice("on_error", self.on_error, ("raise", "warn"))
        if not isinstance(self.keep_best, bool):
            raise TypeError(f"`keep_best` must be True or False; got {describe(self.keep_best)}")


@dataclass
class FineTuneResult:
    """What :func:`finetune` returns; the adapter holds ``phi`` at the end.

    Attributes:
        trajectory: every ``phi``, loss and metric observation of the run.
        phi: the kept ``phi`` (best observed, or last).
        best_step: its step index.
        best_value: the raw metric there (None when every evaluation failed), on the
            selection rows when the data has them, else on the validation rows.
        skipped: number of failed metric evaluations (``on_error="warn"``; the
            validation and the selection rows count separately).
    """

    trajectory: Trajectory
    phi: Tensor
    best_step: int
    best_value: float | None
    skipped: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def _make_optimizer(config: FineTuneConfig, phi: Tensor) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam([phi], lr=config.learning_rate)
    return torch.optim.SGD([phi], lr=config.learning_rate, momentum=config.momentum)


def _value_gradient(value: ValueFunction, phi: Tensor) -> Tensor:
    weight = next(value.parameters())
    point = phi.detach().to(weight.dtype).requires_grad_(True)  # a float64 backbone meets a float32 value net
    with torch.enable_grad():
        (gradient,) = torch.autograd.grad(value(point).sum(), point)
    return gradient.to(phi.dtype)


def finetune(
    adapter: Adapter,
    loss_fn: LossFn,
    metric: BlackBoxMetric,
    data: TaskData,
    *,
    config: FineTuneConfig = FineTuneConfig(),
    value: ValueFunction | None = None,
    initial_phi: Tensor | None = None,
    rule: UpdateRule | None = None,
    seed: int = 0,
    progress: Callable[[dict[str, float]], None] | None = None,
) -> FineTuneResult:
    """Fine-tune ``adapter.phi`` on ``data`` for ``metric``, guided by ``value`` if given.

    Args:
        adapter: a frozen backbone with adapter parameters ``phi``.
        loss_fn: ``f(logits, target)``, e.g. cross-entropy.
        metric: the black-box metric (:func:`~metricopt.blackbox.metric.make_metric`).
        data: training data for the loss, validation data for the metric.
        config: budget and options.
        value: the meta-learned value function (None: loss-only fine-tuning);
            never changed: a copy adapts online and moves to ``adapter.phi``'s
            device, wherever ``value`` sits.
        initial_phi: starting ``phi`` (default zeros: the pre-trained model), on any device.
        rule: a learned update rule replacing ``config.optimizer`` (and the
            value gradient: a learned rule carries its metric knowledge itself);
            it gets ``phi`` and the gradient on the adapter's device and its
            result is copied into ``adapter.phi`` (from any device).
        seed: seeds the mini-batch order.
        progress: called after every step with ``{"step", "loss"}`` plus
            ``"cost"`` (the guiding validation cost) and ``"best_cost"`` (the
            best selecting cost so far) at observation steps, and
            ``"select_cost"`` there when the data has selection rows.

    Returns:
        A :class:`FineTuneResult`; ``adapter.phi`` holds ``result.phi``.
    """
    adapter.reset_phi(initial_phi)
    phi = adapter.phi
    device = phi.device
    X_train, y_train = data.X_train.to(device), data.y_train.to(device)
    guided = value is not None and config.value_weight > 0 and rule is None
    if value is not None and (config.adapt_steps > 0 or next(value.parameters()).device != device):
        # A private copy: online adaptation must not touch the meta-learned weights, and devices follow
        # phi (a value function loaded from a checkpoint, on the CPU, guides a CUDA adapter).
        value = copy.deepcopy(value).to(device)
    optimizer = _make_optimizer(config, phi)
    if rule is not None:
        rule.reset(phi.detach())
    observe_at = set(evaluation_steps(config.steps, config.evaluations).tolist())
    batches = shuffled_batches(len(X_train), config.batch_size, torch.Generator().manual_seed(seed))
    trajectory = Trajectory()
    result = FineTuneResult(trajectory, phi.detach().clone(), 0, None)
    best_cost = math.inf
    last_raw: float | None = None  # the raw metric on the selecting rows (without selection rows: the validation rows)
    last_cost: float | None = None  # the latest guiding cost (what a learned rule sees)
    selecting = data.X_select is not None
    adapter.eval()
    for step in range(config.steps + 1):
        trajectory.record(phi)
        row: dict[str, float] = {"step": float(step)}
        if step in observe_at:
            raw = metric.safe_evaluate(adapter, data.X_val, data.y_val, on_error=config.on_error)
            chosen = (metric.safe_evaluate(adapter, data.X_select, data.y_select, on_error=config.on_error)
                      if selecting else raw)
            last_raw = chosen
            result.skipped += (raw is None) + (selecting and chosen is None)
            if raw is not None:
                cost = last_cost = metric.cost(raw)
                trajectory.observe(step, cost)
                row["cost"] = cost
                if value is not None and config.adapt_steps > 0 and len(trajectory.observed_steps) >= 2:
                    adapt_value(value, trajectory, steps=config.adapt_steps,
                                learning_rate=config.adapt_learning_rate)
            if chosen is not None:
                chosen_cost = metric.cost(chosen)
                if selecting:
                    row["select_cost"] = chosen_cost
                if chosen_cost < best_cost:
                    best_cost = chosen_cost
                    result.phi, result.best_step, result.best_value = phi.detach().clone(), step, chosen
                row["best_cost"] = best_cost
        if step < config.steps:
            index = next(batches)
            loss = loss_fn(logits_for_loss(adapter(X_train[index])), y_train[index])
            (gradient,) = torch.autograd.grad(loss, phi)
            if rule is not None:
                with torch.no_grad():
                    phi.copy_(rule.step(phi.detach(), gradient, float(loss.detach()), last_cost))
            else:
                if guided:
                    gradient = gradient + config.value_weight * _value_gradient(value, phi)
                phi.grad = gradient
                optimizer.step()
            trajectory.losses.append(float(loss.detach()))
            row["loss"] = trajectory.losses[-1]
        result.history.append(row)
        if progress is not None:
            progress(row)
    if not config.keep_best or result.best_value is None:
        result.phi, result.best_step, result.best_value = phi.detach().clone(), config.steps, last_raw
    adapter.reset_phi(result.phi)
    return result
