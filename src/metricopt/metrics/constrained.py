"""Constrained confusion-matrix metrics: an objective subject to rate constraints.

The metric that fraud, screening and biometrics teams report is usually
constrained: "recall at 95 % precision", "detection rate at 1 % false alarms".
metricopt writes these as one string, the same for the exact metric, the loss
(:class:`metricopt.ConfusionLoss`), the estimator and the command line::

    <objective>@<rate><op><level>[,<rate><op><level>...]

* objective: a confusion metric (``recall``, ``f1``, ``mcc``, ... see
  ``metricopt.METRIC_NAMES``) or a rate (``tpr``, ``tnr``, ``fpr``, ``fnr``);
* rate: one of :data:`RATES` (``precision``, ``recall``/``tpr``,
  ``specificity``/``tnr``, ``fpr``, ``fnr``);
* op: ``>=`` (a floor) or ``<=`` (a ceiling);
* level: a number in [0, 1].

Examples: ``"recall@precision>=0.95"``, ``"precision@recall>=0.9"``,
``"tpr@fpr<=0.01"`` (Neyman-Pearson), ``"fnr@fpr<=0.001"`` (FNMR at FMR),
``"f1@recall>=0.5,precision>=0.2"``. Names are case-insensitive and spaces are
ignored; :attr:`ConstrainedMetric.name` is the canonical spelling.

Scores, and what they are when the constraint cannot be met:

* **Of decisions** (:func:`constrained_score`, and ``metric_score`` with such a
  string): the objective where every constraint holds; otherwise the
  objective's worst value (:attr:`ConstrainedMetric.worst`: 0, -1 for MCC and
  kappa, 1 for ``fpr``/``fnr``, which are minimised). A rate whose denominator
  is empty is 0, as for the unconstrained metrics, so ``precision>=p`` fails
  when nothing is predicted positive. :func:`constrained_report` gives the
  objective, every constrained rate and whether each constraint held.
* **Of a scorer** (:func:`best_threshold`): the best objective over every
  decision threshold whose decisions meet the constraints (the "recall at
  precision >= p" read off a precision-recall curve); the objective's worst
  value when no threshold meets them. Ties in the scores are one threshold,
  as in scikit-learn's curves.

Multi-class and multi-label targets are scored one-vs-rest: each class's
constraint is checked on its own counts, each class scores its objective or
the worst value, and the classes are averaged (``"macro"``, ``"weighted"`` or
``"none"``; ``"micro"`` pools the counts first). A binary target is scored for
class 1.

Calibration (:func:`calibrate_threshold`): a constraint met on the rows a
threshold was chosen on need not hold on new rows. The threshold is chosen on
validation rows so that a one-sided Wilson lower (upper) confidence bound of
each floor (ceiling) rate meets its level at ``confidence``; 0.5 is the plain
rule (the rate itself must meet it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metricopt._checks import describe
from metricopt.metrics._formulas import (
    METRICS,
    CountFormula,
    MetricSpec,
    precision,
    recall,
    safe_divide,
    specificity,
)

__all__ = [
    "DEFAULT_CONFIDENCE",
    "OBJECTIVES",
    "RATES",
    "ConstrainedMetric",
    "RateConstraint",
    "ThresholdChoice",
    "best_threshold",
    "calibrate_threshold",
    "constraint_z",
    "constrained_report",
    "constrained_score",
    "is_constrained",
    "parse_constrained",
    "parse_constraints",
]


def fpr(tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor) -> Tensor:
    """FP / (FP + TN), the false positive rate (false alarm rate, FMR)."""
    return safe_divide(fp, fp + tn)


def fnr(tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor) -> Tensor:
    """FN / (TP + FN), the false negative rate (miss rate, FNMR)."""
    return safe_divide(fn, tp + fn)


@dataclass(frozen=True)
class _Rate:
    formula: CountFormula
    # (successes, trials) of the binomial proportion, by index into (tp, fp, fn, tn)
    successes: int
    trials: tuple[int, int]


#: The rates a constraint can bound: name -> formula on counts ``(tp, fp, fn, tn)``.
_RATE_TABLE: dict[str, _Rate] = {
    "precision": _Rate(precision, 0, (0, 1)),
    "recall": _Rate(recall, 0, (0, 2)),
    "tpr": _Rate(recall, 0, (0, 2)),
    "specificity": _Rate(specificity, 3, (3, 1)),
    "tnr": _Rate(specificity, 3, (3, 1)),
    "fpr": _Rate(fpr, 1, (1, 3)),
    "fnr": _Rate(fnr, 2, (0, 2)),
}
#: The rates a constraint can bound (``recall``/``tpr`` and ``specificity``/``tnr`` are two names each).
RATES: tuple[str, ...] = tuple(_RATE_TABLE)
#: Objectives that are rates to minimise.
_MINIMISED = ("fpr", "fnr")
#: Every objective: the confusion metrics and the rates without a metric of their own.
OBJECTIVES: tuple[str, ...] = (*METRICS, "tpr", "tnr", *_MINIMISED)

#: The calibration's default confidence: each constrained rate's one-sided Wilson bound at 80 % meets its level
#: on the validation rows (docs/benchmarks/constrained.md measures how often the constraint then holds on test).
DEFAULT_CONFIDENCE = 0.8
_CONSTRAINT = re.compile(r"^([a-z_]+)(>=|<=)(.+)$")
#: Exact counts meet a level up to this rounding of the level itself.
_ROUNDING = 1e-12


def _forms() -> str:
    return (
        "accepted forms: '<objective>@<rate>>=<level>' or '<objective>@<rate><=<level>', several constraints "
        f"joined by ','; objective: one of {', '.join(OBJECTIVES)}; rate: one of {', '.join(RATES)}; "
        "level: a number in [0, 1]; e.g. 'recall@precision>=0.95', 'tpr@fpr<=0.01', 'f1@recall>=0.5'"
    )


@dataclass(frozen=True)
class RateConstraint:
    """One rate constraint, ``rate >= level`` (a floor) or ``rate <= level`` (a ceiling)."""

    rate: str
    op: str
    level: float

    def __str__(self) -> str:
        return f"{self.rate}{self.op}{self.level:g}"

    @property
    def formula(self) -> CountFormula:
        """The rate's formula on counts ``(tp, fp, fn, tn)``."""
        return _RATE_TABLE[self.rate].formula

    def slack(self, value: Tensor) -> Tensor:
        """How far ``value`` (of the rate) is inside the constraint: >= 0 where it holds."""
        return value - self.level if self.op == ">=" else self.level - value

    def value(self, tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor) -> Tensor:
        """The rate of counts."""
        return self.formula(tp, fp, fn, tn)

    def bound(self, tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor, z: float) -> Tensor:
        """The one-sided Wilson bound of the rate that the constraint must meet at ``z`` standard errors.

        The lower bound for a floor, the upper bound for a ceiling; the rate
        itself for ``z = 0``. A rate with no trials keeps its value (0).
        """
        spec = _RATE_TABLE[self.rate]
        counts = (tp, fp, fn, tn)
        k = counts[spec.successes]
        n = counts[spec.trials[0]] + counts[spec.trials[1]]
        value = self.formula(tp, fp, fn, tn)
        if z == 0:
            return value
        z2 = z * z
        p = safe_divide(k, n)
        safe_n = torch.where(n > 0, n, torch.ones_like(n))
        centre = (p + z2 / (2 * safe_n)) / (1 + z2 / safe_n)
        spread = z * torch.sqrt(p * (1 - p) / safe_n + z2 / (4 * safe_n * safe_n)) / (1 + z2 / safe_n)
        bounded = centre - spread if self.op == ">=" else centre + spread
        return torch.where(n > 0, bounded, value)


@dataclass(frozen=True)
class ConstrainedMetric:
    """An objective subject to rate constraints, parsed from ``"recall@precision>=0.95"``.

    Attributes:
        objective: the objective's name (one of :data:`OBJECTIVES`).
        constraints: the rate constraints, all of which must hold.
    """

    objective: str
    constraints: tuple[RateConstraint, ...]

    @property
    def name(self) -> str:
        """The canonical spelling, e.g. ``"recall@precision>=0.95"``."""
        return f"{self.objective}@{','.join(str(c) for c in self.constraints)}"

    def __str__(self) -> str:
        return self.name

    @property
    def higher_is_better(self) -> bool:
        """False for the objectives that are rates to minimise (``fpr``, ``fnr``)."""
        return self.objective not in _MINIMISED

    @property
    def worst(self) -> float:
        """The score of decisions that break a constraint: the objective's worst value."""
        if not self.higher_is_better:
            return 1.0
        spec = METRICS.get(self.objective)
        return spec.lower_bound if spec is not None else 0.0

    @property
    def lower_bound(self) -> float:
        """The objective's lowest value (0 for rates)."""
        spec = METRICS.get(self.objective)
        return spec.lower_bound if spec is not None else 0.0

    def objective_formula(self, beta: float = 1.0) -> CountFormula:
        """The objective on counts ``(tp, fp, fn, tn)`` (``beta`` for ``fbeta``)."""
        if self.objective in _RATE_TABLE:
            return _RATE_TABLE[self.objective].formula
        return METRICS[self.objective].bind(beta)

    def met(self, tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor, *, z: float = 0.0) -> Tensor:
        """Whether every constraint holds on the counts (elementwise; ``z``: at that Wilson bound)."""
        held = torch.ones_like(tp, dtype=torch.bool)
        for constraint in self.constraints:
            held = held & (constraint.slack(constraint.bound(tp, fp, fn, tn, z)) >= -_ROUNDING)
        return held

    def formula(self, beta: float = 1.0) -> CountFormula:
        """The exact score on counts: the objective where the constraints hold, :attr:`worst` elsewhere."""
        objective = self.objective_formula(beta)

        def score(tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor) -> Tensor:
            return torch.where(self.met(tp, fp, fn, tn), objective(tp, fp, fn, tn), self.worst)

        score.__name__ = self.name
        return score

    def spec(self, beta: float = 1.0) -> MetricSpec:
        """The metric as a :class:`~metricopt.metrics._formulas.MetricSpec` for the averaging code."""
        return MetricSpec(self.name, self.formula(beta), lower_bound=self.lower_bound)

    def utility(self, value: float) -> float:
        """``value`` of the objective, oriented so that higher is better (negated for ``fpr``/``fnr``)."""
        return value if self.higher_is_better else -value


def is_constrained(metric: Any) -> bool:
    """Whether ``metric`` is meant as a constrained metric: a :class:`ConstrainedMetric`, a string with a
    comparison, or ``"<objective>@..."`` other than the rank metric ``recall@K``."""
    if isinstance(metric, ConstrainedMetric):
        return True
    if not isinstance(metric, str):
        return False
    if "<" in metric or ">" in metric or "=" in metric:
        return True
    objective, at, rest = metric.replace(" ", "").lower().partition("@")
    return bool(at) and objective in OBJECTIVES and not rest.isdigit()  # recall@4 is the rank metric recall@K


def parse_constraints(text: str | Sequence[str], *, argument: str = "constraints") -> tuple[RateConstraint, ...]:
    """Rate constraints from ``"precision>=0.95"``, ``"recall>=0.5,fpr<=0.1"`` or a list of such strings.

    Raises:
        ValueError: a malformed constraint, an unknown rate or a level outside
            [0, 1], naming ``argument`` and listing the accepted forms.
    """
    parts = [text] if isinstance(text, str) else list(text)
    if not parts or not all(isinstance(p, str) for p in parts):
        raise ValueError(f"`{argument}` must be a constraint string or a list of them; got {describe(text)}; "
                         + _forms())
    pieces = [piece for part in parts for piece in part.replace(" ", "").lower().split(",")]
    constraints = []
    for piece in pieces:
        match = _CONSTRAINT.match(piece)
        if match is None:
            raise ValueError(f"`{argument}`: cannot read the constraint {piece!r}; " + _forms())
        rate, op, level_text = match.groups()
        if rate not in _RATE_TABLE:
            raise ValueError(f"`{argument}`: unknown rate {rate!r} in {describe(text)}; " + _forms())
        try:
            level = float(level_text)
        except ValueError:
            raise ValueError(f"`{argument}`: the level of {piece!r} is not a number; " + _forms()) from None
        if not 0.0 <= level <= 1.0:
            raise ValueError(f"`{argument}`: the level of {piece!r} is outside [0, 1], so the constraint can "
                             f"never (or always) hold; " + _forms())
        constraints.append(RateConstraint(rate, op, level))
    return tuple(constraints)


def parse_constrained(metric: str | ConstrainedMetric, *, argument: str = "metric") -> ConstrainedMetric:
    """A :class:`ConstrainedMetric` from ``"recall@precision>=0.95"`` (returned as is if already parsed).

    Raises:
        ValueError: a malformed string, an unknown objective or rate, a level
            outside [0, 1], naming ``argument`` and listing the accepted forms.
    """
    if isinstance(metric, ConstrainedMetric):
        return metric
    if not isinstance(metric, str):
        raise ValueError(f"`{argument}` must be a string such as 'recall@precision>=0.95'; got {describe(metric)}; "
                         + _forms())
    objective, at, rest = metric.replace(" ", "").lower().partition("@")
    if not at:
        raise ValueError(f"`{argument}`: {metric!r} names no objective before '@'; " + _forms())
    if not rest:
        raise ValueError(f"`{argument}`: {metric!r} has no constraint after '@'; " + _forms())
    if objective not in OBJECTIVES:
        raise ValueError(f"`{argument}`: unknown objective {objective!r} in {metric!r}; " + _forms())
    return ConstrainedMetric(objective, parse_constraints(rest, argument=argument))


# --- exact scores ------------------------------------------------------------------


def constrained_score(y_true: Any, y_pred: Any, metric: str | ConstrainedMetric, *, average: str | None = "auto",
                      beta: float = 1.0, num_classes: int | None = None) -> float | np.ndarray:
    """The exact constrained score of decisions: the objective where the constraints hold, else the worst value.

    The same as :func:`metricopt.metrics.metric_score` with the metric string.

    Examples:
        >>> constrained_score([1, 1, 0, 0, 0], [1, 0, 0, 0, 0], "recall@precision>=0.9")
        0.5
        >>> constrained_score([1, 1, 0, 0, 0], [1, 1, 1, 0, 0], "recall@precision>=0.9")
        0.0
    """
    from metricopt.metrics.confusion import metric_score

    return metric_score(y_true, y_pred, parse_constrained(metric).name, average=average, beta=beta,
                        num_classes=num_classes)


def constrained_report(y_true: Any, y_pred: Any, metric: str | ConstrainedMetric, *,
                       beta: float = 1.0) -> dict[str, Any]:
    """The objective, each constrained rate and whether the constraints held, for binary decisions.

    Returns:
        ``{"objective": value, "<rate>": value per constraint, "held": bool}``
        (the objective's raw value, whether or not the constraints held).

    Example:
        >>> constrained_report([1, 1, 0, 0, 0], [1, 1, 1, 0, 0], "recall@precision>=0.9")
        {'objective': 1.0, 'precision': 0.6666666666666666, 'held': False}
    """
    from metricopt.metrics.confusion import binary_counts

    parsed = parse_constrained(metric)
    counts = binary_counts(y_true, y_pred)
    out: dict[str, Any] = {"objective": float(parsed.objective_formula(beta)(*counts))}
    for constraint in parsed.constraints:
        out[constraint.rate] = float(constraint.value(*counts))
    out["held"] = bool(parsed.met(*counts))
    return out


@dataclass(frozen=True)
class ThresholdChoice:
    """A decision threshold chosen for a constrained metric (decide positive where ``score > threshold``).

    Attributes:
        threshold: the threshold.
        score: the objective of its decisions (raw, not oriented), or the
            worst value when no threshold is feasible.
        feasible: whether its decisions meet the constraints (at the bound used).
    """

    threshold: float
    score: float
    feasible: bool


def _threshold_counts(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, tuple[Tensor, ...]]:
    """Every distinct threshold of ``y_score`` and the counts of its decisions, nothing positive first.

    Threshold ``i`` decides positive the samples scoring above it: none for
    ``i = 0`` (the highest score), then each block of tied scores in turn.
    """
    order = np.argsort(-y_score, kind="stable")
    scores, labels = y_score[order], y_true[order]
    last = np.r_[np.flatnonzero(np.diff(scores) != 0), len(scores) - 1]  # the last index of each tied block
    tp = np.r_[0, np.cumsum(labels)[last]].astype(np.float64)
    fp = np.r_[0, (last + 1) - tp[1:]].astype(np.float64)
    positives, negatives = float(labels.sum()), float(len(labels) - labels.sum())
    distinct = scores[last]
    below = np.r_[distinct[1:], np.nextafter(distinct[-1], -np.inf)]
    thresholds = np.r_[distinct[0], (distinct + below) / 2]
    # the midpoint can round onto a score when two scores are adjacent floats: keep it below the block
    thresholds[1:] = np.where(thresholds[1:] >= distinct, below, thresholds[1:])
    counts = tuple(torch.from_numpy(c) for c in (tp, fp, positives - tp, negatives - fp))
    return thresholds, counts


def best_threshold(y_true: Any, y_score: Any, metric: str | ConstrainedMetric, *, beta: float = 1.0,
                   confidence: float = 0.5) -> ThresholdChoice:
    """The threshold with the best objective among those whose decisions meet the constraints.

    Exact over every distinct threshold (a block of tied scores is one). Ties
    in the objective go to the threshold with the largest smallest slack of
    the constraints (the safest one). With ``confidence`` above 0.5 a
    constraint must hold for its one-sided Wilson bound at that confidence
    (:func:`calibrate_threshold`). When no threshold is feasible, the one
    closest to feasible (the largest smallest slack) is returned with
    ``feasible=False`` and the objective's worst value as its score.

    Args:
        y_true: ``(N,)`` binary labels in {0, 1}.
        y_score: ``(N,)`` scores (probabilities or logits); higher means positive.
        metric: the constrained metric.
        beta: recall's weight for an ``fbeta`` objective.
        confidence: in [0.5, 1): 0.5 checks the rates themselves.

    Example:
        >>> choice = best_threshold([1, 1, 0, 1, 0], [0.9, 0.8, 0.7, 0.6, 0.1], "recall@precision>=0.75")
        >>> choice.score, choice.feasible, 0.1 < choice.threshold < 0.6
        (1.0, True, True)
    """
    parsed = parse_constrained(metric)
    z = constraint_z(confidence)
    labels = _binary_labels(y_true)
    scores = np.asarray(y_score.detach().cpu() if isinstance(y_score, Tensor) else y_score, dtype=np.float64)
    if scores.shape != labels.shape:
        raise ValueError(f"`y_score` must have the shape of `y_true` {labels.shape}; got {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("`y_score` must be finite; it holds NaN or infinite values")
    thresholds, counts = _threshold_counts(labels, scores)
    slack = torch.stack([c.slack(c.bound(*counts, z)) for c in parsed.constraints]).min(0).values.numpy()
    feasible = slack >= -_ROUNDING
    objective = parsed.objective_formula(beta)(*counts).numpy()
    if not feasible.any():
        i = int(np.argmax(slack))
        return ThresholdChoice(float(thresholds[i]), parsed.worst, False)
    utility = np.where(feasible, objective if parsed.higher_is_better else -objective, -np.inf)
    candidates = np.flatnonzero(utility == utility.max())
    i = int(candidates[np.argmax(slack[candidates])])
    return ThresholdChoice(float(thresholds[i]), float(objective[i]), True)


def calibrate_threshold(y_true: Any, y_score: Any, metric: str | ConstrainedMetric, *, beta: float = 1.0,
                        confidence: float = DEFAULT_CONFIDENCE) -> ThresholdChoice:
    """The decision threshold for new data: :func:`best_threshold` with the constraints met at a margin.

    A constraint met on the validation rows holds on new rows only about half
    the time when the threshold sits at the edge. The margin is statistical:
    each floor (ceiling) rate's one-sided Wilson lower (upper) confidence bound
    at ``confidence`` must meet its level, so the margin is wide when the
    rate rests on few samples (a precision over 10 predicted positives) and
    narrow when it rests on many.

    Args:
        y_true: the validation rows' binary labels.
        y_score: their scores.
        metric: the constrained metric.
        beta: recall's weight for an ``fbeta`` objective.
        confidence: in [0.5, 1); 0.5 is no margin (the plain rule).
    """
    return best_threshold(y_true, y_score, metric, beta=beta, confidence=confidence)


def _binary_labels(y_true: Any) -> np.ndarray:
    labels = np.asarray(y_true.detach().cpu() if isinstance(y_true, Tensor) else y_true)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"`y_true` must be a non-empty 1-D array of binary labels; got shape {labels.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"`y_true` must hold only 0 and 1; got values such as {np.unique(labels)[:5].tolist()}")
    return labels.astype(np.float64)


def constraint_z(confidence: float) -> float:
    """The standard-normal quantile of a one-sided ``confidence`` in [0.5, 1) (0 at 0.5: no margin)."""
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.5 <= confidence < 1:
        raise ValueError(f"`confidence` must be a number in [0.5, 1); got {describe(confidence)}")
    return 0.0 if confidence == 0.5 else NormalDist().inv_cdf(confidence)
