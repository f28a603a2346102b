"""Exact confusion-matrix metrics from hard labels (no gradient).

These are the truth that every loss in :mod:`metricopt.losses` is tested and
benchmarked against. They equal scikit-learn's ``accuracy_score``,
``precision_score``, ``recall_score``, ``fbeta_score``, ``jaccard_score``,
``balanced_accuracy_score``, ``matthews_corrcoef``, ``cohen_kappa_score`` and
imbalanced-learn's ``specificity_score`` and ``geometric_mean_score`` with the
same averaging, including degenerate inputs. The complete list of differences:

* Cohen's kappa is 0 where scikit-learn returns NaN (every sample and every
  prediction in one class), as ``cohen_kappa_score(..., replace_undefined_by=0.0)``.
* Binary specificity is TN / (TN + FP), also when no label and no prediction is
  positive (1.0 for an all-negative, all-correct input), where imbalanced-learn's
  ``specificity_score(average="binary")`` returns 0.
* G-mean averages as imbalanced-learn's ``average="binary"``, ``"macro"``
  (sqrt(mean TPR * mean TNR)), ``"micro"``, ``"weighted"`` and ``None``; its
  default ``average="multiclass"`` (the geometric mean of per-class recalls) is
  not offered, so ``"auto"`` is ``"binary"`` or ``"macro"``. A binary G-mean is
  0 when one class is absent (TNR or TPR is 0/0 = 0), as imbalanced-learn's
  ``average="binary"``, while its default scores such an input 1.
* A multi-label ``accuracy`` is the mean per-label accuracy (``1 - hamming_loss``),
  not scikit-learn's subset accuracy.

Targets:

* binary: 1-D labels whose values are within {0, 1}; 1 is the positive class.
* multi-class: 1-D integer labels; the classes are the labels seen in
  ``y_true`` or ``y_pred`` (as scikit-learn), or ``range(num_classes)``.
* multi-label: 2-D ``(N, C)`` indicator arrays of {0, 1}.

Each metric is a function ``<name>_score(y_true, y_pred, *, average="auto", ...)``
returning a float (or an array of per-class scores for ``average="none"``);
``metric_score(y_true, y_pred, metric)`` takes the name or a callable
``f(tp, fp, fn, tn)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metricopt._checks import check_choice, describe
from metricopt.metrics._average import average_metric, counts_from_confusion_matrix, resolve_average
from metricopt.metrics._formulas import METRICS, CountFormula, MetricSpec
from metricopt.metrics.constrained import ConstrainedMetric, is_constrained, parse_constrained

MetricArg = str | ConstrainedMetric | Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]

__all__ = [
    "binary_counts",
    "confusion_matrix",
    "metric_score",
    "resolve_metric",
    "accuracy_score",
    "precision_score",
    "recall_score",
    "specificity_score",
    "f1_score",
    "fbeta_score",
    "balanced_accuracy_score",
    "gmean_score",
    "mcc_score",
    "jaccard_score",
    "kappa_score",
]


def resolve_metric(metric: MetricArg, beta: float = 1.0) -> tuple[MetricSpec | None, CountFormula]:
    """Turn a metric name or callable into ``(spec or None, count formula)``.

    A callable is wrapped so that a result that is not a tensor of the counts'
    shape raises a ``TypeError`` naming ``metric`` where it is computed.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones), or
            a ``beta`` that is negative, not finite, or given (other than 1) to
            a metric that does not use it.
        TypeError: for anything that is neither a string nor a callable.
    """
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (0 <= beta < float("inf")):
        raise ValueError(f"`beta` must be a finite number >= 0; got {describe(beta)}")
    if isinstance(metric, ConstrainedMetric) or (isinstance(metric, str) and is_constrained(metric)):
        parsed = parse_constrained(metric)
        if beta != 1 and parsed.objective != "fbeta":
            raise ValueError(f"`beta` only applies to the objective 'fbeta'; got beta={beta!r} with "
                             f"metric={parsed.name!r}")
        spec = parsed.spec(beta)
        return spec, spec.formula
    if isinstance(metric, str):
        check_choice("metric", metric, METRICS)
        spec = METRICS[metric]
        if beta != 1 and not spec.takes_beta:
            raise ValueError(f"`beta` only applies to metric='fbeta'; got beta={beta!r} with metric={metric!r}")
        return spec, spec.bind(beta)
    if callable(metric):
        return None, _checked_callable(metric)
    raise TypeError(f"`metric` must be a metric name or a callable f(tp, fp, fn, tn); got {describe(metric)}")


def _checked_callable(metric: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]) -> CountFormula:
    def formula(tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor) -> Tensor:
        score = metric(tp, fp, fn, tn)
        if not isinstance(score, Tensor) or score.shape != tp.shape:
            name = getattr(metric, "__name__", "callable")
            raise TypeError(
                f"`metric` {name!r} must return a tensor shaped like its count arguments {tuple(tp.shape)}, "
                f"built with torch operations; got {describe(score)}"
            )
        return score

    return formula


def _as_labels(name: str, values: Any) -> np.ndarray:
    array = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    if array.ndim not in (1, 2) or array.size == 0:
        raise ValueError(f"`{name}` must be a non-empty 1-D label or 2-D indicator array; got shape {array.shape}")
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise ValueError(f"`{name}` must hold integer labels; got values such as {array.ravel()[:3].tolist()}")
        array = array.astype(np.int64)
    elif array.dtype.kind == "b":
        array = array.astype(np.int64)
    elif array.dtype.kind not in "iu":
        raise ValueError(f"`{name}` must hold integer labels; got dtype {array.dtype}")
    return array


def _label_task(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int | None) -> tuple[str, np.ndarray]:
    """The task and the sorted class labels of a pair of label arrays."""
    if y_true.shape != y_pred.shape:
        raise ValueError(f"`y_true` and `y_pred` must have the same shape; got {y_true.shape} and {y_pred.shape}")
    both = np.concatenate([y_true.ravel(), y_pred.ravel()])
    if y_true.ndim == 2:
        if not np.isin(both, (0, 1)).all():
            raise ValueError("multi-label `y_true` and `y_pred` must hold only 0 and 1")
        return "multilabel", np.arange(y_true.shape[1])
    if num_classes is not None:
        if not (0 <= both.min() and both.max() < num_classes):
            raise ValueError(f"labels must lie in [0, {num_classes}) for `num_classes`={num_classes}")
        classes = np.arange(num_classes)
        return ("binary" if num_classes <= 2 else "multiclass"), classes
    classes = np.unique(both)
    return ("binary" if np.isin(classes, (0, 1)).all() else "multiclass"), classes


def confusion_matrix(y_true: Any, y_pred: Any, *, num_classes: int | None = None) -> Tensor:
    """Counts of (true class, predicted class) pairs as a float64 ``(C, C)`` tensor.

    Examples:
        >>> confusion_matrix([0, 1, 1, 2], [0, 2, 1, 2]).long().tolist()
        [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
    """
    y_true, y_pred = _as_labels("y_true", y_true), _as_labels("y_pred", y_pred)
    _, classes = _label_task(y_true, y_pred, num_classes)
    return _matrix(y_true, y_pred, classes)


def _matrix(y_true: np.ndarray, y_pred: np.ndarray, classes: np.ndarray) -> Tensor:
    k = len(classes)
    index = np.searchsorted(classes, y_true) * k + np.searchsorted(classes, y_pred)
    return torch.from_numpy(np.bincount(index, minlength=k * k).reshape(k, k).astype(np.float64))


def _indicator_counts(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[Tensor, ...]:
    """Per-column ``(tp, fp, fn, tn)`` of 0/1 arrays of shape (N, C)."""
    t, p = y_true.astype(bool), y_pred.astype(bool)
    counts = ((t & p).sum(0), (~t & p).sum(0), (t & ~p).sum(0), (~t & ~p).sum(0))
    return tuple(torch.from_numpy(np.asarray(c, dtype=np.float64)) for c in counts)


def binary_counts(y_true: Any, y_pred: Any) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(tp, fp, fn, tn)`` as float64 0-d tensors of binary labels and decisions (1 is positive).

    Examples:
        >>> [int(c) for c in binary_counts([1, 1, 0, 0], [1, 0, 1, 0])]
        [1, 1, 1, 1]
    """
    y_true, y_pred = _as_labels("y_true", y_true), _as_labels("y_pred", y_pred)
    task, _ = _label_task(y_true, y_pred, 2)
    if task != "binary" or y_true.ndim != 1:
        raise ValueError(f"`y_true` and `y_pred` must be 1-D binary labels; got shape {y_true.shape}")
    return tuple(c[0] for c in _indicator_counts(y_true[:, None] == 1, y_pred[:, None] == 1))  # type: ignore[return-value]


def metric_score(
    y_true: Any,
    y_pred: Any,
    metric: MetricArg = "f1",
    *,
    average: str | None = "auto",
    beta: float = 1.0,
    num_classes: int | None = None,
) -> float | np.ndarray:
    """Exact value of a confusion-matrix metric on hard labels.

    Args:
        y_true: true labels, ``(N,)`` or multi-label ``(N, C)``.
        y_pred: predicted labels of the same shape.
        metric: a name from ``metricopt.metrics.METRIC_NAMES``, a constrained
            metric such as ``"recall@precision>=0.95"``
            (:mod:`metricopt.metrics.constrained`: the objective where the
            constraints hold, its worst value elsewhere), or a callable
            ``f(tp, fp, fn, tn) -> score`` written with torch operations.
        average: see :mod:`metricopt.metrics._average`; ``"auto"`` picks
            ``"binary"``, ``"multiclass"`` or ``"macro"`` from the target.
        beta: weight of recall in ``"fbeta"``.
        num_classes: fixes the classes to ``range(num_classes)`` instead of the
            labels seen in ``y_true`` and ``y_pred``.

    Returns:
        A float, or a numpy array of per-class scores when ``average="none"``.

    Examples:
        >>> metric_score([0, 1, 1, 0], [0, 1, 0, 0], "f1")
        0.6666666666666666
        >>> metric_score([0, 1, 2, 2], [0, 2, 2, 2], "recall", average="none").tolist()
        [1.0, 0.0, 1.0]
    """
    spec, formula = resolve_metric(metric, beta)
    y_true, y_pred = _as_labels("y_true", y_true), _as_labels("y_pred", y_pred)
    task, classes = _label_task(y_true, y_pred, num_classes)
    average = resolve_average(average, task, spec)
    if task == "multilabel":
        counts = _indicator_counts(y_true, y_pred)
    elif average == "binary":
        counts = _indicator_counts((y_true == 1)[:, None], (y_pred == 1)[:, None])
    else:
        cm = _matrix(y_true, y_pred, classes)
        if average == "multiclass":
            return float(spec.multiclass(cm))  # type: ignore[union-attr]
        counts = counts_from_confusion_matrix(cm)
    score = average_metric(spec, formula, *counts, average)
    return score.numpy() if average == "none" else float(score)


def _named_score(name: str, summary: str) -> Callable[..., float | np.ndarray]:
    def score(
        y_true: Any, y_pred: Any, *, average: str | None = "auto", num_classes: int | None = None, **kwargs: Any
    ) -> float | np.ndarray:
        return metric_score(y_true, y_pred, name, average=average, num_classes=num_classes, **kwargs)

    score.__name__ = score.__qualname__ = f"{name}_score"
    score.__doc__ = (
        f"{summary}\n\nSame arguments as :func:`metric_score` with ``metric={name!r}``"
        + (" (and ``beta``)." if name == "fbeta" else ".")
    )
    return score


accuracy_score = _named_score("accuracy", "Accuracy: fraction of correct predictions.")
precision_score = _named_score("precision", "Precision, TP / (TP + FP).")
recall_score = _named_score("recall", "Recall (sensitivity, TPR), TP / (TP + FN).")
specificity_score = _named_score("specificity", "Specificity (TNR), TN / (TN + FP).")
f1_score = _named_score("f1", "F1 score, the harmonic mean of precision and recall.")
fbeta_score = _named_score("fbeta", "F-beta score; beta > 1 weighs recall more.")
balanced_accuracy_score = _named_score("balanced_accuracy", "Balanced accuracy, the mean recall over classes.")
gmean_score = _named_score("gmean", "Geometric mean of sensitivity and specificity, sqrt(TPR * TNR).")
mcc_score = _named_score("mcc", "Matthews correlation coefficient, in [-1, 1].")
jaccard_score = _named_score("jaccard", "Jaccard index, TP / (TP + FP + FN).")
kappa_score = _named_score("kappa", "Cohen's kappa, agreement beyond chance, in [-1, 1].")
