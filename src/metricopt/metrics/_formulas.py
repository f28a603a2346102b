"""Confusion-matrix metric formulas shared by the exact metrics and the losses.

Conventions:

* Each formula takes per-class counts ``tp, fp, fn, tn`` (tensors of one shape,
  hard integer-valued counts for the exact metrics, soft counts for the losses)
  and returns the score elementwise. Higher is better.
* A ratio whose denominator is zero is 0, as scikit-learn's default
  ``zero_division`` does; ``safe_divide`` and ``safe_sqrt`` keep the gradient of
  such a ratio finite (the double-``where`` trick: the unused branch never sees
  a zero denominator, so no ``0 * inf = NaN`` reaches the backward pass).
* "Zero" means at most ``EMPTY`` (a millionth of a sample). Hard counts are
  whole numbers, so this changes nothing for the exact metrics; soft counts of
  an empty cell are about 1e-16 per sample (A(0) at L = 73), and without the
  cut-off their ratio (prevalence, noise) would replace the 0 that the exact
  metric gives, e.g. for the precision of a class that is never predicted.
* Formulas marked "multiclass" take a full ``(C, C)`` confusion matrix (rows:
  true class, columns: predicted class) and follow scikit-learn's multi-class
  definitions of accuracy, balanced accuracy, MCC and Cohen's kappa.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

CountFormula = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
MatrixFormula = Callable[[Tensor], Tensor]


#: Counts at or below this are empty (a millionth of a sample).
EMPTY = 1e-6


def safe_divide(numerator: Tensor, denominator: Tensor) -> Tensor:
    """``numerator / denominator``, and 0 (with zero gradient) where ``|denominator| <= EMPTY``."""
    zero = denominator.abs() <= EMPTY
    return torch.where(zero, 0.0, numerator / torch.where(zero, 1.0, denominator))


def safe_sqrt(value: Tensor) -> Tensor:
    """``sqrt(value)`` for ``value >= 0``, with a zero (not infinite) gradient at 0."""
    positive = value > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, value, 1.0)), torch.zeros_like(value))


# --- formulas on per-class counts -------------------------------------------------


def accuracy(tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor) -> Tensor:
    """(TP + TN) / (TP + FP + FN + TN)."""
    return safe_divide(tp + tn, tp + fp + fn + tn)


def precision(tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor) -> Tensor:
    """TP / (TP + FP)."""
    return safe_divide(tp, tp + fp)


def recall(tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor) -> Tensor:
    """TP / (TP + FN), the true positive rate (sensitivity)."""
    return safe_divide(tp, tp + fn)


def specificity(tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor) -> Tensor:
    """TN / (TN + FP), the true negative rate."""
    return safe_divide(tn, tn + fp)


def fbeta(tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor, beta: float = 1.0) -> Tensor:
    """(1 + b^2) TP / ((1 + b^2) TP + b^2 FN + FP); beta > 1 favours recall."""
    b2 = beta * beta
    return safe_divide((1 + b2) * tp, (1 + b2) * tp + b2 * fn + fp)


def balanced_accuracy(tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor) -> Tensor:
    """Mean of TPR and TNR over the classes present in the target.

    scikit-learn drops a class without true samples from the mean, so a batch
    without positives scores its TNR alone.
    """
    has_pos = (tp + fn > EMPTY).to(tp.dtype)
    has_neg = (tn + fp > EMPTY).to(tp.dtype)
    rates = recall(tp, fp, fn, tn) * has_pos + specificity(tp, fp, fn, tn) * has_neg
    return safe_divide(rates, has_pos + has_neg)


def _geometric_mean(tpr: Tensor, tnr: Tensor) -> Tensor:
    return safe_sqrt(tpr * tnr)


def gmean(tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor) -> Tensor:
    """sqrt(TPR * TNR), imbalanced-learn's geometric mean score for one class."""
    return _geometric_mean(recall(tp, fp, fn, tn), specificity(tp, fp, fn, tn))


def mcc(tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor) -> Tensor:
    """(TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)); 0 when undefined."""
    # Two square roots of pair products keep the denominator inside float32 range.
    denominator = safe_sqrt((tp + fp) * (tp + fn)) * safe_sqrt((tn + fp) * (tn + fn))
    return safe_divide(tp * tn - fp * fn, denominator)


def jaccard(tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor) -> Tensor:
    """TP / (TP + FP + FN), the intersection over union."""
    return safe_divide(tp, tp + fp + fn)


def kappa(tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor) -> Tensor:
    """Cohen's kappa, 2 (TP TN - FP FN) / ((TP+FP)(FP+TN) + (TP+FN)(FN+TN)); 0 when undefined."""
    return safe_divide(2 * (tp * tn - fp * fn), (tp + fp) * (fp + tn) + (tp + fn) * (fn + tn))


# --- formulas on a full (C, C) confusion matrix -------------------------------


def multiclass_accuracy(cm: Tensor) -> Tensor:
    """Trace over total."""
    return safe_divide(torch.diagonal(cm, dim1=-2, dim2=-1).sum(-1), cm.sum((-2, -1)))


def multiclass_balanced_accuracy(cm: Tensor) -> Tensor:
    """Mean recall over the classes that have true samples (scikit-learn)."""
    support = cm.sum(-1)
    present = (support > EMPTY).to(cm.dtype)
    recalls = safe_divide(torch.diagonal(cm, dim1=-2, dim2=-1), support)
    return safe_divide((recalls * present).sum(-1), present.sum(-1))


def multiclass_mcc(cm: Tensor) -> Tensor:
    """Gorodkin's multi-class MCC, as ``sklearn.metrics.matthews_corrcoef``; 0 when undefined."""
    true_sum, pred_sum = cm.sum(-1), cm.sum(-2)
    correct = torch.diagonal(cm, dim1=-2, dim2=-1).sum(-1)
    total = cm.sum((-2, -1))
    cov_true_pred = correct * total - (true_sum * pred_sum).sum(-1)
    cov_pred = total * total - (pred_sum * pred_sum).sum(-1)
    cov_true = total * total - (true_sum * true_sum).sum(-1)
    return safe_divide(cov_true_pred, safe_sqrt(cov_true) * safe_sqrt(cov_pred))


def multiclass_kappa(cm: Tensor) -> Tensor:
    """Cohen's kappa on the full matrix, as scikit-learn; 0 where scikit-learn returns NaN.

    kappa = 1 - observed / expected disagreement, both scaled by the total so
    that the denominator is a whole number for hard counts.
    """
    total = cm.sum((-2, -1))
    chance = cm.sum(-1).unsqueeze(-1) * cm.sum(-2).unsqueeze(-2)
    off_diagonal = 1.0 - torch.eye(cm.shape[-1], dtype=cm.dtype, device=cm.device)
    expected_errors = (off_diagonal * chance).sum((-2, -1))
    observed_errors = (off_diagonal * cm).sum((-2, -1)) * total
    return safe_divide(expected_errors - observed_errors, expected_errors)


# --- the table of named metrics --------------------------------------------------


@dataclass(frozen=True)
class MetricSpec:
    """A named confusion-matrix metric.

    Attributes:
        name: the public name.
        formula: score from per-class counts ``(tp, fp, fn, tn)``.
        lower_bound: the smallest score (0 or -1); the loss maps
            ``[lower_bound, 1]`` onto ``[1, 0]``.
        multiclass: score from a full confusion matrix, for metrics that
            scikit-learn defines on it for multi-class targets (else None).
        takes_beta: whether ``beta`` reaches the formula.
        components: for metrics that average their parts before combining
            them (imbalanced-learn's macro G-mean is sqrt(mean TPR * mean TNR)),
            the part formulas; ``formula`` must equal ``combine`` of the parts.
        combine: joins the averaged parts into the score.
    """

    name: str
    formula: CountFormula
    lower_bound: float = 0.0
    multiclass: MatrixFormula | None = None
    takes_beta: bool = False
    components: tuple[CountFormula, ...] = ()
    combine: Callable[..., Tensor] | None = None

    def bind(self, beta: float) -> CountFormula:
        """The count formula with ``beta`` applied where it matters."""
        return partial(self.formula, beta=beta) if self.takes_beta else self.formula


METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec("accuracy", accuracy, multiclass=multiclass_accuracy),
        MetricSpec("precision", precision),
        MetricSpec("recall", recall),
        MetricSpec("specificity", specificity),
        MetricSpec("f1", fbeta),
        MetricSpec("fbeta", fbeta, takes_beta=True),
        MetricSpec("balanced_accuracy", balanced_accuracy, multiclass=multiclass_balanced_accuracy),
        MetricSpec("gmean", gmean, components=(recall, specificity), combine=_geometric_mean),
        MetricSpec("mcc", mcc, lower_bound=-1.0, multiclass=multiclass_mcc),
        MetricSpec("jaccard", jaccard),
        MetricSpec("kappa", kappa, lower_bound=-1.0, multiclass=multiclass_kappa),
    )
}
