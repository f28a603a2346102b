"""Exact rank metrics against scikit-learn and against references from the definitions.

* average precision, ROC AUC, NDCG: ``sklearn.metrics`` on inputs with many
  ties (scores drawn from a few values); per-row AP also equals
  ``label_ranking_average_precision_score``.
* recall@K, MRR, MAP@R: a slow pure-Python reference written from the
  definitions with ties counting against the query (irrelevant items first
  within a tie), and a brute force showing that this is the minimum over every
  order of the items that sorts the scores.
* retrieval_report: chunked equals unchunked equals the matrix functions.
* The top-k path (``_retrieval_rows``, used by ``map_at_r`` and
  ``retrieval_report``) and the sort-free first rank (``recall_at_k``,
  ``mrr_score``) give the same floats, bit for bit, as one full sort per row,
  on inputs with many ties, ties across the top-k cut, excluded items, +-inf
  scores and duplicate embeddings; the inputs are checked to reach every
  branch (top-k rows, rows sorted in full, first ranks counted past the cut).
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import sklearn.metrics as skm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from metricopt.metrics import (
    average_precision_score,
    map_at_r,
    mrr_score,
    ndcg_at_k,
    ranking,
    recall_at_k,
    retrieval_report,
    roc_auc_score,
)

# derandomize: a failure reproduces on every run; database=None: nothing written to disk
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None)
ATOL = 1e-12
FEW_VALUES = st.sampled_from([0.0, 0.25, 0.5, 1.0])  # scores with many ties


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@st.composite
def binary_problem(draw, min_size=1, both=False):
    n = draw(st.integers(min_size, 30))
    y = np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    s = np.array(draw(st.lists(FEW_VALUES, min_size=n, max_size=n)))
    if both and (y.min() == y.max()):
        y[0] = 1 - y[0]
    return y, s


@st.composite
def matrix_problem(draw, max_rows=6, max_cols=8, min_cols=1, gains=False):
    b = draw(st.integers(1, max_rows))
    n = draw(st.integers(min_cols, max_cols))
    values = st.sampled_from([0, 0, 1, 2, 3]) if gains else st.integers(0, 1)
    y = np.array(draw(st.lists(values, min_size=b * n, max_size=b * n))).reshape(b, n)
    s = np.array(draw(st.lists(FEW_VALUES, min_size=b * n, max_size=b * n)))
    return y, s.reshape(b, n)


# --- average precision ----------------------------------------------------------------


@SETTINGS
@given(binary_problem())
def test_average_precision_equals_sklearn_with_ties(problem):
    y, s = problem
    if y.sum() == 0:
        with pytest.warns(UserWarning, match="y_true"):
            assert average_precision_score(y, s) == 0.0
    else:
        expected = skm.average_precision_score(y, s)
        assert average_precision_score(y, s) == pytest.approx(expected, abs=ATOL)


@SETTINGS
@given(
    matrix_problem(max_rows=20, max_cols=5), st.sampled_from(["macro", "micro", "none"])
)
def test_multilabel_average_precision_equals_sklearn(problem, average):
    y, s = problem
    expected = _quiet(
        skm.average_precision_score,
        y,
        s,
        average=None if average == "none" else average,
    )
    got = _quiet(average_precision_score, y, s, average=average)
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)


def test_column_without_positives_scores_zero_and_warns_like_sklearn():
    y = np.array([[1, 0], [0, 0], [1, 0]])
    s = np.array([[0.9, 0.2], [0.1, 0.4], [0.5, 0.1]])
    with pytest.warns(UserWarning, match=r"columns \[1\]"):
        per_column = average_precision_score(y, s, average="none")
    assert per_column.tolist() == [1.0, 0.0]
    with pytest.warns(UserWarning):
        assert average_precision_score(y, s) == pytest.approx(0.5)
    with pytest.warns(UserWarning):
        assert skm.average_precision_score(y, s) == pytest.approx(0.5)


@SETTINGS
@given(matrix_problem(max_rows=8, max_cols=8, min_cols=2))
def test_per_row_average_precision_equals_label_ranking_average_precision(problem):
    y, s = problem
    rows = y.sum(1) > 0
    if not rows.any():
        return
    y, s = y[rows], s[rows]
    got = average_precision_score(y.T, s.T, average="macro")
    assert got == pytest.approx(
        skm.label_ranking_average_precision_score(y, s), abs=ATOL
    )


def test_average_precision_hand_made_ties():
    # one block of four tied scores, two positives: one threshold, precision 1/2
    assert average_precision_score([1, 0, 1, 0], [0.3, 0.3, 0.3, 0.3]) == 0.5
    # a positive alone on top, then a block {pos, neg, neg}: (1 + 2/4) / 2
    assert average_precision_score([1, 1, 0, 0], [0.9, 0.3, 0.3, 0.3]) == 0.75
    assert average_precision_score([1, 1], [0.1, 0.1]) == 1.0


def test_tensor_and_numpy_inputs_agree():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(50, 3))
    s = rng.integers(0, 4, size=(50, 3)) / 4
    from_numpy = average_precision_score(y, s, average="none")
    from_torch = average_precision_score(
        torch.from_numpy(y).bool(), torch.from_numpy(s).float(), average="none"
    )
    np.testing.assert_array_equal(from_numpy, from_torch)
    assert roc_auc_score(y[:, 0], s[:, 0]) == roc_auc_score(
        torch.tensor(y[:, 0]), torch.tensor(s[:, 0])
    )


def test_average_precision_large_input_matches_sklearn():
    rng = np.random.default_rng(1)
    y = rng.random(200_000) < 0.1
    s = np.round(rng.random(200_000) + 0.3 * y, 2)  # 131 distinct values
    expected = skm.average_precision_score(y, s)
    assert average_precision_score(y, s) == pytest.approx(expected, abs=1e-10)


# --- ROC AUC -------------------------------------------------------------------------------


@SETTINGS
@given(binary_problem(min_size=2, both=True))
def test_roc_auc_equals_sklearn_with_ties(problem):
    y, s = problem
    assert roc_auc_score(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=ATOL)


def test_roc_auc_hand_made():
    assert roc_auc_score([0, 1], [0.5, 0.5]) == 0.5
    assert roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert roc_auc_score([1, 0], [0.0, 1.0]) == 0.0


# --- NDCG ---------------------------------------------------------------------------------


@SETTINGS
@given(
    matrix_problem(max_rows=5, max_cols=8, min_cols=2, gains=True), st.integers(0, 9)
)
def test_ndcg_equals_sklearn_with_ties(problem, k):
    gains, scores = problem
    k = None if k == 0 else k
    expected = skm.ndcg_score(gains, scores, k=k)
    assert ndcg_at_k(scores, gains, k) == pytest.approx(expected, abs=ATOL)
    rows = ndcg_at_k(scores, gains, k, reduce=False)
    assert rows.shape == (gains.shape[0],)
    for row in range(gains.shape[0]):
        one = skm.ndcg_score(gains[row : row + 1], scores[row : row + 1], k=k)
        assert rows[row].item() == pytest.approx(one, abs=ATOL)


def test_ndcg_all_zero_gains_score_zero_like_sklearn():
    gains, scores = [[0, 0, 0], [1, 0, 2]], [[1, 2, 3], [1, 2, 3]]
    assert ndcg_at_k(scores, gains, reduce=False)[0].item() == 0.0
    assert ndcg_at_k(scores, gains) == pytest.approx(
        skm.ndcg_score(gains, scores), abs=ATOL
    )


def test_ndcg_single_item_rows():
    assert ndcg_at_k([[0.3], [0.1]], [[2.0], [0.0]], reduce=False).tolist() == [
        1.0,
        0.0,
    ]


# --- recall@K, MRR, MAP@R -----------------------------------------------------------------


def ref_row(scores, relevant, excluded):
    """(first relevant rank, MAP@R) of one query from the definitions, or None.

    Ties count against the query: sort by decreasing score and, within equal
    scores, irrelevant items first.
    """
    items = [
        (s, r) for s, r, e in zip(scores, relevant, excluded, strict=True) if not e
    ]
    n_relevant = sum(r for _, r in items)
    if n_relevant == 0:
        return None
    order = [r for _, r in sorted(items, key=lambda item: (-item[0], item[1]))]
    first = order.index(1) + 1
    precisions = [sum(order[:i]) / i for i in range(1, n_relevant + 1) if order[i - 1]]
    return first, sum(precisions) / n_relevant


def brute_force_row(scores, relevant, excluded):
    """The minimum over every order that sorts the scores of (R@k for k<=L, RR, MAP@R)."""
    items = [
        (s, r) for s, r, e in zip(scores, relevant, excluded, strict=True) if not e
    ]
    n_relevant = sum(r for _, r in items)
    worst = None
    for order in itertools.permutations(items):
        if any(a[0] < b[0] for a, b in itertools.pairwise(order)):
            continue
        rel = [r for _, r in order]
        first = rel.index(1) + 1
        recalls = tuple(float(first <= k) for k in range(1, len(scores) + 1))
        ap = (
            sum(sum(rel[:i]) / i for i in range(1, n_relevant + 1) if rel[i - 1])
            / n_relevant
        )
        value = (recalls, 1 / first, ap)
        worst = (
            value
            if worst is None
            else tuple(
                _elementwise_min(a, b) for a, b in zip(worst, value, strict=True)
            )
        )
    return worst


def _elementwise_min(a, b):
    return tuple(map(min, a, b)) if isinstance(a, tuple) else min(a, b)


@st.composite
def retrieval_problem(draw, max_rows=5, max_cols=7):
    b = draw(st.integers(1, max_rows))
    n = draw(st.integers(1, max_cols))
    values = st.sampled_from([0.0, 0.5, 1.0, -math.inf, math.inf]) | FEW_VALUES
    scores = np.array(draw(st.lists(values, min_size=b * n, max_size=b * n))).reshape(
        b, n
    )
    relevant = np.array(
        draw(st.lists(st.booleans(), min_size=b * n, max_size=b * n))
    ).reshape(b, n)
    excluded = np.array(
        draw(st.lists(st.booleans(), min_size=b * n, max_size=b * n))
    ).reshape(b, n)
    if not draw(st.booleans()):
        excluded[:] = False
    return scores, relevant, excluded


@SETTINGS
@given(retrieval_problem())
def test_recall_mrr_map_at_r_equal_the_reference(problem):
    scores, relevant, excluded = problem
    refs = [ref_row(*row) for row in zip(scores, relevant, excluded, strict=True)]
    valid = [r is not None for r in refs]
    ks = [1, 2, 3, 5, 10]
    recalls, got_valid = recall_at_k(
        scores, relevant, ks, exclude=excluded, reduce=False
    )
    rr, _ = mrr_score(scores, relevant, exclude=excluded, reduce=False)
    map_r, _ = map_at_r(scores, relevant, exclude=excluded, reduce=False)
    assert got_valid.tolist() == valid
    for row, ref in enumerate(refs):
        first, ap = ref if ref is not None else (math.inf, 0.0)
        for k in ks:
            assert recalls[k][row].item() == float(first <= k)
        assert rr[row].item() == pytest.approx(1 / first, abs=ATOL)
        assert map_r[row].item() == pytest.approx(ap, abs=ATOL)
    for values in (*recalls.values(), rr, map_r):
        assert not torch.isnan(values).any()
    if any(valid):
        n = sum(valid)
        assert recall_at_k(scores, relevant, 2, exclude=excluded) == pytest.approx(
            sum(float(r[0] <= 2) for r in refs if r) / n, abs=ATOL
        )
        assert mrr_score(scores, relevant, exclude=excluded) == pytest.approx(
            sum(1 / r[0] for r in refs if r) / n, abs=ATOL
        )
        assert map_at_r(scores, relevant, exclude=excluded) == pytest.approx(
            sum(r[1] for r in refs if r) / n, abs=ATOL
        )
    else:
        with pytest.raises(ValueError, match="relevance"):
            recall_at_k(scores, relevant, 1, exclude=excluded)


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(retrieval_problem(max_rows=2, max_cols=6))
def test_ties_count_against_means_the_worst_sorting_order(problem):
    scores, relevant, excluded = problem
    n = scores.shape[1]
    recalls, valid = recall_at_k(
        scores, relevant, list(range(1, n + 1)), exclude=excluded, reduce=False
    )
    rr, _ = mrr_score(scores, relevant, exclude=excluded, reduce=False)
    map_r, _ = map_at_r(scores, relevant, exclude=excluded, reduce=False)
    for row in range(scores.shape[0]):
        if not valid[row]:
            continue
        worst_recalls, worst_rr, worst_ap = brute_force_row(
            scores[row], relevant[row], excluded[row]
        )
        assert tuple(recalls[k][row].item() for k in range(1, n + 1)) == worst_recalls
        assert rr[row].item() == pytest.approx(worst_rr, abs=ATOL)
        assert map_r[row].item() == pytest.approx(worst_ap, abs=ATOL)


def test_retrieval_hand_made_ties():
    # a relevant item tied with an irrelevant one at the top: the irrelevant one wins the tie
    scores, relevant = [[0.9, 0.9, 0.1]], [[1, 0, 0]]
    assert recall_at_k(scores, relevant, 1) == 0.0
    assert recall_at_k(scores, relevant, 2) == 1.0
    assert mrr_score(scores, relevant) == 0.5
    assert map_at_r(scores, relevant) == 0.0  # R = 1 and rank 1 is irrelevant
    # two relevant items tied at the top: whichever is first, it is relevant
    scores, relevant = [[0.9, 0.9, 0.1]], [[1, 1, 0]]
    assert recall_at_k(scores, relevant, 1) == 1.0
    assert mrr_score(scores, relevant) == 1.0
    assert map_at_r(scores, relevant) == 1.0
    # MAP@R with a tie straddling rank R = 2: order (rel, irr, rel) -> (1 + 0) / 2
    assert map_at_r([[0.9, 0.5, 0.5, 0.1]], [[1, 1, 0, 0]]) == 0.5
    # an excluded item neither counts as relevant nor takes a rank
    scores, relevant, exclude = [[1.0, 0.8, 0.5]], [[1, 0, 1]], [[1, 0, 0]]
    assert recall_at_k(scores, relevant, 1, exclude=exclude) == 0.0
    assert mrr_score(scores, relevant, exclude=exclude) == 0.5
    # collapsed scores: every item tied
    assert recall_at_k([[0.0] * 4], [[1, 0, 0, 0]], 3) == 0.0
    assert recall_at_k([[0.0] * 4], [[1, 0, 0, 0]], 4) == 1.0


def test_queries_without_relevant_items_are_left_out():
    scores = [[0.9, 0.1], [0.9, 0.1], [0.1, 0.9]]
    relevant = [[1, 0], [0, 0], [1, 0]]
    values, valid = recall_at_k(scores, relevant, 1, reduce=False)
    assert values.tolist() == [1.0, 0.0, 0.0]
    assert valid.tolist() == [True, False, True]
    assert recall_at_k(scores, relevant, 1) == 0.5
    assert recall_at_k(scores, relevant, (1, 2)) == {1: 0.5, 2: 1.0}
    assert mrr_score(scores, relevant) == 0.75
    assert map_at_r(scores, relevant) == 0.5


def test_float32_and_float64_scores_agree():
    rng = np.random.default_rng(2)
    scores = rng.integers(0, 5, size=(6, 30)).astype(np.float32)
    relevant = rng.random((6, 30)) < 0.3
    relevant[:, 0] = True
    for fn in (mrr_score, map_at_r):
        assert fn(torch.from_numpy(scores), torch.from_numpy(relevant)) == fn(
            scores.astype(np.float64), relevant
        )


# --- retrieval report ------------------------------------------------------------------------


def _report_from_matrix(query, q_labels, gallery, g_labels, exclude_self, ks):
    q = torch.nn.functional.normalize(
        torch.as_tensor(query, dtype=torch.float64), dim=1
    )
    g = torch.nn.functional.normalize(
        torch.as_tensor(gallery, dtype=torch.float64), dim=1
    )
    scores = q @ g.T
    relevant = torch.as_tensor(q_labels)[:, None] == torch.as_tensor(g_labels)[None, :]
    exclude = torch.eye(len(q), dtype=torch.bool) if exclude_self else None
    report = {
        f"R@{k}": v
        for k, v in recall_at_k(scores, relevant, list(ks), exclude=exclude).items()
    }
    report["MAP@R"] = map_at_r(scores, relevant, exclude=exclude)
    report["MRR"] = mrr_score(scores, relevant, exclude=exclude)
    return report


def test_retrieval_report_chunked_equals_unchunked_and_the_matrix_functions():
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(150, 8))
    emb[100:110] = emb[:10]  # exact duplicates: tied similarities
    labels = rng.integers(0, 12, size=150)
    labels[149] = 99  # a query with no other item of its class
    ks = (1, 2, 4, 8)
    full = retrieval_report(emb, labels, ks=ks, chunk_size=1000)
    assert list(full) == ["R@1", "R@2", "R@4", "R@8", "MAP@R", "MRR"]
    for chunk in (1, 7, 64):
        assert (
            retrieval_report(
                torch.from_numpy(emb), torch.from_numpy(labels), ks=ks, chunk_size=chunk
            )
            == full
        )
    expected = _report_from_matrix(emb, labels, emb, labels, True, ks)
    for key, value in expected.items():
        assert full[key] == pytest.approx(value, abs=ATOL)
    assert 0 < full["R@1"] <= full["R@2"] <= full["R@4"] <= full["R@8"] <= 1


def test_retrieval_report_with_a_gallery_and_string_labels():
    rng = np.random.default_rng(4)
    query, gallery = rng.normal(size=(40, 5)), rng.normal(size=(70, 5))
    q_labels = np.array([f"c{i}" for i in rng.integers(0, 6, size=40)])
    g_labels = np.array([f"c{i}" for i in rng.integers(0, 6, size=70)])
    got = retrieval_report(query, q_labels, gallery, g_labels, ks=(1, 5), chunk_size=9)
    codes = {name: i for i, name in enumerate(sorted(set(q_labels) | set(g_labels)))}
    expected = _report_from_matrix(
        query,
        [codes[c] for c in q_labels],
        gallery,
        [codes[c] for c in g_labels],
        False,
        (1, 5),
    )
    assert got == pytest.approx(expected, abs=ATOL)


def test_retrieval_report_perfect_and_collapsed_embeddings():
    labels = [0, 0, 1, 1, 2, 2]
    separated = np.repeat(np.eye(3), 2, axis=0)
    assert retrieval_report(separated, labels) == {
        "R@1": 1.0,
        "R@2": 1.0,
        "R@4": 1.0,
        "R@8": 1.0,
        "MAP@R": 1.0,
        "MRR": 1.0,
    }
    collapsed = np.ones(
        (6, 3)
    )  # every similarity tied: the 4 other-class items rank first
    report = retrieval_report(collapsed, labels)
    assert report["R@4"] == 0.0 and report["R@8"] == 1.0
    assert report["MRR"] == pytest.approx(1 / 5)


# --- top-k path against one full sort per row -------------------------------------------

# the full-sort path, kept before any test replaces the module's functions
_SORT_RANKS = ranking._worst_case_ranks
_FIRST_RANK = ranking._first_rank
_MAP_ROWS = ranking._map_at_r_rows


def _full_sort_rows(scores, relevant, exclude):
    """(first rank, valid, MAP@R) per row from one full sort of each row."""
    hit, rank, hits = _SORT_RANKS(scores, relevant, exclude)
    first, valid = _FIRST_RANK(hit, rank)
    return first, valid, _MAP_ROWS(hit, rank, hits)


def _top_k_rows(scores, relevant, exclude, max_k=1):
    keep = relevant if exclude is None else relevant & ~exclude
    n_excluded = 0 if exclude is None else int(exclude.sum(1).max())
    buffer = scores.clone()  # overwritten, as retrieval_report lets it
    return ranking._retrieval_rows(
        buffer,
        ranking._dense_masks(relevant, exclude),
        keep.sum(1),
        n_excluded,
        max_k,
        overwrite=True,
    )


class _PathCounter:
    """Counts the rows that the top-k path sorts in full or ranks without sorting."""

    def __init__(self, monkeypatch):
        self.sorted_rows = 0
        self.unsorted_rows = 0

        def sort_ranks(scores, relevant, exclude):
            self.sorted_rows += scores.shape[0]
            return _SORT_RANKS(scores, relevant, exclude)

        first_rank_unsorted = ranking._first_rank_unsorted

        def unsorted(scores, relevant, exclude):
            self.unsorted_rows += scores.shape[0]
            return first_rank_unsorted(scores, relevant, exclude)

        monkeypatch.setattr(ranking, "_worst_case_ranks", sort_ranks)
        monkeypatch.setattr(ranking, "_first_rank_unsorted", unsorted)


def _assert_same_rows(scores, relevant, exclude=None, max_k=1):
    scores = torch.as_tensor(scores, dtype=torch.float64)
    relevant = torch.as_tensor(relevant, dtype=torch.bool)
    exclude = None if exclude is None else torch.as_tensor(exclude, dtype=torch.bool)
    expected = _full_sort_rows(scores, relevant, exclude)
    got = _top_k_rows(scores, relevant, exclude, max_k)
    for name, a, b in zip(("first", "valid", "MAP@R"), got, expected, strict=True):
        assert torch.equal(a, b), (name, a, b)
    # recall@K and MRR take the first rank without sorting
    unsorted_first, _ = ranking._first_rank_unsorted(scores, relevant, exclude)
    assert torch.equal(unsorted_first, expected[0])


def _sparse_problem(rng, rows, length, values, max_relevant, max_excluded):
    scores = rng.choice(values, size=(rows, length))
    relevant = np.zeros((rows, length), dtype=bool)
    exclude = np.zeros((rows, length), dtype=bool)
    for row in range(rows):
        n_rel = rng.integers(0, max_relevant + 1)
        relevant[row, rng.choice(length, n_rel, replace=False)] = True
        n_exc = rng.integers(0, max_excluded + 1)
        exclude[row, rng.choice(length, n_exc, replace=False)] = True
    return scores, relevant, exclude


SCORE_KINDS = {
    # a handful of values: huge tie blocks, most rows need the full sort
    "few": np.array([0.0, 0.25, 0.5, 1.0]),
    # some ties, often across the cut
    "some": np.linspace(0, 1, 25),
    # a few ties among many values, +-inf included
    "inf": np.concatenate([np.linspace(-1, 1, 200), [-np.inf, np.inf]]),
    # no tie at all (almost surely)
    "distinct": None,
}


@pytest.mark.parametrize("kind", list(SCORE_KINDS))
@pytest.mark.parametrize("with_exclude", [False, True])
def test_top_k_path_equals_the_full_sort_bit_for_bit(kind, with_exclude, monkeypatch):
    counter = _PathCounter(monkeypatch)
    rng = np.random.default_rng(10)
    rows = 0
    for trial in range(40):
        length = int(rng.integers(40, 160))
        values = SCORE_KINDS[kind]
        if values is None:
            values = rng.random(100_000)
        scores, relevant, exclude = _sparse_problem(
            rng, 12, length, values, length // 6, 3 if with_exclude else 0
        )
        if trial % 5 == 0:  # relevant items low in the ranking: first rank past the cut
            scores = np.where(relevant, scores - 2.0, scores)
        max_k = int(rng.choice([1, 4, 20]))
        _assert_same_rows(scores, relevant, exclude if with_exclude else None, max_k)
        rows += scores.shape[0]
    # the inputs reach every branch: rows sorted in full, first ranks past the cut,
    # and (but with a handful of values) mostly rows served by the top k alone
    assert counter.sorted_rows > 0
    assert counter.unsorted_rows > rows  # > rows: the check itself ranks every row
    if kind != "few":
        assert counter.sorted_rows < rows / 2


def test_top_k_path_ties_across_the_cut(monkeypatch):
    counter = _PathCounter(monkeypatch)
    length = 40
    base = np.linspace(1.0, 0.0, length)  # distinct, decreasing
    relevant = np.zeros((1, length), dtype=bool)
    relevant[0, [0, 2, 4, 6, 7]] = True  # R = 5: the top 7 = R + 2 are taken
    # a tie block over positions 5..9 crosses the cut after position 6; the 5
    # items before it hold every rank <= R: the top k serves the row
    crossing = base.copy()
    crossing[5:10] = crossing[5]
    _assert_same_rows(crossing[None], relevant)
    assert counter.sorted_rows == 0
    # the block starts at position 4: a counted rank may lie past the cut
    early = base.copy()
    early[4:10] = early[4]
    _assert_same_rows(early[None], relevant)
    assert counter.sorted_rows == 1
    # every relevant item in or after the crossing block: the first rank is counted
    late = np.zeros((1, length), dtype=bool)
    late[0, [6, 7, 8, 12, 30]] = True
    before = counter.unsorted_rows
    _assert_same_rows(crossing[None], late)
    assert counter.sorted_rows == 1
    assert counter.unsorted_rows == before + 2  # the top-k path's, then the check's


def test_top_k_path_mixed_tie_blocks(monkeypatch):
    counter = _PathCounter(monkeypatch)
    length = 40
    scores = np.linspace(1.0, 0.0, length)[None].repeat(3, 0)
    relevant = np.zeros((3, length), dtype=bool)
    relevant[0, [0, 1, 3, 20, 21]] = True
    relevant[1, [0, 1, 3, 7, 20]] = True
    relevant[2, :12] = True  # R = 12: the top 13 are taken for every row
    # row 0: a relevant and an irrelevant item tied at ranks 2-3, both <= R = 5:
    # where the sort puts the relevant one decides where its term is summed
    scores[0, 2] = scores[0, 1]
    # row 1: the same kind of tie at ranks 8-9, after R = 5: no term there
    scores[1, 8] = scores[1, 7]
    _assert_same_rows(scores, relevant)
    assert counter.sorted_rows == 1
    # an excluded item tied with a relevant one at the top (a query and its duplicate)
    exclude = np.zeros((3, length), dtype=bool)
    exclude[:, 5] = True
    scores[:, 5] = scores[:, 0]
    _assert_same_rows(scores, relevant, exclude)
    assert counter.sorted_rows == 4


def test_top_k_path_infinite_scores(monkeypatch):
    counter = _PathCounter(monkeypatch)
    length = 60
    scores = np.full((4, length), -np.inf)
    scores[:, :8] = np.inf
    scores[:, 8:30] = np.linspace(1, 0, 22)
    relevant = np.zeros((4, length), dtype=bool)
    relevant[0, [0, 9, 40]] = True  # +inf tie block at the top, mixed
    relevant[1, [8, 9, 10]] = True  # after the +inf block
    relevant[2, [45, 50, 59]] = True  # only -inf relevant items, tied with 27 others
    relevant[3, [3, 55]] = True
    exclude = np.zeros((4, length), dtype=bool)
    exclude[3, [0, 1, 2]] = True
    _assert_same_rows(scores, relevant, exclude, max_k=2)
    _assert_same_rows(scores, relevant)
    assert counter.sorted_rows > 0 and counter.unsorted_rows > 0


def test_top_k_path_sums_the_terms_like_the_full_sort(monkeypatch):
    # Many MAP@R terms, some next to the cut: the top 103 = R + 1 scores are
    # taken, and torch's vectorised sum over 103 columns groups the last terms
    # otherwise than its sum over the whole row (on x86 at least), so summing
    # the top k alone would change the last bit of some rows.
    counter = _PathCounter(monkeypatch)
    rng = np.random.default_rng(13)
    rows, length, n_relevant = 300, 1000, 102
    relevant = np.zeros((rows, length), dtype=bool)
    for row in range(rows):
        relevant[row, rng.choice(length, n_relevant, replace=False)] = True
    # relevant items mostly near the top: terms up to rank R = 102
    scores = rng.random((rows, length)) + 0.8 * relevant
    _assert_same_rows(scores, relevant)
    assert counter.sorted_rows == 0


def test_map_at_r_leaves_the_scores_alone():
    rng = np.random.default_rng(11)
    scores = torch.from_numpy(rng.random((5, 100)))
    before = scores.clone()
    relevant = torch.from_numpy(rng.random((5, 100)) < 0.05)
    relevant[:, 0] = True
    map_at_r(scores, relevant)
    assert torch.equal(scores, before)


def _full_sort_report(query, q_labels, gallery, g_labels, ks, chunk_size):
    """retrieval_report as it was before the top-k path: one full sort per chunk."""
    query = ranking._embeddings("query_emb", query)
    gallery = query if gallery is None else ranking._embeddings("gallery_emb", gallery)
    loo = g_labels is None
    both = np.asarray(q_labels) if loo else np.concatenate([q_labels, g_labels])
    codes = torch.from_numpy(np.unique(both, return_inverse=True)[1].reshape(-1))
    q_codes = codes[: len(q_labels)]
    g_codes = q_codes if loo else codes[len(q_labels) :]
    firsts, valids, maps = [], [], []
    for start in range(0, query.shape[0], chunk_size):
        stop = min(start + chunk_size, query.shape[0])
        scores = query[start:stop] @ gallery.T
        relevant = q_codes[start:stop, None] == g_codes[None, :]
        exclude = None
        if loo:
            rows = torch.arange(start, stop)
            exclude = rows[:, None] == torch.arange(gallery.shape[0])[None, :]
        first, valid, map_r = _full_sort_rows(scores, relevant, exclude)
        firsts.append(first)
        valids.append(valid)
        maps.append(map_r)
    first, valid = torch.cat(firsts), torch.cat(valids)
    report = {
        f"R@{k}": ranking._reduce(((first <= k) & valid).to(torch.float64), valid)
        for k in ks
    }
    report["MAP@R"] = ranking._reduce(torch.cat(maps), valid)
    report["MRR"] = ranking._reduce(
        torch.where(valid, 1 / first.to(torch.float64), 0.0), valid
    )
    return report


@pytest.mark.parametrize("kind", ["random", "clustered", "duplicates", "rounded"])
def test_retrieval_report_equals_the_full_sort_bit_for_bit(kind, monkeypatch):
    counter = _PathCounter(monkeypatch)
    rng = np.random.default_rng(12)
    n, classes = 700, 13
    labels = rng.integers(0, classes, size=n)
    emb = rng.normal(size=(n, 16))
    if kind == "clustered":
        emb = rng.normal(size=(classes, 16))[labels] + 1.5 * emb
    elif kind == "duplicates":  # exact copies, of the same or another class
        copies = rng.integers(0, n, size=n // 3)
        emb[rng.integers(0, n, size=n // 3)] = emb[copies]
    elif kind == "rounded":  # few distinct directions: many tied similarities
        emb = np.round(emb[:, :3])
        emb[~emb.any(1)] = 1.0
    ks = (1, 2, 4, 8)
    got = retrieval_report(emb, labels, ks=ks, chunk_size=300)
    assert got == _full_sort_report(emb, labels, None, None, ks, 300)
    query, gallery = emb[:200], emb[200:]
    got = retrieval_report(query, labels[:200], gallery, labels[200:], ks=ks)
    assert got == _full_sort_report(
        query, labels[:200], gallery, labels[200:], ks, 1024
    )
    if kind in ("duplicates", "rounded"):
        assert counter.sorted_rows > 0  # the tied rows that need it were sorted in full


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: average_precision_score([0, 1], [0.1, 0.2, 0.3]),
            ValueError,
            r"y_score.*y_true.*\(3,\).*\(2,\)",
        ),
        (
            lambda: average_precision_score([0, 2], [0.1, 0.2]),
            ValueError,
            "y_true.*0 and 1",
        ),
        (
            lambda: average_precision_score([0, 1], [0.1, math.nan]),
            ValueError,
            "y_score",
        ),
        (
            lambda: average_precision_score([0, 1], [0.1, math.inf]),
            ValueError,
            "y_score",
        ),
        (
            lambda: average_precision_score([[0, 1]], [[0.1, 0.2]], average="weighted"),
            ValueError,
            "average",
        ),
        (lambda: average_precision_score([], []), ValueError, "y_score"),
        (lambda: average_precision_score([0, 1], ["a", "b"]), TypeError, "y_score"),
        (lambda: roc_auc_score([1, 1], [0.1, 0.2]), ValueError, "y_true"),
        (lambda: roc_auc_score([[0, 1]], [[0.1, 0.2]]), ValueError, "y_score.*1-D"),
        (lambda: roc_auc_score([0, 1], [math.nan, 0.2]), ValueError, "y_score"),
        (lambda: ndcg_at_k([[0.1, 0.2]], [[-1, 1]]), ValueError, "gains"),
        (
            lambda: ndcg_at_k([[0.1, 0.2]], [[1, 1, 0]]),
            ValueError,
            r"scores.*gains.*\(1, 2\).*\(1, 3\)",
        ),
        (lambda: ndcg_at_k([[0.1, 0.2]], [[0, 1]], k=0), ValueError, "k"),
        (lambda: ndcg_at_k([0.1, 0.2], [0, 1]), ValueError, "scores.*2-D"),
        (lambda: recall_at_k([[0.1, 0.2]], [[0, 1]], 0), ValueError, "`k`"),
        (lambda: recall_at_k([[0.1, 0.2]], [[0, 1]], 1.5), TypeError, "`k`"),
        (lambda: recall_at_k([[0.1, 0.2]], [[0, 1]], True), TypeError, "`k`"),
        (lambda: recall_at_k([[0.1, 0.2]], [[0, 1]], []), ValueError, "`k`"),
        (lambda: recall_at_k([[0.1, 0.2]], [[0, 1]], [1, -2]), ValueError, "`k`"),
        (
            lambda: recall_at_k([[0.1, math.nan]], [[0, 1]], 1),
            ValueError,
            "scores.*NaN",
        ),
        (
            lambda: recall_at_k([[0.1, 0.2]], [[0, 1, 1]], 1),
            ValueError,
            "scores.*relevance",
        ),
        (
            lambda: recall_at_k([[0.1, 0.2]], [[0, 0.5]], 1),
            ValueError,
            "relevance.*0 and 1",
        ),
        (
            lambda: recall_at_k([[0.1, 0.2]], [[0, 1]], 1, exclude=[[0, 1]]),
            ValueError,
            "relevance.*exclude",
        ),
        (
            lambda: mrr_score([[0.1, 0.2]], [[0, 1]], exclude=[[1]]),
            ValueError,
            "scores.*exclude",
        ),
        (lambda: map_at_r([[0.1, 0.2]], [[0, 0]]), ValueError, "relevance"),
        (
            lambda: retrieval_report([[1.0, 0.0], [0.0, 0.0]], [0, 0]),
            ValueError,
            r"query_emb.*\[1\].*zero",
        ),
        (
            lambda: retrieval_report([[1.0, 0.0], [0.0, 1.0]], [0, 0, 1]),
            ValueError,
            "query_labels",
        ),
        (
            lambda: retrieval_report([[1.0, 0.0], [0.0, 1.0]], [0, 1]),
            ValueError,
            "relevant",
        ),
        (
            lambda: retrieval_report([[1.0, 0.0]], [0], [[1.0, 0.0]]),
            ValueError,
            "gallery_labels",
        ),
        (
            lambda: retrieval_report([[1.0, 0.0]], [0], [[1.0, 0.0, 0.0]], [0]),
            ValueError,
            "gallery_emb",
        ),
        (lambda: retrieval_report([[1.0, math.nan]], [0]), ValueError, "query_emb"),
        (
            lambda: retrieval_report([[1.0, 0.0], [1.0, 0.0]], [0, 0], ks=(0,)),
            ValueError,
            "ks",
        ),
        (
            lambda: retrieval_report([[1.0, 0.0], [1.0, 0.0]], [0, 0], chunk_size=0),
            ValueError,
            "chunk_size",
        ),
    ],
)
def test_errors_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()
