"""From per-class counts to one score: the averaging rules of scikit-learn.

Shared by the exact metrics (hard counts) and the confusion-matrix losses
(soft counts), so a score and its loss average the same way.

``average``:

* ``"binary"``: the positive class only (counts of shape ``(1,)``, or 0-d).
* ``"macro"``: unweighted mean of the per-class scores.
* ``"micro"``: the score of the counts summed over classes.
* ``"weighted"``: mean of the per-class scores weighted by support (TP + FN).
* ``"none"``: the per-class scores.
* ``"multiclass"``: the metric's own definition on the full confusion matrix
  (accuracy, balanced accuracy, MCC and kappa, as scikit-learn defines them for
  multi-class targets).
* ``"auto"``: ``"binary"`` for binary targets; for multi-class targets
  ``"multiclass"`` where the metric has one, else ``"macro"``; ``"macro"`` for
  multi-label targets.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metricopt._checks import check_choice
from metricopt.metrics._formulas import CountFormula, MetricSpec, safe_divide

AVERAGES = ("auto", "binary", "macro", "micro", "weighted", "none", "multiclass")
TASKS = ("binary", "multiclass", "multilabel")


def resolve_average(average: str | None, task: str, spec: MetricSpec | None) -> str:
    """Check ``average`` against the task and metric and replace ``"auto"``.

    Args:
        average: one of ``AVERAGES`` (``None`` means ``"none"``).
        task: ``"binary"``, ``"multiclass"`` or ``"multilabel"``.
        spec: the named metric, or None for a user-supplied callable.
    """
    average = "none" if average is None else average
    check_choice("average", average, AVERAGES)
    has_matrix_form = spec is not None and spec.multiclass is not None
    if average == "auto":
        if task == "binary":
            return "binary"
        return "multiclass" if task == "multiclass" and has_matrix_form else "macro"
    if average == "multiclass" and not (task == "multiclass" and has_matrix_form):
        name = "a callable metric" if spec is None else f"metric {spec.name!r}"
        raise ValueError(
            "`average`='multiclass' needs a multi-class target and one of the metrics "
            f"accuracy, balanced_accuracy, mcc, kappa; got {name} on a {task} target"
        )
    if average == "binary" and task != "binary":
        raise ValueError(f"`average`='binary' needs a binary target; got a {task} target")
    return average


def counts_from_confusion_matrix(
    cm: Tensor, support: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One-vs-rest ``(tp, fp, fn, tn)`` per class from a ``(C, C)`` matrix (rows: true).

    Args:
        cm: the confusion matrix.
        support: exact per-class sample counts; defaults to the row sums. Soft
            matrices pass the label counts, so that a class without negatives
            gets ``fp = tn = 0`` exactly rather than rounding noise.
    """
    tp = torch.diagonal(cm, dim1=-2, dim2=-1)
    support = cm.sum(-1) if support is None else support.to(cm.dtype)
    fn = support - tp
    fp = cm.sum(-2) - tp
    tn = (support.sum(-1, keepdim=True) - support) - fp
    return tp, fp, fn, tn


def both_classes(tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Binary counts of the positive class ``(1,)`` -> counts of classes 0 and 1 ``(2,)``.

    Class 0's true positives are class 1's true negatives, and so on; this is
    how scikit-learn averages a binary target with ``average="macro"``.
    """
    return torch.cat([tn, tp]), torch.cat([fn, fp]), torch.cat([fp, fn]), torch.cat([tp, tn])


def average_metric(
    spec: MetricSpec | None, formula: CountFormula, tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor, average: str
) -> Tensor:
    """``average_scores``, except that a metric with ``components`` averages them first (macro, weighted)."""
    if spec is not None and spec.components and average in ("macro", "weighted"):
        parts = (average_scores(part, tp, fp, fn, tn, average) for part in spec.components)
        return spec.combine(*parts)  # type: ignore[misc]
    return average_scores(formula, tp, fp, fn, tn, average)


def average_scores(
    formula: CountFormula, tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor, average: str
) -> Tensor:
    """Apply ``formula`` to per-class counts of shape ``(C,)`` and average them.

    ``average`` must already be resolved (not ``"auto"`` or ``"multiclass"``).
    """
    if average == "micro":
        return formula(tp.sum(-1), fp.sum(-1), fn.sum(-1), tn.sum(-1))
    scores = formula(tp, fp, fn, tn)
    if average == "binary":  # counts of the positive class, (1,) or 0-d
        return scores[..., 0] if scores.ndim else scores
    if average == "macro":
        return scores.mean(-1)
    if average == "weighted":
        support = tp + fn
        return safe_divide((scores * support).sum(-1), support.sum(-1))
    return scores  # "none"
