"""Exact ranks with an interpolated gradient (RaMBO's building block): :func:`interpolated_rank`.

Method: "Differentiation of Blackbox Combinatorial Solvers" (Vlastelica et al.,
ICLR 2020) applied to ranking (Rolinek et al., "Optimizing Rank-based Metrics
with Blackbox Differentiation", CVPR 2020). Ranking is the solver

    rk(y) = argmin over permutations pi of  y . pi       (rank 1 = highest score),

computed exactly by a sort, O(n log n). Its true derivative is zero almost
everywhere, so the backward pass returns the gradient of a piecewise-linear
interpolation of the loss instead: given ``g = dL/drk``,

    y' = y + lambda * g,      dL/dy = -(rk(y) - rk(y')) / lambda,

one more sort.

Three rules make the perturbation well defined inside a real training loop
(the loss contract, ``docs/guides/training.md``); the paper leaves them open
(DECIDED, with the measurements that led to them in ``docs/design.md``, "Rank
losses (RaMBO)"):

* **Linear in the loss.** The perturbation of each ranking (row) uses the
  *direction* of ``g``, not its size: ``g_hat = g / max|g|`` per row, and the
  returned gradient is scaled back by ``max|g|``. Multiplying the loss by any
  c > 0 (AMP's loss scale, a loss weight, ``loss / k`` for gradient
  accumulation, a mean over rows, a mixture weight) therefore multiplies the
  gradient by c and changes nothing else; with ``y + lambda * g`` the
  perturbation itself would grow with c, and the gradient was measured far
  off the true one at a large loss scale and exactly zero at a small one.
* **Relative to the scores.** The perturbation is measured in units of the
  row's spread: ``y' = y + interpolation * spread * g_hat``, with ``spread``
  the standard deviation of the row's finite scores. Scaling every score by
  c scales the perturbation by c, so the ranks of ``y'`` and the direction of
  the gradient do not depend on the scale of the scores (its size scales as
  1 / c, as the derivative of any function of ``y / c`` does). A row whose
  spread is below 1e-3 of its largest ``|score|`` counts as tied (a
  zero-initialised head, identical embeddings): it is perturbed in units of
  that 1e-3 bound, or of 1 when every score is 0, so tied scores still get a
  gradient that orders them.
* **In float64.** ``y + interpolation * spread * g_hat`` is formed and ranked
  in float64 whatever the input's dtype: in float32 a perturbation small
  against the scores rounds away, and the AP gradient was measured far off
  a float64 computation at large N.

``interpolation`` (the paper's lambda, here unitless) thus reads: the item
whose rank the loss pushes hardest moves by ``interpolation`` standard
deviations of its row's scores. A row whose upstream gradient is zero gets a
zero gradient.

The backward pass is not itself differentiable: a second derivative through
it (``create_graph=True``, ``torch.func.hessian``, a learned optimizer's
pathwise estimator) raises ``RuntimeError`` when it reaches the ranker,
instead of leaving the ranker's part out silently, which is what
``once_differentiable`` would do wherever the first gradient also depends on
the scores through another path.

Tie rule: tied scores all get the *largest* rank of their block (the number of
items whose score is greater than or equal to theirs; pandas'
``rank(method="max", ascending=False)``). Ties therefore count against every
tied item, which is what scikit-learn's average precision does (a block of tied
scores is one threshold): the rank losses built on these ranks equal the exact
metrics, ties included, wherever the exact metric breaks ties the same way.
The official code breaks ties by argsort order, which depends on the input's
memory layout; this rule does not.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from metricopt._checks import check_positive, check_tensor, describe

__all__ = ["exact_rank", "interpolated_rank", "score_spread"]


def _rank_dtype(scores: Tensor) -> torch.dtype:
    """float64 for float64 scores, else float32 (fp16 cannot hold ranks above 2048)."""
    return torch.float64 if scores.dtype == torch.float64 else torch.float32


def exact_rank(scores: Tensor) -> Tensor:
    """Descending ranks along the last dimension, ties taking the largest rank.

    ``rank_i = #{j : scores_j >= scores_i}``: 1 for the highest score, n for the
    lowest. ``-inf`` entries rank last, which is how the losses leave items out.
    No gradient; O(n log n) time and O(n) memory per row.

    >>> exact_rank(torch.tensor([0.3, 0.9, 0.3, -1.0]))
    tensor([3., 1., 3., 4.])
    """
    n = scores.shape[-1]
    values, order = scores.detach().sort(dim=-1, descending=True)
    positions = torch.arange(1, n + 1, dtype=_rank_dtype(scores), device=scores.device).expand_as(values)
    # A tie block's rank is the position of its last item: mark block ends, then
    # carry each end's position back over its block (a reversed running minimum).
    block_end = torch.ones_like(values, dtype=torch.bool)
    block_end[..., :-1] = values[..., :-1] != values[..., 1:]
    ends = torch.where(block_end, positions, torch.full_like(positions, n))
    sorted_ranks = ends.flip(-1).cummin(-1).values.flip(-1)
    return torch.empty_like(positions).scatter_(-1, order, sorted_ranks)


#: A row whose spread is below this fraction of its largest |score| counts as tied (module docstring).
TIED_SPREAD = 1e-3


def score_spread(scores: Tensor, include: Tensor | None = None) -> Tensor:
    """The unit of each row's perturbation (and of the rank losses' margin), float64, shape ``(..., 1)``.

    The standard deviation of the row's scores (those where ``include`` is
    True; by default the finite ones), at least ``TIED_SPREAD`` times their
    largest ``|score|``, and 1 where that is 0 (every score 0). No gradient.

    >>> score_spread(torch.tensor([[1.0, 3.0], [0.0, 0.0], [2.0, 2.0]])).flatten().tolist()
    [1.0, 1.0, 0.002]
    """
    values = scores.detach().to(torch.float64)
    if include is None:
        include = torch.isfinite(values)
    values = torch.where(include, values, torch.zeros_like(values))
    count = include.sum(-1, keepdim=True).clamp_min(1)
    centred = torch.where(include, values - values.sum(-1, keepdim=True) / count, torch.zeros_like(values))
    spread = (centred.square().sum(-1, keepdim=True) / count).sqrt()
    spread = torch.maximum(spread, TIED_SPREAD * values.abs().amax(-1, keepdim=True))
    return torch.where(spread > 0, spread, torch.ones_like(spread))


class _InterpolatedRank(torch.autograd.Function):
    """Exact ranks forward; the interpolated gradient backward (rules in the module docstring)."""

    @staticmethod
    def forward(scores: Tensor, interpolation: float, spread: Tensor) -> Tensor:  # type: ignore[override]
        return exact_rank(scores)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[override]
        scores, interpolation, spread = inputs
        ctx.save_for_backward(scores, output, spread)
        ctx.interpolation = interpolation

    @staticmethod
    def backward(ctx, grad_ranks: Tensor):  # type: ignore[override]
        scores, ranks, spread = ctx.saved_tensors
        with torch.no_grad():
            grad = grad_ranks.to(torch.float64)
            size = grad.abs().amax(-1, keepdim=True)  # max |g| per row: the loss's scale, removed from the step
            step = ctx.interpolation * spread
            perturbed = scores.to(torch.float64) + step * (grad / torch.where(size > 0, size, torch.ones_like(size)))
            scale = torch.where(size > 0, size / step, torch.zeros_like(size))  # a zero row stays exactly zero
            result = ((exact_rank(perturbed) - ranks.to(torch.float64)) * scale).to(scores.dtype)
        if torch.is_grad_enabled():  # create_graph=True: whoever differentiates this gradient learns it cannot be
            result = _NoSecondDerivative.apply(result, scores, grad_ranks)
        return result, None, None


class _NoSecondDerivative(torch.autograd.Function):
    """Identity on the interpolated gradient that raises when differentiated (module docstring).

    ``second_derivative = False`` lets a caller that needs second derivatives
    find it in a gradient's graph before differentiating
    (:func:`metricopt.blackbox.learned_objective.check_second_order`).
    """

    second_derivative = False

    @staticmethod
    def forward(gradient: Tensor, scores: Tensor, grad_ranks: Tensor) -> Tensor:  # type: ignore[override]
        return gradient.clone()

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[override]
        pass

    @staticmethod
    def backward(ctx, *grads: Tensor):  # type: ignore[override]
        raise RuntimeError(
            "a second derivative was requested through metricopt's interpolated ranks (interpolated_rank, and the "
            "AP, AUROC, recall and NDCG losses built on them); their gradient is the piecewise-linear interpolation's, "
            "which has no derivative of its own. Use a first-order method, or, for the learned optimizer, "
            "LearnedConfig(estimator='evolution')"
        )


def interpolated_rank(scores: Tensor, *, interpolation: float | Tensor, spread: Tensor | None = None) -> Tensor:
    """Exact ranks (1 = highest) along the last dimension, differentiable.

    Args:
        scores: floating tensor ``(..., n)``; every leading dimension is a
            separate ranking (row). Must not hold NaN; ``-inf`` ranks last.
        interpolation: lambda > 0 of RaMBO's interpolation, unitless: the
            item whose rank the loss pushes hardest moves by ``interpolation``
            times the row's spread (module docstring).
        spread: optional ``(..., 1)`` unit of each row's perturbation; default
            :func:`score_spread` of ``scores``.

    Returns:
        Ranks of the same shape, float32 (float64 for float64 scores); tied
        scores share the largest rank of their block.

    Raises:
        TypeError: if ``scores`` is not a floating tensor.
        ValueError: for NaN or +inf scores, or ``interpolation`` <= 0.

    >>> y = torch.tensor([0.1, 0.5, 0.2], requires_grad=True)
    >>> rk = interpolated_rank(y, interpolation=1.0)
    >>> rk
    tensor([3., 1., 2.], grad_fn=<_InterpolatedRankBackward>)
    >>> rk[0].backward()   # loss = rank of item 0: descent raises its score
    >>> y.grad             # item 0 passes item 2 (spread 0.17): -1 and +1, over the step 0.17
    tensor([-5.8835,  0.0000,  5.8835])
    """
    check_tensor("scores", scores)
    if not scores.is_floating_point():
        raise TypeError(f"`scores` must be a floating tensor; got {describe(scores)}")
    if scores.ndim == 0:
        raise ValueError(f"`scores` must have at least one dimension to rank along; got {describe(scores)}")
    if bool((torch.isnan(scores) | (scores == math.inf)).any()):
        raise ValueError(f"`scores` must not hold NaN or +inf; got {describe(scores)}")
    if isinstance(interpolation, Tensor):
        interpolation = interpolation.item()
    lam = check_positive("interpolation", interpolation)
    if spread is None:
        spread = score_spread(scores)
    elif not bool((spread > 0).all()):
        raise ValueError(
            f"`spread` must be > 0 in every row; got {describe(spread)} with minimum {spread.min().item()}"
        )
    return _InterpolatedRank.apply(scores, lam, spread)


def blackbox_rank(scores: Tensor, *, interpolation: float | Tensor, spread: Tensor | None = None) -> Tensor:
    """Deprecated name of :func:`interpolated_rank` ("blackbox" now means the black-box metrics family)."""
    warnings.warn("metricopt's blackbox_rank is now interpolated_rank; the old name will be removed",
                  DeprecationWarning, stacklevel=2)
    return interpolated_rank(scores, interpolation=interpolation, spread=spread)
