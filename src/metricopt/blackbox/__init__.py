"""MetricOpt: optimise a black-box metric by fine-tuning small adapter parameters.

A user has a pre-trained model and a metric that exists only as a function
(``metric(y_true, y_score) -> float`` or ``metric(model) -> float``). The
black-box family fine-tunes a small vector ``phi`` attached to the frozen model
so that the metric improves, guided by a learned, differentiable value function
``f_w(phi)`` that predicts the metric (MetricOpt, Huang et al., CVPR 2021).

The pieces, one idea per module:

* :mod:`~metricopt.blackbox.adapters`: :class:`InputBias` (``phi`` concatenated
  to the first layer's input, for MLPs) and :class:`FiLM` (per-channel scale and
  shift driven by ``phi``, for conv and linear layers), hooked onto any
  ``nn.Module`` whose weights stay frozen.
* :mod:`~metricopt.blackbox.metric`: the black-box metric contract
  (:func:`make_metric`: built-in names ``mcr``, ``aucpr``, ``cost``, the
  confusion and rank metrics, ``recall@K`` of a retrieval model's embeddings,
  or ``"module:function"`` with an explicit direction); failures raise
  :class:`MetricError` or are skipped with a warning.
* :mod:`~metricopt.blackbox.trajectory` and
  :mod:`~metricopt.blackbox.interpolation`: fine-tuning runs with the metric
  observed ``K`` times (default 5 % of the ``T`` steps), interpolated by a
  Gaussian process into a mean and an uncertainty per step.
* :mod:`~metricopt.blackbox.value`: the value function and its
  uncertainty-weighted loss with a ranking term.
* :mod:`~metricopt.blackbox.meta`: Reptile meta-training over a distribution
  of fine-tuning tasks, with resumable ``weights_only`` checkpoints; a file that
  cannot be loaded (truncated, corrupt, not a metricopt checkpoint, another
  kind or format version) raises :class:`CheckpointError`, a ``ValueError``
  naming the file and the problem.
* :mod:`~metricopt.blackbox.finetune`: SGD/Adam on ``phi`` with the loss
  gradient plus ``value_weight`` times the value gradient, online adaptation
  of the value function, the best observed ``phi`` kept (chosen on separate
  selection rows when the data has them).
* :mod:`~metricopt.blackbox.diagnostics`: the value function's held-out rank
  correlation with the metric and the rule that decides whether it may guide
  (:func:`trust_value`).
* :mod:`~metricopt.blackbox.threshold`: the obvious alternative for a
  threshold metric, the pre-trained model's decision threshold tuned by the
  black-box metric (:func:`tune_threshold`), also a starting point for
  fine-tuning.
* :mod:`~metricopt.blackbox.learned`: MetricOpt (learned), an MLP update rule
  meta-trained with the value function on a Gaussian-smoothed objective, used
  in place of SGD/Adam (``finetune(..., rule=optimizer)``), built from
  :mod:`~metricopt.blackbox.learned_rule` (the update rule),
  :mod:`~metricopt.blackbox.learned_objective` (``L_opt`` and the
  differentiable unroll) and :mod:`~metricopt.blackbox.smoothing` (the gradient
  of the Gaussian-smoothed objective); ``learned`` re-exports their public names.

Internally every metric is a *cost* (lower is better: ``1 - score`` for a
score).

Devices follow the adapter: whatever meets ``phi`` or the backbone's outputs
(the adapter's projections, the value function, the learned rule's weights
and state, the training data) moves to their device, so a value function or a
learned optimizer loaded from a checkpoint (on the CPU) guides a CUDA adapter
as it is. Trajectories are kept on the CPU.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from metricopt.blackbox import FineTuneConfig, InputBias, TaskData, finetune, make_metric
    >>> from metricopt.losses import cross_entropy_loss
    >>> _ = torch.manual_seed(0)
    >>> X = torch.randn(64, 3); y = (X[:, 0] > 0).long()
    >>> adapter = InputBias(nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1)), phi_size=4)
    >>> data = TaskData(X, y.float(), X, y.numpy())
    >>> result = finetune(adapter, cross_entropy_loss, make_metric("mcr"), data,
    ...                   config=FineTuneConfig(steps=10, evaluations=3))
    >>> result.trajectory.observed_steps
    [0, 5, 10]
"""

from metricopt.blackbox.adapters import Adapter, FiLM, InputBias
from metricopt.blackbox.diagnostics import Trust, trust_value
from metricopt.blackbox.finetune import OPTIMIZERS, FineTuneConfig, FineTuneResult, TaskData, UpdateRule, finetune
from metricopt.blackbox.interpolation import MetricCurve, interpolate_metric
from metricopt.blackbox.learned import (
    LearnedConfig,
    LearnedOptimizer,
    LearnedResult,
    SecondOrderError,
    load_learned,
    meta_train_learned,
)
from metricopt.blackbox.meta import CheckpointError, MetaConfig, MetaResult, TaskDistribution, load_value, meta_train
from metricopt.blackbox.metric import (
    BUILTIN_METRICS,
    BlackBoxMetric,
    MetricError,
    aucpr,
    cost_weighted_error,
    load_function,
    make_metric,
    misclassification_rate,
    retrieval_recall,
)
from metricopt.blackbox.threshold import ShiftedLogit, ThresholdResult, tune_threshold
from metricopt.blackbox.trajectory import Trajectory, evaluation_steps
from metricopt.blackbox.value import ValueFunction, value_loss

__all__ = [
    "BUILTIN_METRICS",
    "OPTIMIZERS",
    "Adapter",
    "BlackBoxMetric",
    "CheckpointError",
    "FiLM",
    "FineTuneConfig",
    "FineTuneResult",
    "InputBias",
    "LearnedConfig",
    "LearnedOptimizer",
    "LearnedResult",
    "MetaConfig",
    "MetaResult",
    "MetricCurve",
    "MetricError",
    "SecondOrderError",
    "ShiftedLogit",
    "TaskData",
    "TaskDistribution",
    "ThresholdResult",
    "Trajectory",
    "Trust",
    "UpdateRule",
    "ValueFunction",
    "aucpr",
    "cost_weighted_error",
    "evaluation_steps",
    "finetune",
    "interpolate_metric",
    "load_learned",
    "load_function",
    "load_value",
    "make_metric",
    "meta_train",
    "meta_train_learned",
    "misclassification_rate",
    "retrieval_recall",
    "trust_value",
    "tune_threshold",
    "value_loss",
]
