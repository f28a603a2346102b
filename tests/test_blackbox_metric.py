"""Black-box metrics: built-ins equal scikit-learn, direction, loading, and failures as MetricError."""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from torch import nn

from metricopt import METRIC_NAMES
from metricopt.blackbox.metric import (
    BUILTIN_METRICS,
    BlackBoxMetric,
    MetricError,
    aucpr,
    cost_weighted_error,
    load_function,
    make_metric,
    misclassification_rate,
)
from metricopt.metrics import metric_score

pytestmark = pytest.mark.usefixtures("one_thread")


def binary_data(seed: int = 0, n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(np.int64)
    probs = np.clip(0.35 * y + rng.random(n) * 0.65, 0, 1).round(1)  # rounded: ties, and some exactly 0.5
    return y, probs


def multiclass_data(seed: int = 0, n: int = 45, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    logits = rng.normal(size=(n, classes)) + 1.5 * np.eye(classes)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, probs


def linear_model(in_features: int, out_features: int, seed: int = 0) -> nn.Module:
    """A Linear layer initialised from its own generator (the global RNG is never touched)."""
    model = torch.nn.utils.skip_init(nn.Linear, in_features, out_features)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.weight.copy_(torch.randn(model.weight.shape, generator=generator))
        model.bias.zero_()
    return model


# ------------------------------------------------------------------ built-ins against scikit-learn


def test_builtin_names_and_directions():
    assert set(BUILTIN_METRICS) == {"mcr", "aucpr", "cost", "ap", "auroc", *METRIC_NAMES}
    assert len(BUILTIN_METRICS) == len(set(BUILTIN_METRICS))
    for name in BUILTIN_METRICS:
        metric = make_metric(name)
        assert metric.name == name and metric.takes == "scores"
        assert metric.higher_is_better == (name not in ("mcr", "cost")), name


def test_mcr_binary_matches_sklearn_with_decisions_above_one_half():
    y, probs = binary_data()
    assert (probs == 0.5).any()  # the tie goes to the negative class
    expected = 1 - skm.accuracy_score(y, (probs > 0.5).astype(int))
    assert misclassification_rate(y, probs) == pytest.approx(expected, abs=1e-15)
    assert make_metric("mcr").score(y, probs) == pytest.approx(expected, abs=1e-15)


def test_mcr_multiclass_matches_sklearn_at_argmax():
    y, probs = multiclass_data()
    expected = 1 - skm.accuracy_score(y, probs.argmax(1))
    assert 0 < expected < 1
    assert misclassification_rate(y, probs) == pytest.approx(expected, abs=1e-15)
    as_tensors = make_metric("mcr", num_classes=3).score(torch.as_tensor(y), torch.as_tensor(probs))
    assert as_tensors == pytest.approx(expected)


def test_two_column_scores_are_binary_scores_of_column_one():
    y, probs = binary_data(1)
    rows = np.stack([1 - probs, probs], axis=1)
    for name in BUILTIN_METRICS:
        metric = make_metric(name)
        assert metric.score(y, rows) == pytest.approx(metric.score(y, probs), abs=1e-12), name


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aucpr_binary_matches_sklearn_average_precision(seed):
    y, probs = binary_data(seed)
    expected = skm.average_precision_score(y, probs)
    assert aucpr(y, probs) == pytest.approx(expected, abs=1e-12)
    assert make_metric("ap").score(y, probs) == pytest.approx(expected, abs=1e-12)


def test_aucpr_multiclass_is_macro_one_vs_rest_average_precision():
    y, probs = multiclass_data(classes=4, n=48)
    onehot = np.eye(4)[y]
    expected = skm.average_precision_score(onehot, probs, average="macro")
    assert aucpr(y, probs) == pytest.approx(expected, abs=1e-12)
    assert make_metric("aucpr", num_classes=4).score(y, probs) == pytest.approx(expected, abs=1e-12)


def test_auroc_matches_sklearn():
    y, probs = binary_data(2)
    assert make_metric("auroc").score(y, probs) == pytest.approx(skm.roc_auc_score(y, probs), abs=1e-12)
    y, probs = multiclass_data()
    expected = skm.roc_auc_score(y, probs, multi_class="ovr", average="macro")
    assert make_metric("auroc").score(y, probs) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("accuracy", skm.accuracy_score),
        ("f1", skm.f1_score),
        ("precision", functools.partial(skm.precision_score, zero_division=0)),
        ("recall", skm.recall_score),
        ("balanced_accuracy", skm.balanced_accuracy_score),
        ("mcc", skm.matthews_corrcoef),
        ("jaccard", skm.jaccard_score),
        ("kappa", skm.cohen_kappa_score),
    ],
)
def test_confusion_builtins_match_sklearn_on_binary_decisions(name, reference):
    y, probs = binary_data(3)
    expected = reference(y, (probs > 0.5).astype(int))
    assert make_metric(name).score(y, probs) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("accuracy", skm.accuracy_score),
        ("f1", functools.partial(skm.f1_score, average="macro")),
        ("mcc", skm.matthews_corrcoef),
        ("balanced_accuracy", skm.balanced_accuracy_score),
    ],
)
def test_confusion_builtins_match_sklearn_on_multiclass_argmax(name, reference):
    y, probs = multiclass_data(4)
    expected = reference(y, probs.argmax(1))
    assert make_metric(name).score(y, probs) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_every_confusion_builtin_scores_the_decisions(name):
    y, probs = binary_data(5)
    expected = metric_score(y, (probs > 0.5).astype(int), name, num_classes=2)
    assert make_metric(name).score(y, probs) == pytest.approx(expected)
    y, probs = multiclass_data(5)
    assert make_metric(name).score(y, probs) == pytest.approx(metric_score(y, probs.argmax(1), name, num_classes=3))


def test_cost_weighted_error_hand_computed():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    probs = np.array([0.9, 0.4, 0.5, 0.6, 0.2, 0.1, 0.3, 0.51])  # misses at 0.4 and 0.5; false alarms at 0.6, 0.51
    assert cost_weighted_error(y, probs) == pytest.approx((2 * 20.0 + 2 * 1.0) / 8)
    assert make_metric("cost").score(y, probs) == pytest.approx((2 * 20.0 + 2 * 1.0) / 8)
    assert cost_weighted_error(y, probs, fn_cost=1.0, fp_cost=3.0) == pytest.approx((2 + 6) / 8)


def test_cost_weighted_error_weighs_a_miss_twenty_times_a_false_alarm():
    y = np.array([1, 0])
    missed = cost_weighted_error(y, np.array([0.1, 0.1]))  # positive missed
    false_alarm = cost_weighted_error(y, np.array([0.9, 0.9]))  # negative flagged
    assert (missed, false_alarm) == (10.0, 0.5)
    assert cost_weighted_error(y, np.array([0.9, 0.1])) == 0.0


def test_cost_weighted_error_is_binary_only():
    y, probs = multiclass_data(n=4, classes=3)
    with pytest.raises(ValueError, match=r"binary only.*`y_score`.*\(4, 3\)"):
        cost_weighted_error(y, probs)
    with pytest.raises(MetricError, match=r"metric 'cost' raised ValueError: .*\(4, 3\)"):
        make_metric("cost").score(y, probs)
    with pytest.raises(ValueError, match="binary only.*`num_classes`=3"):
        make_metric("cost", num_classes=3)
    with pytest.raises(ValueError, match="`fn_cost`"):
        cost_weighted_error([0, 1], [0.2, 0.8], fn_cost=-1.0)
    with pytest.raises(ValueError, match=r"`y_true` labels must lie in \[0, 2\)"):
        cost_weighted_error([0, 2], [0.2, 0.8])


@pytest.mark.parametrize(
    ("y_true", "y_score", "match"),
    [
        ([0, 1, 1], [0.2, 0.8], r"`y_true` must be \(2,\)"),
        ([0, 1], [0.2, float("nan")], "`y_score` must be finite"),
        ([], [], "at least one sample"),
        ([0, 1], [[0.2], [0.8]], r"got shape \(2, 1\)"),
        ([0, 1], ["a", "b"], "real numbers"),
        ([0.5, 1.0], [0.2, 0.8], "integer labels"),
        ([0, 3], [[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]], r"\[0, 3\)"),
    ],
)
def test_builtins_reject_bad_inputs(y_true, y_score, match):
    with pytest.raises(ValueError, match=match):
        misclassification_rate(np.asarray(y_true), np.asarray(y_score))


def test_num_classes_must_match_the_scores():
    y, probs = multiclass_data()
    with pytest.raises(MetricError, match=r"`num_classes`=4 does not match `y_score` of shape \(45, 3\)"):
        make_metric("f1", num_classes=4).score(y, probs)
    with pytest.raises(ValueError, match="`num_classes`"):
        make_metric("f1", num_classes=1)
    with pytest.raises(TypeError, match="`num_classes`"):
        make_metric("f1", num_classes="3")


# ------------------------------------------------------------------ direction


def test_cost_is_lower_is_better():
    assert make_metric("accuracy").cost(0.8) == pytest.approx(0.2)
    assert make_metric("mcc").cost(-0.5) == pytest.approx(1.5)
    assert make_metric("mcr").cost(0.2) == 0.2
    assert make_metric("cost").cost(3.5) == 3.5
    assert make_metric("f1").cost(np.float32(0.25)) == 0.75
    with pytest.raises(ValueError, match="`value`"):
        make_metric("f1").cost(float("nan"))
    with pytest.raises(ValueError, match="`value`"):
        make_metric("f1").cost("0.5")


# ------------------------------------------------------------------ failures become MetricError


def raising(y_true, y_score):
    return 1 / 0


@pytest.mark.parametrize(
    ("result", "match"),
    [
        (float("nan"), "returned nan"),
        (float("inf"), "returned inf"),
        (-float("inf"), "returned -inf"),
        (np.float64("nan"), "returned nan"),
        ("0.5", r"returned '0.5' \(str\)"),
        (None, r"returned None \(NoneType\)"),
        (True, r"returned True \(bool\)"),
        (np.array([0.1, 0.2]), r"returned array\(\[0.1, 0.2\]\) \(ndarray\)"),
        (torch.tensor([0.1, 0.2]), r"returned tensor of shape \(2,\)"),
        (1 + 2j, r"returned \(1\+2j\) \(complex\)"),
    ],
)
def test_non_finite_or_non_numeric_results_raise_metric_error(result, match):
    metric = make_metric(lambda y_true, y_score: result, higher_is_better=True)
    with pytest.raises(MetricError, match=f"^metric '<lambda>' {match}"):
        metric.score([0, 1], [0.2, 0.8])


@pytest.mark.parametrize(
    "result", [0.5, 1, np.float32(0.5), np.int64(2), np.array(0.5), torch.tensor(0.5), torch.tensor([0.5])]
)
def test_numeric_results_are_coerced_to_float(result):
    value = make_metric(lambda y_true, y_score: result, higher_is_better=True).score([0, 1], [0.2, 0.8])
    assert type(value) is float and value == float(result)


def test_an_exception_inside_the_metric_becomes_a_chained_metric_error():
    metric = make_metric(raising, higher_is_better=False)
    with pytest.raises(MetricError, match=r"^metric 'raising' raised ZeroDivisionError: division by zero$") as info:
        metric.score([0, 1], [0.2, 0.8])
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert isinstance(info.value, ValueError)


def test_calling_the_wrong_method_for_takes_is_a_type_error():
    with pytest.raises(TypeError, match="takes the model"):
        make_metric(lambda model: 0.0, higher_is_better=True).score([0], [0.5])
    with pytest.raises(TypeError, match=r"takes \(y_true, y_score\)"):
        make_metric("f1").score_model(linear_model(2, 1))


# ------------------------------------------------------------------ evaluate and safe_evaluate


def test_evaluate_scores_the_models_probabilities_and_restores_its_mode():
    model = linear_model(3, 1).train()
    X = np.random.default_rng(0).normal(size=(30, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    with torch.no_grad():
        probs = torch.sigmoid(model(torch.as_tensor(X))).squeeze(-1).numpy()
    expected = 1 - skm.accuracy_score(y, probs > 0.5)
    assert make_metric("mcr").evaluate(model, X, y) == pytest.approx(expected)
    assert make_metric("mcr").evaluate(model, torch.as_tensor(X), torch.as_tensor(y)) == pytest.approx(expected)
    assert model.training
    assert make_metric("aucpr").evaluate(model.eval(), X, y) == pytest.approx(skm.average_precision_score(y, probs))
    assert not model.training
    assert all(p.grad is None for p in model.parameters())


def test_evaluate_multiclass_model():
    model = linear_model(4, 3, seed=1)
    X = np.random.default_rng(1).normal(size=(25, 4)).astype(np.float32)
    y = np.arange(25) % 3
    with torch.no_grad():
        predicted = model(torch.as_tensor(X)).argmax(-1).numpy()
    expected = 1 - skm.accuracy_score(y, predicted)
    assert make_metric("mcr", num_classes=3).evaluate(model, X, y) == pytest.approx(expected)


def test_takes_model_metrics_get_the_model_only():
    seen = []

    def weight_norm(model):
        seen.append(model)
        return model.weight.norm()

    model = linear_model(2, 1)
    metric = make_metric(weight_norm, higher_is_better=False)
    assert metric.takes == "model"
    expected = float(model.weight.detach().norm())
    assert metric.score_model(model) == pytest.approx(expected)
    assert metric.evaluate(model, None, None) == pytest.approx(expected)
    assert metric.safe_evaluate(model, None, None, on_error="warn") == pytest.approx(expected)
    assert seen == [model] * 3


def test_safe_evaluate_warns_and_returns_none():
    model = linear_model(2, 1)
    X, y = np.zeros((4, 2), dtype=np.float32), np.array([0, 1, 0, 1])
    metric = make_metric(lambda y_true, y_score: float("nan"), higher_is_better=True)
    with pytest.warns(RuntimeWarning, match=r"metric '<lambda>' failed.*returned nan"):
        assert metric.safe_evaluate(model, X, y, on_error="warn") is None
    with pytest.raises(MetricError, match="returned nan"):
        metric.safe_evaluate(model, X, y)
    with pytest.raises(ValueError, match="`on_error`"):
        metric.safe_evaluate(model, X, y, on_error="ignore")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert make_metric("mcr").safe_evaluate(model, X, y, on_error="warn") == 0.5


def test_safe_evaluate_does_not_hide_a_broken_model():
    metric = make_metric("mcr")
    with pytest.raises(RuntimeError):  # wrong number of features: the model's failure, not the metric's
        metric.safe_evaluate(linear_model(2, 1), np.zeros((3, 5), dtype=np.float32), np.zeros(3), on_error="warn")


# ------------------------------------------------------------------ make_metric


def test_builtin_direction_cannot_be_contradicted():
    assert make_metric("f1", higher_is_better=True).higher_is_better
    assert not make_metric("mcr", higher_is_better=False).higher_is_better
    with pytest.raises(ValueError, match="'f1' is higher-is-better"):
        make_metric("f1", higher_is_better=False)
    with pytest.raises(ValueError, match="'cost' is lower-is-better"):
        make_metric("cost", higher_is_better=True)
    with pytest.raises(ValueError, match="takes"):
        make_metric("f1", takes="model")
    with pytest.raises(TypeError, match="`higher_is_better`"):
        make_metric("f1", higher_is_better=1)


def test_user_metrics_need_a_direction():
    with pytest.raises(ValueError, match="`higher_is_better=True` or `higher_is_better=False`"):
        make_metric(lambda y_true, y_score: 0.0)
    with pytest.raises(ValueError, match="'mymod:score'.*`higher_is_better=True`"):
        make_metric("mymod:score")


def test_unknown_name_lists_the_builtins():
    with pytest.raises(ValueError, match="'f2' is neither a built-in metric.*aucpr.*MODULE:FUNCTION"):
        make_metric("f2")
    with pytest.raises(TypeError, match="`metric`"):
        make_metric(3)


def test_takes_is_inferred_from_the_signature():
    def scores(y_true, y_score, *, weight=1.0):
        return 0.0

    def model_only(model, extra=None):
        return 0.0

    class Callable:
        def __call__(self, y_true, y_score):
            return 0.0

    assert make_metric(scores, higher_is_better=True).takes == "scores"
    assert make_metric(model_only, higher_is_better=True).takes == "model"
    assert make_metric(Callable(), higher_is_better=True).takes == "scores"
    partial = make_metric(functools.partial(cost_weighted_error, fn_cost=5.0), higher_is_better=False)
    assert partial.takes == "scores" and partial.name == "cost_weighted_error"
    assert partial.score([1, 0], [0.1, 0.1]) == 2.5


def test_signatures_that_fit_neither_call_are_type_errors():
    def f(a, b, c):
        return 0.0

    def needs_keyword(y_true, y_score, *, weight):
        return 0.0

    def star(*args):
        return 0.0

    message = r"metric function f must take \(y_true, y_score\) or \(model\); got signature \(a, b, c\)"
    with pytest.raises(TypeError, match=message):
        make_metric(f, higher_is_better=True)
    with pytest.raises(TypeError, match="needs_keyword"):
        make_metric(needs_keyword, higher_is_better=True)
    with pytest.raises(TypeError, match=r"\(\*args\)"):
        make_metric(star, higher_is_better=True)
    assert make_metric(star, higher_is_better=True, takes="scores").score([0], [0.3]) == 0.0
    with pytest.raises(ValueError, match="`takes`"):
        make_metric(star, higher_is_better=True, takes="labels")


def test_a_blackbox_metric_passes_through():
    metric = make_metric("f1")
    assert make_metric(metric) is metric
    assert make_metric(metric, higher_is_better=True, takes="scores") is metric
    with pytest.raises(ValueError, match="contradicts"):
        make_metric(metric, higher_is_better=False)
    with pytest.raises(ValueError, match="contradicts"):
        make_metric(metric, takes="model")


def test_blackbox_metric_checks_its_fields_and_is_frozen():
    with pytest.raises(ValueError, match="`takes`"):
        BlackBoxMetric(raising, "r", higher_is_better=True, takes="labels")
    with pytest.raises(TypeError, match="`function`"):
        BlackBoxMetric(3, "r", higher_is_better=True)
    with pytest.raises(TypeError, match="`higher_is_better`"):
        BlackBoxMetric(raising, "r", higher_is_better="yes")
    with pytest.raises(dataclasses.FrozenInstanceError):
        make_metric("f1").name = "g"


# ------------------------------------------------------------------ load_function


MODULE_SOURCE = """
import numpy as np

def mean_label(y_true, y_score):
    return float(np.mean(y_true))

def of_model(model):
    return 0.25

class Namespace:
    @staticmethod
    def score(y_true, y_score):
        return 0.75

NOT_CALLABLE = 3
"""


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """tmp_path as the working directory, not on sys.path; the modules imported from it forgotten afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("bbm_"):
            del sys.modules[name]


def test_load_function_imports_from_the_working_directory(workdir):
    (workdir / "bbm_user.py").write_text(MODULE_SOURCE)
    path_before = list(sys.path)
    function = load_function("bbm_user:mean_label")
    assert function([0, 1, 1, 1], None) == 0.75
    assert sys.path == path_before  # the working directory was only added for the import
    assert load_function("bbm_user:Namespace.score")(None, None) == 0.75
    metric = make_metric("bbm_user:of_model", higher_is_better=True)
    assert (metric.name, metric.takes, metric.score_model(None)) == ("bbm_user:of_model", "model", 0.25)


def test_load_function_from_a_package(workdir):
    (workdir / "bbm_pkg").mkdir()
    (workdir / "bbm_pkg" / "__init__.py").write_text("")
    (workdir / "bbm_pkg" / "scores.py").write_text(MODULE_SOURCE)
    metric = make_metric("bbm_pkg.scores:mean_label", higher_is_better=False)
    assert metric.takes == "scores" and metric.score([0, 1], [0.5, 0.5]) == 0.5


def test_load_function_errors_name_the_spec(workdir):
    (workdir / "bbm_errors.py").write_text(MODULE_SOURCE)
    (workdir / "bbm_broken.py").write_text("x = 1 / 0\n")
    cases = [
        ("bbm_errors", ValueError, "'bbm_errors'.*no ':'"),
        (":f", ValueError, "':f'"),
        ("bbm_errors:", ValueError, "'bbm_errors:'"),
        (
            "bbm_missing:f",
            ImportError,
            (
                r"^cannot import module 'bbm_missing' for `spec` 'bbm_missing:f': "
                r"ModuleNotFoundError: No module named 'bbm_missing'$"
            ),
        ),
        ("bbm_broken:f", ImportError, r"module 'bbm_broken' for `spec` 'bbm_broken:f': ZeroDivisionError"),
        ("bbm_errors:nope", ValueError, "module 'bbm_errors' has no attribute 'nope'.*'bbm_errors:nope'"),
        ("bbm_errors:Namespace.nope", ValueError, "'Namespace.nope'"),
        ("bbm_errors:NOT_CALLABLE", TypeError, "'bbm_errors:NOT_CALLABLE' names 3, which is not callable"),
    ]
    for spec, error, match in cases:
        with pytest.raises(error, match=match) as info:
            load_function(spec)
        assert "\n" not in str(info.value), spec
    with pytest.raises(TypeError, match="`spec`"):
        load_function(None)
    with pytest.raises(ImportError, match="bbm_missing"):
        make_metric("bbm_missing:f", higher_is_better=True)


def test_builtin_doctest_values_are_floats():
    for function in (misclassification_rate, aucpr, cost_weighted_error):
        value = function([0, 1], [0.2, 0.8])
        assert type(value) is float and math.isfinite(value)


# --------------------------------------------------------------------------- recall@K: raw outputs


def test_recall_at_k_builtin_scores_the_raw_outputs_of_the_model():
    """recall@K sees the embeddings themselves (not softmax rows), against a brute-force count."""
    from metricopt.blackbox import retrieval_recall

    generator = torch.Generator().manual_seed(3)
    X = torch.randn(60, 5, generator=generator)
    y = torch.randint(0, 4, (60,), generator=generator).numpy()
    model = nn.Linear(5, 3)
    with torch.no_grad():
        emb = torch.nn.functional.normalize(model(X).double(), dim=1)
    sims = emb @ emb.T
    sims.fill_diagonal_(-math.inf)
    for k in (1, 3):
        metric = make_metric(f"recall@{k}")
        assert (metric.takes, metric.higher_is_better, metric.name) == ("outputs", True, f"recall@{k}")
        top = sims.topk(k, dim=1).indices.numpy()
        expected = float(np.mean([(y[top[i]] == y[i]).any() for i in range(60)]))
        assert metric.evaluate(model, X, y) == pytest.approx(expected, abs=1e-12)
        assert retrieval_recall(y, emb.numpy(), k=k) == pytest.approx(expected, abs=1e-12)
    # the softmax rows of these outputs give another value: the outputs, not the probabilities, are scored
    probabilities = torch.softmax(model(X), dim=1).detach().numpy()
    assert retrieval_recall(y, probabilities, k=1) != make_metric("recall@1").evaluate(model, X, y)
    assert make_metric("recall@1").cost(0.25) == 0.75  # the cost is 1 - R@K


def test_outputs_metric_gets_the_logits_and_user_functions_can_ask_for_them():
    seen = {}

    def mean_output(y_true, outputs):
        seen["outputs"] = outputs
        return float(np.mean(outputs))

    model = nn.Linear(2, 3)
    X = np.ones((4, 2), dtype=np.float32)
    metric = make_metric(mean_output, higher_is_better=True, takes="outputs")
    value = metric.evaluate(model, X, np.zeros(4, dtype=int))
    with torch.no_grad():
        expected = model(torch.as_tensor(X)).numpy()
    assert seen["outputs"].shape == (4, 3) and value == pytest.approx(float(expected.mean()))
    assert make_metric(mean_output, higher_is_better=True).takes == "scores"  # never inferred


def test_recall_at_k_errors_name_the_problem():
    with pytest.raises(ValueError, match="K >= 1.*'recall@0'"):
        make_metric("recall@0")
    with pytest.raises(ValueError, match="higher-is-better"):
        make_metric("recall@2", higher_is_better=False)
    with pytest.raises(ValueError, match="takes \\(y_true, outputs\\)"):
        make_metric("recall@2", takes="scores")
    with pytest.raises(ValueError, match="neither a built-in"):
        make_metric("recall@x")
    with pytest.raises(MetricError, match="recall@1.*ValueError.*\\(N, D\\) embeddings"):
        make_metric("recall@1").score([0, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(TypeError, match="takes \\(y_true, outputs\\)"):
        make_metric("recall@1").score_model(nn.Linear(1, 1))
