"""Exact confusion-matrix metrics against scikit-learn and imbalanced-learn.

The references:

* precision, recall, f1, fbeta, jaccard: ``sklearn.metrics`` with
  ``zero_division=0`` and their own averaging;
* specificity, gmean: ``imblearn.metrics`` with their own averaging (imblearn's
  macro G-mean is sqrt(mean TPR * mean TNR));
* accuracy, balanced accuracy, MCC, kappa: scikit-learn's definitions on the
  full confusion matrix (kappa with ``replace_undefined_by=0.0``);
* any metric with any averaging: one-vs-rest binary problems scored by the
  scikit-learn binary reference and combined the scikit-learn way (per class,
  mean, support-weighted mean, or the flattened indicators for micro). This
  covers the per-class forms scikit-learn has no function for (macro MCC, ...)
  and multi-label specificity and G-mean, which imblearn does not support.

Documented deviations are tested by hand-made cases: kappa 0 where sklearn
says NaN, binary specificity 1 (not imblearn's 0) when every label and
prediction is negative, multi-label accuracy = 1 - hamming_loss.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import sklearn.metrics as skm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from imblearn import metrics as imm

import metricopt.metrics as mm
from metricopt.metrics import METRIC_NAMES, metric_score
from metricopt.metrics._formulas import METRICS

# derandomize: a failure reproduces on every run; database=None: nothing written to disk
SETTINGS = settings(max_examples=20, deadline=None, derandomize=True, database=None)
ATOL = 1e-12

# Metrics whose averaging scikit-learn / imblearn implement themselves.
NATIVE = {"precision", "recall", "f1", "fbeta", "jaccard", "specificity", "gmean"}
# Metrics scikit-learn defines on the whole confusion matrix.
MATRIX = {"accuracy", "balanced_accuracy", "mcc", "kappa"}
BETAS = {"fbeta": (0.5, 2.0)}


def betas(name: str) -> tuple[float, ...]:
    return BETAS.get(name, (1.0,))


# --- references -----------------------------------------------------------------------


def _quiet(fn):
    def wrapped(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(*args, **kwargs)

    return wrapped


@_quiet
def ref_binary(name: str, t: np.ndarray, p: np.ndarray, beta: float) -> float:
    """scikit-learn / imblearn on one binary problem (1 is the positive class)."""
    t, p = np.asarray(t, dtype=int), np.asarray(p, dtype=int)
    if name == "accuracy":
        return skm.accuracy_score(t, p)
    if name == "precision":
        return skm.precision_score(t, p, zero_division=0)
    if name == "recall":
        return skm.recall_score(t, p, zero_division=0)
    if name == "specificity":  # TNR = recall of the negative class
        return skm.recall_score(1 - t, 1 - p, zero_division=0)
    if name == "f1":
        return skm.f1_score(t, p, zero_division=0)
    if name == "fbeta":
        return skm.fbeta_score(t, p, beta=beta, zero_division=0)
    if name == "jaccard":
        return skm.jaccard_score(t, p, zero_division=0)
    if name == "balanced_accuracy":
        return skm.balanced_accuracy_score(t, p)
    if name == "gmean":
        return imm.geometric_mean_score(t, p, average="binary")
    if name == "mcc":
        return skm.matthews_corrcoef(t, p)
    if name == "kappa":
        return skm.cohen_kappa_score(t, p, labels=[0, 1], replace_undefined_by=0.0)
    raise KeyError(name)


@_quiet
def ref_native(name: str, yt, yp, average, beta: float, labels=None):
    """The reference library's own averaging (``average=None`` gives per-class scores)."""
    kw = {"average": average, "labels": labels}
    if name == "precision":
        return skm.precision_score(yt, yp, zero_division=0, **kw)
    if name == "recall":
        return skm.recall_score(yt, yp, zero_division=0, **kw)
    if name == "f1":
        return skm.f1_score(yt, yp, zero_division=0, **kw)
    if name == "fbeta":
        return skm.fbeta_score(yt, yp, beta=beta, zero_division=0, **kw)
    if name == "jaccard":
        return skm.jaccard_score(yt, yp, zero_division=0, **kw)
    if name == "specificity":
        if average == "binary" and not (np.any(yt) or np.any(yp)):
            return 1.0  # documented deviation: imblearn says 0, TN / (TN + FP) = 1
        return imm.specificity_score(yt, yp, **kw)
    if name == "gmean":
        return imm.geometric_mean_score(yt, yp, **kw)
    raise KeyError(name)


@_quiet
def ref_matrix(name: str, yt, yp, labels=None) -> float:
    """scikit-learn's binary / multi-class definition on the full confusion matrix."""
    if name == "accuracy":
        return skm.accuracy_score(yt, yp)
    if name == "balanced_accuracy":
        return skm.balanced_accuracy_score(yt, yp)
    if name == "mcc":
        return skm.matthews_corrcoef(yt, yp)
    if name == "kappa":
        return skm.cohen_kappa_score(yt, yp, labels=labels, replace_undefined_by=0.0)
    raise KeyError(name)


def ref_one_vs_rest(name: str, t: np.ndarray, p: np.ndarray, average: str, beta: float):
    """Any averaging from per-column binary references; ``t``, ``p``: (N, C) 0/1 indicators."""
    if average == "micro":
        return ref_binary(name, t.ravel(), p.ravel(), beta)

    def per_class(metric: str) -> np.ndarray:
        return np.array([ref_binary(metric, t[:, c], p[:, c], beta) for c in range(t.shape[1])])

    support = t.sum(0)

    def combine(scores: np.ndarray) -> float:
        if average == "macro":
            return scores.mean()
        return 0.0 if support.sum() == 0 else float((scores * support).sum() / support.sum())

    if average == "none":
        return per_class(name)
    if name == "gmean":  # imblearn: sqrt(avg TPR * avg TNR)
        return float(np.sqrt(combine(per_class("recall")) * combine(per_class("specificity"))))
    return combine(per_class(name))


def one_hot(y: np.ndarray, classes: np.ndarray) -> np.ndarray:
    return (np.asarray(y)[:, None] == classes[None, :]).astype(int)


def close(got, expected) -> bool:
    return np.allclose(np.asarray(got, dtype=float), np.asarray(expected, dtype=float), rtol=1e-9, atol=ATOL)


def check_single_label(name: str, yt, yp, num_classes: int | None = None) -> None:
    """Every average of ``name`` on 1-D labels against the references."""
    yt, yp = np.asarray(yt), np.asarray(yp)
    classes = np.arange(num_classes) if num_classes is not None else np.unique(np.concatenate([yt, yp]))
    binary = bool(np.isin(classes, (0, 1)).all()) and (num_classes is None or num_classes <= 2)
    labels = None if num_classes is None else list(classes)
    for beta in betas(name):
        kw = {"beta": beta, "num_classes": num_classes}
        # the default average
        auto = metric_score(yt, yp, name, **kw)
        if name in MATRIX:
            expected = ref_matrix(name, yt, yp, labels)
        elif binary:
            expected = ref_native(name, yt, yp, "binary", beta)
        else:
            expected = ref_native(name, yt, yp, "macro", beta, labels)
        assert close(auto, expected), (name, beta, "auto", yt, yp, auto, expected)
        averages = (["binary"] if binary else []) + ["macro", "micro", "weighted", "none"]
        for average in averages:
            got = metric_score(yt, yp, name, average=average, **kw)
            if average == "binary":
                expected = ref_binary(name, yt, yp, beta)
            else:
                expected = ref_one_vs_rest(name, one_hot(yt, classes), one_hot(yp, classes), average, beta)
            assert close(got, expected), (name, beta, average, yt, yp, got, expected)
            if name in NATIVE:
                native = ref_native(name, yt, yp, None if average == "none" else average, beta, labels)
                assert close(got, native), (name, beta, average, "native", yt, yp, got, native)


# --- strategies: few classes, many ties ---------------------------------------------------


@st.composite
def label_pairs(draw, label_sets):
    labels = draw(st.sampled_from(label_sets))
    n = draw(st.integers(1, 10))
    # restricting each side to a subset of the labels makes one-class arrays common
    true_labels = draw(st.lists(st.sampled_from(labels), min_size=1, max_size=len(labels), unique=True))
    pred_labels = draw(st.lists(st.sampled_from(labels), min_size=1, max_size=len(labels), unique=True))
    yt = draw(st.lists(st.sampled_from(true_labels), min_size=n, max_size=n))
    yp = draw(st.lists(st.sampled_from(pred_labels), min_size=n, max_size=n))
    return np.array(yt), np.array(yp)


@st.composite
def indicator_pairs(draw):
    n = draw(st.integers(1, 8))
    c = draw(st.integers(2, 4))
    density = st.sampled_from([0.0, 0.3, 0.7, 1.0])
    dt, dp = draw(density), draw(density)
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    return (rng.random((n, c)) < dt).astype(int), (rng.random((n, c)) < dp).astype(int)


# --- table coverage ----------------------------------------------------------------------


def test_every_metric_has_a_reference():
    assert set(METRIC_NAMES) == set(METRICS)
    assert set(METRIC_NAMES) == NATIVE | MATRIX
    for name in METRIC_NAMES:
        ref_binary(name, np.array([0, 1]), np.array([1, 1]), 1.0)  # raises KeyError if missing


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_named_function_equals_metric_score(name):
    yt, yp = [0, 1, 2, 2, 1, 0, 2], [0, 2, 2, 1, 1, 0, 0]
    fn = getattr(mm, f"{name}_score")
    for average in ("auto", "macro", "micro", "weighted", "none"):
        assert close(fn(yt, yp, average=average), metric_score(yt, yp, name, average=average))


# --- random tied inputs ----------------------------------------------------------------------


@pytest.mark.parametrize("name", METRIC_NAMES)
@SETTINGS
@given(pair=label_pairs([(0, 1)]))
def test_binary_vs_reference(name, pair):
    check_single_label(name, *pair)


@pytest.mark.parametrize("name", METRIC_NAMES)
@SETTINGS
@given(pair=label_pairs([(0, 1, 2), (1, 2, 5), (0, 1, 2, 3)]))
def test_multiclass_vs_reference(name, pair):
    check_single_label(name, *pair)


@pytest.mark.parametrize("name", METRIC_NAMES)
@SETTINGS
@given(pair=indicator_pairs())
def test_multilabel_vs_reference(name, pair):
    yt, yp = pair
    for beta in betas(name):
        for average in ("macro", "micro", "weighted", "none"):
            got = metric_score(yt, yp, name, average=average, beta=beta)
            expected = ref_one_vs_rest(name, yt, yp, average, beta)
            assert close(got, expected), (name, beta, average, yt, yp, got, expected)
            if name in NATIVE - {"specificity", "gmean"}:  # imblearn has no multi-label support
                native = ref_native(name, yt, yp, None if average == "none" else average, beta)
                assert close(got, native), (name, beta, average, "native", yt, yp, got, native)
        # the default average of a multi-label target is macro
        assert close(metric_score(yt, yp, name, beta=beta), metric_score(yt, yp, name, average="macro", beta=beta))


@SETTINGS
@given(pair=indicator_pairs())
def test_multilabel_accuracy_is_one_minus_hamming_loss(pair):
    yt, yp = pair
    expected = 1 - skm.hamming_loss(yt, yp)
    assert close(metric_score(yt, yp, "accuracy"), expected)
    assert close(metric_score(yt, yp, "accuracy", average="micro"), expected)


# --- hand-made degenerate and tied inputs ---------------------------------------------------------

HAND_MADE = {
    "no_positives_some_predicted": ([0, 0, 0, 0], [0, 1, 0, 0]),
    "no_positives_none_predicted": ([0, 0, 0], [0, 0, 0]),
    "all_positives_some_missed": ([1, 1, 1], [1, 0, 1]),
    "all_positives_all_found": ([1, 1], [1, 1]),
    "single_sample_tp": ([1], [1]),
    "single_sample_tn": ([0], [0]),
    "single_sample_fp": ([0], [1]),
    "single_sample_fn": ([1], [0]),
    "predictions_all_negative": ([0, 1, 1, 0, 1], [0, 0, 0, 0, 0]),
    "predictions_all_positive": ([0, 1, 1, 0, 1], [1, 1, 1, 1, 1]),
    "labels_1_2_5": ([1, 2, 5, 5, 2, 1, 5], [1, 5, 5, 2, 2, 2, 5]),
    "multiclass_predictions_one_class": ([0, 1, 2, 2, 1], [2, 2, 2, 2, 2]),
    "multiclass_single_sample": ([5], [5]),
    "multiclass_one_class_everywhere": ([3, 3, 3], [3, 3, 3]),
}


@pytest.mark.parametrize("case", sorted(HAND_MADE))
@pytest.mark.parametrize("name", METRIC_NAMES)
def test_hand_made_vs_reference(name, case):
    check_single_label(name, *HAND_MADE[case])


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_num_classes_with_an_absent_class(name):
    yt, yp = [0, 1, 1, 2, 0], [0, 2, 1, 1, 1]
    check_single_label(name, yt, yp, num_classes=4)
    per_class = metric_score(yt, yp, name, average="none", num_classes=4)
    assert per_class.shape == (4,)
    assert metric_score(yt, yp, name, average="none").shape == (3,)


def test_num_classes_two_keeps_an_absent_positive_class():
    # class 1 never occurs, but num_classes=2 makes the target binary with a positive class
    assert metric_score([0, 0, 0], [0, 0, 0], "recall", num_classes=2) == 0.0
    assert metric_score([0, 0, 0], [0, 0, 0], "specificity", num_classes=2) == 1.0
    assert metric_score([0, 0, 0], [0, 0, 0], "precision", average="none", num_classes=2).tolist() == [1.0, 0.0]


def test_tensor_and_list_inputs_agree():
    yt, yp = [0, 1, 2, 2, 1, 0], [0, 2, 2, 1, 1, 0]
    for name in METRIC_NAMES:
        assert metric_score(torch.tensor(yt), torch.tensor(yp), name) == metric_score(yt, yp, name)
        assert metric_score(np.array(yt, dtype=float), np.array(yp), name) == metric_score(yt, yp, name)
    assert metric_score(torch.tensor([True, False]), torch.tensor([True, True]), "f1") == skm.f1_score([1, 0], [1, 1])


# --- documented deviations ---------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore")
def test_kappa_is_zero_where_sklearn_is_nan():
    for yt, yp in (([0, 0, 0], [0, 0, 0]), ([1, 1], [1, 1]), ([2, 2, 2], [2, 2, 2])):
        assert np.isnan(skm.cohen_kappa_score(yt, yp))
        assert metric_score(yt, yp, "kappa") == 0.0
        assert metric_score(yt, yp, "kappa") == skm.cohen_kappa_score(yt, yp, replace_undefined_by=0.0)


def test_binary_specificity_when_everything_is_negative():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert imm.specificity_score([0, 0, 0], [0, 0, 0], average="binary") == 0.0
    assert mm.specificity_score([0, 0, 0], [0, 0, 0]) == 1.0  # TN / (TN + FP) = 3 / 3
    # one false positive: both agree again
    assert mm.specificity_score([0, 0, 0], [0, 1, 0]) == pytest.approx(imm.specificity_score([0, 0, 0], [0, 1, 0]))


def test_multilabel_accuracy_is_not_subset_accuracy():
    yt = np.array([[1, 0, 1], [0, 1, 1]])
    yp = np.array([[1, 0, 0], [0, 1, 1]])
    assert skm.accuracy_score(yt, yp) == 0.5  # subset accuracy
    assert metric_score(yt, yp, "accuracy") == pytest.approx(5 / 6)


def test_gmean_macro_is_sqrt_of_averaged_rates():
    yt, yp = [0, 0, 1, 2, 2, 2, 1], [0, 1, 1, 2, 0, 2, 2]
    tpr = metric_score(yt, yp, "recall", average="none")
    tnr = metric_score(yt, yp, "specificity", average="none")
    macro = metric_score(yt, yp, "gmean", average="macro")
    assert macro == pytest.approx(np.sqrt(tpr.mean() * tnr.mean()), abs=1e-12)
    assert macro != pytest.approx(np.sqrt(tpr * tnr).mean(), abs=1e-6)  # not the mean of per-class G-means
    assert macro == pytest.approx(imm.geometric_mean_score(yt, yp, average="macro"), abs=1e-12)


def test_confusion_matrix_matches_sklearn():
    yt, yp = [1, 2, 5, 5, 2, 1, 5], [1, 5, 5, 2, 2, 2, 5]
    assert np.array_equal(mm.confusion_matrix(yt, yp).numpy(), skm.confusion_matrix(yt, yp))
    got = mm.confusion_matrix([0, 1, 1], [0, 2, 1], num_classes=4).numpy()
    assert np.array_equal(got, skm.confusion_matrix([0, 1, 1], [0, 2, 1], labels=range(4)))


# --- a callable metric -------------------------------------------------------------------------------


def _ratio(n: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    return torch.where(d == 0, torch.zeros_like(n), n / torch.where(d == 0, torch.ones_like(d), d))


def _sqrt(v: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(v.clamp_min(0))


# Written independently of metricopt.metrics._formulas (same definitions).
CALLABLES = {
    "accuracy": (lambda tp, fp, fn, tn: _ratio(tp + tn, tp + fp + fn + tn), {}),
    "precision": (lambda tp, fp, fn, tn: _ratio(tp, tp + fp), {}),
    "recall": (lambda tp, fp, fn, tn: _ratio(tp, tp + fn), {}),
    "specificity": (lambda tp, fp, fn, tn: _ratio(tn, tn + fp), {}),
    "f1": (lambda tp, fp, fn, tn: _ratio(2 * tp, 2 * tp + fp + fn), {}),
    "fbeta": (lambda tp, fp, fn, tn: _ratio(5 * tp, 5 * tp + 4 * fn + fp), {"beta": 2.0}),
    "jaccard": (lambda tp, fp, fn, tn: _ratio(tp, tp + fp + fn), {}),
    "gmean": (lambda tp, fp, fn, tn: _sqrt(_ratio(tp, tp + fn) * _ratio(tn, tn + fp)), {}),
    "mcc": (
        lambda tp, fp, fn, tn: _ratio(tp * tn - fp * fn, _sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))),
        {},
    ),
    "kappa": (
        lambda tp, fp, fn, tn: _ratio(2 * (tp * tn - fp * fn), (tp + fp) * (fp + tn) + (tp + fn) * (fn + tn)),
        {},
    ),
    "balanced_accuracy": (
        lambda tp, fp, fn, tn: _ratio(
            _ratio(tp, tp + fn) * (tp + fn > 0) + _ratio(tn, tn + fp) * (tn + fp > 0),
            (tp + fn > 0).to(tp.dtype) + (tn + fp > 0).to(tp.dtype),
        ),
        {},
    ),
}


def test_callable_table_covers_every_metric():
    assert set(CALLABLES) == set(METRIC_NAMES)


@pytest.mark.parametrize("name", METRIC_NAMES)
@settings(max_examples=20, deadline=None, derandomize=True, database=None)
@given(pair=label_pairs([(0, 1), (0, 1, 2), (1, 2, 5)]))
def test_callable_equals_named_metric(name, pair):
    yt, yp = pair
    fn, kw = CALLABLES[name]
    binary = bool(np.isin(np.concatenate([yt, yp]), (0, 1)).all())
    averages = (["binary"] if binary else []) + ["micro", "none"]
    if name != "gmean":  # the named gmean averages TPR and TNR before combining them
        averages += ["macro", "weighted"]
    for average in averages:
        got = metric_score(yt, yp, fn, average=average)
        expected = metric_score(yt, yp, name, average=average, **kw)
        assert close(got, expected), (name, average, yt, yp, got, expected)


def test_callable_on_multilabel():
    yt = np.array([[1, 0, 1], [0, 1, 1], [0, 0, 1]])
    yp = np.array([[1, 1, 0], [0, 1, 1], [0, 0, 0]])
    fn, _ = CALLABLES["f1"]
    for average in ("macro", "micro", "weighted", "none"):
        assert close(metric_score(yt, yp, fn, average=average), metric_score(yt, yp, "f1", average=average))


# --- errors --------------------------------------------------------------------------------------------


def test_unknown_metric_lists_valid_names():
    with pytest.raises(ValueError, match="`metric`") as info:
        metric_score([0, 1], [0, 1], "f2")
    for name in METRIC_NAMES:
        assert repr(name) in str(info.value)
    assert "'f2'" in str(info.value)


def test_metric_of_wrong_type():
    with pytest.raises(TypeError, match="`metric`"):
        metric_score([0, 1], [0, 1], 3)


@pytest.mark.parametrize("average", ["mean", "samples", "Macro", ""])
def test_bad_average(average):
    with pytest.raises(ValueError, match="`average`"):
        metric_score([0, 1], [0, 1], "f1", average=average)


def test_shape_mismatch():
    with pytest.raises(ValueError, match="`y_true` and `y_pred`"):
        metric_score([0, 1, 1], [0, 1], "f1")
    with pytest.raises(ValueError, match="`y_true` and `y_pred`"):
        metric_score(np.zeros((3, 2), int), np.zeros((3, 3), int), "f1")


@pytest.mark.parametrize("side", ["y_true", "y_pred"])
@pytest.mark.parametrize("bad", [0.5, float("nan"), float("inf")])
def test_float_labels(side, bad):
    good = [0.0, 1.0, 1.0]
    broken = [0.0, bad, 1.0]
    args = (broken, good) if side == "y_true" else (good, broken)
    with pytest.raises(ValueError, match=f"`{side}`"):
        metric_score(*args, "f1")


@pytest.mark.parametrize("side", ["y_true", "y_pred"])
def test_empty_or_3d_labels(side):
    for bad, good in (([], [0, 1]), (np.zeros((2, 2, 2), int), [0, 1])):
        args = (bad, good) if side == "y_true" else (good, bad)
        with pytest.raises(ValueError, match=f"`{side}`"):
            metric_score(*args, "f1")


def test_string_labels_rejected():
    with pytest.raises(ValueError, match="`y_true`"):
        metric_score(["a", "b"], [0, 1], "f1")


def test_multilabel_values_must_be_zero_or_one():
    with pytest.raises(ValueError, match="`y_true` and `y_pred`"):
        metric_score(np.array([[0, 2], [1, 0]]), np.array([[0, 1], [1, 0]]), "f1")


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_binary_average_on_multiclass(name):
    with pytest.raises(ValueError, match="`average`='binary'"):
        metric_score([0, 1, 2], [0, 1, 1], name, average="binary")
    with pytest.raises(ValueError, match="`average`='binary'"):
        metric_score(np.eye(3, dtype=int), np.eye(3, dtype=int), name, average="binary")


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_multiclass_average(name):
    yt, yp = [0, 1, 2, 2], [0, 1, 1, 2]
    if METRICS[name].multiclass is None:
        with pytest.raises(ValueError, match="`average`='multiclass'"):
            metric_score(yt, yp, name, average="multiclass")
    else:
        assert metric_score(yt, yp, name, average="multiclass") == metric_score(yt, yp, name)
    # never on a binary or a multi-label target
    with pytest.raises(ValueError, match="`average`='multiclass'"):
        metric_score([0, 1, 1], [0, 1, 0], name, average="multiclass")
    with pytest.raises(ValueError, match="`average`='multiclass'"):
        metric_score(np.eye(3, dtype=int), np.eye(3, dtype=int), name, average="multiclass")


def test_multiclass_average_on_a_callable():
    with pytest.raises(ValueError, match="`average`='multiclass'"):
        metric_score([0, 1, 2], [0, 1, 1], CALLABLES["f1"][0], average="multiclass")


@pytest.mark.parametrize("labels", [[0, 1, 4], [-1, 0, 1]])
def test_labels_outside_num_classes(labels):
    with pytest.raises(ValueError, match="`num_classes`"):
        metric_score(labels, [0, 1, 1], "f1", num_classes=3)
