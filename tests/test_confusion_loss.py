"""The confusion-matrix loss family (AnyLoss), tested over the table of metrics.

Every property runs for every name in ``METRIC_NAMES`` and every task:
binary logits ``(N,)``, binary logits ``(N, 1)``, multi-class ``(N, C)`` and
multi-label ``(N, C)``.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from metricopt.losses import ConfusionLoss, confusion_loss
from metricopt.metrics import METRIC_NAMES, metric_score
from metricopt.metrics._formulas import METRICS

TASKS = ("binary", "binary_column", "multiclass", "multilabel")
BINARY_TASKS = ("binary", "binary_column")
BETA = 2.0  # reaches "fbeta" only


def beta_for(metric) -> dict:
    """`beta` is an option of "fbeta" alone (other metrics reject it)."""
    return {"beta": BETA} if metric == "fbeta" else {}
CASES = [(name, task) for name in METRIC_NAMES for task in TASKS]
# derandomize: a failure reproduces on every run; database=None: nothing written to disk
HARD_SETTINGS = settings(max_examples=15, deadline=None, derandomize=True, database=None)
SOFT_SETTINGS = settings(max_examples=10, deadline=None, derandomize=True, database=None)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tensors here are tiny: intra-op threads only add overhead (torch.softmax on an
    8 x 3 tensor took 8 ms with 2 threads on a busy 2-core machine, 2 us with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def averages(name: str, task: str) -> tuple[str, ...]:
    if task in BINARY_TASKS:
        return ("auto", "binary")
    extra = ("multiclass",) if task == "multiclass" and METRICS[name].multiclass is not None else ()
    return ("auto", "macro", "micro", "weighted", "none") + extra


def lower_bound(name: str) -> float:
    return METRICS[name].lower_bound


def as_target(task: str, labels: np.ndarray) -> torch.Tensor:
    """Torch target of a task from integer labels (1-D) or indicators (2-D)."""
    labels = np.asarray(labels)
    if task == "binary":
        return torch.as_tensor(labels, dtype=torch.long)
    if task == "binary_column":
        return torch.as_tensor(labels, dtype=torch.float32).reshape(-1, 1)
    return torch.as_tensor(labels, dtype=torch.long)


def hard_logits(task: str, pred: np.ndarray, num_classes: int, dtype: torch.dtype, size: float = 50.0) -> torch.Tensor:
    """Logits of +-``size`` whose decision (p > 0.5 or argmax) is ``pred``."""
    pred = torch.as_tensor(np.asarray(pred), dtype=torch.long)
    if task == "multiclass":
        z = torch.full((len(pred), num_classes), -size, dtype=dtype)
        z[torch.arange(len(pred)), pred] = size
        return z
    z = torch.where(pred == 1, size, -size).to(dtype)
    return z.reshape(-1, 1) if task == "binary_column" else z


def exact_loss(name: str, task: str, target: np.ndarray, pred: np.ndarray, average: str, num_classes: int):
    kw = {"average": average, **beta_for(name)}
    if task in BINARY_TASKS:
        score = metric_score(np.ravel(target), np.ravel(pred), name, num_classes=2, **kw)
    elif task == "multiclass":
        score = metric_score(target, pred, name, num_classes=num_classes, **kw)
    else:
        score = metric_score(target, pred, name, **kw)
    return (1 - np.asarray(score)) / (1 - lower_bound(name))


def check_hard(name: str, task: str, target: np.ndarray, pred: np.ndarray, num_classes: int, dtype) -> None:
    z = hard_logits(task, pred, num_classes, dtype)
    y = as_target(task, target)
    for average in averages(name, task):
        got = confusion_loss(z, y, name, average=average, **beta_for(name)).double().numpy()
        expected = exact_loss(name, task, target, pred, average, num_classes)
        assert got.shape == np.shape(expected), (average, got.shape)
        assert np.allclose(got, expected, rtol=0, atol=1e-4), (name, task, average, target, pred, got, expected)


def random_batch(task: str, n: int = 8, num_classes: int = 3, scale: float = 2.0, seed: int = 0,
                 dtype=torch.float64):
    """Moderate logits and a target in which every class (label) has positives and negatives."""
    g = torch.Generator().manual_seed(seed)
    if task in BINARY_TASKS:
        z = torch.randn(n, generator=g, dtype=dtype) * scale
        y = torch.arange(n) % 2
        if task == "binary_column":
            z, y = z.reshape(-1, 1), y.reshape(-1, 1)
        return z, y
    z = torch.randn(n, num_classes, generator=g, dtype=dtype) * scale
    if task == "multiclass":
        return z, torch.arange(n) % num_classes
    y = (torch.arange(n * num_classes).reshape(n, num_classes) * 7 % 5 < 2).long()
    y[0], y[1] = 1, 0  # every label has a positive and a negative
    return z, y


# --- strategies ------------------------------------------------------------------------------------


@st.composite
def labels_1d(draw, n: int, num_classes: int):
    # a random subset of the classes makes one-class (degenerate) targets common
    allowed = draw(st.lists(st.integers(0, num_classes - 1), min_size=1, max_size=num_classes, unique=True))
    return np.array(draw(st.lists(st.sampled_from(allowed), min_size=n, max_size=n)))


@st.composite
def indicators(draw, n: int, num_classes: int):
    allowed = draw(st.sampled_from([(0,), (1,), (0, 1), (0, 1)]))
    rows = st.lists(st.sampled_from(allowed), min_size=num_classes, max_size=num_classes)
    return np.array(draw(st.lists(rows, min_size=n, max_size=n)))


@st.composite
def hard_batches(draw, task: str):
    n = draw(st.integers(1, 8))
    if task in BINARY_TASKS:
        c = 2
        target, pred = draw(labels_1d(n, 2)), draw(labels_1d(n, 2))
    elif task == "multiclass":
        c = draw(st.integers(3, 4))
        target, pred = draw(labels_1d(n, c)), draw(labels_1d(n, c))
    else:
        c = draw(st.integers(2, 4))
        target, pred = draw(indicators(n, c)), draw(indicators(n, c))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    return target, pred, c, dtype


@st.composite
def soft_batches(draw, task: str):
    n = draw(st.integers(1, 10))
    c = 1 if task in BINARY_TASKS else 3
    logits = draw(st.lists(st.floats(-6, 6, allow_nan=False), min_size=n * c, max_size=n * c))
    z = torch.tensor(logits, dtype=torch.float64)
    if task == "multiclass":
        y = torch.as_tensor(draw(labels_1d(n, c)))
        z = z.reshape(n, c)
    elif task == "multilabel":
        y = torch.as_tensor(draw(indicators(n, c)))
        z = z.reshape(n, c)
    else:
        y = torch.as_tensor(draw(labels_1d(n, 2)))
        if task == "binary_column":
            z, y = z.reshape(n, 1), y.reshape(n, 1)
    return z, y


# --- at hard inputs the loss is the exact metric ---------------------------------------------------


@pytest.mark.parametrize(("name", "task"), CASES)
@HARD_SETTINGS
@given(data=st.data())
def test_loss_equals_exact_metric_at_hard_inputs(name, task, data):
    target, pred, c, dtype = data.draw(hard_batches(task))
    check_hard(name, task, target, pred, c, dtype)


HARD_HAND_MADE = {
    # binary: (target, prediction)
    "binary": [
        ([0, 0, 0, 0], [0, 1, 0, 0]),  # no positives
        ([0, 0, 0], [0, 0, 0]),  # no positives, none predicted
        ([1, 1, 1], [1, 0, 1]),  # all positives
        ([1, 1], [1, 1]),
        ([1], [1]),  # one sample
        ([0], [1]),
        ([1], [0]),
        ([0], [0]),
        ([0, 1, 1, 0, 1], [1, 1, 1, 1, 1]),  # predictions all positive
        ([0, 1, 1, 0, 1], [0, 0, 0, 0, 0]),  # predictions all negative
    ],
    "multiclass": [
        ([0, 0, 0, 0], [0, 1, 2, 0]),  # only class 0 present
        ([2, 2, 2], [2, 2, 2]),
        ([1], [1]),  # one sample
        ([1], [2]),
        ([0, 1, 2, 2, 1], [2, 2, 2, 2, 2]),  # predictions all one class
        ([0, 1, 2, 0], [0, 2, 1, 0]),  # class 3 of 4 absent
        ([1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1]),  # one class present: it has no negatives
    ],
    "multilabel": [
        ([[0, 0], [0, 0], [0, 0]], [[0, 1], [0, 0], [1, 0]]),  # no positives
        ([[0, 0], [0, 0]], [[0, 0], [0, 0]]),
        ([[1, 1], [1, 1]], [[1, 0], [1, 1]]),  # all positives
        ([[1, 0, 1]], [[1, 1, 0]]),  # one sample
        ([[1, 0], [0, 1], [1, 1]], [[0, 0], [0, 0], [0, 0]]),  # nothing predicted
    ],
}


@pytest.mark.parametrize(("name", "task"), CASES)
def test_loss_equals_exact_metric_on_hand_made_hard_batches(name, task):
    kind = "binary" if task in BINARY_TASKS else task
    for target, pred in HARD_HAND_MADE[kind]:
        target, pred = np.array(target), np.array(pred)
        c = {"binary": 2, "multiclass": 4, "multilabel": np.shape(target)[-1]}[kind]
        for dtype in (torch.float32, torch.float64):
            check_hard(name, task, target, pred, c, dtype)


@pytest.mark.parametrize("average", ["macro", "micro", "weighted", "none"])
def test_binary_loss_with_class_averages_equals_exact_metric(average):
    """A binary target with average macro/micro/weighted/none: the exact metric
    (as scikit-learn) averages over both classes {0, 1}; the loss must agree."""
    target = np.array([1, 0, 0, 1, 0, 0, 1])
    pred = np.array([1, 1, 0, 0, 0, 0, 1])
    mismatches = []
    for task in BINARY_TASKS:
        z, y = hard_logits(task, pred, 2, torch.float64), as_target(task, target)
        for name in METRIC_NAMES:
            got = confusion_loss(z, y, name, average=average, **beta_for(name)).numpy()
            expected = exact_loss(name, task, target, pred, average, 2)
            if np.shape(got) != np.shape(expected) or not np.allclose(got, expected, atol=1e-4):
                mismatches.append(f"{task}/{name}: loss {got} vs exact {expected}")
    assert not mismatches, "\n".join(mismatches)


def test_multiclass_class_without_negatives_at_hard_inputs():
    """Every sample in class 1: class 1 has TN = FP = 0, so its specificity is 0 and its
    balanced accuracy is its recall (as the exact metric), whatever the rounding."""
    mismatches = []
    for n in range(2, 9):
        for c in (3, 4):
            target, pred = np.ones(n, dtype=int), np.arange(n) % c
            for dtype in (torch.float32, torch.float64):
                z, y = hard_logits("multiclass", pred, c, dtype), as_target("multiclass", target)
                for name in METRIC_NAMES:
                    got = confusion_loss(z, y, name, average="none", **beta_for(name)).double().numpy()
                    expected = exact_loss(name, "multiclass", target, pred, "none", c)
                    if not np.allclose(got, expected, rtol=0, atol=1e-4):
                        mismatches.append(f"n={n} C={c} {dtype} {name}: "
                                          f"loss {got.round(4)} vs exact {expected.round(4)}")
    assert not mismatches, f"{len(mismatches)} mismatches:\n" + "\n".join(mismatches[:12])


def test_permutation_invariance_when_a_class_has_no_negatives():
    # found by test_permutation_invariance: every target is class 1, so class 1 has no negatives
    z = torch.zeros(7, 3, dtype=torch.float64)
    z[5, 1], z[5, 2] = 1.25, 0.625
    y = torch.ones(7, dtype=torch.long)
    perm = torch.tensor([0, 1, 2, 3, 5, 4, 6])
    for name in ("specificity", "gmean"):
        for average in ("none", "macro"):
            a = confusion_loss(z, y, name, average=average)
            b = confusion_loss(z[perm], y[perm], name, average=average)
            assert torch.allclose(a, b, rtol=1e-9, atol=1e-12), (name, average, a, b)


def test_permutation_invariance_of_a_nearly_empty_count():
    # found by test_permutation_invariance in a full-suite run: TN of column 0 is about 5e-15; computed
    # as (negatives - FP) it carried FP's rounding error and the G-mean moved by 8% under a swap
    z = torch.zeros(7, 3, dtype=torch.float64)
    z[:, 0] = torch.tensor([-1.5, 0.0, 1.0, 3.0, 4.0, 0.0, 0.0], dtype=torch.float64)
    y = torch.zeros(7, 3, dtype=torch.long)
    y[:, 0] = torch.tensor([1, 1, 1, 0, 0, 1, 1])
    perm = torch.tensor([0, 1, 2, 4, 3, 5, 6])
    a = confusion_loss(z, y, "gmean", average="weighted")
    b = confusion_loss(z[perm], y[perm], "gmean", average="weighted")
    assert torch.allclose(a, b, rtol=1e-9, atol=1e-12), (a, b)


# --- gradients -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "task"), CASES)
def test_gradcheck(name, task):
    z, y = random_batch(task, n=8, num_classes=3, scale=2.0, seed=1)
    z.requires_grad_(True)
    for amplification in (5.0, 73.0):
        for average in averages(name, task):
            def fn(logits, amplification=amplification, average=average):  # bound now: called in this iteration
                return confusion_loss(logits, y, name, amplification=amplification, average=average, **beta_for(name))

            assert torch.autograd.gradcheck(fn, (z,)), (amplification, average)


GRID = torch.linspace(-4.6, 4.6, 41, dtype=torch.float64)


def _grid_gradient(metric, role: int, dtype: torch.dtype) -> torch.Tensor:
    """Gradient at the 41 grid logits, all labelled ``role``, beside 9 samples of the other label."""
    background = torch.linspace(-3.0, 3.0, 9, dtype=torch.float64)
    z = torch.cat([GRID, background]).to(dtype).requires_grad_(True)
    y = torch.cat([torch.full((41,), role), torch.full((9,), 1 - role)])
    confusion_loss(z, y, metric, **beta_for(metric)).backward()
    return z.grad[:41].double()


@pytest.mark.parametrize("name", METRIC_NAMES)
@pytest.mark.parametrize("role", [1, 0])
def test_float32_gradient_matches_float64(name, role):
    g64 = _grid_gradient(name, role, torch.float64)
    g32 = _grid_gradient(name, role, torch.float32)
    if (name, role) in {("recall", 0), ("specificity", 1)}:
        # recall ignores negatives, specificity positives: structurally zero in both
        assert torch.all(g64 == 0) and torch.all(g32 == 0)
        return
    assert torch.all(g64 != 0)
    assert torch.all(g32 != 0), f"float32 gradient exactly 0 at logits {GRID[g32 == 0].tolist()}"
    rel = (g32 - g64).abs() / g64.abs()
    assert rel.max() <= 1e-3, f"max relative error {rel.max():.2e} at logit {GRID[rel.argmax()]:.2f}"


def test_naive_float32_amplification_loses_gradients():
    """The naive sigmoid(73 (sigmoid(z) - 0.5)) rounds to 1 in float32 and its
    gradient to exactly 0; confusion_loss keeps every gradient."""
    y = torch.arange(41) % 2
    z = GRID.float().requires_grad_(True)
    a = torch.sigmoid(73 * (torch.sigmoid(z) - 0.5))
    tp, fp, fn = (y * a).sum(), ((1 - y) * a).sum(), (y * (1 - a)).sum()
    (1 - 2 * tp / (2 * tp + fp + fn)).backward()
    naive_zeros = int((z.grad == 0).sum())
    assert naive_zeros > 0

    z2 = GRID.float().requires_grad_(True)
    loss = confusion_loss(z2, y, "f1")
    loss.backward()
    assert int((z2.grad == 0).sum()) == 0
    # same forward value (up to float32 rounding)
    assert loss.item() == pytest.approx(1 - (2 * tp / (2 * tp + fp + fn)).item(), abs=1e-5)


def _degenerate(case: str, task: str, dtype: torch.dtype):
    g = torch.Generator().manual_seed(3)
    n, c = (1 if case == "single_sample" else 6), 3
    shape = (n,) if task in BINARY_TASKS else (n, c)
    z = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    if case == "zero_logits":
        z = torch.zeros(shape, dtype=torch.float64)
    if case == "huge_logits":
        z = torch.where(torch.randn(shape, generator=g) > 0, 1e4, -1e4).double()
    if task == "multiclass":
        y = {"no_positives": torch.zeros(n), "all_positives": torch.full((n,), c - 1)}.get(case, torch.arange(n) % c)
    else:
        yshape = (n,) if task in BINARY_TASKS else (n, c)
        y = {"no_positives": torch.zeros(yshape), "all_positives": torch.ones(yshape)}.get(
            case, (torch.arange(int(np.prod(yshape))) % 2).reshape(yshape)
        )
    y = y.long()
    if task == "binary_column":
        z, y = z.reshape(-1, 1), y.reshape(-1, 1)
    return z.to(dtype), y


@pytest.mark.parametrize("case", ["no_positives", "all_positives", "single_sample", "zero_logits", "huge_logits"])
@pytest.mark.parametrize(("name", "task"), CASES)
def test_degenerate_batches_give_finite_loss_and_gradient(name, task, case):
    for dtype, amplification in ((torch.float32, 73.0), (torch.float64, 73.0), (torch.float32, "auto")):
        for average in averages(name, task):
            z, y = _degenerate(case, task, dtype)
            z.requires_grad_(True)
            loss = confusion_loss(z, y, name, average=average, amplification=amplification, **beta_for(name))
            assert torch.isfinite(loss).all(), (dtype, amplification, average, loss)
            loss.sum().backward()
            assert torch.isfinite(z.grad).all(), (dtype, amplification, average, z.grad)


# --- properties ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "task"), CASES)
@SOFT_SETTINGS
@given(data=st.data())
def test_permutation_invariance(name, task, data):
    z, y = data.draw(soft_batches(task))
    perm = torch.tensor(data.draw(st.permutations(range(len(z)))), dtype=torch.long)
    for average in averages(name, task):
        a = confusion_loss(z, y, name, average=average, **beta_for(name))
        b = confusion_loss(z[perm], y[perm], name, average=average, **beta_for(name))
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12), (average, a, b)


@pytest.mark.parametrize(("name", "task"), CASES)
@SOFT_SETTINGS
@given(data=st.data())
def test_loss_in_unit_interval(name, task, data):
    z, y = data.draw(soft_batches(task))
    for amplification in (5.0, 73.0, "auto"):
        for average in averages(name, task):
            loss = confusion_loss(z, y, name, average=average, amplification=amplification, **beta_for(name))
            assert torch.all(loss >= 0) and torch.all(loss <= 1), (amplification, average, loss)


@pytest.mark.parametrize(("name", "task"), CASES)
def test_module_equals_function(name, task):
    z, y = random_batch(task, seed=4)
    for average in averages(name, task):
        for amplification in (10.0, 73.0, "auto"):
            module = ConfusionLoss(name, amplification=amplification, average=average, **beta_for(name))
            expected = confusion_loss(z, y, name, amplification=amplification, average=average, **beta_for(name))
            assert torch.equal(module(z, y), expected)
    module = ConfusionLoss(name)
    assert module.higher_is_better is False and module.is_differentiable is True
    assert name in repr(module)


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
@pytest.mark.parametrize("name", METRIC_NAMES)
def test_none_average_is_per_class_and_its_mean_is_macro(name, task):
    z, y = random_batch(task, n=9, num_classes=3, scale=1.0, seed=5)
    per_class = confusion_loss(z, y, name, average="none", **beta_for(name))
    macro = confusion_loss(z, y, name, average="macro", **beta_for(name))
    assert per_class.shape == (3,)
    if METRICS[name].components:
        assert name == "gmean"
        tpr = 1 - confusion_loss(z, y, "recall", average="none")
        tnr = 1 - confusion_loss(z, y, "specificity", average="none")
        expected = 1 - torch.sqrt(tpr.mean() * tnr.mean())
        assert torch.allclose(macro, expected, rtol=1e-12, atol=1e-12)
        assert not torch.allclose(macro, per_class.mean(), atol=1e-6)
    else:
        assert torch.allclose(per_class.mean(), macro, rtol=1e-12, atol=1e-12)
    # None means "none"
    assert torch.equal(confusion_loss(z, y, name, average=None, **beta_for(name)), per_class)


@pytest.mark.parametrize(("name", "task"), CASES)
def test_amplification_matters(name, task):
    """The steepness knob of each task changes the loss on soft logits: `amplification`
    (sigmoid paths) or `sharpness` (multi-class softmax); the other one is inert."""
    z, y = random_batch(task, n=10, scale=0.5, seed=6)
    knob, inert = ("sharpness", "amplification") if task == "multiclass" else ("amplification", "sharpness")
    soft = confusion_loss(z, y, name, **beta_for(name), **{knob: 1.0})
    sharp = confusion_loss(z, y, name, **beta_for(name), **{knob: 73.0})
    assert abs(soft.item() - sharp.item()) > 1e-3
    other = confusion_loss(z, y, name, **beta_for(name), **{knob: 73.0, inert: 2.0})
    assert other.item() == sharp.item()


def test_beta_matters_in_the_right_direction():
    # 6 positives, 6 negatives; soft logits
    y = torch.tensor([1] * 6 + [0] * 6)
    recall_heavy = torch.tensor([2.0, -2.0, -2.5, -3.0, -1.5, 1.5] + [-2.0] * 6)  # many FN, no FP
    precision_heavy = torch.tensor([2.0] * 6 + [2.0, 2.5, 1.5, 3.0, -2.0, -2.0])  # many FP, no FN
    f = lambda z, b: confusion_loss(z, y, "fbeta", beta=b).item()  # noqa: E731
    assert f(recall_heavy, 2.0) > f(recall_heavy, 0.5) + 0.1
    assert f(precision_heavy, 0.5) > f(precision_heavy, 2.0) + 0.1
    # beta = 1 is F1; "f1" and the other metrics reject a beta other than 1
    f1 = confusion_loss(recall_heavy, y, "f1").item()
    assert confusion_loss(recall_heavy, y, "fbeta", beta=1.0).item() == pytest.approx(f1, abs=1e-7)
    with pytest.raises(ValueError, match="`beta` only applies to metric='fbeta'"):
        confusion_loss(recall_heavy, y, "f1", beta=3.0)
    for bad in (-1.0, float("nan"), float("inf"), "2"):
        with pytest.raises(ValueError, match="`beta`"):
            confusion_loss(recall_heavy, y, "fbeta", beta=bad)


def test_swapping_fp_and_fn_swaps_precision_and_recall():
    y = torch.tensor([1, 1, 1, 0, 0, 0, 0])
    with_fp = torch.tensor([3.0, 3.0, 3.0, 3.0, 3.0, -3.0, -3.0])  # TP 3, FP 2, FN 0
    y_fn = torch.tensor([1, 1, 1, 1, 1, 0, 0])
    with_fn = torch.tensor([3.0, 3.0, 3.0, -3.0, -3.0, -3.0, -3.0])  # TP 3, FP 0, FN 2
    loss = lambda z, t, m: confusion_loss(z, t, m).item()  # noqa: E731
    assert loss(with_fp, y, "precision") == pytest.approx(2 / 5, abs=1e-6)
    assert loss(with_fp, y, "recall") == pytest.approx(0, abs=1e-6)
    assert loss(with_fn, y_fn, "recall") == pytest.approx(2 / 5, abs=1e-6)
    assert loss(with_fn, y_fn, "precision") == pytest.approx(0, abs=1e-6)
    # specificity sees FP only
    assert loss(with_fp, y, "specificity") == pytest.approx(2 / 4, abs=1e-6)
    assert loss(with_fn, y_fn, "specificity") == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize(("name", "task"), CASES)
def test_auto_amplification(name, task):
    z, y = random_batch(task, n=10, scale=1.5, seed=7)
    z.requires_grad_(True)
    loss = confusion_loss(z, y, name, amplification="auto", **beta_for(name))
    assert torch.isfinite(loss) and 0 <= loss.item() <= 1
    loss.backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    # the documented rule: L = clip(5 / median |p - 0.5|, 10, 73); multi-class uses `sharpness` instead
    with torch.no_grad():
        probs = torch.sigmoid(z)
        steepness = min(max(5.0 / (probs - 0.5).abs().flatten().median().item(), 10.0), 73.0)
        if task == "multiclass":
            steepness = 73.0
        expected = confusion_loss(z, y, name, amplification=steepness, **beta_for(name))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-9, abs=1e-12)


def test_binary_shapes_agree():
    z, y = random_batch("binary", seed=8)
    base = confusion_loss(z, y, "mcc")
    for zz, yy in ((z[:, None], y), (z, y[:, None]), (z[:, None], y[:, None]), (z, y.float()), (z, y.bool())):
        assert torch.equal(confusion_loss(zz, yy, "mcc"), base)


def test_callable_metric_equals_named_metric():
    def soft_f1(tp, fp, fn, tn):
        return 2 * tp / (2 * tp + fp + fn)

    for task in TASKS:
        z, y = random_batch(task, seed=9)
        average = "auto" if task in BINARY_TASKS else "macro"
        assert torch.allclose(confusion_loss(z, y, soft_f1, average=average),
                              confusion_loss(z, y, "f1", average=average))


# --- training -------------------------------------------------------------------------------------------


def test_training_a_linear_model_raises_exact_f1():
    g = torch.Generator().manual_seed(0)
    n, d = 400, 5
    x = torch.randn(n, d, generator=g)
    s = x @ torch.randn(d, generator=g) + 0.3 * torch.randn(n, generator=g)
    y = (s > s.quantile(0.85)).long()  # 15 % positives
    torch.manual_seed(0)
    model = torch.nn.Linear(d, 1)

    def exact_f1() -> float:
        with torch.no_grad():
            return metric_score(y, (torch.sigmoid(model(x)).squeeze(1) > 0.5).long(), "f1")

    before = exact_f1()
    criterion = ConfusionLoss("f1")
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(200):
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
    after = exact_f1()
    assert after > before
    assert after > 0.6, (before, after)


# --- half precision -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("task", TASKS)
def test_half_precision_gives_finite_float32_loss(task, dtype):
    z, y = random_batch(task, seed=10, dtype=torch.float32)
    z = z.to(dtype).requires_grad_(True)
    for name in METRIC_NAMES:
        loss = confusion_loss(z, y, name)
        assert loss.dtype == torch.float32 and torch.isfinite(loss), (name, loss)
        expected = confusion_loss(z.detach().float(), y, name)
        assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
        (grad,) = torch.autograd.grad(loss, z)
        assert grad.dtype == dtype and torch.isfinite(grad).all(), name


# --- errors ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_logits(bad):
    z = torch.tensor([0.5, bad, -1.0])
    with pytest.raises(ValueError, match="`logits`"):
        confusion_loss(z, torch.tensor([1, 0, 1]))
    with pytest.raises(ValueError, match="`logits`"):
        ConfusionLoss("mcc")(z.reshape(1, 3), torch.tensor([1]))


@pytest.mark.parametrize("bad", [2, -1])
def test_binary_target_out_of_set(bad):
    with pytest.raises(ValueError, match="`target`"):
        confusion_loss(torch.zeros(3), torch.tensor([0, bad, 1]))
    with pytest.raises(ValueError, match="`target`"):
        confusion_loss(torch.zeros(3, 2), torch.tensor([[0, 1], [bad, 0], [1, 1]]))  # multi-label
    with pytest.raises(ValueError, match="`target`"):
        confusion_loss(torch.zeros(3), torch.tensor([0.0, 0.5, 1.0]))


@pytest.mark.parametrize("bad", [3, -1])
def test_multiclass_target_out_of_range(bad):
    with pytest.raises(ValueError, match="`target`"):
        confusion_loss(torch.zeros(3, 3), torch.tensor([0, bad, 1]))


def test_float_multiclass_target():
    with pytest.raises(ValueError, match="`target`"):
        confusion_loss(torch.zeros(3, 3), torch.tensor([0.0, 1.0, 2.0]))


@pytest.mark.parametrize(
    ("logit_shape", "target_shape"),
    [((4,), (3,)), ((4, 3), (3,)), ((4, 3), (4, 2)), ((4, 2, 2), (4,)), ((4, 1), (4, 2))],
)
def test_mismatched_shapes(logit_shape, target_shape):
    with pytest.raises(ValueError, match="`logits` and `target`"):
        confusion_loss(torch.zeros(logit_shape), torch.zeros(target_shape, dtype=torch.long))


def test_unknown_metric_lists_valid_names():
    for make in (lambda: confusion_loss(torch.zeros(2), torch.tensor([0, 1]), "f2"), lambda: ConfusionLoss("f2")):
        with pytest.raises(ValueError, match="`metric`") as info:
            make()
        assert all(repr(name) in str(info.value) for name in METRIC_NAMES)


@pytest.mark.parametrize("bad", [0, -1, 0.0, float("nan"), float("inf")])
def test_bad_amplification(bad):
    with pytest.raises(ValueError, match="`amplification`"):
        confusion_loss(torch.zeros(2), torch.tensor([0, 1]), amplification=bad)
    with pytest.raises(ValueError, match="`amplification`"):
        ConfusionLoss(amplification=bad)


@pytest.mark.parametrize("bad", ["fast", True, [73.0]])
def test_amplification_of_wrong_type(bad):
    with pytest.raises((TypeError, ValueError), match="`amplification`"):
        confusion_loss(torch.zeros(2), torch.tensor([0, 1]), amplification=bad)


def test_bad_average():
    with pytest.raises(ValueError, match="`average`"):
        confusion_loss(torch.zeros(2), torch.tensor([0, 1]), average="mean")
    with pytest.raises(ValueError, match="`average`='binary'"):
        confusion_loss(torch.zeros(3, 3), torch.tensor([0, 1, 2]), average="binary")
    with pytest.raises(ValueError, match="`average`='multiclass'"):
        confusion_loss(torch.zeros(3, 3), torch.tensor([0, 1, 2]), "f1", average="multiclass")
    with pytest.raises(ValueError, match="`average`='multiclass'"):
        confusion_loss(torch.zeros(3), torch.tensor([0, 1, 1]), "mcc", average="multiclass")


def test_non_tensor_input():
    with pytest.raises(TypeError, match="`logits`"):
        confusion_loss([0.0, 1.0], torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="`target`"):
        confusion_loss(torch.zeros(2), [0, 1])
    with pytest.raises(TypeError, match="`logits`"):
        confusion_loss(torch.tensor([0, 1]), torch.tensor([0, 1]))  # integer logits
    with pytest.raises(TypeError, match="`metric`"):
        confusion_loss(torch.zeros(2), torch.tensor([0, 1]), 3)


def test_callable_metric_returning_nan():
    def broken(tp, fp, fn, tn):
        return tp / (tp - tp)  # 0 / 0

    with pytest.raises(ValueError, match="`metric`"):
        confusion_loss(torch.zeros(4), torch.tensor([0, 1, 0, 1]), broken)
    with pytest.raises(ValueError, match="`metric`"):
        ConfusionLoss(broken)(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_soft_counts_equal_autograd_through_amplify(dtype):
    """The fused autograd function (closed-form backward) against plain autograd
    through `amplify`, the differentiable building block it inlines."""
    from metricopt.losses.soft_confusion import amplify, binary_soft_counts

    generator = torch.Generator().manual_seed(11)
    logits = (torch.randn(64, 3, generator=generator, dtype=torch.float64) * 3).to(dtype)
    target = (torch.rand(64, 3, generator=generator) < 0.3).to(dtype)
    weights = torch.randn(4, 3, generator=generator, dtype=torch.float64).to(dtype)

    fused_input = logits.clone().requires_grad_(True)
    fused = torch.stack(binary_soft_counts(fused_input, target, 73.0))
    (fused * weights).sum().backward()

    reference_input = logits.clone().requires_grad_(True)
    a, one_minus_a = amplify(torch.sigmoid(reference_input), 73.0)
    reference = torch.stack([
        (target * a).sum(0), ((1 - target) * a).sum(0), (target * one_minus_a).sum(0),
        ((1 - target) * one_minus_a).sum(0),
    ])
    (reference * weights).sum().backward()

    tolerance = 1e-10 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(fused, reference, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(fused_input.grad, reference_input.grad, rtol=tolerance, atol=1e-12)


@pytest.mark.parametrize(("logits", "target"), [
    (torch.zeros(0), torch.zeros(0)),
    (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)),
    (torch.zeros(4, 0), torch.zeros(4, 0)),
])
def test_empty_batch_is_an_error(logits, target):
    with pytest.raises(ValueError, match="`logits` must hold at least one sample"):
        confusion_loss(logits, target)


def _float_metric(tp, fp, fn, tn):
    return 1.0


def _summed_metric(tp, fp, fn, tn):
    return tp.sum()


# A summed (scalar) result is the right shape for micro-averaged (scalar) counts, so that pair is absent.
@pytest.mark.parametrize(("bad_metric", "average"), [
    (_float_metric, "macro"), (_float_metric, "micro"), (_float_metric, "none"),
    (_summed_metric, "macro"), (_summed_metric, "none"),
])
def test_callable_metric_with_a_bad_result_names_metric(bad_metric, average):
    z, y = torch.randn(6, 3), torch.randint(0, 2, (6, 3))
    with pytest.raises(TypeError, match="`metric`"):
        confusion_loss(z, y, bad_metric, average=average)


# --- the loss in real training loops (issue 12: mixed precision, composability, validation) ---------------

CONTRACT_TASKS = ("binary", "multiclass", "multilabel")


def contract_batch(task: str, device: torch.device, n: int = 64, num_classes: int = 5, seed: int = 21):
    """Logits spread over the sigmoid/softmax range and a target with every class present."""
    z, y = random_batch(task, n=n, num_classes=num_classes, scale=3.0, seed=seed, dtype=torch.float32)
    return z.to(device), y.to(device)


def loss_and_gradient(z: torch.Tensor, y: torch.Tensor, name: str, context=None, **options):
    """The loss (computed inside ``context``, e.g. autocast) and its gradient (outside, as AMP recommends)."""
    z = z.detach().clone().requires_grad_(True)
    with context or contextlib.nullcontext():
        loss = confusion_loss(z, y, name, **options)
    (grad,) = torch.autograd.grad(loss, z)
    return loss.detach(), grad


@pytest.mark.parametrize("name", ["f1", "mcc", "gmean"])
@pytest.mark.parametrize("task", CONTRACT_TASKS)
def test_autocast_gives_the_float32_result(task, name, device):
    # under autocast the multi-class confusion matrix was a bfloat16 matmul (MCC loss 0.5000 for 0.5007)
    z, y = contract_batch(task, device)
    expected, expected_grad = loss_and_gradient(z, y, name)
    low = torch.bfloat16 if device.type == "cpu" else torch.float16
    loss, grad = loss_and_gradient(z, y, name, torch.autocast(device_type=device.type, dtype=low))
    assert loss.dtype == torch.float32 and grad.dtype == torch.float32
    torch.testing.assert_close(loss, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("task", CONTRACT_TASKS)
def test_half_logits_give_the_float32_result_of_their_values(task, dtype, device):
    z, y = contract_batch(task, device)
    half = z.to(dtype)
    for name in ("f1", "mcc", "balanced_accuracy"):
        expected, expected_grad = loss_and_gradient(half.float(), y, name)
        for context in (torch.autocast(device_type=device.type, dtype=dtype),
                        torch.autocast(device.type, enabled=False)):
            loss, grad = loss_and_gradient(half, y, name, context)
            assert loss.dtype == torch.float32 and grad.dtype == dtype, (name, loss.dtype, grad.dtype)
            torch.testing.assert_close(loss, expected, rtol=0, atol=1e-5)
            assert torch.equal(grad, expected_grad.to(dtype)), name  # the float32 gradient, rounded once


@pytest.mark.parametrize("name", ["f1", "mcc"])
@pytest.mark.parametrize("task", CONTRACT_TASKS)
def test_torch_func_grad_equals_autograd(task, name, device):
    z, y = contract_batch(task, device, n=16)
    _, expected = loss_and_gradient(z, y, name)
    for validate in (True, False):
        grad = torch.func.grad(lambda logits, validate=validate: confusion_loss(logits, y, name, validate=validate))(z)
        torch.testing.assert_close(grad, expected, rtol=1e-6, atol=1e-9)


def test_a_second_derivative_is_an_error_not_zeros(device):
    z, y = contract_batch("binary", device, n=16)

    def gradient_norm(logits):
        return torch.func.grad(lambda u: confusion_loss(u, y, "f1"))(logits).square().sum()

    # the fused soft counts are differentiable once: torch.func used to see a constant and return zeros
    with pytest.raises(RuntimeError, match="differentiable once.*second derivative"):
        torch.func.grad(gradient_norm)(z)
    # autograd: the backward is @once_differentiable, which metricopt.blackbox detects in the graph
    logits = z.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(confusion_loss(logits, y, "f1"), logits, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(grad.square().sum(), logits)


def test_vmap_over_batches_equals_a_loop(device):
    z = torch.randn(3, 16, generator=torch.Generator().manual_seed(2)).to(device)
    y = (torch.arange(16, device=device) % 3 == 0).long()
    batched = torch.vmap(lambda logits: confusion_loss(logits, y, "mcc", validate=False))(z)
    torch.testing.assert_close(batched, torch.stack([confusion_loss(row, y, "mcc") for row in z]))
    with pytest.raises(RuntimeError, match="validate=False"):  # the host-side check cannot run per batch entry
        torch.vmap(lambda logits: confusion_loss(logits, y, "mcc"))(z)


@pytest.mark.slow  # compiling takes seconds
def test_torch_compile_equals_eager(device):
    for task, name in (("binary", "f1"), ("multiclass", "mcc")):
        z, y = contract_batch(task, device, n=32)
        compiled = torch.compile(ConfusionLoss(name))
        eager_loss, eager_grad = loss_and_gradient(z, y, name)
        logits = z.clone().requires_grad_(True)
        loss = compiled(logits, y)
        loss.backward()
        torch.testing.assert_close(loss.detach(), eager_loss, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(logits.grad, eager_grad, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_float32_gradient_matches_float64_far_into_the_tails(name):
    # 1 - p is sigmoid(-z), not 1 - sigmoid(z): at |z| = 12 the difference lost 0.5 % of the gradient,
    # and for z above 16.6 all of it
    grid = torch.linspace(-12.0, 12.0, 49, dtype=torch.float64)
    y = torch.arange(49) % 2
    gradients = []
    for dtype in (torch.float64, torch.float32):
        z = grid.to(dtype).clone().requires_grad_(True)
        confusion_loss(z, y, name, **beta_for(name)).backward()
        gradients.append(z.grad.double())
    g64, g32 = gradients
    used = g64 != 0  # recall and specificity ignore one label
    assert used.sum() >= 24 and torch.all(g32[used] != 0)
    rel = ((g32 - g64).abs() / g64.abs())[used]
    assert rel.max() <= 1e-5, f"max relative error {rel.max():.2e} at logit {grid[used][rel.argmax()]:.2f}"


# --- validation folded into the loss's own work ------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("task", CONTRACT_TASKS)
def test_non_finite_logits_are_named_on_every_task(task, bad, device):
    z, y = contract_batch(task, device, n=8, num_classes=3)
    z[3, ...] = bad
    with pytest.raises(ValueError, match=r"`logits` must be finite; it contains \[(nan|inf|-inf)"):
        confusion_loss(z, y)
    with pytest.raises(ValueError, match="`logits` must be finite"):
        confusion_loss(z.to(torch.float16), y, "mcc")


def test_large_finite_logits_are_not_an_error(device):
    # their sum overflows to inf: the elementwise check that follows finds every logit finite
    z = torch.full((8,), 3e38, device=device) * torch.tensor([1.0, -1.0] * 4, device=device)
    z[:2] = 3e38
    y = torch.tensor([1, 0] * 4, device=device)
    assert torch.isinf(z.sum())
    assert torch.isfinite(confusion_loss(z, y))


@pytest.mark.parametrize("target", [
    [0.5] * 8 + [2.0],  # sum y (1 - y) = 8 * 0.25 - 2 = 0: a check on that sum alone would pass it
    [0.0, 1.0, 0.5, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0],
    [0.0, 1.0, float("nan"), 1.0, 0.0, 1.0, 0.0, 1.0, 0.0],
    [0.0, 1.0, -1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0],
])
def test_float_targets_outside_0_1_are_named(target, device):
    y = torch.tensor(target, device=device)
    with pytest.raises(ValueError, match="binary `target` must hold only 0 and 1"):
        confusion_loss(torch.randn(9, device=device), y)
    with pytest.raises(ValueError, match="multilabel `target` must hold only 0 and 1"):
        confusion_loss(torch.randn(9, 2, device=device), torch.stack([y, 1 - y.nan_to_num()], 1))


@pytest.mark.parametrize("bad", [2, -1, 7, -(2**40)])
def test_integer_targets_outside_0_1_are_named(bad, device):
    y = torch.tensor([0, 1, bad, 1, 0, 1], device=device)
    with pytest.raises(
        ValueError, match=rf"binary `target` must hold only 0 and 1; got values from {min(0, bad)} to {max(1, bad)}"
    ):
        confusion_loss(torch.randn(6, device=device), y)
    with pytest.raises(ValueError, match="multilabel `target`"):
        confusion_loss(torch.randn(6, 2, device=device), torch.stack([y, 1 - y.clamp(0, 1)], 1))
    with pytest.raises(ValueError, match=r"multi-class `target` must lie in \[0, 3\)"):
        confusion_loss(torch.randn(6, 3, device=device), y.abs() + 2)


def test_validation_is_skipped_when_asked(device):
    z = torch.tensor([0.5, float("nan"), -1.0], device=device)
    assert torch.isnan(confusion_loss(z, torch.tensor([1, 0, 1], device=device), validate=False))
