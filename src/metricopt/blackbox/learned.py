"""MetricOpt (learned): an MLP update rule trained jointly with the value function.

Method: Huang, Zhai, Guo and Susskind, "MetricOpt: Learning to Optimize Black-Box
Evaluation Metrics", CVPR 2021, supplementary section 2 ("MetricOpt with Jointly
Learned Optimizer", Eq. 1-3, Algorithm 1), which trains its optimizer as Metz,
Maheswaranathan, Nixon, Freeman and Sohl-Dickstein, "Understanding and correcting
pathologies in the training of learned optimizers", ICML 2019. To our knowledge
this is the first public implementation; every choice the two papers leave open
is marked DECIDED, with its reason, below or in the module it concerns.

The pieces, one module each:

* :mod:`~metricopt.blackbox.learned_rule`: :class:`LearnedOptimizer`, the update
  rule ``m_w`` (an ``nn.Module``; ``w`` are its weights), an
  :class:`~metricopt.blackbox.finetune.UpdateRule` that
  :func:`~metricopt.blackbox.finetune.finetune` runs, with a pure,
  differentiable :meth:`~LearnedOptimizer.update`; its inputs, outputs and
  bounds (MetricOpt Eq. 1).
* :mod:`~metricopt.blackbox.learned_objective`: :func:`metric_objective`,
  :func:`loss_objective`, :func:`optimizer_objective` (the paper's
  ``L_opt = lambda L_metric + L_loss``, Eq. 2) and :func:`unroll`, ``L_opt`` of
  ``T`` differentiable steps of the rule on one task.
* :mod:`~metricopt.blackbox.smoothing`: :func:`smoothed_gradient`, the gradient
  of the Gaussian-smoothed objective (Eq. 3) from Metz et al.'s two unbiased
  estimators, merged by inverse-variance weighting.
* this module: :func:`meta_train_learned` (Algorithm 1), :class:`LearnedConfig`,
  :class:`LearnedResult`, :func:`load_learned`.

This module keeps Algorithm 1 and re-exports the public names of the other
three, so ``metricopt.blackbox.learned`` still offers the whole method. What
each paper states and what is DECIDED about the rule, the objective and the
estimators is written in the module that implements it.

Stated by the MetricOpt supplementary:

* Algorithm 1, per task: collect the trajectory of the current learned
  optimizer with ``K`` sparse metric observations; interpolate; adapt the value
  function ``w~_v = w_v - alpha grad L_v``; update the optimizer with the
  adapted value function (Eq. 3); Reptile ``w_v <- w_v + eta (w~_v - w_v)``.
  Only the optimizer is kept for meta-testing. The paper reports about 3x the
  meta-training time of the value-only method.

Taken from Metz et al. (2019), which the supplementary cites for the rule and its
training (the rule's form: :mod:`~metricopt.blackbox.learned_rule`; the two
gradient estimators and their merge: :mod:`~metricopt.blackbox.smoothing`). The
supplementary says only "the same learning rate setting" as Metz et al.; we use
Adam on ``w`` (``learning_rate``, default ``1e-3``: DECIDED).

DECIDED here (both papers are silent or leave a choice):

* Truncation: an unroll covers ``T = min(unroll_steps, budget)`` steps (default
  20) of the collected task, from a start ``s`` drawn among
  ``0, T, 2T, ...`` (``s + T <= budget``), starting from the collected
  ``phi_s`` and the rule's recorded state at ``s`` (running averages, first loss
  and cost), with the metric inputs of the collected trajectory held by step.
  A task collected with plain SGD (the last warm-up task) unrolls from ``s = 0``.
* Meta-training loop: the one :func:`~metricopt.blackbox.meta.meta_train`
  runs (:class:`~metricopt.blackbox.meta.MetaLoop`: checkpoints, resuming,
  warm-up, normalisation, history). Tasks come from
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
* Estimator: the paper's merge by default; ``LearnedConfig(estimator="evolution")``
  for a fine-tuning loss that cannot be differentiated twice (metricopt's rank
  and confusion losses), which the merged estimator refuses up front
  (:class:`~metricopt.blackbox.learned_objective.SecondOrderError`) rather than
  train on a pathwise gradient with the loss's curvature silently missing.
* Devices follow the adapter's ``phi``: the rule and the value function are
  built there; a rule loaded with :func:`load_learned` (on the CPU) runs on
  any device as it is.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import torch
from torch import Tensor

from metricopt._checks import check_choice, check_integer, check_nonnegative, check_positive, describe
from metricopt.blackbox.adaptation import adapt_value
from metricopt.blackbox.adapters import Adapter
from metricopt.blackbox.finetune import FineTuneConfig, LossFn, TaskData, finetune
from metricopt.blackbox.learned_objective import (
    SecondOrderError,
    batch_indices,
    check_second_order,
    loss_objective,
    metric_objective,
    optimizer_objective,
    unroll,
)
from metricopt.blackbox.learned_rule import FEATURES, LearnedOptimizer
from metricopt.blackbox.meta import (
    CheckpointEntry,
    MetaConfig,
    MetaLoop,
    Task,
    TaskDistribution,
    interpolate_weights,
    read_checkpoint,
    reptile_step,
    restoring,
)
from metricopt.blackbox.metric import BlackBoxMetric
from metricopt.blackbox.smoothing import SmoothedGradient, smoothed_gradient
from metricopt.blackbox.trajectory import Trajectory
from metricopt.blackbox.value import ValueFunction

__all__ = [
    "ESTIMATORS",
    "FEATURES",
    "LEARNED_CHECKPOINT_FORMAT",
    "LearnedConfig",
    "LearnedOptimizer",
    "LearnedResult",
    "SecondOrderError",
    "SmoothedGradient",
    "check_second_order",
    "load_learned",
    "loss_objective",
    "meta_train_learned",
    "metric_objective",
    "optimizer_objective",
    "smoothed_gradient",
    "unroll",
]

LEARNED_CHECKPOINT_FORMAT = "metricopt.blackbox.learned/1"
#: How the rule's meta-gradient is estimated (:attr:`LearnedConfig.estimator`).
ESTIMATORS = ("merged", "evolution")


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
        estimator: ``"merged"`` (the paper's: Metz et al.'s pathwise and ES
            estimators merged by inverse variance; the pathwise one needs the
            fine-tuning loss's second derivative) or ``"evolution"`` (the ES
            estimator alone: no derivative of the unroll, so any loss works,
            metricopt's once-differentiable rank and confusion losses
            included; noisier). With ``"merged"``, :func:`meta_train_learned`
            checks the loss first and raises
            :class:`~metricopt.blackbox.learned_objective.SecondOrderError`
            (naming ``loss_fn`` and this option) before any training.
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
    estimator: str = "merged"

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
        check_choice("estimator", self.estimator, ESTIMATORS)
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


def load_learned(path: str | os.PathLike[str]) -> LearnedOptimizer:
    """The learned optimizer stored in a :func:`meta_train_learned` checkpoint (``weights_only`` load), on the CPU.

    It runs on any device as it is: its weights follow ``phi``
    (:meth:`LearnedOptimizer.update`).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: (a ``ValueError``) the file is truncated, corrupt, not a
            learned-optimizer checkpoint of this format, or damaged; the
            message names the file and the problem.
    """
    path = Path(path)
    state = read_checkpoint(path, LEARNED_CHECKPOINT_FORMAT, kind="learned-optimizer",
                            keys=("optimizer_config", "optimizer_state"))
    with restoring(path, argument="path", kind="learned-optimizer"):
        rule = LearnedOptimizer(**state["optimizer_config"])
        rule.load_state_dict(state["optimizer_state"])
    return rule


class _LearnedTraining(MetaLoop):
    """:func:`meta_train_learned` in the shared loop: Algorithm 1 per task (module docstring)."""

    checkpoint_format = LEARNED_CHECKPOINT_FORMAT
    kind = "learned-optimizer"
    config_name = "learned"
    guided = False  # the rule has no value weight to scale

    def __init__(self, adapter: Adapter, loss_fn: LossFn, metric: BlackBoxMetric, pool: TaskData, *,
                 config: LearnedConfig, finetune_config: FineTuneConfig, distribution: TaskDistribution,
                 started: float) -> None:
        self.config = config
        self.rule = LearnedOptimizer(hidden=config.hidden, base_step=config.base_step, seed=config.seed)
        self.rule.to(adapter.phi.device)
        meta = cast(MetaConfig, config.value)  # never None after LearnedConfig.__post_init__
        super().__init__(adapter, loss_fn, metric, pool, config=config, meta=meta, finetune_config=finetune_config,
                         distribution=distribution)
        self.adam = torch.optim.Adam(self.rule.parameters(), lr=config.learning_rate)
        self.started, self.seconds_before = started, 0.0
        budget = finetune_config.steps
        self.length = min(config.unroll_steps, budget)
        self.starts = list(range(0, budget - self.length + 1, self.length))
        self.recorder: _Recorder | None = None

    def seconds(self) -> float:
        """Wall time of the meta-training, summed over resumed runs."""
        return self.seconds_before + time.perf_counter() - self.started

    def _load_seconds(self, seconds: float) -> None:
        self.seconds_before = float(seconds)

    def checkpoint_entries(self) -> dict[str, CheckpointEntry]:
        rule, adam = self.rule, self.adam
        return {"optimizer_config": (rule.config, None), "optimizer_state": (rule.state_dict, rule.load_state_dict),
                "adam_state": (adam.state_dict, adam.load_state_dict), **self.shared_entries(),
                "seconds": (self.seconds, self._load_seconds)}

    def collect(self, task: Task, data: TaskData, *, warmup: bool) -> tuple[Trajectory, dict[str, float]]:
        learned, finetune_config = not warmup, self.finetune_config
        self.recorder = _Recorder(self.rule, set(self.starts)) if learned else None
        task_config = finetune_config if learned else dataclasses.replace(
            finetune_config, learning_rate=finetune_config.learning_rate * task.learning_rate_factor)
        run = finetune(self.adapter, self.loss_fn, self.metric, data, config=task_config, rule=self.recorder,
                       initial_phi=task.initial_phi, seed=task.seed)
        row = {"task": float(task.index), "learned_rule": float(learned), **self.cost_columns(run.trajectory),
               "unroll_start": math.nan, "objective": math.nan, "pathwise_variance": math.nan,
               "evolution_variance": math.nan, "nonfinite": 0.0, "skipped_updates": 0.0,
               "collect_seconds": time.perf_counter() - self.task_started, "value_seconds": 0.0,
               "optimizer_seconds": 0.0}
        return run.trajectory, row

    def update(self, task: Task, data: TaskData, row: dict[str, float], *, usable: bool) -> None:
        if not usable:
            return
        config, meta, rule, value = self.config, self.meta, self.rule, self.value
        index, trajectory, length = task.index, self.trajectories[-1], self.length
        clock = time.perf_counter()
        row["value_loss"] = adapt_value(value, trajectory, steps=0)
        adapted = copy.deepcopy(value)
        adapt_value(adapted, trajectory, steps=meta.inner_steps, learning_rate=meta.inner_learning_rate)
        adapted.requires_grad_(False)
        row["value_seconds"] += time.perf_counter() - clock

        clock = time.perf_counter()
        states = self.recorder.states if self.recorder is not None else {}
        candidates = [s for s in self.starts if s in states] or [0]
        objectives, path_variances, es_variances = [], [], []
        for number in range(config.optimizer_updates):
            generator = torch.Generator().manual_seed(_task_seed(config.seed, index, number))
            begin = candidates[int(torch.randint(len(candidates), (), generator=generator))]
            batches = batch_indices(len(data.X_train), self.finetune_config.batch_size, length + 1,
                                    int(torch.randint(2**31 - 1, (), generator=generator)))
            held = _held_costs(trajectory, begin, length)

            unrolled = functools.partial(
                unroll, rule, self.adapter, self.loss_fn, adapted, data, steps=length, batches=batches,
                initial_phi=trajectory.phis[begin], state=states.get(begin), costs=held,
                metric_weight=config.metric_weight)
            estimate = smoothed_gradient(lambda weights, unrolled=unrolled: unrolled(parameters=weights),
                                         dict(rule.named_parameters()), sigma=config.sigma,
                                         samples=config.samples, generator=generator,
                                         pathwise=config.estimator == "merged")
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
            self.adam.step()
            self.adam.zero_grad(set_to_none=True)
        row["objective"] = sum(objectives) / len(objectives)
        row["pathwise_variance"] = sum(path_variances) / len(path_variances)
        row["evolution_variance"] = sum(es_variances) / len(es_variances)
        row["optimizer_seconds"] = time.perf_counter() - clock

        clock = time.perf_counter()
        interpolate_weights(value, adapted, meta.meta_step)
        replay = torch.Generator().manual_seed(_task_seed(config.seed, index, config.optimizer_updates))
        for position in torch.randint(0, len(self.trajectories), (meta.replay,), generator=replay).tolist():
            reptile_step(value, self.trajectories[position], meta)
        row["value_seconds"] += time.perf_counter() - clock

    def trained(self, row: dict[str, float]) -> bool:
        return not math.isnan(row["value_loss"])

    def finish_task(self, row: dict[str, float]) -> None:
        row["seconds"] = time.perf_counter() - self.task_started


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

    Raises:
        SecondOrderError: ``config.estimator="merged"`` with a loss that cannot
            be differentiated twice (the message says what to do).
        CheckpointError: ``checkpoint`` exists but cannot be resumed.
    """
    MetaLoop.check_adapter(adapter)
    if not isinstance(config, LearnedConfig):
        raise TypeError(f"`config` must be a LearnedConfig; got {describe(config)}")
    started = time.perf_counter()
    if config.estimator == "merged":  # fail before any training, not at the first update
        rows = min(len(pool.X_train), finetune_config.batch_size)
        check_second_order(loss_fn, adapter, pool.X_train[:rows], pool.y_train[:rows])
    training = _LearnedTraining(adapter, loss_fn, metric, pool, config=config, finetune_config=finetune_config,
                                distribution=distribution, started=started)
    training.run(checkpoint, resume, progress)
    return LearnedResult(training.rule, training.value, training.history, seconds=training.seconds(),
                         resumed_from=training.resumed_from)
