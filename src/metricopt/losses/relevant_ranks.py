"""The ranks that the AP, AUROC and recall losses use, at the cost of one sort: :func:`relevant_ranks`.

Those losses read, for each relevant item i of a ranking (a row of scores),
two numbers only (:mod:`metricopt.losses.ranking`):

* ``rk+_i``, its exact rank among the relevant items (no gradient), and
* ``r_i``, the number of irrelevant items ranked at or above it,

so that its rank among all items is ``rk_i = rk+_i + r_i``. Ranking every item
of the row, as :func:`~metricopt.losses.ranker.interpolated_rank` does, then
reading those two numbers off costs a full sort forward and a second full sort
backward (the perturbed ranking). Here the row is sorted once, and everything
else is a binary search of the relevant items (K of them per row, usually far
fewer than the row's L items) in the sorted row:

* forward: ``r_i`` is the number of irrelevant items whose score is at least
  ``t_i = y_i - margin * unit`` (the margin shift moves relevant scores down
  and irrelevant ones up by half the margin each, as in the rank losses), i.e.
  ``L - K`` minus the items below ``t_i`` in the sorted row that are not
  relevant; ``rk+_i`` comes from the K relevant scores sorted on their own.
* backward (RaMBO's interpolation, exactly the gradient of
  ``interpolated_rank`` applied to ``rk`` with ``rk+`` constant, the rank
  losses' rule): only relevant items carry an upstream gradient, so only they
  move, ``y'_i = y_i + interpolation * unit * g_i / max|g|``. A relevant item's
  new rank is a search of ``t'_i`` in the sorted row plus its rank among the
  moved relevant items (a sort of K); an irrelevant item's rank changes by the
  number of relevant thresholds that crossed its score, which a histogram of
  the thresholds' positions in the sorted row, before and after, gives for
  every item at once (one cumulative sum), scattered back to the original
  order by the forward sort's permutation. No second sort of the row.

Time: one sort of each row plus O(L + K log L) per row; memory: the sorted row
and its permutation (12 bytes per item for float32 scores) kept for the
backward, so linear per row. Ties count against every tied item, as in the
ranker (``docs/design.md``); comparisons of float32 scores with float64
thresholds are exact (each threshold is rounded to the float32 on the correct
side before the search). Items that take no part (self-pairs) are given the
score ``-inf`` by the caller: they are never relevant, never above a finite
threshold, and receive a zero gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metricopt.losses.ranker import _NoSecondDerivative

__all__ = ["relevant_columns", "relevant_ranks"]


def relevant_columns(relevant: Tensor, compact: bool = True) -> tuple[Tensor, Tensor]:
    """The relevant items of each row of a ``(B, L)`` bool mask: ``(columns, valid)``, each ``(B, K)``.

    ``compact``: K is the largest number of relevant items in a row (one host
    synchronisation to read it), the valid entries first and padding after
    them, repeating the row's first column. Otherwise K = L, ``columns`` is
    every column and ``valid`` the mask itself: no synchronisation, but a
    search per item rather than per relevant item.

    >>> relevant_columns(torch.tensor([[True, False, True], [False, True, False]]))
    (tensor([[0, 2],
            [1, 1]]), tensor([[ True,  True],
            [ True, False]]))
    """
    if not compact:
        return torch.arange(relevant.shape[-1], device=relevant.device).expand(relevant.shape), relevant
    if relevant.shape[0] == 1:  # one ranking: its relevant columns, all valid
        columns = relevant[0].nonzero().T
        return columns, torch.ones_like(columns, dtype=torch.bool)
    count = relevant.sum(-1)
    width = int(count.max()) if relevant.numel() else 0
    rows, cols = relevant.nonzero(as_tuple=True)
    first = torch.cumsum(count, 0) - count
    slots = torch.arange(len(rows), device=relevant.device) - first[rows]
    columns = torch.zeros(relevant.shape[0], width, dtype=torch.long, device=relevant.device)
    columns[rows, slots] = cols
    valid = torch.arange(width, device=relevant.device) < count[:, None]
    return torch.where(valid, columns, columns[:, :1]), valid


def _rounded(thresholds: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``(up, down)``: the least value of ``dtype`` >= each float64 threshold t and the greatest <= t, so that
    for any value v of ``dtype``: ``v < t`` iff ``v < up`` and ``v <= t`` iff ``v <= down``."""
    if dtype == torch.float64:
        return thresholds, thresholds
    rounded = thresholds.to(dtype)
    exact = rounded.to(torch.float64)
    up = torch.where(exact < thresholds, torch.nextafter(rounded, rounded.new_tensor(torch.inf)), rounded)
    down = torch.where(exact > thresholds, torch.nextafter(rounded, rounded.new_tensor(-torch.inf)), rounded)
    return up, down


#: Steps over scores equal to a threshold (:func:`_at_or_below`) before a second search.
TIE_STEPS = 2
#: Scores from which the steps replace the second search (below it, the one search costs less than their
#: operations).
WALK_FROM = 1 << 20


def _at_or_below(ascending: Tensor, down: Tensor, below: Tensor, synchronise: bool) -> Tensor:
    """Per threshold t, the number of the row's sorted scores ``<= t`` (``down``: t rounded down), given the
    number ``below`` of scores ``< t``.

    They differ by the scores equal to t. Where reading the device is allowed
    (``synchronise``) and the scores are many, two steps from ``below`` settle them (a threshold that
    is a score itself: the score and a duplicate), and the rows where a longer
    run of equal scores remains are searched again (all rows, when that is
    more than one in eight); otherwise every row is searched again.
    """
    if synchronise and ascending.numel() >= WALK_FROM:
        last = ascending.shape[-1] - 1
        count = below
        for _ in range(TIE_STEPS):
            count = count + ((count <= last) & (ascending.gather(-1, count.clamp(max=last)) <= down))  # a score == t
        longer = (count <= last) & (ascending.gather(-1, count.clamp(max=last)) <= down)
        rows, entries = longer.nonzero(as_tuple=True)
        if len(rows) * 8 <= len(ascending):  # a few longer runs: search their rows only
            count[rows, entries] = torch.searchsorted(ascending[rows], down[rows, entries, None], right=True)[:, 0]
            return count
    return torch.searchsorted(ascending, down, right=True)


def _irrelevant_at_or_above(length: int, count: Tensor | int, below: Tensor, relevant_below: Tensor) -> Tensor:
    """Irrelevant items with score >= each threshold (float64): the ``length - count`` irrelevant items of the row
    minus those below it, i.e. the ``below`` scores under the threshold that are not among the ``relevant_below``."""
    return (length - count - below + relevant_below).to(torch.float64)


def _sorted_with_ranks(values: Tensor, valid: Tensor | None, count: Tensor | int) -> tuple[Tensor, Tensor]:
    """``(ascending, ranks)``: the row's valid values sorted ascending (the invalid ones last, as ``+inf``),
    and each value's rank among them (ties: the largest rank)."""
    if valid is not None:
        values = torch.where(valid, values, torch.full_like(values, torch.inf))
    ascending = values.sort(-1).values
    return ascending, (count - torch.searchsorted(ascending, values)).to(torch.float64)


class _RelevantRanks(torch.autograd.Function):
    """Forward ``r`` (interpolated gradient) and ``rk+`` (no gradient) of the relevant items; module docstring.

    ``valid=None``: every entry is real (fewer operations on the common layouts).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        scores, relevant, columns, valid, interpolation, margin, unit, synchronise
    ):
        ascending, order = scores.contiguous().sort(-1)  # (contiguous rows: the searches need them)
        count = relevant.shape[-1] if valid is None else valid.sum(-1, keepdim=True)
        relevant_ascending, rank_relevant = _sorted_with_ranks(relevant, valid, count)
        if margin:
            up, down = _rounded(relevant.to(torch.float64) - margin * unit, scores.dtype)
            relevant_below = torch.searchsorted(relevant_ascending, up)
        else:  # the thresholds are the relevant scores themselves
            up, down, relevant_below = relevant, relevant.new_empty(0), count - rank_relevant  # (down: relevant)
        below = torch.searchsorted(ascending, up)
        above = _irrelevant_at_or_above(scores.shape[-1], count, below, relevant_below)
        return above, rank_relevant, ascending, order, relevant_ascending, below, down

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[override]
        scores, relevant, columns, valid, interpolation, margin, unit, synchronise = inputs
        above, rank_relevant, ascending, order, relevant_ascending, below, down = output
        ctx.save_for_backward(columns, valid, unit, above, rank_relevant, ascending, order, relevant,
                              relevant_ascending, below, down)
        ctx.interpolation, ctx.margin, ctx.synchronise = interpolation, margin, synchronise
        ctx.mark_non_differentiable(rank_relevant, ascending, order, relevant_ascending, below, down)
        ctx.set_materialize_grads(False)  # no zero gradients allocated for the (large) helper outputs

    @staticmethod
    def backward(ctx, grad_above, *unused):  # type: ignore[override]
        (columns, valid, unit, above, rank_relevant, ascending, order, relevant, relevant_ascending, below,
         down) = ctx.saved_tensors
        nothing = (None,) * 7
        if grad_above is None or columns.shape[-1] == 0:  # no relevant item in any row: nothing moves
            return (torch.zeros_like(ascending), *nothing)
        with torch.no_grad():
            dtype, margin = ascending.dtype, ctx.margin
            grad = grad_above if valid is None else torch.where(valid, grad_above, 0.0)
            size = grad.abs().amax(-1, keepdim=True)  # the loss's scale, removed from the step (ranker's rules)
            step = ctx.interpolation * unit
            scale = torch.where(size > 0, size / step, torch.zeros_like(size))
            moved = relevant.to(torch.float64) + grad * (step / torch.where(size > 0, size, torch.ones_like(size)))
            count = relevant.shape[-1] if valid is None else valid.sum(-1, keepdim=True)
            # Relevant items: their new rank among all items (irrelevant items at or above the moved threshold,
            # relevant ones among the moved), minus the old.
            moved_up, moved_down = _rounded(moved - margin * unit if margin else moved, dtype)
            moved_below = torch.searchsorted(ascending, moved_up)
            moved_above = _irrelevant_at_or_above(ascending.shape[-1], count, moved_below,
                                                  torch.searchsorted(relevant_ascending, moved_up))
            _, moved_rank = _sorted_with_ranks(moved, valid, count)
            relevant_grad = ((moved_above + moved_rank - above - rank_relevant) * scale).to(dtype)
            # Irrelevant item at sorted position q: relevant thresholds t >= its score, after minus before,
            # = #{t < score} - #{t' < score}; t < score at q exactly when q >= #{scores <= t}: a count per
            # position (+1 at each old threshold's place, -1 at each new one's), summed along the row.
            length = ascending.shape[-1]
            counts = torch.zeros_like(ascending)
            for threshold, left, sign in ((down if margin else relevant, below, 1.0), (moved_down, moved_below, -1.0)):
                start = _at_or_below(ascending, threshold, left, ctx.synchronise)
                real = start < length if valid is None else valid & (start < length)
                counts.scatter_add_(-1, start.clamp(max=length - 1), torch.where(real, sign, 0.0).to(dtype))
            crossed = counts.cumsum_(-1).mul_(scale.to(dtype))
            result = torch.empty_like(crossed).scatter_(-1, order, crossed)
            # The relevant items' own gradient replaces the count at their place (an added difference, so that
            # padding entries, which add 0, may point anywhere).
            change = relevant_grad - result.gather(-1, columns)
            result.scatter_add_(-1, columns, change if valid is None else torch.where(valid, change, 0.0))
        if torch.is_grad_enabled():  # create_graph=True: a second derivative must raise, as in the ranker
            result = _NoSecondDerivative.apply(result, relevant, grad_above)
        return (result, *nothing)


def relevant_ranks(
    scores: Tensor, columns: Tensor, valid: Tensor | None, *, interpolation: float, margin: float, unit: Tensor,
    synchronise: bool = True,
) -> tuple[Tensor, Tensor]:
    """``(above, rank_relevant)`` of each relevant item, ``(B, K)`` float64 (module docstring).

    Args:
        scores: ``(B, L)`` floating scores, one ranking per row: finite, or
            ``-inf`` for items that take no part (not checked here).
        columns: ``(B, K)`` the relevant items' columns
            (:func:`relevant_columns`); no valid entry may point at a ``-inf``
            item.
        valid: ``(B, K)`` which entries of ``columns`` are real, or None when
            all are.
        synchronise: whether the backward pass may read one flag from the
            device, which saves two of its three searches on untied scores;
            False keeps it free of host synchronisation.
        interpolation: RaMBO's lambda > 0, in units of ``unit``.
        margin: >= 0, in units of ``unit``.
        unit: ``(B, 1)`` float64 > 0, each row's unit (its spread, or a fixed
            scale such as 1 for cosine similarities).

    Returns:
        ``above``: the number of irrelevant items at or above each relevant item
        after the margin shift, with RaMBO's interpolated gradient to
        ``scores``; ``rank_relevant``: its rank among the relevant items,
        exact, without gradient. Padding entries hold meaningless values.
    """
    if scores.dtype not in (torch.float32, torch.float64):  # half precision: ranked in float32
        scores = scores.float()
    # The relevant scores enter as an input of their own (a gather outside the function) so that a second
    # derivative finds the scores in the gradient's graph and raises (ranker's rules).
    relevant = scores.gather(-1, columns)
    above, rank_relevant, *_ = _RelevantRanks.apply(scores, relevant, columns, valid, interpolation, margin, unit,
                                                    synchronise)
    return above, rank_relevant
