"""Exact ranks, differentiated as a black box (RaMBO's building block).

Method: "Differentiation of Blackbox Combinatorial Solvers" (Vlastelica et al.,
ICLR 2020) applied to ranking (Rolinek et al., "Optimizing Rank-based Metrics
with Blackbox Differentiation", CVPR 2020). Ranking is the solver

    rk(y) = argmin over permutations pi of  y . pi       (rank 1 = highest score),

computed exactly by a sort, O(n log n). Its true derivative is zero almost
everywhere, so the backward pass returns the gradient of a piecewise-linear
interpolation of the loss instead: given ``g = dL/drk``,

    y' = y + lambda * g,      dL/dy = -(rk(y) - rk(y')) / lambda,

one more sort. ``lambda`` (``interpolation``) trades faithfulness (small) against
informativeness (large). A zero upstream gradient gives a zero gradient.

Tie rule: tied scores all get the *largest* rank of their block (the number of
items whose score is greater than or equal to theirs; pandas'
``rank(method="max", ascending=False)``). Ties therefore count against every
tied item, which is what scikit-learn's average precision does (a block of tied
scores is one threshold): the rank losses built on these ranks equal the exact
metrics, ties included, wherever the exact metric breaks ties the same way.
The official code breaks ties by argsort order, which depends on the input's
memory layout; this rule does not.

Scale: ranks here are integers 1..n, so ``dL/drk`` shrinks as 1/n for a loss
written in normalised ranks and ``lambda`` must grow as n to move the same
number of ranks (DESIGN.md: on 400 items, lambda = 0.5 never changed a rank,
lambda = 100 trained well). The losses in :mod:`metricopt.losses.ranking` take
``interpolation`` in normalised-rank units, per ranking, and pass
``interpolation * n * rows`` here (n: the official code's convention; rows:
undoes the mean over the rows of a batch).
"""

from __future__ import annotations

import torch
from torch import Tensor

from metricopt._checks import check_finite, check_positive, check_tensor, describe

__all__ = ["blackbox_rank", "exact_rank"]


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


class _BlackboxRank(torch.autograd.Function):
    """Exact ranks forward; blackbox-interpolated gradient backward."""

    @staticmethod
    def forward(ctx, scores: Tensor, interpolation: float) -> Tensor:  # type: ignore[override]
        ranks = exact_rank(scores)
        ctx.save_for_backward(scores, ranks)
        ctx.interpolation = interpolation
        return ranks

    @staticmethod
    def backward(ctx, grad_ranks: Tensor):  # type: ignore[override]
        scores, ranks = ctx.saved_tensors
        lam = ctx.interpolation
        perturbed = scores.detach().to(ranks.dtype) + lam * grad_ranks.to(ranks.dtype)
        grad = (exact_rank(perturbed) - ranks) / lam
        return grad.to(scores.dtype), None


def blackbox_rank(scores: Tensor, *, interpolation: float | Tensor) -> Tensor:
    """Exact ranks (1 = highest) along the last dimension, differentiable.

    Args:
        scores: floating tensor ``(..., n)``; every leading dimension is a
            separate ranking. Must be finite.
        interpolation: lambda > 0 of blackbox differentiation, in units of
            integer ranks: the backward pass returns
            ``-(rk(y) - rk(y + interpolation * grad)) / interpolation``. A loss
            written in ranks divided by n needs a lambda about n times larger
            than one written in integer ranks (see the module docstring).

    Returns:
        float32 ranks (float64 for float64 scores) of the same shape; tied
        scores share the largest rank of their block.

    Raises:
        TypeError: if ``scores`` is not a floating tensor.
        ValueError: for NaN or infinite scores, or ``interpolation`` <= 0.

    >>> y = torch.tensor([0.1, 0.5, 0.2], requires_grad=True)
    >>> rk = blackbox_rank(y, interpolation=10.0)
    >>> rk
    tensor([3., 1., 2.], grad_fn=<_BlackboxRankBackward>)
    >>> rk[0].backward()   # loss = rank of item 0: descent raises its score
    >>> y.grad
    tensor([-0.2000,  0.1000,  0.1000])
    """
    check_tensor("scores", scores)
    if not scores.is_floating_point():
        raise TypeError(f"`scores` must be a floating tensor; got {describe(scores)}")
    if scores.ndim == 0:
        raise ValueError(f"`scores` must have at least one dimension to rank along; got {describe(scores)}")
    check_finite("scores", scores)
    if isinstance(interpolation, Tensor):
        interpolation = interpolation.item()
    lam = check_positive("interpolation", interpolation)
    return _BlackboxRank.apply(scores, lam)
