"""Exact rank metrics from scores (no gradient).

These are the truth that the rank losses (RaMBO family) are tested and
benchmarked against. Every function takes numpy arrays, array-likes or torch
tensors (on any device), computes in torch in float64 and returns Python
floats (or float64 tensors for per-row results). AP, ROC AUC and NDCG run in
O(N log N) per row: one sort, cumulative sums and a reverse cumulative minimum
to find tie blocks. Recall@K and MRR need no sort (O(N) per row); MAP@R and
:func:`retrieval_report` sort only the top R + 2 or so of each row (R the
number of relevant items) with ``topk``, and sort a row in full only where a
tie at the cut or among counted items needs it; they give the same floats as
sorting every row in full.

Against scikit-learn:

* :func:`average_precision_score` equals ``sklearn.metrics.average_precision_score``
  including ties (a block of tied scores is one threshold), for 1-D binary and
  2-D multi-label targets with ``average`` in ``"macro"``, ``"micro"``,
  ``"none"``.
* :func:`roc_auc_score` equals ``sklearn.metrics.roc_auc_score`` on 1-D binary
  targets (a tied positive-negative pair counts 1/2).
* :func:`ndcg_at_k` equals ``sklearn.metrics.ndcg_score(gains, scores, k=k)``
  (``ignore_ties=False``: gains are averaged within tied groups; the ideal DCG
  sorts the gains), including rows whose gains are all 0, which score 0.

The complete list of differences from scikit-learn:

* Binary targets (``y_true``, ``relevance``, ``exclude``) must hold only 0 and 1
  (or booleans); 1 is the positive/relevant class. There is no ``pos_label``,
  no ``sample_weight``, and ``average="weighted"`` / ``"samples"`` are not
  offered.
* ``roc_auc_score`` raises ``ValueError`` naming ``y_true`` when it holds one
  class only, where scikit-learn warns and returns NaN. It takes 1-D binary
  targets only.
* ``average_precision_score`` scores a column without positives 0.0 and warns
  (``UserWarning``), as scikit-learn 1.9 does; ``"macro"`` includes that 0 in
  the mean. This is a deliberate match, not a NaN and not an error.
* ``ndcg_at_k`` takes ``(scores, gains)``, the reverse of scikit-learn's
  ``ndcg_score(y_true, y_score)``, and accepts rows of a single item (1.0 if
  its gain is positive, else 0.0) where scikit-learn refuses them.

Retrieval metrics (no scikit-learn counterpart) on a ``(B, L)`` score matrix,
one row per query, one column per gallery item: :func:`recall_at_k`,
:func:`mrr_score`, :func:`map_at_r` and :func:`retrieval_report`.

* Ties count against the query: within a group of equal scores, every
  irrelevant item is ranked before every relevant one (the worst tie-break).
  So R@K is 1 exactly when fewer than ``k`` irrelevant items score at least as
  high as the best relevant item, and the reciprocal rank is
  ``1 / (1 + #{irrelevant items scoring >= the best relevant item})``. Relevant
  items tied with each other do not count against one another: any tie-break
  puts one of them first. Each of the three metrics is the minimum of its
  value over all orders that sort the scores (tested by brute force).
* ``exclude`` (a boolean mask like ``scores``) removes items from a row
  entirely, e.g. the query itself when the gallery is the query set: they
  neither count as relevant nor take a rank. Scores themselves may be
  ``-inf``/``+inf`` (ranked last/first, tied with each other) but not NaN.
* A query without a relevant item (after ``exclude``) has no value: it is left
  out of the mean, and if no query has one a ``ValueError`` names
  ``relevance``. With ``reduce=False`` the per-query values (0.0 for such
  queries, never NaN) come with a boolean ``valid`` mask.

Bad input raises ``ValueError`` or ``TypeError`` naming the argument and the
value: shapes that differ, non-binary targets, NaN scores, ``k`` that is not an
integer >= 1.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metricopt._checks import check_choice, check_finite, check_same_shape, describe

__all__ = [
    "average_precision_score",
    "map_at_r",
    "mrr_score",
    "ndcg_at_k",
    "recall_at_k",
    "retrieval_report",
    "roc_auc_score",
]

AP_AVERAGES = ("macro", "micro", "none")

# --- input checks ------------------------------------------------------------------


def _to_tensor(name: str, value: Any) -> Tensor:
    """A detached numeric tensor from a tensor, numpy array or nested list."""
    if isinstance(value, Tensor):
        tensor = value.detach()
    else:
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise TypeError(
                f"`{name}` must be a numeric array or tensor; got dtype {array.dtype}"
            )
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.is_complex():
        raise TypeError(f"`{name}` must be real; got {describe(tensor)}")
    return tensor


def _check_ndim(name: str, tensor: Tensor, ndims: tuple[int, ...], what: str) -> None:
    if tensor.ndim not in ndims or tensor.numel() == 0:
        raise ValueError(
            f"`{name}` must be a non-empty {what}; got shape {tuple(tensor.shape)}"
        )


def _scores(
    name: str, value: Any, ndims: tuple[int, ...], what: str, *, finite: bool
) -> Tensor:
    """Scores as float64; NaN always raises, infinity too when ``finite``."""
    tensor = _to_tensor(name, value)
    _check_ndim(name, tensor, ndims, what)
    tensor = tensor.to(torch.float64)
    if finite:
        check_finite(name, tensor)
    elif bool(torch.isnan(tensor).any()):
        count = int(torch.isnan(tensor).sum())
        raise ValueError(
            f"`{name}` must not contain NaN; it has {count} ({describe(tensor)})"
        )
    return tensor


def _binary(name: str, value: Any, like: Tensor, like_name: str) -> Tensor:
    """A boolean tensor shaped like ``like`` (on its device) from 0/1 or bool values."""
    tensor = _to_tensor(name, value)
    check_same_shape(like_name, like, name, tensor)
    if tensor.dtype != torch.bool:
        ok = (tensor == 0) | (tensor == 1)
        if not bool(ok.all()):
            bad = tensor[~ok].flatten()[:3].tolist()
            raise ValueError(
                f"`{name}` must hold only 0 and 1 (or booleans); got values such as {bad}"
            )
        tensor = tensor == 1
    return tensor.to(like.device)


def _check_k(name: str, k: Any) -> int:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer >= 1; got {describe(k)}")
    if k < 1:
        raise ValueError(f"`{name}` must be an integer >= 1; got {int(k)}")
    return int(k)


def _check_ks(name: str, ks: Any) -> tuple[tuple[int, ...], bool]:
    """``(ks as ints, whether a single int was given)``."""
    if isinstance(ks, (Sequence, np.ndarray)) and not isinstance(ks, (str, bytes)):
        values = tuple(_check_k(name, k) for k in ks)
        if not values:
            raise ValueError(
                f"`{name}` must be an integer >= 1 or a non-empty sequence of them; got {describe(ks)}"
            )
        return values, False
    return (_check_k(name, ks),), True


# --- tie blocks ----------------------------------------------------------------------


def _block_ends(sorted_scores: Tensor) -> Tensor:
    """For each position of rows sorted by score, the last position of its tie block."""
    length = sorted_scores.shape[-1]
    is_last = torch.ones_like(sorted_scores, dtype=torch.bool)
    is_last[..., :-1] = sorted_scores[..., :-1] != sorted_scores[..., 1:]
    index = torch.arange(length, device=sorted_scores.device).expand_as(sorted_scores)
    ends = torch.where(is_last, index, length)
    return ends.flip(-1).cummin(-1).values.flip(-1)


def _block_starts(sorted_scores: Tensor) -> Tensor:
    """For each position of rows sorted by score, the first position of its tie block."""
    is_first = torch.ones_like(sorted_scores, dtype=torch.bool)
    is_first[..., 1:] = sorted_scores[..., 1:] != sorted_scores[..., :-1]
    index = torch.arange(
        sorted_scores.shape[-1], device=sorted_scores.device
    ).expand_as(sorted_scores)
    return torch.where(is_first, index, 0).cummax(-1).values


# --- average precision and ROC AUC ----------------------------------------------------


def _average_precision_rows(positive: Tensor, scores: Tensor) -> Tensor:
    """scikit-learn's AP of each row of ``(R, N)`` inputs; 0 for rows without positives.

    Each positive contributes the precision at the end of its tie block (the
    threshold equal to its score): positives / items scoring at least as high.
    """
    sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
    pos = positive.gather(-1, order)
    true_positives = pos.cumsum(-1)
    ends = _block_ends(sorted_scores)
    precision = true_positives.gather(-1, ends).to(torch.float64) / (ends + 1).to(
        torch.float64
    )
    n_pos = pos.sum(-1)
    total = torch.where(pos, precision, 0.0).sum(-1)
    return torch.where(n_pos > 0, total / n_pos.clamp(min=1), 0.0)


def average_precision_score(
    y_true: Any, y_score: Any, *, average: str | None = "macro"
) -> float | np.ndarray:
    """Average precision, equal to ``sklearn.metrics.average_precision_score``.

    AP = sum over thresholds t of (R_t - R_{t-1}) P_t, the thresholds being the
    distinct scores: a block of tied scores is one threshold, so every positive
    in it gets the precision of the whole block.

    Args:
        y_true: 0/1 (or boolean) targets, ``(N,)`` or multi-label ``(N, C)``.
        y_score: real scores of the same shape (higher = more positive), finite.
        average: for 2-D inputs: ``"macro"`` (mean of the per-column APs),
            ``"micro"`` (AP of the flattened arrays) or ``"none"``/``None``
            (per-column APs as a numpy array). Ignored for 1-D inputs.

    Returns:
        A float, or a numpy array of per-column APs for ``average="none"``.

    A column without positives (or a 1-D ``y_true`` without positives) scores
    0.0 with a ``UserWarning``, as in scikit-learn 1.9; ``"macro"`` averages
    that 0 in.

    Examples:
        >>> average_precision_score([0, 1, 1, 0], [0.1, 0.8, 0.4, 0.4])
        0.8333333333333333
    """
    scores = _scores("y_score", y_score, (1, 2), "1-D or 2-D array", finite=True)
    positive = _binary("y_true", y_true, scores, "y_score")
    average = "none" if average is None else average
    check_choice("average", average, AP_AVERAGES)
    if scores.ndim == 1 or average == "micro":
        per_row = _average_precision_rows(
            positive.reshape(1, -1), scores.reshape(1, -1)
        )
        columns = None
    else:
        per_row = _average_precision_rows(positive.T, scores.T)
        columns = (~positive.any(0)).nonzero().flatten().tolist()
    if columns is None and not bool(positive.any()):
        warnings.warn(
            "`y_true` has no positive: average precision is 0.0",
            UserWarning,
            stacklevel=2,
        )
    elif columns:
        warnings.warn(
            f"`y_true` columns {columns[:10]} have no positive: their average precision is 0.0",
            UserWarning,
            stacklevel=2,
        )
    if scores.ndim == 2 and average == "none":
        return per_row.cpu().numpy()
    return float(per_row.mean())


def roc_auc_score(y_true: Any, y_score: Any) -> float:
    """Area under the ROC curve, equal to ``sklearn.metrics.roc_auc_score`` (1-D binary).

    Computed from mid-ranks (Mann-Whitney U): the fraction of positive-negative
    pairs ordered correctly, a tied pair counting 1/2.

    Raises:
        ValueError: if ``y_true`` holds one class only (scikit-learn returns NaN).

    Examples:
        >>> roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        0.75
    """
    scores = _scores("y_score", y_score, (1,), "1-D array", finite=True)
    positive = _binary("y_true", y_true, scores, "y_score")
    n_pos = int(positive.sum())
    n_neg = positive.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"`y_true` must hold both classes for ROC AUC; got {n_pos} positives and {n_neg} negatives"
        )
    sorted_scores, order = torch.sort(scores)
    starts, ends = _block_starts(sorted_scores), _block_ends(sorted_scores)
    mid_ranks = (starts + ends).to(torch.float64) / 2 + 1
    rank_sum = mid_ranks[positive[order]].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


# --- NDCG -------------------------------------------------------------------------------


def ndcg_at_k(
    scores: Any, gains: Any, k: int | None = None, *, reduce: bool = True
) -> float | Tensor:
    """Normalised DCG of each row, equal to ``sklearn.metrics.ndcg_score(gains, scores, k=k)``.

    DCG@k = sum over ranks r <= k of gain_r / log2(r + 1); items with tied
    scores share the mean of their gains and of their discounts (scikit-learn's
    ``ignore_ties=False``). NDCG divides by the DCG@k of the gains sorted in
    decreasing order; a row whose gains are all 0 scores 0 (as scikit-learn).

    Args:
        scores: ``(B, L)`` real, finite scores, one row per query.
        gains: ``(B, L)`` nonnegative, finite gains (relevance grades).
        k: only the top ``k`` ranks count; ``None`` for all.
        reduce: return the mean over rows as a float; else the ``(B,)`` float64
            tensor of per-row values.

    Examples:
        >>> round(ndcg_at_k([[0.9, 0.8, 0.1]], [[0, 1, 2]]), 4)
        0.6199
    """
    scores = _scores("scores", scores, (2,), "2-D (queries, items) array", finite=True)
    gains_t = _to_tensor("gains", gains)
    check_same_shape("scores", scores, "gains", gains_t)
    gains_t = gains_t.to(device=scores.device, dtype=torch.float64)
    check_finite("gains", gains_t)
    if bool((gains_t < 0).any()):
        raise ValueError(
            f"`gains` must be nonnegative; got values such as {gains_t[gains_t < 0][:3].tolist()}"
        )
    length = scores.shape[1]
    discount = 1 / torch.log2(
        torch.arange(length, device=scores.device, dtype=torch.float64) + 2
    )
    if k is not None:
        cutoff = _check_k("k", k)
        discount[cutoff:] = 0
    sorted_scores, order = torch.sort(scores, dim=1, descending=True)
    sorted_gains = gains_t.gather(1, order)
    starts, ends = _block_starts(sorted_scores), _block_ends(sorted_scores)
    cumulative = torch.cat([discount.new_zeros(1), discount.cumsum(0)])
    block_discount = (cumulative[ends + 1] - cumulative[starts]) / (ends - starts + 1)
    dcg = (sorted_gains * block_discount).sum(1)
    ideal = (torch.sort(gains_t, dim=1, descending=True).values * discount).sum(1)
    ndcg = torch.where(ideal > 0, dcg / torch.where(ideal > 0, ideal, 1.0), 0.0)
    return float(ndcg.mean()) if reduce else ndcg


# --- retrieval: recall@K, MRR, MAP@R ----------------------------------------------------


def _retrieval_inputs(
    scores: Any, relevance: Any, exclude: Any
) -> tuple[Tensor, Tensor, Tensor | None]:
    scores = _scores("scores", scores, (2,), "2-D (queries, items) array", finite=False)
    relevant = _binary("relevance", relevance, scores, "scores")
    mask = None if exclude is None else _binary("exclude", exclude, scores, "scores")
    return scores, relevant, mask


def _worst_case_ranks(
    scores: Tensor, relevant: Tensor, exclude: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Ranks of the relevant items when every tie is broken against them.

    Returns ``(hit, rank, hits)``, each ``(B, L)`` in score order: ``hit`` marks
    the relevant, non-excluded items; for those, ``rank`` is their 1-based rank
    among the non-excluded items and ``hits`` the number of relevant items up
    to and including them. Within a tie block the irrelevant items come first,
    so a relevant item's rank is (items up to the block's end) - (relevant
    items up to the block's end) + (relevant items up to itself).
    """
    sorted_scores, order = torch.sort(scores, dim=1, descending=True)
    keep = torch.ones_like(relevant) if exclude is None else ~exclude.gather(1, order)
    hit = relevant.gather(1, order) & keep
    kept = keep.cumsum(1)
    hits = hit.cumsum(1)
    ends = _block_ends(sorted_scores)
    rank = kept.gather(1, ends) - hits.gather(1, ends) + hits
    return hit, rank, hits


def _first_rank(hit: Tensor, rank: Tensor) -> tuple[Tensor, Tensor]:
    """Worst-case rank of the best relevant item per row, and which rows have one."""
    first = torch.where(hit, rank, rank.shape[1] + 1).amin(1)
    return first, hit.any(1)


def _first_rank_unsorted(
    scores: Tensor, relevant: Tensor, exclude: Tensor | None
) -> tuple[Tensor, Tensor]:
    """:func:`_first_rank` without sorting, in O(L) per row.

    The best relevant item's worst-case rank is 1 + the number of irrelevant,
    non-excluded items scoring at least as high as it (``-inf`` included:
    every item scores at least ``-inf``). Rows without a relevant item get
    ``L + 1``, as from :func:`_first_rank`.
    """
    hit = relevant if exclude is None else relevant & ~exclude
    best = torch.where(hit, scores, -torch.inf).amax(1, keepdim=True)
    ahead = (scores >= best) & ~relevant
    if exclude is not None:
        ahead &= ~exclude
    valid = hit.any(1)
    return torch.where(valid, ahead.sum(1) + 1, scores.shape[1] + 1), valid


def _map_at_r_terms(hit: Tensor, rank: Tensor, hits: Tensor) -> Tensor:
    """Per position in score order, P@rank of the relevant items ranked <= R, else 0."""
    n_relevant = hit.sum(1, keepdim=True)
    counted = hit & (rank <= n_relevant)
    precision = hits.to(torch.float64) / rank.to(torch.float64)
    return torch.where(counted, precision, 0.0)


def _map_at_r_rows(hit: Tensor, rank: Tensor, hits: Tensor) -> Tensor:
    n_relevant = hit.sum(1)
    return _map_at_r_terms(hit, rank, hits).sum(1) / n_relevant.clamp(min=1)


# The relevance and exclusion of a block of queries, made on demand: the report
# derives them from labels and builds (rows, L) masks only for the rows that
# need them. ``top(index)`` gives (relevant, keep or None) at (B, T) column
# indices, ``rows(selected)`` the (relevant, exclude or None) rows.
_TopMasks = Callable[[Tensor], tuple[Tensor, Tensor | None]]
_RowMasks = Callable[[Tensor], tuple[Tensor, Tensor | None]]


def _dense_masks(
    relevant: Tensor, exclude: Tensor | None
) -> tuple[_TopMasks, _RowMasks]:
    """``(top, rows)`` of ``(B, L)`` relevance and exclusion masks."""

    def top(index: Tensor) -> tuple[Tensor, Tensor | None]:
        keep = None if exclude is None else ~exclude.gather(1, index)
        return relevant.gather(1, index), keep

    def rows(selected: Tensor) -> tuple[Tensor, Tensor | None]:
        return relevant[selected], None if exclude is None else exclude[selected]

    return top, rows


def _retrieval_rows(
    scores: Tensor,
    masks: tuple[_TopMasks, _RowMasks],
    n_relevant: Tensor,
    n_excluded: int,
    max_k: int,
    *,
    overwrite: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(first, valid, map_at_r)`` per row, bit for bit those of a full sort.

    The full sort being :func:`_first_rank` and :func:`_map_at_r_rows` of
    :func:`_worst_case_ranks`. ``n_relevant`` holds each row's number of
    relevant, non-excluded items and ``n_excluded`` bounds the number of
    excluded items in a row. With ``overwrite`` the (contiguous) ``scores``
    tensor serves as the work buffer and its content is lost.

    Instead of sorting whole rows, this takes the top ``T = max(max_k, R) +
    n_excluded + 1`` scores of each row (R the largest ``n_relevant``) with
    ``topk``. Every tie block of the top ``T`` but the last is whole (every
    item scoring higher than the last block is in the top ``T``), so the
    worst-case ranks in it are those of the full sort, and every item after
    these blocks ranks after all of them. Per row:

    * MAP@R counts the relevant items ranked <= R_q, all in the whole blocks
      when these hold >= R_q non-excluded items; else the row is sorted in
      full. The terms are summed as the full sort sums them, in a ``(B, L)``
      tensor holding them at their positions in score order and zeros
      elsewhere, so the floats are the same. Within a tie block mixing
      relevant and other items, where the terms lie depends on how the sort
      orders the tie: a row with such a block holding a counted term is
      sorted in full too.
    * The first relevant item's rank is read from the whole blocks if one is
      there, else counted by :func:`_first_rank_unsorted` (O(L), no sort).

    Costs: one ``topk`` and O(B * T) work, plus O(B * L) to write and sum the
    terms; a row sorted in full costs O(L log L) and about 100 bytes per item.
    """
    length = scores.shape[1]
    size = max(max_k, int(n_relevant.max())) + n_excluded + 1
    top_masks, row_masks = masks
    if 2 * size > length:
        # the top block is much of the row: sort it whole
        relevant, exclude = row_masks(
            torch.arange(scores.shape[0], device=scores.device)
        )
        hit, rank, hits = _worst_case_ranks(scores, relevant, exclude)
        first, valid = _first_rank(hit, rank)
        return first, valid, _map_at_r_rows(hit, rank, hits)
    top_scores, index = scores.topk(size, dim=1)
    relevant_top, keep = top_masks(index)
    hit = relevant_top if keep is None else relevant_top & keep
    hits = hit.cumsum(1)
    positions = torch.arange(size, device=scores.device)
    kept = (positions + 1).expand_as(hits) if keep is None else keep.cumsum(1)
    same = top_scores[:, 1:] == top_scores[:, :-1]
    tied = bool(same.any())
    if tied:
        starts, ends = _block_starts(top_scores), _block_ends(top_scores)
        rank = kept.gather(1, ends) - hits.gather(1, ends) + hits
        # the last tie block may go on past the cut: the blocks before it are whole
        n_whole = torch.where(positions < starts[:, -1:], kept, 0).amax(1)
    else:  # every block is one item
        rank = kept
        n_whole = kept[:, -2]
    # Items past the whole blocks (the last block's ranks may be too small) rank
    # after all n_whole items in them; so where n_whole >= R no counted term and
    # no better first rank lies there.
    counted = hit & (rank <= n_relevant[:, None])
    full = n_whole < n_relevant
    if tied:
        # a tie block mixing hits and non-hits, holding a counted term
        counted_sum = counted.cumsum(1)
        in_block = (
            counted_sum.gather(1, ends)
            - counted_sum.gather(1, starts)
            + counted.gather(1, starts)
        )
        mixed = same & (hit[:, 1:] != hit[:, :-1])
        full |= (mixed & (in_block[:, 1:] > 0)).any(1)
    first = torch.where(hit, rank, length + 1).amin(1)
    valid = n_relevant > 0
    # no relevant item in the whole blocks: count the items ahead of the best one
    beyond = (valid & (first > n_whole) & ~full).nonzero().flatten()
    if beyond.numel():
        first[beyond] = _first_rank_unsorted(scores[beyond], *row_masks(beyond))[0]
    sort_rows = full.nonzero().flatten()
    if sort_rows.numel():
        hit_s, rank_s, hits_s = _worst_case_ranks(
            scores[sort_rows], *row_masks(sort_rows)
        )
        first[sort_rows] = _first_rank(hit_s, rank_s)[0]
        sorted_terms = _map_at_r_terms(hit_s, rank_s, hits_s)
    # the terms at their positions in score order and zeros elsewhere, in a
    # contiguous (B, L) tensor like the one the full sort sums: the same sums
    terms = scores if overwrite else scores.new_empty(scores.shape)
    top_terms = terms[:, :size]
    top_terms.copy_(hits)
    top_terms.div_(rank)  # float64 / int64, as hits.to(float64) / rank.to(float64)
    top_terms.masked_fill_(~counted, 0.0)
    terms[:, size:] = 0.0
    if sort_rows.numel():
        terms[sort_rows] = sorted_terms
    return first, valid, terms.sum(1) / n_relevant.clamp(min=1)


def _reduce(values: Tensor, valid: Tensor) -> float:
    count = int(valid.sum())
    if count == 0:
        raise ValueError(
            "`relevance` has no relevant item (outside `exclude`) for any query; the metric is undefined"
        )
    return float(torch.where(valid, values, 0.0).sum() / count)


def recall_at_k(
    scores: Any,
    relevance: Any,
    k: int | Sequence[int],
    *,
    exclude: Any = None,
    reduce: bool = True,
) -> Any:
    """Recall@K of metric learning: 1 for a query with a relevant item in its top ``k``, else 0.

    Ties count against the query: R@K is 1 exactly when fewer than ``k``
    irrelevant, non-excluded items score at least as high as the best relevant
    item.

    Args:
        scores: ``(B, L)`` scores (similarities), one row per query; no NaN.
        relevance: ``(B, L)`` 0/1 or boolean relevance.
        k: an integer >= 1, or a sequence of them.
        exclude: optional ``(B, L)`` boolean mask of items to ignore (e.g. the
            query itself).
        reduce: return the mean over the queries that have a relevant item;
            else per-query values.

    Returns:
        ``reduce=True``: a float, or a dict ``k -> float`` for a sequence of
        ``k``. ``reduce=False``: ``(values, valid)``: float64 ``(B,)`` values
        (or a dict ``k -> values``; 0.0 where invalid) and the boolean ``(B,)``
        mask of queries with a relevant item.

    Raises:
        ValueError: also when no query has a relevant item and ``reduce=True``.

    Examples:
        >>> recall_at_k([[0.9, 0.5, 0.5], [0.2, 0.7, 0.1]], [[0, 1, 0], [0, 1, 0]], [1, 4])
        {1: 0.5, 4: 1.0}
    """
    ks, single = _check_ks("k", k)
    scores, relevant, mask = _retrieval_inputs(scores, relevance, exclude)
    first, valid = _first_rank_unsorted(scores, relevant, mask)
    values = {kk: ((first <= kk) & valid).to(torch.float64) for kk in ks}
    if not reduce:
        return (values[ks[0]] if single else values), valid
    reduced = {kk: _reduce(v, valid) for kk, v in values.items()}
    return reduced[ks[0]] if single else reduced


def mrr_score(
    scores: Any, relevance: Any, *, exclude: Any = None, reduce: bool = True
) -> Any:
    """Mean reciprocal rank of the first relevant item, ties counting against the query.

    The rank of the first relevant item is 1 + the number of irrelevant,
    non-excluded items scoring at least as high as the best relevant item.
    Arguments and return values as :func:`recall_at_k` (without ``k``).

    Examples:
        >>> mrr_score([[0.9, 0.5, 0.5]], [[0, 1, 0]])
        0.3333333333333333
    """
    scores, relevant, mask = _retrieval_inputs(scores, relevance, exclude)
    first, valid = _first_rank_unsorted(scores, relevant, mask)
    values = torch.where(valid, 1 / first.to(torch.float64), 0.0)
    return _reduce(values, valid) if reduce else (values, valid)


def map_at_r(
    scores: Any, relevance: Any, *, exclude: Any = None, reduce: bool = True
) -> Any:
    """MAP@R (Musgrave, Belongie, Lim, "A metric learning reality check", ECCV 2020).

    With R the number of relevant, non-excluded items of a query,
    MAP@R = (1/R) sum over ranks i <= R of P@i * rel_i, where P@i is the
    precision of the top i. Ranks break ties against the query (irrelevant
    items first within a group of equal scores). Arguments and return values
    as :func:`recall_at_k` (without ``k``).

    Examples:
        >>> map_at_r([[0.9, 0.8, 0.7, 0.1]], [[1, 0, 1, 0]])
        0.5
    """
    scores, relevant, mask = _retrieval_inputs(scores, relevance, exclude)
    n_relevant = (relevant if mask is None else relevant & ~mask).sum(1)
    n_excluded = 0 if mask is None else int(mask.sum(1).max())
    _, valid, values = _retrieval_rows(
        scores, _dense_masks(relevant, mask), n_relevant, n_excluded, 1
    )
    return _reduce(values, valid) if reduce else (values, valid)


# --- embeddings -> retrieval report ----------------------------------------------------


def _embeddings(name: str, value: Any) -> Tensor:
    emb = _to_tensor(name, value)
    _check_ndim(name, emb, (2,), "2-D (samples, features) array")
    emb = emb.to(torch.float64)
    check_finite(name, emb)
    norms = emb.norm(dim=1, keepdim=True)
    if bool((norms == 0).any()):
        rows = (norms.flatten() == 0).nonzero().flatten()[:5].tolist()
        raise ValueError(
            f"`{name}` rows {rows} are zero vectors; their cosine similarity is undefined"
        )
    return emb / norms


def _labels(name: str, value: Any) -> np.ndarray:
    array = (
        value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)
    )
    if array.ndim != 1:
        raise ValueError(
            f"`{name}` must be a 1-D array of labels; got shape {array.shape}"
        )
    return array


def _encode_labels(
    query: np.ndarray, gallery: np.ndarray | None
) -> tuple[Tensor, Tensor | None]:
    """Integer codes for two label arrays (any comparable dtype, strings included)."""
    both = query if gallery is None else np.concatenate([query, gallery])
    try:
        codes = np.unique(both, return_inverse=True)[1].reshape(-1)
    except TypeError as error:
        raise TypeError(
            f"labels must be comparable values; got dtype {both.dtype}"
        ) from error
    codes = torch.from_numpy(codes.astype(np.int64))
    if gallery is None:
        return codes, None
    return codes[: len(query)], codes[len(query) :]


def _label_masks(
    q_codes: Tensor, g_codes: Tensor, self_index: Tensor | None, columns: Tensor
) -> tuple[_TopMasks, _RowMasks]:
    """``(top, rows)`` of a block of queries from label codes.

    An item is relevant when its label is the query's; ``self_index``
    (leave-one-out) holds each query's own column, which is excluded.
    """

    def top(index: Tensor) -> tuple[Tensor, Tensor | None]:
        keep = None if self_index is None else index != self_index[:, None]
        return g_codes.take(index) == q_codes[:, None], keep

    def rows(selected: Tensor) -> tuple[Tensor, Tensor | None]:
        relevant = q_codes[selected, None] == g_codes[None, :]
        if self_index is None:
            return relevant, None
        return relevant, self_index[selected, None] == columns[None, :]

    return top, rows


def retrieval_report(
    query_emb: Any,
    query_labels: Any,
    gallery_emb: Any = None,
    gallery_labels: Any = None,
    *,
    ks: Sequence[int] = (1, 2, 4, 8),
    chunk_size: int = 1024,
) -> dict[str, float]:
    """R@K, MAP@R and MRR of cosine-similarity retrieval, as in metric-learning papers.

    Embeddings are L2-normalised (in float64); a query's scores are its cosine
    similarities to the gallery, and the relevant gallery items are those with
    the query's label. Without a gallery, the query set is the gallery and each
    query's own item is excluded. Queries without a relevant gallery item are
    left out of every mean (a ``ValueError`` if there is none).

    Queries are processed ``chunk_size`` at a time, their scores in one
    float64 ``(chunk_size, G)`` buffer (80 MB for the default 1024 queries
    against 10,000 gallery items). A query's metrics need only its top R + 2
    or so scores in order (R its number of relevant items, or ``max(ks)`` if
    larger), so each chunk takes that many with ``topk`` instead of sorting
    whole rows, several times faster and leaner than sorting every row
    (measured: ``docs/design.md``, "Exact metrics"). A query whose ranking
    hinges on a tie (across the cut, or between a relevant and another item
    among its top R) is sorted in full, as is every chunk where a query's top R
    is over half the gallery; that costs about 100 bytes per score of the rows
    sorted. The results are the same floats either way. Everything runs on the
    embeddings' device.

    Args:
        query_emb: ``(Q, D)`` embeddings, finite, no zero rows.
        query_labels: ``(Q,)`` labels (integers, strings, ...).
        gallery_emb: ``(G, D)`` embeddings, or ``None`` (leave-one-out on the queries).
        gallery_labels: ``(G,)`` labels; given exactly when ``gallery_emb`` is.
        ks: the cut-offs of recall@K.
        chunk_size: queries scored at once.

    Returns:
        ``{"R@1": ..., "R@2": ..., ..., "MAP@R": ..., "MRR": ...}`` (one ``R@k``
        per entry of ``ks``).

    Examples:
        >>> emb = [[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]
        >>> retrieval_report(emb, [0, 0, 1, 1], ks=(1,))
        {'R@1': 1.0, 'MAP@R': 1.0, 'MRR': 1.0}
    """
    ks_checked, _ = _check_ks("ks", ks)
    chunk_size = _check_k("chunk_size", chunk_size)
    if (gallery_emb is None) != (gallery_labels is None):
        raise ValueError(
            "`gallery_emb` and `gallery_labels` must be given together; got "
            f"gallery_emb={describe(gallery_emb)} and gallery_labels={describe(gallery_labels)}"
        )
    query = _embeddings("query_emb", query_emb)
    q_labels = _labels("query_labels", query_labels)
    if len(q_labels) != query.shape[0]:
        raise ValueError(
            f"`query_emb` and `query_labels` must have as many rows; got {query.shape[0]} and {len(q_labels)}"
        )
    if gallery_emb is None:
        gallery, g_codes = query, None
        q_codes, _ = _encode_labels(q_labels, None)
    else:
        gallery = _embeddings("gallery_emb", gallery_emb).to(query.device)
        g_labels = _labels("gallery_labels", gallery_labels)
        if len(g_labels) != gallery.shape[0]:
            raise ValueError(
                "`gallery_emb` and `gallery_labels` must have as many rows; "
                f"got {gallery.shape[0]} and {len(g_labels)}"
            )
        if gallery.shape[1] != query.shape[1]:
            raise ValueError(
                "`query_emb` and `gallery_emb` must have as many columns; "
                f"got shapes {tuple(query.shape)} and {tuple(gallery.shape)}"
            )
        q_codes, g_codes = _encode_labels(q_labels, g_labels)
    q_codes = q_codes.to(query.device)
    g_codes = q_codes if g_codes is None else g_codes.to(query.device)
    leave_one_out = gallery_emb is None
    # relevant items per query: its label's count in the gallery, less itself
    n_relevant = torch.bincount(g_codes, minlength=int(q_codes.max()) + 1)[q_codes]
    n_relevant -= int(leave_one_out)
    # per-query values, summed once at the end: any chunk size gives the same floats
    first_ranks, valids, map_values = [], [], []
    columns = torch.arange(gallery.shape[0], device=query.device)
    # one scores buffer for every chunk, reused for the MAP@R terms
    buffer = query.new_empty(min(chunk_size, query.shape[0]), gallery.shape[0])
    for start in range(0, query.shape[0], chunk_size):
        stop = min(start + chunk_size, query.shape[0])
        scores = torch.mm(query[start:stop], gallery.T, out=buffer[: stop - start])
        masks = _label_masks(
            q_codes[start:stop],
            g_codes,
            torch.arange(start, stop, device=query.device) if leave_one_out else None,
            columns,
        )
        first, valid, map_value = _retrieval_rows(
            scores,
            masks,
            n_relevant[start:stop],
            int(leave_one_out),
            max(ks_checked),
            overwrite=True,
        )
        first_ranks.append(first)
        valids.append(valid)
        map_values.append(map_value)
    first, valid = torch.cat(first_ranks), torch.cat(valids)
    if not bool(valid.any()):
        raise ValueError(
            "no query has a relevant gallery item (another item with its label); "
            "`query_labels` must repeat a label, or `gallery_labels` contain one"
        )
    report = {
        f"R@{kk}": _reduce(((first <= kk) & valid).to(torch.float64), valid)
        for kk in ks_checked
    }
    report["MAP@R"] = _reduce(torch.cat(map_values), valid)
    report["MRR"] = _reduce(torch.where(valid, 1 / first.to(torch.float64), 0.0), valid)
    return report
