"""Exact rank metrics against scikit-learn and against references from the definitions.

* average precision, ROC AUC, NDCG: ``sklearn.metrics`` on inputs with many
  ties (scores drawn from a few values); per-row AP also equals
  ``label_ranking_average_precision_score``.
* recall@K, MRR, MAP@R: a slow pure-Python reference written from the
  definitions with ties counting against the query (irrelevant items first
  within a tie), and a brute force showing that this is the minimum over every
  order of the items that sorts the scores.
* retrieval_report: chunked equals unchunked equals the matrix functions.
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
