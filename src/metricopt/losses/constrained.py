"""Constrained confusion metrics as losses: the objective's soft counts with the constraints as Lagrangian terms.

``ConfusionLoss("recall@precision>=0.95")`` (grammar:
:mod:`metricopt.metrics.constrained`) trains for an objective ``O`` subject to
rate constraints ``g_k >= c_k`` (floors) or ``g_k <= c_k`` (ceilings), all
computed on the soft confusion counts of AnyLoss
(:mod:`metricopt.losses.soft_confusion`): the same counts, the same formulas as
the exact metric. With ``v_k`` the violation (``c_k - g_k`` for a floor,
``g_k - c_k`` for a ceiling; negative where the constraint holds with room)
and ``o = (O - m) / (1 - m)`` the objective scaled to [0, 1] (``1 - O`` for the
rates to minimise, ``fpr`` and ``fnr``), the loss is

* ``"lagrangian"`` (the default): ``1 - o + sum_k lambda_k v_k``, with the
  multipliers updated by projected dual ascent,
  ``lambda_k <- max(0, lambda_k + strength * v_k)``;
* ``"augmented"``: the augmented Lagrangian of inequality constraints
  (Powell-Hestenes-Rockafellar), ``1 - o + sum_k (max(0, lambda_k + rho v_k)^2
  - lambda_k^2) / (2 rho)``, ``lambda_k <- max(0, lambda_k + rho v_k)``, with
  ``rho = strength``;
* ``"penalty"``: ``1 - o + strength * sum_k max(0, v_k)``, no state;
* ``"quantile"``: the Lagrangian of ``"lagrangian"``, with the decision
  threshold moved from logit 0 to the batch's own best feasible threshold
  (binary and multi-label: per column). Before the soft counts, the logits
  are shifted by ``-tau``, where ``tau`` is the exact threshold (no gradient)
  at which the batch's decisions meet the constraints with the best objective
  (:func:`batch_threshold`), so that the soft counts' steep window sits where
  the constraint binds whatever the scores' scale, as the calibrated
  threshold will at test time.

What happens inside ``forward``: the loss is computed with the current
multipliers (constants to autograd), then, only while training (the module in
``train()`` mode with gradients enabled, outside ``torch.func`` transforms),
each multiplier takes one dual step with the batch's violation, without
gradient and without a host sync. No optimiser of the user's touches them:
any optimiser trains the model, the loss does the ascent. A validation step
(``eval()`` or ``torch.no_grad()``) leaves them alone. A batch whose violation
is not finite (an overflowing step that AMP's scaler will skip) leaves them
as they were. Under ``torch.distributed`` the counts are those of the global
batch gathered in rank order, so every process computes the same violation
and keeps the same multipliers, with no collective of their own. The loss
value is not confined to [0, 1]: the Lagrangian terms add to it (and are
negative where a constraint holds with room).

Multi-class and multi-label targets get one multiplier per constraint and
class (one-vs-rest); the per-class terms are averaged with the objective.

The threshold: the loss trains decisions at ``p > 0.5`` to meet the
constraints on training batches; a constraint met there need not hold on new
data, so the estimator and the command line choose the decision threshold on
validation rows (:func:`metricopt.metrics.constrained.calibrate_threshold`).

The defaults (``"lagrangian"``, strength 0.1, and AnyLoss steepness L = 20
instead of 73 for constrained metrics) were chosen by an ablation on
validation tables (docs/benchmarks/constrained.md). L matters more than for
an unconstrained metric: the soft rate of a batch cannot fall below
``sigmoid(-L / 2)`` (an FPR budget of 1 % needs L well above 9), while a
steep window (L = 73) gives few samples a gradient near the operating point.

References:
    Eban, Schain, Mackey, Gordon, Saurous, Elidan. Scalable learning of
    non-decomposable objectives. AISTATS 2017 (rate constraints on counts,
    solved by Lagrangian saddle-point optimisation).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from metricopt._checks import check_choice, check_positive, describe
from metricopt.metrics._formulas import CountFormula
from metricopt.metrics.constrained import ConstrainedMetric

__all__ = ["CONSTRAINT_METHODS", "DEFAULT_CONSTRAINED_AMPLIFICATION", "DEFAULT_CONSTRAINT_METHOD",
           "DEFAULT_CONSTRAINT_STRENGTH", "ConstraintMultipliers", "batch_threshold"]

#: How a constraint enters the loss.
CONSTRAINT_METHODS: tuple[str, ...] = ("lagrangian", "augmented", "penalty", "quantile")
#: The default method, strength and AnyLoss steepness of a constrained metric, chosen by the rule fixed before the
#: selection run on 26 validation tables (docs/benchmarks/constrained.md): the best mean constrained score of 8
#: candidates at the default calibration (0.436, against 0.411 for the Lagrangian at L = 73, strength 1).
DEFAULT_CONSTRAINT_METHOD = "lagrangian"
DEFAULT_CONSTRAINT_STRENGTH = 0.1
DEFAULT_CONSTRAINED_AMPLIFICATION = 20.0


class ConstraintMultipliers(nn.Module):
    """The Lagrange multipliers of a constrained confusion loss, and the rule that updates them.

    Pass one to :func:`~metricopt.losses.confusion.confusion_loss` as
    ``multipliers`` (:class:`~metricopt.losses.confusion.ConfusionLoss` keeps
    one). The multipliers start at 0, take their shape (constraints x
    classes) from the first batch, live in ``state_dict()`` (as the module's
    extra state) and follow ``module.to(device)``.

    Args:
        method: ``"lagrangian"``, ``"augmented"`` or ``"penalty"`` (module docstring).
        strength: the dual step (``"lagrangian"``), the penalty parameter rho
            (``"augmented"``) or the penalty weight (``"penalty"``); > 0.

    Example:
        >>> multipliers = ConstraintMultipliers("lagrangian", 0.5)
        >>> from metricopt.metrics.constrained import parse_constrained
        >>> formula = multipliers.formula(parse_constrained("recall@precision>=0.8"))
        >>> counts = (torch.tensor(3.0), torch.tensor(3.0), torch.tensor(1.0), torch.tensor(9.0))
        >>> round(float(formula(*counts)), 3)   # recall 0.75; precision 0.5 is 0.3 short; lambda still 0
        0.75
        >>> multipliers.update()                 # lambda <- 0 + 0.5 * 0.3
        >>> round(float(multipliers.values), 3)
        0.15
    """

    def __init__(self, method: str = DEFAULT_CONSTRAINT_METHOD, strength: float = DEFAULT_CONSTRAINT_STRENGTH) -> None:
        super().__init__()
        check_choice("constraint_method", method, CONSTRAINT_METHODS)
        self.method = method
        self.strength = check_positive("constraint_strength", strength)
        #: The multipliers, ``(K, *class_shape)``; None until the first batch.
        self.values: Tensor | None = None
        self._violations: Tensor | None = None

    def formula(self, metric: ConstrainedMetric, beta: float = 1.0) -> CountFormula:
        """The score whose ``1 - score`` is the loss, on soft counts: scaled objective minus constraint terms.

        Each call records the violations, for :meth:`update`.
        """
        objective = metric.objective_formula(beta)
        low = metric.lower_bound

        def score(tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor) -> Tensor:
            value = objective(tp, fp, fn, tn)
            scaled = (value - low) / (1 - low) if metric.higher_is_better else 1 - value
            violations = torch.stack([-c.slack(c.value(tp, fp, fn, tn)) for c in metric.constraints])
            self._violations = violations.detach()
            return scaled - self._terms(violations).sum(0)

        score.__name__ = metric.name
        return score

    def _terms(self, violations: Tensor) -> Tensor:
        if self.method == "penalty":
            return self.strength * violations.clamp_min(0)
        multipliers = self._multipliers(violations)
        if self.method in ("lagrangian", "quantile"):
            return multipliers * violations
        rho = self.strength
        return ((multipliers + rho * violations).clamp_min(0).square() - multipliers.square()) / (2 * rho)

    def _multipliers(self, violations: Tensor) -> Tensor:
        if self.values is None:
            self.values = torch.zeros(violations.shape, dtype=violations.dtype, device=violations.device)
        if self.values.shape != violations.shape:
            raise ValueError(f"the constraints' shape changed from {tuple(self.values.shape)} to "
                             f"{tuple(violations.shape)} (another number of classes?); call reset() first")
        return self.values.to(violations)

    @torch.no_grad()
    def update(self) -> None:
        """One dual step with the violations of the last batch (``"penalty"``: nothing to do).

        Called by the loss while training; a non-finite violation leaves its multiplier as it was.
        """
        violations, self._violations = self._violations, None
        if violations is None or self.method == "penalty":
            return
        old = self._multipliers(violations)
        new = (old + self.strength * violations).clamp_min(0)
        self.values = torch.where(torch.isfinite(new), new, old)

    def discard(self) -> None:
        """Forget the last batch's violations without a step (a validation batch)."""
        self._violations = None

    def reset(self) -> None:
        """Set the multipliers back to zero (the next batch gives them their shape again)."""
        self.values = self._violations = None

    def get_extra_state(self) -> dict[str, Any]:
        return {"values": None if self.values is None else self.values.clone()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        values = state.get("values")
        self.values = None if values is None else torch.as_tensor(values)

    def _apply(self, fn: Any, recurse: bool = True) -> ConstraintMultipliers:  # type: ignore[override]
        result = super()._apply(fn, recurse)
        if self.values is not None:  # follow .to(device) / .double() like a buffer
            self.values = fn(self.values)
        return result

    def extra_repr(self) -> str:
        return f"method={self.method!r}, strength={self.strength!r}"


def check_multipliers(multipliers: Any) -> ConstraintMultipliers:
    """Raise unless ``multipliers`` is a :class:`ConstraintMultipliers`."""
    if not isinstance(multipliers, ConstraintMultipliers):
        raise ValueError(
            "a constrained metric needs `multipliers`, a metricopt.losses.ConstraintMultipliers that keeps the "
            f"Lagrange multipliers between batches (ConfusionLoss keeps one); got {describe(multipliers)}")
    return multipliers


@torch.no_grad()
def batch_threshold(scores: Tensor, labels: Tensor, metric: ConstrainedMetric, beta: float = 1.0) -> Tensor:
    """Per column, the threshold whose decisions ``score > tau`` meet the constraints with the best objective.

    The batch's exact counterpart of
    :func:`metricopt.metrics.constrained.best_threshold`, in torch on the
    scores' device and without a host sync: ``scores`` and ``labels`` of
    shape ``(N,)`` give a 0-d threshold, ``(N, C)`` one per column. A block of
    tied scores is one threshold; ties in the objective go to the highest
    threshold; where no threshold is feasible, the one with the largest
    smallest slack. The threshold is a midpoint between two neighbouring
    scores (one above the top score: nothing positive; one below the lowest:
    everything positive).
    """
    columns = scores.reshape(1, -1) if scores.ndim == 1 else scores.T
    truth = labels.reshape(1, -1) if labels.ndim == 1 else labels.T
    ordered, order = columns.sort(dim=-1, descending=True)
    y = truth.to(ordered.dtype).gather(-1, order)
    zero = y.new_zeros(y.shape[0], 1)
    tp = torch.cat((zero, y.cumsum(-1)), -1)  # index i: the top i samples decided positive
    fp = torch.arange(y.shape[-1] + 1, dtype=y.dtype, device=y.device) - tp
    positives, negatives = tp[:, -1:], fp[:, -1:]
    counts = (tp, fp, positives - tp, negatives - fp)
    # a cut inside a block of tied scores is no threshold: only after the last of a block (or before all)
    cut = torch.cat((torch.ones_like(zero, dtype=torch.bool), ordered[:, :-1] != ordered[:, 1:],
                     torch.ones_like(zero, dtype=torch.bool)), -1)
    slack = torch.stack([c.slack(c.value(*counts)) for c in metric.constraints]).amin(0)
    objective = metric.objective_formula(beta)(*counts)
    utility = objective if metric.higher_is_better else -objective
    feasible = cut & (slack >= 0)
    best_feasible = torch.where(feasible, utility, -torch.inf).argmax(-1)  # the first (highest) of ties
    closest = torch.where(cut, slack, -torch.inf).argmax(-1)
    index = torch.where(feasible.any(-1), best_feasible, closest)
    above = torch.cat((ordered[:, :1] + 1, ordered), -1)  # the score just above cut i ...
    below = torch.cat((ordered, ordered[:, -1:] - 1), -1)  # ... and just below it
    tau = (above.gather(-1, index[:, None]) + below.gather(-1, index[:, None])).squeeze(-1) / 2
    return tau.reshape(()) if scores.ndim == 1 else tau
