"""Tests for the RaMBO rank losses in metricopt.losses.ranking and their batch memory.

With ``margin=0`` every loss's forward value is ``1 - exact metric``: checked against
scikit-learn (``average_precision_score`` with ties, ``roc_auc_score`` and ``ndcg_score``
on tie-free input) and against pure-python references written here (AUROC with ties
counted against the relevant item, the recall loss from ``r_i`` = irrelevant items ranked
above). Gradients are checked for direction and by a few Adam steps on small seeded
problems; the memory by its contents, modes and state; the properties (permutation
invariance, bounds, scaling invariance) once over a table of losses.

Scores are drawn from small grids of dyadic values so that ties are common and exact. The
margin is in units of each ranking's spread (the standard deviation of its scores, with the
documented floor for tied rows), which the references compute independently.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, ndcg_score, roc_auc_score

from metricopt.losses.memory import BatchMemory
from metricopt.losses.ranking import (
    APLoss,
    AUROCLoss,
    NDCGLoss,
    RecallLoss,
    auroc_loss,
    average_precision_loss,
    ndcg_loss,
    recall_loss,
    recall_loss_scores,
    retrieval_scores,
)

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True, database=None)
FEW = settings(max_examples=15, deadline=None, derandomize=True, database=None)

GRID = [-2.0, -1.0, -0.5, 0.0, 0.25, 0.5, 1.0, 3.0]  # dyadic: margins 0.25, 0.5, 1 shift exactly
MARGINS = [0.0, 0.25, 0.5, 1.0]


pytestmark = pytest.mark.usefixtures("one_thread")


# --- references -------------------------------------------------------------------------------------


def spread(scores) -> float:
    """The documented unit of a ranking: the standard deviation of its scores, at least 1e-3 of the
    largest |score|, and 1 when every score is 0."""
    if not scores:
        return 1.0
    mean = sum(scores) / len(scores)
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
    std = max(std, 1e-3 * max(abs(s) for s in scores))
    return std if std > 0 else 1.0


def shift(scores, relevant, margin, unit=None):
    """The documented margin: relevant scores down by margin / 2, irrelevant up by margin / 2, in units of
    the ranking's spread (``unit``; by default that of ``scores``)."""
    half = margin * (spread(scores) if unit is None else unit) / 2
    return [s - half if r else s + half for s, r in zip(scores, relevant)]


def ref_ap_loss(scores, target, margin=0.0) -> float | None:
    """1 - scikit-learn AP of the shifted scores (None when undefined: no positive)."""
    if not any(target):
        return None
    return 1 - average_precision_score(np.asarray(target), np.asarray(shift(scores, target, margin)))


def ref_auroc_loss(scores, target, margin=0.0) -> float | None:
    """Fraction of (positive, negative) pairs with the negative at or above the positive
    (ties count against); None when undefined."""
    shifted = shift(scores, target, margin)
    pos = [s for s, t in zip(shifted, target) if t]
    neg = [s for s, t in zip(shifted, target) if not t]
    if not pos or not neg:
        return None
    return sum(1 for p in pos for q in neg if q >= p) / (len(pos) * len(neg))


def mean_defined(values) -> float:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else 0.0


def ref_multilabel_ap_loss(scores: np.ndarray, target: np.ndarray, weight: float, margin=0.0) -> float:
    """(mAP loss + w * cross-class AP loss) / (1 + w): per column with sklearn, then all flattened."""
    per_class = mean_defined(
        [ref_ap_loss(list(scores[:, c]), list(target[:, c]), margin) for c in range(scores.shape[1])]
    )
    if scores.shape[1] == 1 or weight == 0:
        return per_class
    cross = ref_ap_loss(list(scores.ravel()), list(target.ravel()), margin)
    return (per_class + weight * (cross or 0.0)) / (1 + weight)


def ref_recall_loss(scores, relevance, exclude, variant, margin=0.0) -> float:
    """Per query, mean over its relevant (not excluded) items of f(r_i), r_i = #irrelevant (not
    excluded) items whose shifted score is >= item i's; mean over queries with a relevant item."""
    f = (lambda r: math.log1p(r)) if variant == "log" else (lambda r: math.log1p(math.log1p(r)))
    per_query = []
    for s_row, rel_row, ex_row in zip(scores, relevance, exclude):
        keep = [j for j in range(len(s_row)) if not ex_row[j]]
        rel = [bool(rel_row[j]) for j in keep]
        shifted = shift([s_row[j] for j in keep], rel, margin)
        positives = [s for s, r in zip(shifted, rel) if r]
        negatives = [s for s, r in zip(shifted, rel) if not r]
        if not positives:
            per_query.append(None)
            continue
        per_query.append(sum(f(sum(1 for q in negatives if q >= p)) for p in positives) / len(positives))
    return mean_defined(per_query)


def cosine_matrix(embeddings: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    a = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    b = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    return a @ b.T


def recall_at_1(embeddings: np.ndarray, labels: np.ndarray) -> float:
    sims = cosine_matrix(embeddings, embeddings)
    np.fill_diagonal(sims, -np.inf)
    return float(np.mean(labels[sims.argmax(1)] == labels))


# --- strategies --------------------------------------------------------------------------------------


@st.composite
def binary_batches(draw, min_n=1, max_n=12):
    n = draw(st.integers(min_n, max_n))
    scores = draw(st.lists(st.sampled_from(GRID), min_size=n, max_size=n))
    target = draw(st.lists(st.sampled_from([0, 1]), min_size=n, max_size=n))
    return scores, target


@st.composite
def multilabel_batches(draw, max_n=8, max_c=4):
    n, c = draw(st.integers(1, max_n)), draw(st.integers(2, max_c))
    scores = np.array(draw(st.lists(st.sampled_from(GRID), min_size=n * c, max_size=n * c))).reshape(n, c)
    target = np.array(draw(st.lists(st.sampled_from([0, 1]), min_size=n * c, max_size=n * c))).reshape(n, c)
    return scores, target


@st.composite
def distinct_scores(draw, n):
    """n distinct scores (multiples of 1/8): tie-free input for sklearn's AUROC and NDCG."""
    return [v / 8 for v in draw(st.lists(st.integers(-60, 60), min_size=n, max_size=n, unique=True))]


@st.composite
def retrieval_batches(draw, max_b=5, max_l=9):
    b, n = draw(st.integers(1, max_b)), draw(st.integers(1, max_l))
    scores = [draw(st.lists(st.sampled_from(GRID), min_size=n, max_size=n)) for _ in range(b)]
    relevance = [draw(st.lists(st.sampled_from([0, 1]), min_size=n, max_size=n)) for _ in range(b)]
    exclude = [draw(st.lists(st.booleans(), min_size=n, max_size=n)) for _ in range(b)]
    return scores, relevance, exclude


# --- AP: forward equals 1 - AP -------------------------------------------------------------------------


def test_ap_docstring_example():
    loss = average_precision_loss(torch.tensor([2.0, 1.0, 0.5, -1.0]), torch.tensor([1, 0, 1, 0]), margin=0.0)
    assert loss.item() == pytest.approx(1 - (1 + 2 / 3) / 2)


@SETTINGS
@given(batch=binary_batches(), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_ap_binary_equals_sklearn_with_ties(batch, dtype):
    scores, target = batch
    assume(any(target))
    expected = ref_ap_loss(scores, target)
    s, t = torch.tensor(scores, dtype=dtype), torch.tensor(target)
    loss = average_precision_loss(s, t, margin=0.0)
    assert loss.dtype == dtype
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=dtype))
    # (N, 1) scores with (N,) or (N, 1) targets, and bool or float targets, are the same ranking
    for s2, t2 in [(s[:, None], t), (s[:, None], t[:, None]), (s, t.bool()), (s, t.float())]:
        torch.testing.assert_close(average_precision_loss(s2, t2, margin=0.0), loss)


def test_ap_all_tied_scores_is_one_minus_prevalence():
    # one threshold: precision = prevalence for every positive (sklearn agrees)
    target = [1, 0, 0, 1, 0]
    loss = average_precision_loss(torch.zeros(5), torch.tensor(target), margin=0.0)
    assert loss.item() == pytest.approx(1 - 2 / 5)
    assert loss.item() == pytest.approx(ref_ap_loss([0.0] * 5, target))


@SETTINGS
@given(batch=multilabel_batches(), weight=st.sampled_from([0.0, 0.5, 2.0]))
def test_ap_multilabel_equals_map_and_cross_class_mix(batch, weight):
    scores, target = batch
    expected = ref_multilabel_ap_loss(scores, target, weight)
    loss = average_precision_loss(
        torch.tensor(scores, dtype=torch.float64), torch.tensor(target), margin=0.0, cross_class_weight=weight
    )
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=torch.float64))


def test_ap_multilabel_cross_class_weight_matters():
    scores = torch.tensor([[2.0, -1.0], [1.0, 0.5], [0.0, 3.0], [-1.0, 0.25]])
    target = torch.tensor([[1, 0], [0, 1], [1, 0], [0, 1]])
    values = {w: average_precision_loss(scores, target, margin=0.0, cross_class_weight=w).item() for w in (0, 0.5, 2)}
    assert len(set(values.values())) == 3
    for w, value in values.items():
        assert value == pytest.approx(ref_multilabel_ap_loss(scores.numpy(), target.numpy(), w))


@FEW
@given(data=st.data(), n=st.integers(1, 9), c=st.integers(2, 4), weight=st.sampled_from([0.0, 0.5]))
def test_multiclass_indices_equal_one_hot(data, n, c, weight):
    scores = torch.tensor(data.draw(st.lists(st.sampled_from(GRID), min_size=n * c, max_size=n * c))).reshape(n, c)
    labels = torch.tensor(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    one_hot = F.one_hot(labels, c)
    ap = average_precision_loss(scores, labels, margin=0.0, cross_class_weight=weight)
    assert torch.equal(ap, average_precision_loss(scores, one_hot, margin=0.0, cross_class_weight=weight))
    assert ap.item() == pytest.approx(ref_multilabel_ap_loss(scores.numpy(), one_hot.numpy(), weight))
    assert torch.equal(auroc_loss(scores, labels, margin=0.0), auroc_loss(scores, one_hot, margin=0.0))


# --- AUROC -----------------------------------------------------------------------------------------------


def test_auroc_docstring_example():
    loss = auroc_loss(torch.tensor([2.0, 1.0, 0.5, -1.0]), torch.tensor([1, 0, 1, 0]), margin=0.0)
    assert loss.item() == 0.25


@SETTINGS
@given(data=st.data(), n=st.integers(2, 12))
def test_auroc_equals_sklearn_on_tie_free_input(data, n):
    scores = data.draw(distinct_scores(n))
    target = data.draw(st.lists(st.sampled_from([0, 1]), min_size=n, max_size=n))
    assume(0 < sum(target) < n)
    loss = auroc_loss(torch.tensor(scores, dtype=torch.float64), torch.tensor(target), margin=0.0)
    torch.testing.assert_close(loss, torch.tensor(1 - roc_auc_score(target, scores), dtype=torch.float64))


@SETTINGS
@given(batch=binary_batches())
def test_auroc_with_ties_counts_them_against(batch):
    scores, target = batch
    expected = ref_auroc_loss(scores, target)
    loss = auroc_loss(torch.tensor(scores), torch.tensor(target), margin=0.0)
    torch.testing.assert_close(loss, torch.tensor(0.0 if expected is None else expected))


@FEW
@given(data=st.data(), n=st.integers(2, 9), c=st.integers(2, 4))
def test_auroc_multilabel_is_macro_over_defined_columns(data, n, c):
    columns = [data.draw(distinct_scores(n)) for _ in range(c)]
    target = np.array(data.draw(st.lists(st.sampled_from([0, 1]), min_size=n * c, max_size=n * c))).reshape(n, c)
    per_column = [1 - roc_auc_score(target[:, j], columns[j]) if 0 < target[:, j].sum() < n else None for j in range(c)]
    scores = torch.tensor(columns, dtype=torch.float64).T
    loss = auroc_loss(scores, torch.tensor(target), margin=0.0)
    torch.testing.assert_close(loss, torch.tensor(mean_defined(per_column), dtype=torch.float64))


# --- NDCG ----------------------------------------------------------------------------------------------


def test_ndcg_docstring_example():
    assert ndcg_loss(torch.tensor([3.0, 2.0, 1.0]), torch.tensor([3.0, 2.0, 0.0])).item() == 0.0


@SETTINGS
@given(data=st.data(), b=st.integers(1, 4), n=st.integers(2, 10), k=st.sampled_from([None, 1, 2, 3, 20]))
def test_ndcg_equals_sklearn_on_tie_free_input(data, b, n, k):
    scores = [data.draw(distinct_scores(n)) for _ in range(b)]
    gains = [data.draw(st.lists(st.sampled_from([0.0, 0.0, 1.0, 2.0, 3.5]), min_size=n, max_size=n)) for _ in range(b)]
    defined = [row for row in range(b) if any(gains[row])]
    per_row = [ndcg_score([gains[row]], [scores[row]], k=k) for row in defined]
    expected = 1 - sum(per_row) / len(per_row) if per_row else 0.0
    s, g = torch.tensor(scores, dtype=torch.float64), torch.tensor(gains, dtype=torch.float64)
    torch.testing.assert_close(ndcg_loss(s, g, k=k), torch.tensor(expected, dtype=torch.float64))
    if b == 1:  # a (L,) ranking is the same as a (1, L) one
        torch.testing.assert_close(ndcg_loss(s[0], g[0], k=k), torch.tensor(expected, dtype=torch.float64))


def test_ndcg_ties_take_the_lower_discount():
    # two tied items both get rank 2 (discount 1 / log2(3)); sklearn would average ranks 1 and 2
    loss = ndcg_loss(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0]))
    assert loss.item() == pytest.approx(1 - 1 / math.log2(3))


# --- recall ------------------------------------------------------------------------------------------


@SETTINGS
@given(
    batch=retrieval_batches(),
    variant=st.sampled_from(["log", "loglog"]),
    margin=st.sampled_from(MARGINS),
    use_exclude=st.booleans(),
)
def test_recall_loss_scores_equals_reference_with_ties(batch, variant, margin, use_exclude):
    scores, relevance, exclude = batch
    if not use_exclude:
        exclude = [[False] * len(row) for row in exclude]
    expected = ref_recall_loss(scores, relevance, exclude, variant, margin)
    loss = recall_loss_scores(
        torch.tensor(scores, dtype=torch.float64),
        torch.tensor(relevance),
        exclude=torch.tensor(exclude) if use_exclude else None,
        variant=variant,
        margin=margin,
    )
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=torch.float64))


@pytest.mark.parametrize("variant", ["log", "loglog"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recall_loss_on_embeddings_equals_reference_with_self_pairs_excluded(variant, seed):
    g = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(9, 3, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (9,), generator=g)
    sims = cosine_matrix(embeddings.numpy(), embeddings.numpy())
    relevance = labels[:, None] == labels[None, :]
    exclude = np.eye(9, dtype=bool)
    expected = ref_recall_loss(sims.tolist(), relevance.tolist(), exclude.tolist(), variant)
    loss = recall_loss(embeddings, labels, variant=variant, margin=0.0)
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=torch.float64))
    assert loss.item() > 0  # random embeddings: some irrelevant item outranks a relevant one


@pytest.mark.parametrize("layout", ["compact", "whole rows"])
@pytest.mark.parametrize("with_memory", [False, True])
@pytest.mark.parametrize("chunked", [False, True])
def test_recall_loss_equals_the_scores_form_on_its_similarities(monkeypatch, layout, with_memory, chunked):
    # recall_loss writes -inf into its own similarity matrix in place; the scores form copies (masked_fill):
    # same value and gradient, with the memory's extra columns, in chunks (recomputed under checkpoint) or not,
    # on the compact layout and on whole rows (what a GPU without synchronisation gets).
    from metricopt.losses import ranking

    if layout == "whole rows":
        monkeypatch.setattr(ranking, "_synchronise", lambda scores, validate: False)
    g = torch.Generator().manual_seed(3)
    embeddings = torch.randn(24, 5, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (24,), generator=g)
    memory = (torch.randn(10, 5, generator=g, dtype=torch.float64), torch.randint(0, 4, (10,), generator=g))
    memory = memory if with_memory else None
    limit = 40_000 if chunked else None  # bytes: 5 to 13 of the 24 rows per chunk
    first = embeddings.clone().requires_grad_()
    loss = recall_loss(first, labels, memory=memory, memory_limit=limit, distributed=False)
    loss.backward()
    second = embeddings.clone().requires_grad_()
    scores, relevance, exclude = retrieval_scores(second, labels, memory)
    expected = recall_loss_scores(scores, relevance, exclude=exclude, unit=1.0)
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0.0)
    torch.testing.assert_close(first.grad, second.grad, rtol=1e-9, atol=1e-15)
    assert float(first.grad.abs().sum()) > 0


def test_recall_loss_docstring_example_and_self_pair_matters():
    x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = torch.tensor([0, 0, 1, 1])
    assert recall_loss(x, labels).item() == 0.0
    # without excluding the self-pair (similarity 1, relevant), the value changes as
    # the reference that keeps self-pairs predicts
    _, _, exclude = retrieval_scores(x, labels)
    assert exclude.tolist() == np.eye(4, dtype=bool).tolist()
    x2 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]])
    labels2 = torch.tensor([0, 0, 1, 1])
    sims = cosine_matrix(x2.numpy(), x2.numpy()).tolist()
    rel = (labels2[:, None] == labels2[None, :]).tolist()
    with_self = ref_recall_loss(sims, rel, np.zeros((4, 4), bool).tolist(), "log")
    without_self = ref_recall_loss(sims, rel, np.eye(4, dtype=bool).tolist(), "log")
    assert with_self != pytest.approx(without_self)
    assert recall_loss(x2, labels2, variant="log", margin=0.0).item() == pytest.approx(without_self)


def test_retrieval_scores_shapes_relevance_and_exclusion_without_memory():
    x = torch.tensor([[1.0, 0.0], [3.0, 4.0], [0.0, -2.0]])
    labels = torch.tensor([5, 5, 7])
    scores, relevance, exclude = retrieval_scores(x, labels)
    torch.testing.assert_close(scores, torch.tensor(cosine_matrix(x.double().numpy(), x.double().numpy())).float())
    assert relevance.tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    assert exclude.tolist() == np.eye(3, dtype=bool).tolist()


# --- margin ----------------------------------------------------------------------------------------------


def test_margin_changes_the_value_as_documented():
    scores = torch.tensor([1.0, 0.75, 0.5, -1.0])
    target = torch.tensor([1, 0, 1, 0])
    # margin 0: AP = (1 + 2/3) / 2. margin 0.5 (of the spread 0.778): each score moves by 0.195, to
    # [0.81, 0.95, 0.31, -0.81]: the first positive falls below the negative: AP = (1/2 + 2/3) / 2
    assert average_precision_loss(scores, target, margin=0.0).item() == pytest.approx(1 - (1 + 2 / 3) / 2)
    assert average_precision_loss(scores, target, margin=0.5).item() == pytest.approx(1 - (1 / 2 + 2 / 3) / 2)
    # AUROC: 1 of 4 (positive, negative) pairs misordered at margin 0 (0.5 below 0.75); at margin 0.5
    # the positive 1.0 -> 0.75 falls below the negative 0.75 -> 1.0 too: 2 of 4
    assert auroc_loss(scores, target, margin=0.0).item() == 0.25
    assert auroc_loss(scores, target, margin=0.5).item() == ref_auroc_loss(scores.tolist(), target.tolist(), 0.5)
    assert auroc_loss(scores, target, margin=0.5).item() == 0.5
    # a gap of exactly alpha spreads becomes a tie after the shift, and ties count against (spread 0.25)
    pair = torch.tensor([1.0, 0.5])
    assert auroc_loss(pair, torch.tensor([1, 0]), margin=2.0).item() == 1.0
    assert auroc_loss(pair, torch.tensor([1, 0]), margin=1.0).item() == 0.0
    # relative to the spread: the same margin means the same thing for scores of any scale
    for scale in (1e-3, 1e3):
        assert auroc_loss(pair * scale, torch.tensor([1, 0]), margin=2.0).item() == 1.0
        assert auroc_loss(pair * scale, torch.tensor([1, 0]), margin=1.0).item() == 0.0


@SETTINGS
@given(batch=binary_batches(), margin=st.sampled_from(MARGINS[1:]))
def test_margin_is_the_documented_shift_ap_and_auroc(batch, margin):
    scores, target = batch
    s, t = torch.tensor(scores, dtype=torch.float64), torch.tensor(target)
    ap = average_precision_loss(s, t, margin=margin)
    auroc = auroc_loss(s, t, margin=margin)
    shifted = torch.tensor(shift(scores, target, margin), dtype=torch.float64)
    assert torch.equal(ap, average_precision_loss(shifted, t, margin=0.0))
    assert torch.equal(auroc, auroc_loss(shifted, t, margin=0.0))
    expected_ap = ref_ap_loss(scores, target, margin)
    torch.testing.assert_close(ap, torch.tensor(0.0 if expected_ap is None else expected_ap, dtype=torch.float64))
    expected_auroc = ref_auroc_loss(scores, target, margin)
    assert auroc.item() == pytest.approx(0.0 if expected_auroc is None else expected_auroc)


@FEW
@given(batch=multilabel_batches(), margin=st.sampled_from(MARGINS[1:]))
def test_margin_is_the_documented_shift_multilabel(batch, margin):
    scores, target = batch
    loss = average_precision_loss(torch.tensor(scores), torch.tensor(target), margin=margin)
    assert loss.item() == pytest.approx(ref_multilabel_ap_loss(scores, target, 0.5, margin))


def test_margin_shift_is_applied_in_float64():
    # float32 scores near 2**20 (spacing 0.125 there): a positive 0.25 above a negative, and a margin that
    # moves each by 0.1. The order holds in exact arithmetic (gap 0.05 left); float32 would round both to
    # 2**20 + 0.125 (a tie, counted against); float64 keeps it. The outer pair sets the spread (2121).
    scores = torch.tensor([2.0**20 + 0.25, 2.0**20, 2.0**20 + 3000, 2.0**20 - 3000])
    target = torch.tensor([1, 0, 1, 0])
    margin = 0.2 / spread(scores.tolist())
    assert auroc_loss(scores, target, margin=margin).item() == 0.0
    assert average_precision_loss(scores, target, margin=margin).item() == 0.0
    rounded = torch.tensor(shift(scores.tolist(), target.tolist(), margin), dtype=torch.float32)
    assert rounded[0] == rounded[1]  # the float32 shift would tie them


# --- gradients ----------------------------------------------------------------------------------------


def max_rank(row):
    """rank_i = #{j : s_j >= s_i} (ties take the largest rank; -inf ranks last)."""
    return [sum(1 for b in row if b >= a) for a in row]


def blackbox_grad(y, upstream, lam, unit):
    """The documented blackbox gradient of one ranking, in python floats: step lam * unit along the
    direction g / max|g|, scaled back by max|g| (metricopt.losses.ranker)."""
    size = max(abs(v) for v in upstream)
    if size == 0:
        return [0.0] * len(y)
    step = lam * unit
    base, moved = max_rank(y), max_rank([a + step * (b / size) for a, b in zip(y, upstream)])
    return [(m - b) * (size / step) for b, m in zip(base, moved)]


def ref_rank_loss_grad(y, lam, d_all, unit):
    """Gradient of a loss of (rk, rk+) given d_all = dL/drk: the blackbox gradient of the full
    ranking only, since the losses treat rk+ (the rank among relevant items) as a constant
    (losses/ranking.py, "Gradient")."""
    return blackbox_grad(y, d_all, lam, unit)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("interpolation", [0.05, 0.5, 2.0])
def test_ap_and_auroc_gradients_equal_blackbox_definition(seed, interpolation):
    """The chain dL/drk -> blackbox ranker -> dL/dy (rk+ held constant), recomputed from the loss formulas."""
    g = torch.Generator().manual_seed(seed)
    n = 25
    y = torch.randn(n, generator=g, dtype=torch.float64)
    target = (torch.rand(n, generator=g) < 0.4).long()
    rel = target.bool().tolist()
    ys = y.tolist()
    unit = spread(ys)
    rk, rk_pos = max_rank(ys), max_rank([a if r else -math.inf for a, r in zip(ys, rel)])
    p, q = sum(rel), n - sum(rel)
    # AP loss = 1 - (1/P) sum_pos rk+_i / rk_i
    d_all = [rk_pos[i] / (p * rk[i] ** 2) if rel[i] else 0.0 for i in range(n)]
    expected_ap = ref_rank_loss_grad(ys, interpolation, d_all, unit)
    # AUROC loss = sum_pos (rk_i - rk+_i) / (P Q)
    d_all = [1 / (p * q) if r else 0.0 for r in rel]
    expected_auroc = ref_rank_loss_grad(ys, interpolation, d_all, unit)
    for fn, expected in ((average_precision_loss, expected_ap), (auroc_loss, expected_auroc)):
        leaf = y.clone().requires_grad_()
        fn(leaf, target, margin=0.0, interpolation=interpolation).backward()
        torch.testing.assert_close(leaf.grad, torch.tensor(expected, dtype=torch.float64))
        if interpolation >= 0.5:
            assert leaf.grad.abs().sum() > 0
        # linear in the loss: the loss scaled by c gives c times the gradient
        scaled = y.clone().requires_grad_()
        (1e-3 * fn(scaled, target, margin=0.0, interpolation=interpolation)).backward()
        torch.testing.assert_close(scaled.grad, 1e-3 * leaf.grad)


@pytest.mark.parametrize("variant", ["log", "loglog"])
@pytest.mark.parametrize("seed", range(3))
def test_recall_gradient_equals_blackbox_definition(variant, seed):
    g = torch.Generator().manual_seed(seed)
    b, n, interpolation, margin = 4, 12, 1.0, 0.125
    scores = torch.randn(b, n, generator=g, dtype=torch.float64)
    relevance = torch.rand(b, n, generator=g) < 0.4
    exclude = torch.rand(b, n, generator=g) < 0.2
    relevance[0] = False  # an undefined query: no gradient at all
    leaf = scores.clone().requires_grad_()
    recall_loss_scores(
        leaf, relevance, exclude=exclude, variant=variant, margin=margin, interpolation=interpolation
    ).backward()

    def f_prime(r):
        return 1 / (1 + r) if variant == "log" else 1 / ((1 + math.log1p(r)) * (1 + r))

    rows = []
    for s_row, rel_row, ex_row in zip(scores.tolist(), relevance.tolist(), exclude.tolist()):
        rel = [r and not e for r, e in zip(rel_row, ex_row)]
        unit = spread([v for v, e in zip(s_row, ex_row) if not e])  # over the items taking part
        y = [-math.inf if e else v for v, e in zip(shift(s_row, rel, margin, unit), ex_row)]
        rows.append((y, rel, unit))
    defined = sum(1 for _, rel, _ in rows if any(rel))
    expected = []
    for y, rel, unit in rows:
        if not any(rel):
            expected.append([0.0] * n)
            continue
        rk, rk_pos = max_rank(y), max_rank([a if r else -math.inf for a, r in zip(y, rel)])
        weight = 1 / (defined * sum(rel))
        d_all = [weight * f_prime(rk[i] - rk_pos[i]) if rel[i] else 0.0 for i in range(n)]
        expected.append(ref_rank_loss_grad(y, interpolation, d_all, unit))
    torch.testing.assert_close(leaf.grad, torch.tensor(expected, dtype=torch.float64))
    assert leaf.grad.abs().sum() > 0
    assert torch.equal(leaf.grad[0], torch.zeros(n, dtype=torch.float64))
    assert (leaf.grad[exclude] == 0).all()


@pytest.mark.parametrize("seed", [3, 7])
@pytest.mark.parametrize(("k", "interpolation"), [(None, 2.0), (3, 10.0)])
def test_ndcg_gradient_equals_blackbox_definition(k, interpolation, seed):
    g = torch.Generator().manual_seed(seed)
    b, n = 3, 10
    scores = torch.randn(b, n, generator=g, dtype=torch.float64)
    gains = (torch.rand(b, n, generator=g) * 3).floor().double()
    leaf = scores.clone().requires_grad_()
    ndcg_loss(leaf, gains, k=k, interpolation=interpolation).backward()
    cutoff = n if k is None else k
    expected = []
    for y, gain in zip(scores.tolist(), gains.tolist()):
        rk = max_rank(y)
        ideal = sum(v / math.log2(i + 2) for i, v in enumerate(sorted(gain, reverse=True)[:cutoff]))
        # d(1 - DCG / IDCG) / d rk_i = (gain_i / IDCG) / ((1 + rk_i) ln 2 log2(1 + rk_i)^2) / B, the uncut
        # discount's derivative beyond the cut-off too (documented)
        d_all = [gain[i] / ideal / ((1 + rk[i]) * math.log(2) * math.log2(1 + rk[i]) ** 2) / b for i in range(n)]
        expected.append(blackbox_grad(y, d_all, interpolation, spread(y)))
    torch.testing.assert_close(leaf.grad, torch.tensor(expected, dtype=torch.float64))
    assert leaf.grad.abs().sum() > 0


def test_ap_and_auroc_gradient_direction():
    """Blackbox gradient of a rank loss: the positives' scores are pushed up (negative gradient in sum)
    and every negative's score down (its gradient >= 0: only positives are perturbed in the full
    ranking, which can only lower a negative's rank)."""
    g = torch.Generator().manual_seed(3)
    for loss_fn in (average_precision_loss, auroc_loss):
        scores = torch.randn(40, generator=g, requires_grad=True)
        target = (torch.rand(40, generator=g) < 0.3).long()
        loss_fn(scores, target, margin=0.0).backward()
        grad = scores.grad
        assert torch.isfinite(grad).all()
        assert grad[target == 1].sum() < 0
        assert (grad[target == 0] >= 0).all()
        assert grad[target == 0].sum() > 0


def test_auroc_gradient_single_positive_moves_up():
    scores = torch.tensor([0.0, 1.0, 2.0, -1.0], requires_grad=True)
    auroc_loss(scores, torch.tensor([1, 0, 0, 0]), margin=0.0, interpolation=1.0).backward()
    assert scores.grad[0] < 0
    assert (scores.grad[1:] >= 0).all()


def test_recall_gradient_direction():
    g = torch.Generator().manual_seed(4)
    scores = torch.randn(6, 20, generator=g, requires_grad=True)
    relevance = torch.rand(6, 20, generator=g) < 0.3
    recall_loss_scores(scores, relevance, variant="log", margin=0.0).backward()
    assert torch.isfinite(scores.grad).all()
    assert scores.grad[relevance].sum() < 0
    assert (scores.grad[~relevance] >= 0).all()


def test_ndcg_gradient_direction():
    scores = torch.tensor([0.0, 1.0, 2.0], requires_grad=True)
    ndcg_loss(scores, torch.tensor([3.0, 0.0, 0.0]), interpolation=10.0).backward()
    assert scores.grad[0] < 0  # the only relevant item, ranked last, is pushed up
    assert (scores.grad[1:] >= 0).all()


def test_ndcg_items_below_cutoff_are_pushed_up_by_the_uncut_discount():
    # The only relevant item is ranked 2nd. With k = 1 its rank is outside the cut-off: it counts 0 in the
    # value, and the cut-off's own gradient is 0 there, but the documented uncut discount pushes it up
    # (on main the gradient was exactly zero, so NDCG@K never moved an item into the top K).
    scores = torch.tensor([3.0, 2.0, 1.0, 0.0], requires_grad=True)
    gains = torch.tensor([0.0, 2.0, 0.0, 0.0])
    loss = ndcg_loss(scores, gains, k=1, interpolation=2.0)
    assert loss.item() == 1.0
    loss.backward()
    assert scores.grad[1] < 0 and scores.grad[0] > 0


def test_ndcg_with_every_item_tied_below_the_cutoff_gets_a_gradient():
    scores = torch.zeros(2, 20, requires_grad=True)  # a zero-initialised head: every item ranks 20th
    gains = (torch.arange(40).reshape(2, 20) % 7 == 0).float()
    ndcg_loss(scores, gains, k=5).backward()
    assert (scores.grad[gains > 0] < 0).all()


def _finite_grad(fn, *inputs):
    leaf = inputs[0].clone().requires_grad_()
    loss = fn(leaf, *inputs[1:])
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(leaf.grad).all()
    return loss, leaf.grad


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_gradients_finite_and_dtype_preserved(dtype):
    g = torch.Generator().manual_seed(5)
    s = torch.randn(12, 3, generator=g).to(dtype)
    y = (torch.rand(12, 3, generator=g) < 0.4).long()
    y[:, 2] = 0  # an undefined column
    # ranks (and so the loss) are float32 for float16 scores: float16 cannot count past 2048
    loss_dtype = torch.float32 if dtype == torch.float16 else dtype
    for fn in (average_precision_loss, auroc_loss):
        loss, grad = _finite_grad(fn, s, y)
        assert loss.dtype == loss_dtype and grad.dtype == dtype
    loss, grad = _finite_grad(recall_loss, s, torch.arange(12) % 4)
    assert grad.dtype == dtype
    loss, grad = _finite_grad(ndcg_loss, s.T.contiguous(), y.T.to(dtype))
    assert grad.dtype == dtype


# --- a few optimisation steps improve the exact metric ---------------------------------------------------


def _classification_problem(seed=0, n=120, d=5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w_true = torch.randn(d, generator=g)
    y = ((x @ w_true + 0.3 * torch.randn(n, generator=g)) > 0.8).long()
    # a bad start (AP about 0.27) but not a fully reversed one: from -0.5 * w_true the AP loss
    # gets exactly zero gradient at interpolation 0.2 to 0.5 (every perturbation is smaller
    # than the score gaps), a property of the method, not of the implementation
    w = (-0.2 * w_true + 0.3 * torch.randn(d, generator=g)).requires_grad_()
    return x, y, w


def _adam(params, loss_of, steps=30, lr=0.05):
    optimizer = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        loss_of().backward()
        optimizer.step()


@pytest.mark.parametrize(
    ("loss_fn", "metric"),
    [(APLoss(interpolation=0.5), average_precision_score), (AUROCLoss(interpolation=0.5), roc_auc_score)],
    ids=["ap", "auroc"],
)
def test_adam_steps_raise_exact_metric_classification(loss_fn, metric):
    # explicit hyper-parameters: the test is about the gradient, not about the current defaults
    x, y, w = _classification_problem()
    before = metric(y.numpy(), (x @ w).detach().numpy())
    _adam([w], lambda: loss_fn(x @ w, y))
    after = metric(y.numpy(), (x @ w).detach().numpy())
    assert before < 0.3 and after > 0.9, (before, after)


def test_adam_steps_raise_exact_map_multilabel():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(100, 6, generator=g)
    w_true = torch.randn(6, 3, generator=g)
    y = ((x @ w_true) > 0.5).long()
    w = (-0.2 * w_true + 0.3 * torch.randn(6, 3, generator=g)).requires_grad_()

    def mean_ap():
        scores = (x @ w).detach().numpy()
        return average_precision_score(y.numpy(), scores, average="macro")

    before = mean_ap()
    _adam([w], lambda: average_precision_loss(x @ w, y, interpolation=0.5))
    assert before < 0.4 and mean_ap() > 0.9, (before, mean_ap())


def test_adam_steps_raise_recall_at_1():
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(48) % 4
    centres = torch.randn(4, 8, generator=g) * 1.5
    x = centres[labels] + torch.randn(48, 8, generator=g)
    w = (0.3 * torch.randn(8, 2, generator=g)).requires_grad_()  # a random 2-d projection
    before = recall_at_1((x @ w).detach().numpy(), labels.numpy())
    loss_fn = RecallLoss(interpolation=0.5)
    _adam([w], lambda: loss_fn(x @ w, labels), steps=40)
    after = recall_at_1((x @ w).detach().numpy(), labels.numpy())
    assert before < 0.5 and after > 0.9, (before, after)


def test_adam_steps_raise_ndcg():
    g = torch.Generator().manual_seed(1)
    features = torch.randn(8, 15, 4, generator=g)  # 8 queries x 15 items
    w_true = torch.randn(4, generator=g)
    gains = (features @ w_true).clamp_min(0).round()
    w = (-0.2 * w_true + 0.2 * torch.randn(4, generator=g)).requires_grad_()

    def ndcg(k):
        return ndcg_score(gains.numpy(), (features @ w).detach().numpy(), k=k)

    before, before_at_5 = ndcg(None), ndcg(5)
    loss_fn = NDCGLoss(interpolation=0.5)
    _adam([w], lambda: loss_fn(features @ w, gains))
    assert before < 0.5 and ndcg(None) > 0.9, (before, ndcg(None))
    assert before_at_5 < 0.1 and ndcg(5) > 0.9, (before_at_5, ndcg(5))


# --- undefined rows ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fn", "scores", "target"),
    [
        (average_precision_loss, torch.randn(6), torch.zeros(6, dtype=torch.long)),
        (average_precision_loss, torch.randn(6, 3), torch.zeros(6, 3, dtype=torch.long)),
        (auroc_loss, torch.randn(6), torch.zeros(6, dtype=torch.long)),
        (auroc_loss, torch.randn(6), torch.ones(6, dtype=torch.long)),  # no negative
        (ndcg_loss, torch.randn(2, 6), torch.zeros(2, 6)),
        (recall_loss, torch.randn(5, 3), torch.arange(5)),  # every label a singleton
    ],
    ids=["ap", "ap-multilabel", "auroc-no-pos", "auroc-no-neg", "ndcg", "recall"],
)
def test_all_undefined_gives_zero_loss_and_zero_gradient(fn, scores, target):
    leaf = scores.clone().requires_grad_()
    loss = fn(leaf, target)
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert torch.equal(leaf.grad, torch.zeros_like(leaf))


def test_recall_scores_query_without_relevant_item_is_left_out():
    scores = torch.tensor([[0.5, 1.0, 0.0], [0.5, 1.0, 0.0]], requires_grad=True)
    relevance = torch.tensor([[1, 0, 0], [0, 0, 0]])
    loss = recall_loss_scores(scores, relevance, variant="log", margin=0.0)
    assert loss.item() == pytest.approx(math.log(2))  # the defined query alone
    loss.backward()
    assert torch.equal(scores.grad[1], torch.zeros(3))


def test_mixed_rows_average_only_defined_ones():
    scores = torch.tensor([[2.0, 0.0, 1.0], [1.0, 0.5, 0.25], [0.0, 3.0, -1.0], [-1.0, 1.0, 2.0]])
    target = torch.tensor([[0, 1, 0], [1, 1, 0], [0, 1, 0], [1, 1, 0]])  # column 2: no positive; column 1: no negative
    per_column_ap = [ref_ap_loss(scores[:, c].tolist(), target[:, c].tolist()) for c in range(3)]
    assert per_column_ap[2] is None
    ap = average_precision_loss(scores, target, margin=0.0, cross_class_weight=0.0)
    assert ap.item() == pytest.approx((per_column_ap[0] + per_column_ap[1]) / 2)
    assert ap.item() > 0
    per_column_auroc = [ref_auroc_loss(scores[:, c].tolist(), target[:, c].tolist()) for c in range(3)]
    assert per_column_auroc[1] is None and per_column_auroc[2] is None
    assert auroc_loss(scores, target, margin=0.0).item() == pytest.approx(per_column_auroc[0])
    # NDCG rows
    s = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]], requires_grad=True)
    gains = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    loss = ndcg_loss(s, gains)
    assert loss.item() == pytest.approx((1 - 1 / math.log2(3)) / 2)
    loss.backward()
    assert torch.equal(s.grad[1], torch.zeros(2))


# --- memory ----------------------------------------------------------------------------------------------


def _batches(sizes, columns=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    for k, n in enumerate(sizes):
        shape = (n,) if columns is None else (n, columns)
        scores = torch.randn(shape, generator=g) + k  # distinct values per batch
        target = (torch.rand(shape, generator=g) < 0.5).long()
        target.view(-1)[0] = 1
        yield scores.requires_grad_(), target


@pytest.mark.parametrize(
    ("module", "fn"),
    [(APLoss, average_precision_loss), (AUROCLoss, auroc_loss)],
    ids=["ap", "auroc"],
)
@pytest.mark.parametrize("columns", [None, 3])
def test_memory_fifo_by_batch_and_equals_functional_with_explicit_memory(module, fn, columns):
    loss_fn = module(memory_size=2, margin=0.1, interpolation=0.5)
    seen = []
    for scores, target in _batches([3, 1, 4, 2, 5], columns):
        previous = seen[-2:]
        memory = (torch.cat([s for s, _ in previous]), torch.cat([t for _, t in previous])) if previous else None
        loss = loss_fn(scores, target)
        expected = fn(scores, target, margin=0.1, interpolation=0.5, memory=memory)
        assert torch.equal(loss, expected)
        seen.append((scores.detach(), target))
        kept = seen[-2:]
        assert loss_fn.memory.lengths.tolist() == [len(s) for s, _ in kept]
        assert torch.equal(loss_fn.memory.values, torch.cat([s for s, _ in kept]))
        assert torch.equal(loss_fn.memory.labels, torch.cat([t for _, t in kept]))
        assert len(loss_fn.memory) == sum(len(s) for s, _ in kept)


def test_memory_changes_the_loss_and_adds_columns_to_the_ranking():
    loss_fn = APLoss(memory_size=1, margin=0.0)
    first = torch.tensor([5.0, 4.0, 3.0], requires_grad=True)
    loss_fn(first, torch.tensor([0, 0, 0]))  # three high-scoring negatives remembered
    scores, target = torch.tensor([1.0, 0.0]), torch.tensor([1, 0])
    assert average_precision_loss(scores, target, margin=0.0).item() == 0.0
    # the positive now ranks 4th of 5: AP = 1/4
    assert loss_fn(scores, target).item() == pytest.approx(0.75)


def test_multiclass_memory_stores_class_indices():
    loss_fn = APLoss(memory_size=2, margin=0.0)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 3, generator=g), torch.randn(5, 3, generator=g)
    la, lb = torch.tensor([0, 1, 2, 0]), torch.tensor([2, 2, 1, 0, 1])
    loss_fn(a.requires_grad_(), la)
    a = a.detach()
    assert loss_fn(b, lb).item() == pytest.approx(average_precision_loss(b, lb, margin=0.0, memory=(a, la)).item())
    assert torch.equal(
        average_precision_loss(b, lb, margin=0.0, memory=(a, la)),
        average_precision_loss(b, F.one_hot(lb, 3), margin=0.0, memory=(a, F.one_hot(la, 3))),
    )


@pytest.mark.parametrize("module", [APLoss, AUROCLoss, RecallLoss])
def test_memory_only_in_training_mode_and_reset(module):
    loss_fn = module(memory_size=3)
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(6, 2, generator=g, requires_grad=True), torch.randn(4, 2, generator=g, requires_grad=True)
    y1, y2 = torch.tensor([0, 1, 0, 1, 1, 0]), torch.tensor([1, 0, 1, 0])
    if module is not RecallLoss:
        y1, y2 = torch.stack([y1, 1 - y1], 1), torch.stack([y2, 1 - y2], 1)
    loss_fn(x1, y1)
    state = {k: v.clone() for k, v in loss_fn.state_dict().items()}
    loss_fn.eval()
    eval_loss = loss_fn(x2, y2)
    for key, value in loss_fn.state_dict().items():
        assert torch.equal(value, state[key]), key
    # eval still ranks against the memory, it just does not add to it
    assert len(loss_fn.memory) == 6
    loss_fn.train()
    assert torch.equal(loss_fn(x2, y2), eval_loss)
    assert loss_fn.memory.lengths.tolist() == [6, 4]
    loss_fn.reset()
    assert len(loss_fn.memory) == 0 and loss_fn.memory.contents() is None
    assert loss_fn.memory.lengths.tolist() == []
    assert loss_fn.memory.values.numel() == 0 and loss_fn.memory.labels.numel() == 0  # nothing stale saved
    loss_fn(x2, y2)
    assert loss_fn.memory.lengths.tolist() == [4]


@pytest.mark.parametrize("module", [APLoss, AUROCLoss, RecallLoss])
def test_memory_state_dict_round_trip_into_a_module_of_different_fill(module):
    g = torch.Generator().manual_seed(0)
    labels_of = (lambda n: torch.arange(n) % 2) if module is not RecallLoss else (lambda n: torch.arange(n) % 3)
    source, target_module = module(memory_size=2), module(memory_size=2)
    for n in (5, 3, 4):
        source(torch.randn(n, 2 if module is RecallLoss else 1, generator=g, requires_grad=True), labels_of(n))
    target_module(torch.randn(7, 2 if module is RecallLoss else 1, generator=g, requires_grad=True), labels_of(7))
    state = source.state_dict()
    assert {"memory.values", "memory.labels", "memory.lengths"} <= set(state)
    assert state["memory.lengths"].tolist() == [3, 4]
    target_module.load_state_dict(state)
    for key in ("memory.values", "memory.labels", "memory.lengths"):
        assert torch.equal(target_module.state_dict()[key], state[key]), key
    x, y = torch.randn(6, 2 if module is RecallLoss else 1, generator=g, requires_grad=True), labels_of(6)
    assert torch.equal(target_module(x, y), source(x, y))
    assert torch.equal(target_module.memory.values, source.memory.values)
    # an empty memory loads too (into a filled one)
    target_module.load_state_dict(module(memory_size=2).state_dict())
    assert len(target_module.memory) == 0 and target_module.memory.contents() is None


def test_memory_to_float64_casts_floating_buffers_only():
    loss_fn = APLoss(memory_size=2, margin=0.0)
    scores, target = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([1, 0, 0])
    loss_fn(scores.requires_grad_(), target)
    scores = scores.detach()
    loss_fn.to(torch.float64)
    assert loss_fn.memory.values.dtype == torch.float64
    assert loss_fn.memory.labels.dtype == torch.long
    assert loss_fn.memory.lengths.dtype == torch.long
    assert loss_fn.memory.values.tolist() == scores.tolist()
    new = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    loss = loss_fn(new, torch.tensor([1, 0]))
    assert loss.dtype == torch.float64
    assert torch.equal(
        loss, average_precision_loss(new, torch.tensor([1, 0]), margin=0.0, memory=(scores.double(), target))
    )
    assert loss_fn.memory.values.dtype == torch.float64


@pytest.mark.parametrize("module", [APLoss, AUROCLoss, RecallLoss])
def test_memory_takes_only_training_steps_not_no_grad_calls_in_training_mode(module):
    # A validation or logging call under no_grad, with the loss module left in training mode (it is not a
    # submodule of the model, so model.eval() does not reach it), must not enter the memory: on main it did.
    loss_fn = module(memory_size=3)
    x = torch.randn(6, 2) if module is RecallLoss else torch.randn(6)
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    with torch.no_grad():
        loss_fn(x, y)
    loss_fn(x, y)  # detached scores: no gradient flows, not a training step either
    assert len(loss_fn.memory) == 0
    loss_fn(x.clone().requires_grad_(), y)
    assert len(loss_fn.memory) == 6


def test_memory_row_counts_stay_on_the_cpu_where_the_module_moves(device):
    # Reading the row counts from a GPU at every step would synchronise the host with it.
    loss_fn = APLoss(memory_size=2)
    loss_fn(torch.randn(5, requires_grad=True), torch.tensor([1, 0, 1, 0, 0]))
    loss_fn.to(device).load_state_dict(APLoss(memory_size=2).to(device).state_dict())
    assert loss_fn.memory.lengths.device.type == "cpu"
    for target in (device, "meta"):
        loss_fn.to(target)
        assert (loss_fn.memory.lengths.device.type == "cpu"
                and loss_fn.memory.values.device.type == torch.device(target).type)


def test_memory_entries_carry_no_gradient():
    loss_fn = AUROCLoss(memory_size=2)
    s1 = torch.randn(6, requires_grad=True)
    y = torch.tensor([1, 0, 1, 0, 1, 0])
    loss_fn(s1, y).backward()
    assert not loss_fn.memory.values.requires_grad and loss_fn.memory.values.grad_fn is None
    s2 = torch.randn(6, requires_grad=True)
    loss2 = loss_fn(s2, y)
    assert torch.autograd.grad(loss2, s1, retain_graph=True, allow_unused=True) == (None,)
    loss2.backward()  # no "backward through the graph a second time" from the remembered batch
    assert s2.grad is not None


@pytest.mark.parametrize(
    "fn",
    [
        pytest.param(average_precision_loss, id="ap"),
        pytest.param(auroc_loss, id="auroc"),
        pytest.param(recall_loss, id="recall"),
    ],
)
def test_functional_memory_receives_no_gradient(fn):
    g = torch.Generator().manual_seed(0)
    if fn is recall_loss:
        scores, target = torch.randn(4, 3, generator=g, requires_grad=True), torch.tensor([0, 1, 0, 1])
        memory = (torch.randn(3, 3, generator=g, requires_grad=True), torch.tensor([0, 1, 1]))
    else:
        scores, target = torch.randn(6, generator=g, requires_grad=True), torch.tensor([1, 0, 1, 0, 1, 0])
        memory = (torch.randn(6, generator=g, requires_grad=True), target)
    fn(scores, target, interpolation=5.0, memory=memory).backward()
    assert scores.grad.abs().sum() > 0
    assert memory[0].grad is None


def test_recall_memory_adds_gallery_columns():
    g = torch.Generator().manual_seed(0)
    loss_fn = RecallLoss(memory_size=2, margin=0.0, variant="log")
    sizes = [5, 3, 4]
    seen = []
    for n in sizes:
        emb = torch.randn(n, 3, generator=g, requires_grad=True)
        labels = torch.randint(0, 3, (n,), generator=g)
        contents = loss_fn.memory.contents()
        m = 0 if contents is None else len(contents[0])
        assert m == sum(len(e) for e, _ in seen[-2:])
        scores, relevance, exclude = retrieval_scores(emb, labels, contents)
        assert scores.shape == relevance.shape == exclude.shape == (n, n + m)
        assert exclude[:, :n].tolist() == np.eye(n, dtype=bool).tolist()
        assert not exclude[:, n:].any()
        if contents is not None:
            assert torch.equal(relevance[:, n:], labels[:, None] == contents[1][None, :])
            gallery = torch.cat([emb.detach(), contents[0]]).double().numpy()
            torch.testing.assert_close(
                scores, torch.tensor(cosine_matrix(emb.detach().double().numpy(), gallery)).float()
            )
            # the reference on the full (N, N + M) matrix: self-pairs excluded, memory columns ranked too
            expected = ref_recall_loss(
                cosine_matrix(emb.detach().double().numpy(), gallery).tolist(),
                (labels[:, None] == torch.cat([labels, contents[1]])[None, :]).tolist(),
                exclude.tolist(),
                "log",
            )
        loss = loss_fn(emb, labels)
        assert torch.equal(loss, recall_loss(emb, labels, variant="log", margin=0.0, memory=contents))
        if contents is not None:
            assert loss.item() == pytest.approx(expected, rel=1e-6)
        loss.backward()
        assert emb.grad is not None and torch.isfinite(emb.grad).all()
        seen.append((emb.detach(), labels))
        assert torch.equal(loss_fn.memory.values, torch.cat([e for e, _ in seen[-2:]]))


def test_memory_size_zero_remembers_nothing():
    loss_fn = APLoss(memory_size=0)
    loss_fn(torch.randn(4), torch.tensor([1, 0, 1, 0]))
    assert loss_fn.memory.contents() is None and len(loss_fn.memory) == 0


def test_batch_memory_rejects_a_change_of_row_shape():
    memory = BatchMemory(2)
    memory.push(torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="reset"):
        memory.push(torch.zeros(3, 4), torch.zeros(3))


# --- module equals function -------------------------------------------------------------------------


def _module_function_pairs():
    g = torch.Generator().manual_seed(7)
    s, y = torch.randn(10, 3, generator=g), (torch.rand(10, 3, generator=g) < 0.4).long()
    emb, labels = torch.randn(10, 4, generator=g), torch.arange(10) % 3
    gains = torch.rand(10, 3, generator=g).round()
    return [
        (
            "ap",
            APLoss(interpolation=3.0, margin=0.2, cross_class_weight=1.5),
            lambda a, b: average_precision_loss(a, b, interpolation=3.0, margin=0.2, cross_class_weight=1.5),
            s,
            y,
        ),
        (
            "auroc",
            AUROCLoss(interpolation=3.0, margin=0.2),
            lambda a, b: auroc_loss(a, b, interpolation=3.0, margin=0.2),
            s,
            y,
        ),
        (
            "recall",
            RecallLoss(variant="log", interpolation=3.0, margin=0.2),
            lambda a, b: recall_loss(a, b, variant="log", interpolation=3.0, margin=0.2),
            emb,
            labels,
        ),
        (
            "ndcg",
            NDCGLoss(k=2, interpolation=3.0),
            lambda a, b: ndcg_loss(a, b, k=2, interpolation=3.0),
            s.T.contiguous(),
            gains.T.contiguous(),
        ),
    ]


@pytest.mark.parametrize("case", _module_function_pairs(), ids=lambda c: c[0])
def test_module_equals_function(case):
    _, module, fn, x, y = case
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    loss_module, loss_fn = module(a, y), fn(b, y)
    assert torch.equal(loss_module, loss_fn)
    loss_module.backward()
    loss_fn.backward()
    assert torch.equal(a.grad, b.grad)
    assert a.grad.abs().sum() > 0


def test_interpolation_changes_the_gradient_not_the_value():
    g = torch.Generator().manual_seed(8)
    x = torch.randn(30, generator=g)
    y = (torch.arange(30) % 3 == 0).long()
    grads, values = [], []
    for lam in (0.01, 0.5, 5.0):
        leaf = x.clone().requires_grad_()
        loss = average_precision_loss(leaf, y, interpolation=lam)
        loss.backward()
        values.append(loss.item())
        grads.append(leaf.grad)
    assert values[0] == values[1] == values[2]
    assert not torch.equal(grads[0], grads[1]) and not torch.equal(grads[1], grads[2])


# --- invalid arguments -------------------------------------------------------------------------------------


S4, T4 = torch.tensor([0.5, 0.1, -0.2, 1.0]), torch.tensor([1, 0, 0, 1])
E4, L4 = torch.randn(4, 2, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 0, 1, 1])


@pytest.mark.parametrize(
    ("call", "error", "name"),
    [
        (lambda: average_precision_loss(S4, T4, interpolation=0.0), ValueError, "interpolation"),
        (lambda: average_precision_loss(S4, T4, interpolation=-1.0), ValueError, "interpolation"),
        (lambda: auroc_loss(S4, T4, interpolation=math.nan), ValueError, "interpolation"),
        (lambda: ndcg_loss(S4, T4.float(), interpolation=math.inf), ValueError, "interpolation"),
        (lambda: recall_loss(E4, L4, interpolation="0.5"), TypeError, "interpolation"),
        (lambda: APLoss(interpolation=0), ValueError, "interpolation"),
        (lambda: NDCGLoss(interpolation=-2), ValueError, "interpolation"),
        (lambda: average_precision_loss(S4, T4, margin=-0.1), ValueError, "margin"),
        (lambda: auroc_loss(S4, T4, margin=math.inf), ValueError, "margin"),
        (lambda: recall_loss(E4, L4, margin=math.nan), ValueError, "margin"),
        (lambda: AUROCLoss(margin=True), ValueError, "margin"),
        (lambda: RecallLoss(margin=-1), ValueError, "margin"),
        (lambda: APLoss(memory_size=-1), ValueError, "memory_size"),
        (lambda: AUROCLoss(memory_size=1.5), ValueError, "memory_size"),
        (lambda: RecallLoss(memory_size=True), ValueError, "memory_size"),
        (lambda: RecallLoss(variant="cosine"), ValueError, "variant"),
        (lambda: recall_loss(E4, L4, variant="LOG"), ValueError, "variant"),
        (lambda: recall_loss_scores(S4[None], T4[None], variant=None), ValueError, "variant"),
        (lambda: average_precision_loss(S4, T4, cross_class_weight=-0.5), ValueError, "cross_class_weight"),
        (lambda: APLoss(cross_class_weight=math.nan), ValueError, "cross_class_weight"),
        (lambda: average_precision_loss(S4, torch.tensor([1, 2, 0, 1])), ValueError, "target"),
        (lambda: auroc_loss(S4, torch.tensor([1.0, 0.5, 0.0, 1.0])), ValueError, "target"),
        (lambda: average_precision_loss(S4[:, None].repeat(1, 3), torch.tensor([0, 1, 3, 2])), ValueError, "target"),
        (
            lambda: average_precision_loss(S4[:, None].repeat(1, 3), torch.tensor([0.0, 1.0, 2.0, 1.0])),
            ValueError,
            "target",
        ),
        (lambda: recall_loss_scores(S4[None], torch.tensor([[1, 0, 2, 0]])), ValueError, "relevance"),
        (lambda: average_precision_loss(S4, T4[:3]), ValueError, "target"),
        (lambda: auroc_loss(S4[None], T4), ValueError, "target"),
        (lambda: average_precision_loss(torch.zeros(0), torch.zeros(0)), ValueError, "scores"),
        (lambda: recall_loss_scores(S4[None], T4[None, :3]), ValueError, "relevance"),
        (lambda: recall_loss_scores(S4, T4), ValueError, "scores"),
        (
            lambda: recall_loss_scores(S4[None], T4[None], exclude=torch.zeros(1, 3, dtype=torch.bool)),
            ValueError,
            "exclude",
        ),
        (lambda: recall_loss_scores(S4[None], T4[None], exclude=torch.zeros(1, 4)), TypeError, "exclude"),
        (lambda: recall_loss(E4, L4[:3]), ValueError, "labels"),
        (lambda: recall_loss(E4, L4.float()), ValueError, "labels"),
        (lambda: ndcg_loss(S4, T4[:3].float()), ValueError, "gains"),
        (lambda: ndcg_loss(S4, -T4.float()), ValueError, "gains"),
        (lambda: ndcg_loss(S4, T4.float(), k=0), ValueError, "`k`"),
        (lambda: ndcg_loss(S4, T4.float(), k=1.5), ValueError, "`k`"),
        (lambda: ndcg_loss(S4, T4.float(), k=True), ValueError, "`k`"),
        (lambda: NDCGLoss(k=-1)(S4, T4.float()), ValueError, "`k`"),
        (lambda: average_precision_loss(T4, T4), TypeError, "scores"),
        (lambda: auroc_loss(torch.tensor([0.0, math.nan, 1.0, 2.0]), T4), ValueError, "scores"),
        (lambda: ndcg_loss(torch.tensor([0.0, math.inf, 1.0, 2.0]), T4.float()), ValueError, "scores"),
        (lambda: recall_loss(torch.tensor([[0.0, math.nan]] * 4), L4), ValueError, "embeddings"),
    ],
)
def test_invalid_arguments_raise_naming_the_argument(call, error, name):
    with pytest.raises(error, match=name if name.startswith("`") else f"`{name}`"):
        call()


def test_ndcg_module_checks_k_at_construction():
    with pytest.raises(ValueError, match="`k`"):
        NDCGLoss(k=0)


# --- properties over a table of losses ---------------------------------------------------------------


def _grid_tensor(data, shape):
    size = math.prod(shape)
    return torch.tensor(
        data.draw(st.lists(st.sampled_from(GRID), min_size=size, max_size=size)), dtype=torch.float64
    ).reshape(shape)


def _binary_tensor(data, shape):
    size = math.prod(shape)
    return torch.tensor(data.draw(st.lists(st.sampled_from([0, 1]), min_size=size, max_size=size))).reshape(shape)


# name -> (draw inputs, loss(scores, target, margin), upper bound or None); the first input is the
# scores, every tensor's dim 0 indexes samples (for recall_scores: queries; columns are permuted too)
TABLE = {
    "ap_binary": (
        lambda data, n: (_grid_tensor(data, (n,)), _binary_tensor(data, (n,))),
        lambda s, t, m: average_precision_loss(s, t, margin=m),
        1.0,
    ),
    "ap_multilabel": (
        lambda data, n: (_grid_tensor(data, (n, 3)), _binary_tensor(data, (n, 3))),
        lambda s, t, m: average_precision_loss(s, t, margin=m),
        1.0,
    ),
    "ap_multiclass": (
        lambda data, n: (
            _grid_tensor(data, (n, 3)),
            torch.tensor(data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))),
        ),
        lambda s, t, m: average_precision_loss(s, t, margin=m),
        1.0,
    ),
    "auroc_binary": (
        lambda data, n: (_grid_tensor(data, (n,)), _binary_tensor(data, (n,))),
        lambda s, t, m: auroc_loss(s, t, margin=m),
        1.0,
    ),
    "auroc_multilabel": (
        lambda data, n: (_grid_tensor(data, (n, 2)), _binary_tensor(data, (n, 2))),
        lambda s, t, m: auroc_loss(s, t, margin=m),
        1.0,
    ),
    "ndcg": (  # samples = items of one query; gains graded
        lambda data, n: (_grid_tensor(data, (n,)), _binary_tensor(data, (n,)).double() * 2.5),
        lambda s, t, m: ndcg_loss(s, t),
        1.0,
    ),
    "ndcg_at_2": (  # samples = queries of (n, 4) rows
        lambda data, n: (_grid_tensor(data, (n, 4)), _binary_tensor(data, (n, 4)).double()),
        lambda s, t, m: ndcg_loss(s, t, k=2),
        1.0,
    ),
    "recall_log": (
        lambda data, n: (_grid_tensor(data, (n, 5)), _binary_tensor(data, (n, 5))),
        lambda s, t, m: recall_loss_scores(s, t, variant="log", margin=m),
        None,
    ),
    "recall_loglog": (
        lambda data, n: (_grid_tensor(data, (n, 5)), _binary_tensor(data, (n, 5))),
        lambda s, t, m: recall_loss_scores(s, t, variant="loglog", margin=m),
        None,
    ),
}


@SETTINGS
@given(data=st.data(), name=st.sampled_from(sorted(TABLE)), n=st.integers(1, 9), margin=st.sampled_from([0.0, 0.25]))
def test_property_permutation_invariance_and_bounds(data, name, n, margin):
    draw, loss_of, upper = TABLE[name]
    scores, target = draw(data, n)
    loss = loss_of(scores, target, margin)
    assert loss.item() >= 0
    if upper is not None:
        assert loss.item() <= upper
    perm = torch.tensor(data.draw(st.permutations(range(n))))
    permuted = loss_of(scores[perm], target[perm], margin)
    torch.testing.assert_close(permuted, loss)
    if name.startswith("recall"):  # gallery columns too
        cols = torch.tensor(data.draw(st.permutations(range(scores.shape[1]))))
        torch.testing.assert_close(loss_of(scores[:, cols], target[:, cols], margin), loss)


@SETTINGS
@given(
    data=st.data(), name=st.sampled_from(sorted(TABLE)), n=st.integers(1, 9), c=st.sampled_from([1e-3, 0.3, 7.0, 1e4])
)
def test_property_scaling_invariance_at_zero_margin(data, name, n, c):
    draw, loss_of, _ = TABLE[name]
    scores, target = draw(data, n)
    assert torch.equal(loss_of(scores * c, target, 0.0), loss_of(scores, target, 0.0))


@FEW
@given(data=st.data(), name=st.sampled_from(["ap_binary", "auroc_binary", "recall_log"]), n=st.integers(2, 9))
def test_property_margin_breaks_scaling_invariance(data, name, n):
    """With a margin, scaling scores up only ever helps (the margin shrinks relative to the gaps)."""
    draw, loss_of, _ = TABLE[name]
    scores, target = draw(data, n)
    # misordered pairs are those with gap <= margin: a superset of gap <= 0, shrinking as scores grow
    small, large = loss_of(scores, target, 0.5), loss_of(scores * 8, target, 0.5)
    assert large.item() <= small.item()
    assert large.item() >= loss_of(scores, target, 0.0).item()


def test_recall_loss_on_embeddings_is_permutation_invariant():
    g = torch.Generator().manual_seed(9)
    emb = torch.randn(12, 4, generator=g, dtype=torch.float64)
    labels = torch.arange(12) % 4
    perm = torch.randperm(12, generator=g)
    for variant in ("log", "loglog"):
        torch.testing.assert_close(
            recall_loss(emb[perm], labels[perm], variant=variant), recall_loss(emb, labels, variant=variant)
        )
    torch.testing.assert_close(recall_loss(emb * 3.0, labels, margin=0.3), recall_loss(emb, labels, margin=0.3))


# --- regressions found by fuzzing (issue 12) ----------------------------------------------------------


def test_recall_loss_on_an_empty_batch_is_a_clear_error_not_nan():
    with pytest.raises(ValueError, match="`embeddings` must hold at least one row"):
        recall_loss(torch.empty(0, 4, requires_grad=True), torch.empty(0, dtype=torch.long))


@pytest.mark.parametrize("scale", [1e19, 1e30, 1e-30])
def test_huge_and_tiny_embeddings_give_the_similarities_of_their_direction(scale):
    # F.normalize squares the entries: in float32 1e19 ** 2 overflows and every similarity became 0.
    g = torch.Generator().manual_seed(0)
    embeddings, labels = torch.randn(6, 3, generator=g), torch.tensor([0, 0, 1, 1, 2, 2])
    expected, _, _ = retrieval_scores(embeddings, labels)
    scaled = (embeddings * scale).requires_grad_()
    scores, _, _ = retrieval_scores(scaled, labels)
    torch.testing.assert_close(scores, expected)
    recall_loss(scaled, labels).backward()
    assert torch.isfinite(scaled.grad).all()


def test_retrieval_similarities_under_autocast_are_float32():
    g = torch.Generator().manual_seed(1)
    embeddings, labels = torch.randn(64, 16, generator=g), torch.randint(0, 4, (64,), generator=g)
    expected, _, _ = retrieval_scores(embeddings, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores, _, _ = retrieval_scores(embeddings, labels)
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores, expected)


def test_float32_ap_gradient_at_a_million_items_equals_float64_within_one_percent():
    # On main the float32 perturbation rounded away: 31 % relative (L2) off the float64 gradient at N = 1M.
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(1_000_000, generator=g)
    target = (torch.rand(1_000_000, generator=g) < 0.1).long()
    grads = []
    for dtype in (torch.float32, torch.float64):
        leaf = scores.to(dtype).clone().requires_grad_()
        average_precision_loss(leaf, target).backward()
        grads.append(leaf.grad.double())
    assert grads[1].norm() > 0
    assert float((grads[0] - grads[1]).norm() / grads[1].norm()) < 0.01


@pytest.mark.parametrize("weight", [0.25, 1.0, 4.0])
def test_recall_ap_weight_adds_that_many_times_one_minus_each_querys_ap(weight):
    generator = torch.Generator().manual_seed(7)
    scores = torch.randn(6, 30, generator=generator, dtype=torch.float64)
    relevance = torch.rand(6, 30, generator=generator) < 0.3
    relevance[:, 0] = True
    exclude = torch.zeros(6, 30, dtype=torch.bool)
    exclude[:, 1] = True
    # (without a margin, the AP term is the AP of the scores themselves)
    plain = recall_loss_scores(scores, relevance, exclude=exclude, unit=1.0, margin=0.0)
    mixed = recall_loss_scores(scores, relevance, exclude=exclude, unit=1.0, margin=0.0, ap_weight=weight)
    keep = ~exclude[0]
    ap = [average_precision_score(relevance[i][keep].numpy(), scores[i][keep].numpy()) for i in range(6)]
    assert mixed.item() == pytest.approx(plain.item() + weight * float(np.mean([1 - a for a in ap])), rel=1e-9)
    leaf = torch.randn(20, 4, generator=generator, requires_grad=True)
    RecallLoss(ap_weight=weight)(leaf, torch.arange(20) % 4).backward()
    assert leaf.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="`ap_weight`"):
        RecallLoss(ap_weight=-1.0)
