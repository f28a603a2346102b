"""The rank-based loss family: AP, recall@K, NDCG and AUROC as losses (RaMBO).

Method: Rolinek, Musil, Paulus, Vlastelica, Michaelis and Martius, "Optimizing
Rank-based Metrics with Blackbox Differentiation", CVPR 2020. Every loss here is
the exact metric written in ranks, and ranks come from
:func:`metricopt.losses.ranker.interpolated_rank` (NDCG: one sort forward, one
sort backward) or, for the losses that read only the relevant items' ranks
(AP, AUROC, recall), from :func:`metricopt.losses.relevant_ranks.relevant_ranks`
(one sort forward, binary searches backward, the same gradient). Time is
O(n log n) and memory O(n) per ranking: no pairwise matrix, no sampler, no
dataset index. Rankings too large for memory are processed in chunks or
refused before allocating (:mod:`metricopt.losses.chunks`).

For a relevant item i, ``rk_i`` is its rank among all items and ``rk+_i`` its
rank among the relevant items only; ``r_i = rk_i - rk+_i`` is the number of
irrelevant items ranked above it. Ties count against every tied item (the
ranker's rule), as scikit-learn's average precision does.

* AP: ``1 - mean_i rk+_i / rk_i``, which is exactly ``1 - average precision``
  (scikit-learn's, ties included). Multi-label: the per-class (column) AP loss
  averaged over classes (mAP), mixed with the cross-class AP of all columns
  flattened: ``(mAP loss + w * cross-class loss) / (1 + w)``; the paper mixed
  them 2 : 1, ``w = 0.5``.
* Recall (retrieval): per query, the mean over its relevant items of
  ``log(1 + r_i)`` ("log") or ``log(1 + log(1 + r_i))`` ("loglog", the paper's
  best on SOP and CUB); 0 exactly when every relevant item precedes every
  irrelevant one, i.e. recall@1 = 1 and beyond.
* AUROC (beyond the paper): ``mean_i r_i / #irrelevant = 1 - AUROC`` on
  tie-free input (scikit-learn counts a tie as 1/2, this loss as 1).
* NDCG@K (beyond the paper): ``1 - DCG@K / IDCG@K`` with linear gains and
  discount ``1 / log2(1 + rank)`` (scikit-learn's ``ndcg_score``; equal on
  tie-free input). Items ranked below K count 0 but get the gradient of the
  uncut discount, so that they can enter the top K.

Gradient (DECIDED, measured; the paper and the official code differentiate
both rankings): the gradient flows through ``rk`` only, and ``rk+`` is a
constant. The interpolated gradients of the two rankings taken separately push
a relevant item up among all items and down among the relevant ones, and cancel
only in the exact sum: the leftover is noise, and without it validation AP and
MAP@R rose, with one sort fewer in the backward pass (see the design notes:
``docs/design.md``, "Rank losses (RaMBO)").

Scores are rows: a ``(B, L)`` matrix is B rankings of L items (queries x
gallery). Binary ``(N,)`` scores are one ranking; multi-label ``(N, C)`` scores
rank the N samples within each class column.

Margin (alpha), in units of the ranking's spread ``sigma`` (the standard
deviation of its scores, :func:`~metricopt.losses.ranker.score_spread`):
relevant scores move down by ``alpha sigma / 2`` and irrelevant ones up by as
much before ranking, so a relevant item counts as ranked above an irrelevant
one only when its score is higher by more than ``alpha sigma`` (a gap of
exactly that becomes a tie, and ties count against). Measured relative to the
scores, the margin means the same for logits of any scale and for a
zero-initialised head, where a margin in score units put every positive below
every negative with exactly zero gradient (``docs/design.md``, "Rank losses
(RaMBO)"). The shift is applied in float64. The margin is constant, as in the
paper; the official code draws it at random per call, a quirk not to copy. With
``margin=0`` each loss's value equals 1 - its exact metric
(:mod:`metricopt.metrics.ranking`).

Interpolation (lambda) is unitless, per ranking: the item whose rank the loss
pushes hardest moves by ``interpolation`` spreads of its ranking
(:mod:`metricopt.losses.ranker`). The perturbation uses the direction of the
upstream gradient of each row, so neither the mean over rows, the mixture
weights, nor any factor on the loss (AMP, accumulation) changes it: the
gradient is linear in the loss.

Undefined rows: a ranking with no relevant item (or, for AUROC, no irrelevant
one; for NDCG, all gains 0) has no AP, recall or AUROC. Such rows are left out
of the mean; a batch in which every row is undefined gives a loss of 0 that
still backpropagates (zero gradient), so a training loop never sees NaN.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metricopt._autocast import full_precision
from metricopt._checks import (
    check_choice,
    check_finite,
    check_nonnegative,
    check_positive,
    check_same_shape,
    check_tensor,
    describe,
)
from metricopt.distributed import gather_batch
from metricopt.losses.chunks import check_memory_limit, row_chunk, run_in_chunks
from metricopt.losses.memory import BatchMemory
from metricopt.losses.ranker import _InterpolatedRank, score_spread
from metricopt.losses.relevant_ranks import relevant_columns, relevant_ranks

__all__ = [
    "APLoss",
    "AUROCLoss",
    "NDCGLoss",
    "RecallLoss",
    "auroc_loss",
    "average_precision_loss",
    "ndcg_loss",
    "recall_loss",
    "recall_loss_scores",
    "retrieval_scores",
]

# The defaults below were chosen on validation data only (python -m benchmarks.rank_design_sweep; the
# figures: docs/design.md, "Rank losses (RaMBO)"). Interpolation and margins are in units of each ranking's
# spread (metricopt.losses.ranker), the same for scores of any scale, except the recall loss's on
# cosine similarities, which have a scale of their own (COSINE_UNIT).

#: RaMBO's lambda (interpolation) of the AP, AUROC and NDCG losses: the best mean validation AP of the design
#: sweep (docs/design.md, "Rank losses (RaMBO)"). NDCG takes it unvalidated.
DEFAULT_INTERPOLATION = 0.25
#: Margin of the AP and AUROC losses, in spreads of the scores: the best mean validation AP at lambda 0.25.
DEFAULT_MARGIN = 0.05
#: RaMBO's lambda (interpolation) of the recall loss, in cosine units (COSINE_UNIT), and its margin: the best
#: mean validation MAP@R of the design sweep on UCI Letter's training letters, with and without shadow columns
#: (docs/design.md, "Rank losses (RaMBO)"). At 2048 the perturbation carries nearly every relevant item with a
#: gradient past every other item, so the gradient counts the irrelevant items above each relevant one (and the
#: relevant ones below each irrelevant one), all alike; its gradient is 30 to 90 times smaller than lambda 2's
#: (benchmarks/recall_gradient_scale.py).
DEFAULT_RECALL_INTERPOLATION = 2048.0
#: Margin of the recall loss, in cosine units: chosen with DEFAULT_RECALL_INTERPOLATION (0 at that interpolation
#: gave validation MAP@R 0.436 against 0.494).
DEFAULT_RECALL_MARGIN = 0.005
#: Weight of the recall loss's AP term (``ap_weight``): 0, the paper's loss; 0.25, 1 and 4 (at interpolation 2,
#: margin 0) gave validation MAP@R far below the defaults above (docs/design.md, "Rank losses (RaMBO)").
DEFAULT_RECALL_AP_WEIGHT = 0.0
#: The paper's mAP : cross-class AP mix of 2 : 1.
DEFAULT_CROSS_CLASS_WEIGHT = 0.5
RECALL_VARIANTS = ("log", "loglog")
#: The unit of the recall loss's interpolation and margin on cosine similarities.
COSINE_UNIT = 1.0


# ---------------------------------------------------------------- arguments


def _check_float(name: str, scores: Tensor, validate: bool = True) -> Tensor:
    check_tensor(name, scores)
    if not scores.is_floating_point():
        raise TypeError(f"`{name}` must be a floating tensor; got {describe(scores)}")
    if validate:
        check_finite(name, scores)
    return scores


def _check_binary(name: str, target: Tensor, validate: bool = True) -> Tensor:
    """``target`` as a bool tensor, raising (when ``validate``) unless every value is 0 or 1."""
    check_tensor(name, target)
    if target.dtype == torch.bool:
        return target
    if validate and not bool(((target == 0) | (target == 1)).all()):
        bad = target[(target != 0) & (target != 1)].flatten()[:3].tolist()
        raise ValueError(f"`{name}` must be binary (0 or 1); it contains {bad} ({describe(target)})")
    return target != 0


def _check_k(k: int | None) -> int | None:
    if k is not None and (isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1):
        raise ValueError(f"`k` must be an integer >= 1 or None; got {describe(k)}")
    return None if k is None else int(k)


def _classification_rows(scores: Tensor, target: Tensor, validate: bool = True) -> tuple[Tensor, Tensor]:
    """Binary ``(N,)``/``(N, 1)`` -> ``(1, N)``; multi-label ``(N, C)`` -> ``(C, N)``; multi-class one-hot."""
    _check_float("scores", scores, validate)
    check_tensor("target", target)
    if scores.ndim == 2 and target.ndim == 1 and scores.shape[1] > 1 and len(target) == len(scores):
        if target.is_floating_point() or target.dtype == torch.bool:
            raise ValueError(f"multi-class `target` must hold integer class indices; got {describe(target)}")
        if validate and bool(((target < 0) | (target >= scores.shape[1])).any()):
            raise ValueError(f"multi-class `target` must lie in [0, {scores.shape[1]}); got {describe(target)}")
        target = F.one_hot(target.long(), scores.shape[1])
    if scores.ndim == 2 and scores.shape[1] == 1 and target.shape in {scores.shape, scores.shape[:1]}:
        scores, target = scores[:, 0], target.reshape(-1)
    if scores.ndim not in (1, 2) or scores.shape != target.shape or scores.shape[0] == 0:
        raise ValueError(
            "`scores` and `target` shapes do not match: expected scores (N,) with target (N,), scores (N, C) "
            f"with target (N, C) or with class indices (N,); got scores {tuple(scores.shape)} and "
            f"target {tuple(target.shape)}"
        )
    relevant = _check_binary("target", target, validate)
    return (scores[None], relevant[None]) if scores.ndim == 1 else (scores.T, relevant.T)


def _with_memory(scores: Tensor, relevant: Tensor, memory: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor]:
    """Append remembered (detached) columns to ``(rows, L)`` scores and relevance."""
    if memory is None:
        return scores, relevant
    memory_scores, memory_relevant = memory
    return (
        torch.cat([scores, memory_scores.detach().to(scores)], -1),
        torch.cat([relevant, memory_relevant.to(relevant)], -1),
    )


# ---------------------------------------------------------------- the shared rank core


def _work_dtype(scores: Tensor) -> torch.dtype:
    """The dtype a loss computes and returns in: float64 for float64 scores, else float32 (half included)."""
    return torch.float64 if scores.dtype == torch.float64 else torch.float32


def _rank_rows(scores: Tensor, interpolation: float) -> Tensor:
    """Interpolated ranks of ``(B, L)`` rows, in the work dtype, in units of each row's spread
    (:func:`~metricopt.losses.ranker.score_spread`), formed in float64 (NDCG's ranking of every item)."""
    return _InterpolatedRank.apply(scores.to(torch.float64), interpolation, score_spread(scores)).to(
        _work_dtype(scores))


def _unit(scores: Tensor, unit: float | None) -> Tensor:
    """Each row's unit of interpolation and margin, ``(B, 1)`` float64: the spread of its finite scores (excluded
    items are ``-inf``), or the fixed ``unit``."""
    if unit is None:
        return score_spread(scores)
    return torch.full((scores.shape[0], 1), check_positive("unit", unit), dtype=torch.float64, device=scores.device)


def _synchronise(scores: Tensor, validate: bool) -> bool:
    """Whether a loss may read values from the scores' device: on the CPU (free), or when validating anyway."""
    return validate or scores.device.type == "cpu"


def _relevant_ranks(
    scores: Tensor, relevant: Tensor, interpolation: float, margin: float, synchronise: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(above, rank_relevant, valid)`` of each row's relevant items (:mod:`metricopt.losses.relevant_ranks`),
    in units of each row's spread.

    ``above`` (irrelevant items at or above, after the margin shift) carries the
    interpolated gradient; ``rank_relevant`` (rank among the relevant items) is
    exact and constant (module docstring, "Gradient"). All ``(B, K)``: K is the
    largest number of relevant items in a row where the loss may
    ``synchronise`` (read that number from the device), else the row length.
    """
    columns, valid = relevant_columns(relevant, compact=synchronise)
    every = synchronise and scores.shape[0] == 1  # one ranking, compacted: every entry is real
    above, rank_relevant = relevant_ranks(scores, columns, None if every else valid, interpolation=interpolation,
                                          margin=margin, unit=_unit(scores, None), synchronise=synchronise)
    return above, rank_relevant, valid


def _mean_over_defined(per_row: Tensor, defined: Tensor) -> Tensor:
    """Mean of the defined rows; 0 (attached to the graph) when none is defined. No host synchronisation."""
    kept = torch.where(defined, per_row, torch.zeros_like(per_row))
    return kept.sum() / defined.sum().clamp_min(1)


def _in_chunks(
    per_row: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]], scores: Tensor, relevant: Tensor,
    memory_limit: int | None, synchronise: bool, what: str,
) -> Tensor:
    """Mean over defined rows of ``per_row(scores, relevant) -> (value, defined)``, in row chunks that fit
    ``memory_limit`` (:mod:`metricopt.losses.chunks`), returned in the scores' work dtype."""
    width = int(relevant.sum(-1).max()) if synchronise and relevant.numel() else relevant.shape[-1]
    chunk = row_chunk(scores.shape[0], scores.shape[-1], width, scores.element_size(), scores.device, memory_limit,
                      what)
    values, defined = run_in_chunks(lambda a, b: per_row(scores[a:b], relevant[a:b]), scores.shape[0], chunk)
    return _mean_over_defined(values, defined).to(_work_dtype(scores))


def _ap_loss_rows(scores: Tensor, relevant: Tensor, interpolation: float, margin: float,
                  memory_limit: int | None, synchronise: bool) -> Tensor:
    """``1 - AP`` averaged over rows with at least one relevant item."""

    def per_row(rows: Tensor, rows_relevant: Tensor) -> tuple[Tensor, Tensor]:
        above, rank_relevant, valid = _relevant_ranks(rows, rows_relevant, interpolation, margin, synchronise)
        precision = torch.where(valid, rank_relevant / (rank_relevant + above), torch.zeros_like(above))
        n_relevant = valid.sum(-1)
        return 1 - precision.sum(-1) / n_relevant.clamp_min(1), n_relevant > 0

    return _in_chunks(per_row, scores, relevant, memory_limit, synchronise, "average_precision_loss")


# ---------------------------------------------------------------- average precision


def average_precision_loss(
    scores: Tensor,
    target: Tensor,
    *,
    interpolation: float = DEFAULT_INTERPOLATION,
    margin: float = DEFAULT_MARGIN,
    cross_class_weight: float = DEFAULT_CROSS_CLASS_WEIGHT,
    memory: tuple[Tensor, Tensor] | None = None,
    distributed: bool = True,
    validate: bool = True,
    memory_limit: int | None = None,
) -> Tensor:
    """``1 - average precision`` of ``scores`` (RaMBO), differentiable.

    Args:
        scores: real-valued scores, higher = more relevant (logits work):
            ``(N,)`` or ``(N, 1)`` binary; ``(N, C)`` multi-label or multi-class.
        target: ``(N,)`` in {0, 1} (binary), ``(N, C)`` in {0, 1} (multi-label)
            or ``(N,)`` class indices with ``(N, C)`` scores (one-vs-rest mAP).
        interpolation: RaMBO's lambda > 0, in units of each ranking's spread
            (:mod:`metricopt.losses.ranker`).
        margin: alpha >= 0, in units of each ranking's spread (the standard
            deviation of its scores); 0 makes the value exactly ``1 - AP``.
        cross_class_weight: w >= 0 of the cross-class AP term for ``(N, C)``
            scores: ``(mAP loss + w * cross-class loss) / (1 + w)``.
        memory: optional ``(scores, target)`` of earlier samples, detached, in
            the same layout; they join the ranking without gradient.
        distributed: under ``torch.distributed`` (an initialised process group of
            two or more processes) and where a gradient can flow, rank the
            global batch, gathered from every process in rank order with
            gradients (:func:`metricopt.distributed.gather`), so DDP's averaged
            gradients equal one process's on the whole batch. Under
            ``torch.no_grad()`` nothing is gathered (a validation step on one
            process never blocks): gather explicitly for the global value.
            False: this process's batch only.
        validate: check that scores are finite and targets binary (one host
            synchronisation each); False skips the checks, leaving no host
            synchronisation in the loss.
        memory_limit: bytes of working memory the loss may use (None: half
            the memory free on the device, looked up only for large inputs);
            rankings that do not fit at once are processed in chunks, and one
            that does not fit alone raises ``ValueError`` before allocating
            (:mod:`metricopt.losses.chunks`).

    Returns:
        Scalar loss in [0, 1] (float32 for half-precision scores); classes
        without a positive are left out.

    >>> scores = torch.tensor([2.0, 1.0, 0.5, -1.0], requires_grad=True)
    >>> loss = average_precision_loss(scores, torch.tensor([1, 0, 1, 0]), margin=0.0)
    >>> round(loss.item(), 4)          # AP = (1/1 + 2/3) / 2
    0.1667
    """
    check_positive("interpolation", interpolation)
    margin = check_nonnegative("margin", margin)
    cross_class_weight = check_nonnegative("cross_class_weight", cross_class_weight)
    memory_limit = check_memory_limit(memory_limit)
    scores, target = gather_batch(scores, target, enabled=distributed)
    rows, relevant = _classification_rows(scores, target, validate)
    if memory is not None:
        memory = _classification_rows(*memory, validate)
    rows, relevant = _with_memory(rows, relevant, memory)
    synchronise = _synchronise(rows, validate)
    per_class = _ap_loss_rows(rows, relevant, interpolation, margin, memory_limit, synchronise)
    if rows.shape[0] == 1 or cross_class_weight == 0:
        return per_class
    cross = _ap_loss_rows(rows.reshape(1, -1), relevant.reshape(1, -1), interpolation, margin, memory_limit,
                          synchronise)
    return (per_class + cross_class_weight * cross) / (1 + cross_class_weight)


# ---------------------------------------------------------------- AUROC


def auroc_loss(
    scores: Tensor,
    target: Tensor,
    *,
    interpolation: float = DEFAULT_INTERPOLATION,
    margin: float = DEFAULT_MARGIN,
    memory: tuple[Tensor, Tensor] | None = None,
    distributed: bool = True,
    validate: bool = True,
    memory_limit: int | None = None,
) -> Tensor:
    """``1 - AUROC`` of ``scores`` via interpolated ranks (macro over ``(N, C)`` columns).

    Same shapes and arguments as :func:`average_precision_loss`. A column
    without positives or without negatives is left out.

    >>> loss = auroc_loss(torch.tensor([2.0, 1.0, 0.5, -1.0]), torch.tensor([1, 0, 1, 0]), margin=0.0)
    >>> loss.item()                    # one of four (positive, negative) pairs is misordered
    0.25
    """
    check_positive("interpolation", interpolation)
    margin = check_nonnegative("margin", margin)
    memory_limit = check_memory_limit(memory_limit)
    scores, target = gather_batch(scores, target, enabled=distributed)
    rows, relevant = _classification_rows(scores, target, validate)
    if memory is not None:
        memory = _classification_rows(*memory, validate)
    rows, relevant = _with_memory(rows, relevant, memory)
    synchronise = _synchronise(rows, validate)

    def per_row(chunk: Tensor, chunk_relevant: Tensor) -> tuple[Tensor, Tensor]:
        above, _, valid = _relevant_ranks(chunk, chunk_relevant, interpolation, margin, synchronise)
        n_relevant = valid.sum(-1)
        n_irrelevant = chunk.shape[-1] - n_relevant
        misordered = torch.where(valid, above, torch.zeros_like(above)).sum(-1)
        return misordered / (n_relevant * n_irrelevant).clamp_min(1), (n_relevant > 0) & (n_irrelevant > 0)

    return _in_chunks(per_row, rows, relevant, memory_limit, synchronise, "auroc_loss")


# ---------------------------------------------------------------- recall (retrieval)


def recall_loss_scores(
    scores: Tensor,
    relevance: Tensor,
    *,
    exclude: Tensor | None = None,
    variant: str = "loglog",
    interpolation: float = DEFAULT_RECALL_INTERPOLATION,
    margin: float = DEFAULT_RECALL_MARGIN,
    unit: float | None = None,
    validate: bool = True,
    memory_limit: int | None = None,
    ap_weight: float = DEFAULT_RECALL_AP_WEIGHT,
) -> Tensor:
    """RaMBO's recall loss on a ``(B, L)`` query x gallery score matrix.

    Args:
        scores: ``(B, L)`` similarities, one row per query.
        relevance: ``(B, L)`` in {0, 1}: which gallery items are relevant.
        exclude: optional ``(B, L)`` bool; True items take no part (self-pairs).
        variant: ``"log"`` (mean ``log(1 + r)``) or ``"loglog"``
            (mean ``log(1 + log(1 + r))``), r = irrelevant items ranked above a
            relevant one.
        ap_weight: w >= 0 of an AP term per query, ``w * (1 - AP)`` added to
            the recall penalty, through the same ranks: the recall penalty
            weighs most the first relevant items, AP the whole list (MAP@R).
        interpolation, margin, validate, memory_limit: as in
            :func:`average_precision_loss`.
        unit: the unit of ``interpolation`` and ``margin``: None for the
            spread of each query's scores (any scale); a number for scores
            with a scale of their own (:func:`recall_loss` passes 1: cosine
            similarities).

    Returns:
        Scalar >= 0: per query the mean over its relevant items, then the mean
        over queries with at least one relevant (not excluded) item.
    """
    check_choice("variant", variant, RECALL_VARIANTS)
    check_positive("interpolation", interpolation)
    margin = check_nonnegative("margin", margin)
    ap_weight = check_nonnegative("ap_weight", ap_weight)
    _check_float("scores", scores, validate)
    if scores.ndim != 2:
        raise ValueError(f"`scores` must be a (queries, gallery) matrix; got {describe(scores)}")
    check_same_shape("scores", scores, "relevance", relevance)
    relevant = _check_binary("relevance", relevance, validate)
    if exclude is not None:
        check_same_shape("scores", scores, "exclude", exclude)
        if exclude.dtype != torch.bool:
            raise TypeError(f"`exclude` must be a bool tensor; got {describe(exclude)}")
        relevant = relevant & ~exclude
        scores = scores.masked_fill(exclude, -math.inf)  # excluded items rank last, with no gradient
    memory_limit = check_memory_limit(memory_limit)

    synchronise = _synchronise(scores, validate)

    def per_row(rows: Tensor, rows_relevant: Tensor) -> tuple[Tensor, Tensor]:
        columns, valid = relevant_columns(rows_relevant, compact=synchronise)
        return _recall_penalty(rows, columns, valid, variant, interpolation, margin, _unit(rows, unit),
                               synchronise, ap_weight)

    return _in_chunks(per_row, scores, relevant, memory_limit, synchronise, "recall_loss_scores")


def _recall_penalty(
    scores: Tensor, columns: Tensor, valid: Tensor, variant: str, interpolation: float, margin: float,
    unit: Tensor, synchronise: bool, ap_weight: float, every: bool = False,
) -> tuple[Tensor, Tensor]:
    """Per query: the mean penalty of its relevant items (plus ``ap_weight * (1 - AP)``), and whether it has any
    (``every``: all entries real)."""
    above, rank_relevant = relevant_ranks(scores, columns, None if every else valid, interpolation=interpolation,
                                          margin=margin, unit=unit, synchronise=synchronise)
    penalty = torch.log1p(above) if variant == "log" else torch.log1p(torch.log1p(above))
    if ap_weight:  # 1 - precision at each relevant item: its share of the AP loss
        penalty = penalty + ap_weight * (1 - rank_relevant / (rank_relevant + above))
    n_relevant = valid.sum(-1)
    per_query = torch.where(valid, penalty, torch.zeros_like(penalty)).sum(-1) / n_relevant.clamp_min(1)
    return per_query, n_relevant > 0


def retrieval_scores(
    embeddings: Tensor, labels: Tensor, memory: tuple[Tensor, Tensor] | None = None, *, validate: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    """Cosine similarities of every embedding against the batch and the memory.

    Returns ``(scores, relevance, exclude)``, each ``(N, N + M)``: the gallery is
    the batch followed by the M remembered embeddings (extra columns, detached);
    relevant = same label; the self-pairs are excluded. Similarities are
    computed in float32 (float64 for float64 embeddings) with autocast off:
    in bfloat16 a third of them tie at N = 1024. Rows are scaled by their
    largest entry before the L2 norm, which would overflow for entries
    beyond about 1e19 in float32.
    """
    queries, gallery, gallery_labels = _retrieval_gallery(embeddings, labels, memory, validate)
    with full_precision(embeddings):
        scores = queries @ gallery.T
    relevance = labels[:, None] == gallery_labels[None, :]
    exclude = torch.eye(*scores.shape, dtype=torch.bool, device=scores.device)
    return scores, relevance, exclude


def _retrieval_gallery(
    embeddings: Tensor, labels: Tensor, memory: tuple[Tensor, Tensor] | None, validate: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """``(queries, gallery, gallery_labels)``: the unit-norm embeddings, then the batch followed by the memory."""
    _check_float("embeddings", embeddings, validate)
    check_tensor("labels", labels)
    if embeddings.ndim != 2 or labels.shape != embeddings.shape[:1]:
        raise ValueError(
            f"expected `embeddings` (N, D) and `labels` (N,); got {tuple(embeddings.shape)} and {tuple(labels.shape)}"
        )
    if embeddings.shape[0] == 0:
        raise ValueError(f"`embeddings` must hold at least one row; got {describe(embeddings)}")
    if labels.is_floating_point():
        raise ValueError(f"`labels` must hold integer class labels; got {describe(labels)}")
    with full_precision(embeddings):
        queries = _unit_rows(embeddings.to(_work_dtype(embeddings)))
        gallery, gallery_labels = queries, labels
        if memory is not None:
            gallery = torch.cat([queries, _unit_rows(memory[0].detach().to(queries))])
            gallery_labels = torch.cat([labels, memory[1].to(labels)])
    return queries, gallery, gallery_labels


def _unit_rows(embeddings: Tensor) -> Tensor:
    """L2-normalised rows, computed on rows divided by their largest ``|entry|`` (no overflow).

    The divisor is detached: normalising is invariant to it, so the gradient is
    that of ``F.normalize`` itself.
    """
    largest = embeddings.detach().abs().amax(-1, keepdim=True)
    return F.normalize(embeddings / torch.where(largest > 0, largest, torch.ones_like(largest)), dim=-1)


def _label_groups(labels: Tensor, gallery_labels: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The gallery grouped by label (a sort of its labels, no ``(N, N + M)`` comparison): ``(order, start,
    count, own)``: the gallery's columns by label, and per query where its label's group starts in them, how
    many other items it holds, and the query's own place in it (query i is gallery column i)."""
    order = gallery_labels.argsort(stable=True)
    grouped = gallery_labels[order]
    start = torch.searchsorted(grouped, labels)
    count = torch.searchsorted(grouped, labels, right=True) - start - 1  # minus the query itself
    position = torch.empty_like(order).scatter_(0, order, torch.arange(len(order), device=order.device))
    return order, start, count, position[: len(labels)] - start


def _same_label_columns(
    order: Tensor, start: Tensor, count: Tensor, own: Tensor, width: int
) -> tuple[Tensor, Tensor]:
    """``(columns, valid)`` ``(n, width)`` of the queries' relevant gallery items (same label, itself left out),
    from their :func:`_label_groups`, in the layout of
    :func:`~metricopt.losses.relevant_ranks.relevant_columns`: the valid entries first, padding repeating a
    row's first column."""
    slots = torch.arange(width, device=order.device)
    slots = slots + (slots >= own[:, None])
    columns = order[(start[:, None] + slots).clamp(max=len(order) - 1)]
    valid = torch.arange(width, device=order.device) < count[:, None]
    return torch.where(valid, columns, columns[:, :1]), valid


def recall_loss(
    embeddings: Tensor,
    labels: Tensor,
    *,
    variant: str = "loglog",
    interpolation: float = DEFAULT_RECALL_INTERPOLATION,
    margin: float = DEFAULT_RECALL_MARGIN,
    memory: tuple[Tensor, Tensor] | None = None,
    distributed: bool = True,
    validate: bool = True,
    memory_limit: int | None = None,
    ap_weight: float = DEFAULT_RECALL_AP_WEIGHT,
) -> Tensor:
    """RaMBO's recall loss for metric learning on ``(N, D)`` embeddings.

    Every embedding (L2-normalised) is a query against all the others and the
    optional ``memory`` ``(embeddings (M, D), labels (M,))`` of earlier batches;
    relevant = same label. See :func:`recall_loss_scores`. ``interpolation``
    and ``margin`` are in units of cosine similarity (``unit=1``): cosine
    similarities have a scale of their own, whatever the embeddings' scale, and
    a unit that shrank with their spread lowered validation MAP@R
    (``docs/design.md``, "Rank losses (RaMBO)"). ``distributed`` and ``validate``:
    as in :func:`average_precision_loss` (every process's embeddings are
    queries against the global batch). ``memory_limit``: as there; a batch
    whose ``N x (N + M)`` similarities do not fit is processed in chunks of
    queries, each chunk's similarities recomputed in the backward pass.

    Time: one matrix product and one sort of each query's row of
    similarities; the backward pass searches the sorted rows instead of
    sorting again (:mod:`metricopt.losses.relevant_ranks`).

    >>> x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> recall_loss(x, torch.tensor([0, 0, 1, 1])).item()    # both pairs are each other's nearest
    0.0
    """
    check_choice("variant", variant, RECALL_VARIANTS)
    check_positive("interpolation", interpolation)
    margin = check_nonnegative("margin", margin)
    ap_weight = check_nonnegative("ap_weight", ap_weight)
    memory_limit = check_memory_limit(memory_limit)
    embeddings, labels = gather_batch(embeddings, labels, enabled=distributed)
    queries, gallery, gallery_labels = _retrieval_gallery(embeddings, labels, memory, validate)
    synchronise = _synchronise(queries, validate)
    groups = _label_groups(labels, gallery_labels) if synchronise else None
    width = int(groups[2].max()) if groups is not None else len(gallery)
    every = groups is not None and bool((groups[2] == width).all())  # (a P x K batch: every entry is real)
    unit = torch.full((len(queries), 1), COSINE_UNIT, dtype=torch.float64, device=queries.device)
    itself = torch.arange(len(queries), device=queries.device)[:, None]

    def part(start: int, stop: int) -> tuple[Tensor, Tensor]:
        with full_precision(embeddings):
            scores = queries[start:stop] @ gallery.T
        with torch.no_grad():  # self-pairs rank last with no gradient (in place: the product keeps no output)
            scores.scatter_(-1, itself[start:stop], -math.inf)
        if groups is not None:
            columns, valid = _same_label_columns(groups[0], *(group[start:stop] for group in groups[1:]), width)
        else:  # every gallery item, the relevant ones marked (no host synchronisation)
            relevant = (labels[start:stop, None] == gallery_labels[None, :]).scatter_(-1, itself[start:stop], False)
            columns, valid = relevant_columns(relevant, compact=False)
        return _recall_penalty(scores, columns, valid, variant, interpolation, margin, unit[start:stop],
                               synchronise, ap_weight, every)

    chunk = row_chunk(len(queries), len(gallery), width, queries.element_size(), queries.device, memory_limit,
                      "recall_loss")
    per_query, defined = run_in_chunks(part, len(queries), chunk)
    return _mean_over_defined(per_query, defined).to(queries.dtype)


# ---------------------------------------------------------------- NDCG


def ndcg_loss(
    scores: Tensor,
    gains: Tensor,
    *,
    k: int | None = None,
    interpolation: float = DEFAULT_INTERPOLATION,
    distributed: bool = True,
    validate: bool = True,
) -> Tensor:
    """``1 - NDCG@k`` with graded relevance, via interpolated ranks.

    Items ranked below ``k`` count 0 in the value but pass back the gradient of
    the uncut discount ``1 / log2(1 + rank)``: the cut-off's own gradient is 0
    there, and a batch that starts with every item tied below the cut-off (a
    zero-initialised head) would never move.

    Args:
        scores: ``(L,)`` one ranking or ``(B, L)`` one row per query.
        gains: same shape, graded relevance >= 0 (linear gains, as scikit-learn).
        k: cut-off (None = all L items).
        interpolation, distributed, validate: as in :func:`average_precision_loss`
            (``(L,)``: one ranking of every process's items; ``(B, L)``: every
            process's queries).

    Returns:
        Scalar in [0, 1]; rows whose gains are all 0 are left out.

    >>> ndcg_loss(torch.tensor([3.0, 2.0, 1.0]), torch.tensor([3.0, 2.0, 0.0])).item()
    0.0
    """
    check_positive("interpolation", interpolation)
    k = _check_k(k)
    _check_float("scores", scores, validate)
    check_tensor("gains", gains)
    gains = gains if gains.is_floating_point() else gains.to(scores.dtype)
    check_same_shape("scores", scores, "gains", gains)
    if validate:
        check_finite("gains", gains)
    scores, gains = gather_batch(scores, gains, enabled=distributed)
    if scores.ndim not in (1, 2) or scores.shape[-1] == 0:
        raise ValueError(f"`scores` must be (L,) or (B, L) with L >= 1; got {describe(scores)}")
    if validate and bool((gains < 0).any()):
        raise ValueError(f"`gains` must be >= 0; got {describe(gains)} with minimum {gains.min().item()}")
    length = scores.shape[-1]
    cutoff = length if k is None else min(k, length)
    rows, gains = (scores[None], gains[None]) if scores.ndim == 1 else (scores, gains)
    ranks = _rank_rows(rows, interpolation)
    gains = gains.to(ranks.dtype)
    discount = 1 / torch.log2(1 + ranks)
    if cutoff < length:  # the value of the cut discount, the gradient of the uncut one
        discount = discount + torch.where(ranks <= cutoff, 0.0, -discount).detach()
    dcg = (gains * discount).sum(-1)
    positions = torch.arange(2, cutoff + 2, dtype=ranks.dtype, device=ranks.device)
    ideal = (gains.sort(-1, descending=True).values[:, :cutoff] / torch.log2(positions)).sum(-1)
    return _mean_over_defined(1 - dcg / ideal.clamp_min(torch.finfo(ideal.dtype).tiny), ideal > 0)


# ---------------------------------------------------------------- modules


class _RankLoss(nn.Module):
    """Shared settings and the optional batch memory of the rank-loss modules."""

    def __init__(
        self, interpolation: float, margin: float, memory_size: int, distributed: bool, validate: bool,
        memory_limit: int | None,
    ) -> None:
        super().__init__()
        self.interpolation = check_positive("interpolation", interpolation)
        self.margin = check_nonnegative("margin", margin)
        self.memory = BatchMemory(memory_size)
        self.distributed = distributed
        self.validate = validate
        self.memory_limit = check_memory_limit(memory_limit)

    @property
    def memory_size(self) -> int:
        return self.memory.memory_size

    def reset(self) -> None:
        """Empty the memory (call it between epochs or datasets if wanted)."""
        self.memory.reset()

    def _gather(self, values: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        # Gathered once here, in rank order, so the loss sees the global batch and every process's memory
        # receives the same batch: memories stay identical across processes.
        return gather_batch(values, labels, enabled=self.distributed)

    def _options(self) -> dict:
        """The keyword options every functional rank loss shares (the batch is gathered already)."""
        return {"interpolation": self.interpolation, "margin": self.margin, "memory": self.memory.contents(),
                "distributed": False, "validate": self.validate, "memory_limit": self.memory_limit}

    def _remember(self, values: Tensor, labels: Tensor) -> None:
        # Only training steps enter the memory: training mode and a gradient flowing (the condition under
        # which the batch was gathered, so memories stay identical across processes). A validation or
        # logging call under no_grad never changes it, even with the module left in training mode.
        if self.training and torch.is_grad_enabled() and values.requires_grad:
            self.memory.push(values, labels)

    def extra_repr(self) -> str:
        return f"interpolation={self.interpolation}, margin={self.margin}, memory_size={self.memory_size}"


class APLoss(_RankLoss):
    """``1 - average precision`` (mAP plus cross-class AP for multi-label), as a module.

    See :func:`average_precision_loss`. With ``memory_size = tau > 0`` the
    detached scores and targets of the last tau training steps join the
    ranking (buffers: they move with ``.to()`` and live in ``state_dict()``);
    :meth:`reset` empties them. Only training steps update the memory: calls
    in training mode through which a gradient flows.

    >>> loss_fn = APLoss(memory_size=2)
    >>> loss = loss_fn(torch.randn(8, requires_grad=True), torch.tensor([1, 0] * 4))
    >>> len(loss_fn.memory)
    8
    """

    def __init__(
        self,
        *,
        interpolation: float = DEFAULT_INTERPOLATION,
        margin: float = DEFAULT_MARGIN,
        memory_size: int = 0,
        cross_class_weight: float = DEFAULT_CROSS_CLASS_WEIGHT,
        distributed: bool = True,
        validate: bool = True,
        memory_limit: int | None = None,
    ) -> None:
        super().__init__(interpolation, margin, memory_size, distributed, validate, memory_limit)
        self.cross_class_weight = check_nonnegative("cross_class_weight", cross_class_weight)

    def forward(self, scores: Tensor, target: Tensor) -> Tensor:
        scores, target = self._gather(scores, target)
        loss = average_precision_loss(scores, target, cross_class_weight=self.cross_class_weight, **self._options())
        self._remember(scores, target)
        return loss


class AUROCLoss(_RankLoss):
    """``1 - AUROC`` as a module, with the same memory as :class:`APLoss`."""

    def __init__(
        self,
        *,
        interpolation: float = DEFAULT_INTERPOLATION,
        margin: float = DEFAULT_MARGIN,
        memory_size: int = 0,
        distributed: bool = True,
        validate: bool = True,
        memory_limit: int | None = None,
    ) -> None:
        super().__init__(interpolation, margin, memory_size, distributed, validate, memory_limit)

    def forward(self, scores: Tensor, target: Tensor) -> Tensor:
        scores, target = self._gather(scores, target)
        loss = auroc_loss(scores, target, **self._options())
        self._remember(scores, target)
        return loss


class RecallLoss(_RankLoss):
    """RaMBO's recall loss on ``(N, D)`` embeddings with ``(N,)`` labels, as a module.

    With ``memory_size = tau > 0`` the detached embeddings of the last tau
    training steps join as extra gallery columns (cross-batch memory): every
    current embedding is ranked against them too, with gradient through the
    query side only.
    """

    def __init__(
        self,
        *,
        variant: str = "loglog",
        interpolation: float = DEFAULT_RECALL_INTERPOLATION,
        margin: float = DEFAULT_RECALL_MARGIN,
        memory_size: int = 0,
        distributed: bool = True,
        validate: bool = True,
        memory_limit: int | None = None,
        ap_weight: float = DEFAULT_RECALL_AP_WEIGHT,
    ) -> None:
        super().__init__(interpolation, margin, memory_size, distributed, validate, memory_limit)
        check_choice("variant", variant, RECALL_VARIANTS)
        self.variant = variant
        self.ap_weight = check_nonnegative("ap_weight", ap_weight)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        embeddings, labels = self._gather(embeddings, labels)
        loss = recall_loss(embeddings, labels, variant=self.variant, ap_weight=self.ap_weight, **self._options())
        self._remember(embeddings, labels)
        return loss

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}, ap_weight={self.ap_weight}, " + super().extra_repr()


class NDCGLoss(nn.Module):
    """``1 - NDCG@k`` as a module; see :func:`ndcg_loss`."""

    def __init__(
        self, *, k: int | None = None, interpolation: float = DEFAULT_INTERPOLATION, distributed: bool = True,
        validate: bool = True,
    ) -> None:
        super().__init__()
        self.k = _check_k(k)
        self.interpolation = check_positive("interpolation", interpolation)
        self.distributed = distributed
        self.validate = validate

    def forward(self, scores: Tensor, gains: Tensor) -> Tensor:
        return ndcg_loss(scores, gains, k=self.k, interpolation=self.interpolation, distributed=self.distributed,
                         validate=self.validate)

    def extra_repr(self) -> str:
        return f"k={self.k}, interpolation={self.interpolation}"
