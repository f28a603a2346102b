"""The confusion-matrix loss family: any metric of (TP, FP, FN, TN) as a loss.

Method: AnyLoss (Han, Moniz and Chawla, "AnyLoss: Transforming Classification
Metrics into Loss Functions", KDD 2024). Logits become probabilities (sigmoid for
binary and multi-label, softmax for multi-class), probabilities become amplified
near-hard predictions, and those are summed into a soft confusion matrix over
the batch (:mod:`metricopt.losses.soft_confusion`; multi-class targets use a
sharpened softmax instead). The metric's own formula,
the one the exact metric uses on hard counts, is applied to the soft counts:

    loss = (1 - M(TP, FP, FN, TN)) / (1 - m),

where m is the lowest score (0 for most metrics, -1 for MCC and kappa), so the
loss lies in [0, 1] and is 0 exactly when the metric is perfect. Predict with
``p > 0.5`` (binary, multi-label) or argmax (multi-class): no threshold tuning.

Shapes (PyTorch order, ``(input, target)``):

* binary: logits ``(N,)`` or ``(N, 1)``, target ``(N,)`` or ``(N, 1)`` in {0, 1};
* multi-class: logits ``(N, C)``, target ``(N,)`` integer classes in [0, C);
* multi-label: logits ``(N, C)``, target ``(N, C)`` in {0, 1}.

Two-column logits ``(N, 2)`` with a ``(N,)`` target are a two-class
multi-class problem (softmax, macro average by default), while the exact
metrics read 0/1 labels as binary; give binary models one logit ``(N,)`` so
that the loss and the reported metric agree.

The loss is non-decomposable: it is defined on the whole batch, so larger
batches estimate the metric better. Half-precision logits are computed in float32.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from metricopt._autocast import full_precision
from metricopt._checks import check_finite, check_positive, check_tensor, describe
from metricopt.distributed import gather_batch, is_distributed
from metricopt.losses.constrained import (
    DEFAULT_CONSTRAINED_AMPLIFICATION,
    DEFAULT_CONSTRAINT_METHOD,
    DEFAULT_CONSTRAINT_STRENGTH,
    ConstraintMultipliers,
    batch_threshold,
    check_multipliers,
)
from metricopt.losses.count_average import CountAverage
from metricopt.losses.soft_confusion import (
    auto_amplification,
    soft_confusion_matrix_here,
    soft_counts_and_status,
)
from metricopt.metrics._average import (
    average_metric,
    both_classes,
    counts_from_confusion_matrix,
    resolve_average,
)
from metricopt.metrics.confusion import MetricArg, resolve_metric
from metricopt.metrics.constrained import is_constrained, parse_constrained

__all__ = ["confusion_loss", "ConfusionLoss", "infer_task"]

#: The paper's default steepness: the largest integer with A(1) < 1 in float64.
DEFAULT_AMPLIFICATION = 73.0
#: Multi-class softmax sharpness, chosen by a sweep (docs/design.md, "Confusion-matrix losses (AnyLoss)").
DEFAULT_SHARPNESS = 2.0


def infer_task(logits: Tensor, target: Tensor, *, allow_empty: bool = False) -> str:
    """``"binary"``, ``"multiclass"`` or ``"multilabel"`` from the input shapes.

    ``allow_empty`` accepts a batch of zero samples (with at least one class):
    a process's share of a batch under ``torch.distributed`` may be empty.

    Raises:
        ValueError: if the shapes fit none of the three tasks.
    """
    if logits.numel() == 0 and not (allow_empty and logits.ndim > 0 and logits.shape[1:].numel() > 0):
        raise ValueError(f"`logits` must hold at least one sample and one class; got shape {tuple(logits.shape)}")
    squeezed = logits.squeeze(-1) if logits.ndim == 2 and logits.shape[1] == 1 else logits
    target_squeezed = target.squeeze(-1) if target.ndim == 2 and target.shape[1] == 1 else target
    if squeezed.ndim == 1 and target_squeezed.shape == squeezed.shape:
        return "binary"
    if logits.ndim == 2 and target.ndim == 1 and target.shape[0] == logits.shape[0]:
        return "multiclass"
    if logits.ndim == 2 and target.shape == logits.shape:
        return "multilabel"
    raise ValueError(
        "`logits` and `target` shapes do not match: expected logits (N,) or (N, 1) with target (N,), "
        "logits (N, C) with integer target (N,), or logits (N, C) with target (N, C); "
        f"got logits {tuple(logits.shape)} and target {tuple(target.shape)}"
    )


def _check_target(task: str, target: Tensor, num_classes: int) -> None:
    """Raise the error that names `target` and its bad values; the elementwise check of the slow path."""
    if task == "multiclass" and (target.is_floating_point() or target.dtype == torch.bool):
        raise ValueError(f"multi-class `target` must hold integer class indices; got {describe(target)}")
    if target.dtype == torch.bool:
        return
    if target.is_floating_point():
        binary = (target == 0) | (target == 1)
        if not bool(binary.all()):
            bad = target[~binary].flatten()[:3].tolist()
            raise ValueError(f"{task} `target` must hold only 0 and 1; got values such as {bad}")
        return
    low, high = (int(v) for v in torch.aminmax(target))
    if task == "multiclass" and (low < 0 or high >= num_classes):
        raise ValueError(
            f"multi-class `target` must lie in [0, {num_classes}) for logits with {num_classes} columns; "
            f"got values from {low} to {high}"
        )
    if task != "multiclass" and (low < 0 or high > 1):
        raise ValueError(f"{task} `target` must hold only 0 and 1; got values from {low} to {high}")


def _check_inputs(status: Tensor, logits: Tensor, task: str, target: Tensor) -> bool:
    """One sync on the status; only if it is nonzero, the elementwise checks that name the bad values.

    Returns whether the status was nonzero (and the inputs passed the elementwise checks nonetheless).
    """
    try:
        suspect = status.item() != 0  # NaN != 0 too
    except RuntimeError as error:  # torch.vmap cannot read one value for every batch entry
        if not torch._C._are_functorch_transforms_active():
            raise
        raise RuntimeError("confusion_loss(validate=True) checks its inputs on the host, which torch.vmap cannot do; "
                           "check the batch before vmap and pass validate=False") from error
    if suspect:
        check_finite("logits", logits)
        _check_target(task, target, logits.shape[-1])
    return suspect


def _range_status(target: Tensor, top: int) -> Tensor:
    """1 where ``target`` leaves [0, top] (one fused min/max reduction), else 0."""
    low, high = torch.aminmax(target)
    return (low < 0) | (high > top)


def _scores(
    logits: Tensor, target: Tensor, task: str, metric: MetricArg, amplification: float | str, sharpness: float,
    average: str | None, beta: float, validate: bool, count_average: CountAverage | None = None,
) -> tuple[Tensor, float, Tensor | None]:
    """The soft metric score(s), the metric's lower bound, and an input status still to be checked.

    Validation costs no pass over the data per check: a NaN or infinite logit
    makes ``0 * sum(logits)`` NaN, and binary and multi-label labels are
    checked by ``sum y (1 - y)`` over the converted labels the counts use
    (:func:`~metricopt.losses.soft_confusion.soft_counts_and_status`); float
    labels and multi-class classes take one ``aminmax``. One sync reads the
    status; only a nonzero status runs the elementwise checks that raise
    with the bad values. The check precedes the formula, so that an error
    names the input rather than the metric, except for a callable metric on
    binary or multi-label input, whose status is returned so that the caller
    checks it with the score in the same sync.
    """
    spec, formula = resolve_metric(metric, beta)
    average = resolve_average(average, task, spec)
    status = None
    if task == "multiclass":
        if validate:  # before one_hot, which fails on out-of-range classes with an error of its own
            _check_inputs(logits.detach().sum() * 0 + _range_status(target, logits.shape[-1] - 1), logits, task, target)
        cm = soft_confusion_matrix_here(logits, target.long(), sharpness)
        support = None
        if count_average is not None:  # the class supports (exact) are averaged with the matrix
            support = torch.bincount(target.long(), minlength=logits.shape[-1]).to(cm.dtype)
            cm, support = count_average.blend((cm, support), logits.shape[0])
        if average == "multiclass":
            return spec.multiclass(cm), spec.lower_bound, None  # type: ignore[union-attr]
        if support is None:
            support = torch.bincount(target.long(), minlength=logits.shape[-1])
        counts = counts_from_confusion_matrix(cm, support)
    else:
        if task == "binary" and logits.ndim == 2:  # (N,) logits give 0-d counts: no indexing for the binary average
            logits = logits.reshape(-1)
        if task == "binary" and target.ndim == 2:
            target = target.reshape(-1)
        steepness = auto_amplification(torch.sigmoid(logits)) if amplification == "auto" else amplification
        counts, status = soft_counts_and_status(logits, target, steepness, check=validate)
        # float labels: confined to [0, 1], where sum y (1 - y) cannot cancel
        if validate and target.is_floating_point():
            status = status + _range_status(target, 1)
        if validate and (not callable(metric) or count_average is not None):  # a bad batch never enters the average
            _check_inputs(status, logits, task, target)  # type: ignore[arg-type]
            status = None
        if count_average is not None:
            counts = count_average.blend(counts, logits.shape[0])
        if task == "binary" and average != "binary":
            counts = both_classes(*(c.reshape(1) for c in counts))
    score = average_metric(spec, formula, *counts, average)
    return score, (0.0 if spec is None else spec.lower_bound), status


def resolve_amplification(amplification: float | str | None, metric: MetricArg) -> float | str:
    """``amplification`` checked (a number > 0 or ``"auto"``), None replaced by the metric's default."""
    if amplification is None:
        return DEFAULT_CONSTRAINED_AMPLIFICATION if is_constrained(metric) else DEFAULT_AMPLIFICATION
    return amplification if amplification == "auto" else check_positive("amplification", amplification)


def confusion_loss(
    logits: Tensor,
    target: Tensor,
    metric: MetricArg = "f1",
    *,
    amplification: float | str | None = None,
    sharpness: float = DEFAULT_SHARPNESS,
    average: str | None = "auto",
    beta: float = 1.0,
    validate: bool = True,
    distributed: bool = True,
    count_average: CountAverage | None = None,
    multipliers: ConstraintMultipliers | None = None,
) -> Tensor:
    """AnyLoss: ``1 - metric`` on a soft confusion matrix of amplified probabilities.

    Args:
        logits: raw model outputs, ``(N,)``/``(N, 1)`` binary, ``(N, C)``
            multi-class or multi-label.
        target: ``(N,)`` in {0, 1} (binary), ``(N,)`` integer classes
            (multi-class) or ``(N, C)`` in {0, 1} (multi-label).
        metric: ``"accuracy"``, ``"f1"``, ``"fbeta"``, ``"precision"``,
            ``"recall"``, ``"specificity"``, ``"balanced_accuracy"``, ``"gmean"``,
            ``"mcc"``, ``"jaccard"``, ``"kappa"``, a callable
            ``f(tp, fp, fn, tn) -> score`` in torch operations (higher is better,
            the loss is ``1 - score``), or a constrained metric such as
            ``"recall@precision>=0.95"`` or ``"tpr@fpr<=0.01"``
            (:mod:`metricopt.metrics.constrained`; needs ``multipliers``).
        amplification: binary and multi-label: the steepness L of
            ``A(p) = sigmoid(L (p - 0.5))``, > 0. Larger L makes the soft counts
            closer to the hard ones but the gradient more local to p = 0.5; the
            paper found 30 to 110 good and chose 73. ``"auto"`` scales L to the
            batch (see :func:`~metricopt.losses.soft_confusion.auto_amplification`).
            None: 73 (:data:`DEFAULT_AMPLIFICATION`), 20 for a constrained
            metric (:data:`~metricopt.losses.constrained.DEFAULT_CONSTRAINED_AMPLIFICATION`).
        sharpness: multi-class: the soft prediction is
            ``softmax(sharpness * logits)`` (> 0; see
            :mod:`~metricopt.losses.soft_confusion` for why 2).
        average: how per-class scores combine: ``"auto"``, ``"binary"``,
            ``"macro"``, ``"micro"``, ``"weighted"``, ``"multiclass"``, or
            ``"none"``/``None`` for a per-class loss vector.
        beta: weight of recall for ``metric="fbeta"``.
        validate: check the inputs (finite logits, targets in range) and a
            callable metric's score. Costs one device sync and no extra pass
            over the data (the checks read numbers the loss computes anyway,
            or one fused reduction); False skips the sync.
        distributed: under ``torch.distributed`` (an initialised process group of
            two or more processes), compute the loss of the global batch,
            gathered from every process in rank order with gradients
            (:func:`metricopt.distributed.gather`), so DDP's averaged gradients
            equal one process's on the whole batch; False: this process's
            batch only.
        count_average: a :class:`~metricopt.losses.count_average.CountAverage`
            that blends the batch's soft counts with their running average
            across batches while training (the metric at the average, the
            gradient through the batch); None: the batch's counts alone.
            :class:`ConfusionLoss` keeps one with ``count_momentum``.
        multipliers: a constrained metric's
            :class:`~metricopt.losses.constrained.ConstraintMultipliers`: the
            Lagrange multipliers, used in the loss and, while it is in training
            mode with gradients enabled, updated in place by one dual step
            (as ``batch_norm`` updates its running statistics;
            :mod:`metricopt.losses.constrained`). :class:`ConfusionLoss` keeps one.

    Returns:
        A scalar loss in [0, 1] (a ``(C,)`` vector for ``average="none"``);
        a constrained metric adds its constraint terms to it, which may take
        it outside [0, 1] (:mod:`metricopt.losses.constrained`).

    Raises:
        ValueError: unknown metric or average, mismatched shapes, targets
            outside the allowed set, NaN or inf logits, amplification <= 0.

    Examples:
        >>> logits = torch.tensor([3.0, -2.0, 0.5, -4.0], requires_grad=True)
        >>> target = torch.tensor([1, 0, 0, 1])
        >>> loss = confusion_loss(logits, target, "f1")
        >>> round(loss.item(), 3)   # soft F1 = 2 TP / (2 TP + FP + FN) = 2 / 4
        0.5
        >>> loss.backward()
        >>> bool(torch.isfinite(logits.grad).all())
        True

    References:
        Han, Moniz, Chawla. AnyLoss: Transforming Classification Metrics into
        Loss Functions. KDD 2024.
    """
    check_tensor("logits", logits)
    check_tensor("target", target)
    if not logits.is_floating_point():
        raise TypeError(f"`logits` must be a floating-point tensor; got {describe(logits)}")
    amplification = resolve_amplification(amplification, metric)
    sharpness = check_positive("sharpness", sharpness)
    gathering = distributed is True and is_distributed()
    task = infer_task(logits, target, allow_empty=gathering)  # a process's share may be empty, the batch not
    if task == "multiclass" and (target.is_floating_point() or target.dtype == torch.bool):
        raise ValueError(f"multi-class `target` must hold integer class indices; got {describe(target)}")
    if is_constrained(metric):  # the objective's soft counts minus the multipliers' constraint terms
        constrained = parse_constrained(metric)
        resolve_metric(constrained, beta)  # beta belongs to an fbeta objective only
        multipliers = check_multipliers(multipliers)
        metric, constrained_beta, beta = multipliers.formula(constrained, beta), beta, 1.0
    elif multipliers is not None:
        raise ValueError(f"`multipliers` apply to a constrained metric such as 'recall@precision>=0.95'; got "
                         f"metric={describe(metric)}")
    logits, target = gather_batch(logits, target, enabled=distributed)
    if logits.shape[0] == 0:
        raise ValueError(f"`logits` must hold at least one sample in the batch gathered from every process; "
                         f"got shape {tuple(logits.shape)}")
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # float32 maths; autograd casts the gradient back to the half logits
    if multipliers is not None and multipliers.method == "quantile":  # the batch's own best feasible threshold
        if task == "multiclass":
            raise ValueError("constraint_method='quantile' moves a sigmoid's threshold: it needs a binary or "
                             "multi-label target; got a multi-class one (use 'lagrangian')")
        logits = logits - batch_threshold(logits, target, constrained, constrained_beta)
    with full_precision(logits):  # the counts and the formula in float32, also under autocast
        score, lower_bound, status = _scores(
            logits, target, task, metric, amplification, sharpness, average, beta, validate, count_average)
        loss = 1 - score if lower_bound == 0 else (1 - score) / (1 - lower_bound)
    if validate and callable(metric):  # the inputs (binary, multi-label) and the score in one sync
        score_status = loss.detach().sum() * 0
        status = score_status if status is None else status + score_status
        if _check_inputs(status, logits, task, target) and not bool(torch.isfinite(loss).all()):
            raise ValueError(
                f"`metric` {getattr(metric, '__name__', metric)!r} returned a non-finite score: {loss.tolist()}"
            )
    if multipliers is not None:
        if multipliers.training and torch.is_grad_enabled() and not torch._C._are_functorch_transforms_active():
            multipliers.update()
        else:
            multipliers.discard()
    return loss


class ConfusionLoss(nn.Module):
    """Module form of :func:`confusion_loss`: stores the options, ``forward`` calls it.

    ``count_momentum`` (in (0, 1], default None: off) keeps a
    :class:`~metricopt.losses.count_average.CountAverage` of the soft counts
    across training batches, the weight of each new batch; the loss is then
    the metric of the running average (while ``self.training`` and gradients
    are enabled) with the current batch's gradient.

    A constrained metric (``"recall@precision>=0.95"``, ``"tpr@fpr<=0.01"``)
    keeps its Lagrange multipliers in ``self.multipliers``
    (:class:`~metricopt.losses.constrained.ConstraintMultipliers`, with
    ``constraint_method`` and ``constraint_strength``); ``forward`` updates
    them while training (:mod:`metricopt.losses.constrained`).

    Examples:
        >>> criterion = ConfusionLoss("mcc")
        >>> logits = torch.randn(8, 3)                 # multi-class: softmax + soft matrix
        >>> target = torch.tensor([0, 1, 2, 0, 1, 2, 0, 0])
        >>> loss = criterion(logits, target)
        >>> 0.0 <= loss.item() <= 1.0
        True
    """

    higher_is_better = False
    is_differentiable = True

    def __init__(
        self,
        metric: MetricArg = "f1",
        *,
        amplification: float | str | None = None,
        sharpness: float = DEFAULT_SHARPNESS,
        average: str | None = "auto",
        beta: float = 1.0,
        validate: bool = True,
        distributed: bool = True,
        count_momentum: float | None = None,
        constraint_method: str = DEFAULT_CONSTRAINT_METHOD,
        constraint_strength: float = DEFAULT_CONSTRAINT_STRENGTH,
    ) -> None:
        super().__init__()
        resolve_metric(metric, beta)  # fail at construction, not at the first batch
        # a constrained metric is parsed once here, not at every batch
        self.metric = parse_constrained(metric) if is_constrained(metric) else metric
        self.amplification = resolve_amplification(amplification, metric)
        self.sharpness = check_positive("sharpness", sharpness)
        self.average = average
        self.beta = beta
        self.validate = validate
        self.distributed = distributed
        #: The running average of the counts (``count_momentum``: the weight of each new batch), or None.
        self.count_average = None if count_momentum is None else CountAverage(count_momentum)
        #: The Lagrange multipliers of a constrained metric, or None.
        self.multipliers = (ConstraintMultipliers(constraint_method, constraint_strength) if is_constrained(metric)
                            else None)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Loss of a batch; see :func:`confusion_loss`."""
        return confusion_loss(
            logits, target, self.metric, amplification=self.amplification, sharpness=self.sharpness,
            average=self.average,
            beta=self.beta, validate=self.validate, distributed=self.distributed, count_average=self.count_average,
            multipliers=self.multipliers,
        )

    def extra_repr(self) -> str:
        name = self.metric if isinstance(self.metric, str) else getattr(self.metric, "__name__", str(self.metric))
        return (
            f"metric={name!r}, amplification={self.amplification!r}, sharpness={self.sharpness!r}, "
            f"average={self.average!r}"
        )
