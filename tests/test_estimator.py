"""MetricClassifier: the scikit-learn contract, reproducibility, and that it trains for its metric."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.metrics import f1_score, matthews_corrcoef
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from metricopt import MetricClassifier

FAST = dict(max_epochs=8, random_state=0)


@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    return train_test_split(X, 1 - y, test_size=0.3, random_state=0, stratify=1 - y)  # positive = malignant


@pytest.fixture(scope="module")
def wine():
    return load_wine(return_X_y=True)


def test_fit_predict_score_binary(cancer):
    X_train, X_test, y_train, y_test = cancer
    clf = MetricClassifier("f1", **FAST).fit(X_train, y_train)
    proba = clf.predict_proba(X_test)
    assert proba.shape == (len(X_test), 2)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    predicted = clf.predict(X_test)
    np.testing.assert_array_equal(predicted, (proba[:, 1] > 0.5).astype(int))
    assert clf.score(X_test, y_test) == pytest.approx(f1_score(y_test, predicted))
    assert clf.score(X_test, y_test) > 0.85
    assert clf.n_features_in_ == X_train.shape[1]
    assert 1 <= clf.best_epoch_ <= FAST["max_epochs"]
    assert len(clf.history_) == FAST["max_epochs"]


def test_string_labels_and_multiclass(wine):
    X, y = wine
    names = np.array(["barolo", "grignolino", "barbera"])[y]
    clf = MetricClassifier("mcc", max_epochs=30, random_state=0).fit(X, names)
    assert set(clf.classes_) == set(names)
    assert clf.predict_proba(X).shape == (len(X), 3)
    predicted = clf.predict(X)
    assert set(predicted) <= set(names)
    assert clf.score(X, names) == pytest.approx(matthews_corrcoef(names, predicted))
    assert clf.score(X, names) > 0.8


def test_reproducible_and_clone(cancer):
    X_train, X_test, y_train, _ = cancer
    first = MetricClassifier("gmean", **FAST).fit(X_train, y_train)
    second = clone(first).fit(X_train, y_train)
    np.testing.assert_array_equal(first.predict_proba(X_test), second.predict_proba(X_test))
    other_seed = MetricClassifier("gmean", max_epochs=8, random_state=1).fit(X_train, y_train)
    assert not np.array_equal(first.predict_proba(X_test), other_seed.predict_proba(X_test))


def test_params_roundtrip():
    clf = MetricClassifier("mcc", "focal", amplification="auto", hidden_layer_sizes=(8,))
    params = clf.get_params()
    assert params["metric"] == "mcc" and params["loss"] == "focal" and params["amplification"] == "auto"
    clf.set_params(metric="f1", max_epochs=3)
    assert clf.metric == "f1" and clf.max_epochs == 3


def test_pipeline_cross_val_and_grid_search(wine):
    X, y = wine
    pipe = make_pipeline(StandardScaler(), MetricClassifier("balanced_accuracy", max_epochs=15, random_state=0))
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,) and np.all((scores > 0.5) & (scores <= 1.0))
    grid = {"loss": ["anyloss", "bce"], "batch_size": np.array([32, 64])}  # numpy integers, as np.arange gives
    search = GridSearchCV(MetricClassifier("f1", max_epochs=5, random_state=0), grid, cv=2).fit(X, y)
    scores = search.cv_results_["mean_test_score"]
    assert len(scores) == 4 and np.all(np.isfinite(scores))
    assert search.best_score_ == scores.max()


@pytest.mark.parametrize("loss", ["anyloss", "bce", "weighted_bce", "focal"])
def test_every_loss_trains(cancer, loss):
    X_train, X_test, y_train, y_test = cancer
    assert MetricClassifier("f1", loss, **FAST).fit(X_train, y_train).score(X_test, y_test) > 0.8


def test_anyloss_beats_bce_on_f1_for_a_rare_class():
    """Breast cancer with most malignant cases dropped (5.6% positive): at threshold 0.5
    the F1-trained model beats cross-entropy on F1 (measured: 0.59 vs 0.37, mean of 3 seeds)."""
    X, y = load_breast_cancer(return_X_y=True)
    y = 1 - y
    rng = np.random.default_rng(0)
    keep = (y == 0) | (rng.random(len(y)) < 0.09)
    X, y = X[keep], y[keep]
    results = {"anyloss": [], "bce": []}
    for seed in range(3):
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.4, random_state=seed, stratify=y)
        for loss in results:
            clf = MetricClassifier("f1", loss, max_epochs=40, random_state=seed).fit(X_train, y_train)
            results[loss].append(clf.score(X_test, y_test))
    assert np.mean(results["anyloss"]) > np.mean(results["bce"]) + 0.1, results


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(metric="f2"), "metric"),
        (dict(loss="hinge"), "loss"),
        (dict(validation_fraction=1.5), "validation_fraction"),
        (dict(amplification=0.0), "amplification"),
        (dict(max_epochs=0), "max_epochs"),
        (dict(batch_size=2.5), "batch_size"),
        (dict(hidden_layer_sizes=(1.5,)), "hidden_sizes"),
        (dict(hidden_layer_sizes=(0,)), "hidden_sizes"),
        (dict(weight_decay=-1.0), "weight_decay"),
        (dict(metric="f1", beta=2.0), "beta"),
        (dict(metric="fbeta", beta=-1.0), "beta"),
        (dict(sharpness=0.0), "sharpness"),
    ],
)
def test_bad_parameters_raise_at_fit(cancer, params, match):
    X_train, _, y_train, _ = cancer
    with pytest.raises(ValueError, match=match):
        MetricClassifier(**{**FAST, **params}).fit(X_train, y_train)


def test_bad_data(cancer):
    X_train, X_test, y_train, _ = cancer
    with pytest.raises(ValueError, match="2 classes"):
        MetricClassifier(**FAST).fit(X_train, np.zeros(len(X_train)))
    with pytest.raises(ValueError):
        MetricClassifier(**FAST).fit(X_train, y_train[:-1])
    X_nan = X_train.copy()
    X_nan[0, 0] = np.nan
    with pytest.raises(ValueError):
        MetricClassifier(**FAST).fit(X_nan, y_train)
    clf = MetricClassifier(**FAST).fit(X_train, y_train)
    with pytest.raises(ValueError, match="features"):
        clf.predict(X_test[:, :5])
    with pytest.raises(ValueError, match="unseen"):
        clf.score(X_test[:3], [0, 1, 7])


def test_predict_before_fit_raises(cancer):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        MetricClassifier().predict(cancer[0])


def test_sklearn_style_parameters(cancer):
    X_train, X_test, y_train, _ = cancer
    one_layer = MetricClassifier(hidden_layer_sizes=8, **FAST).fit(X_train, y_train)
    assert [m.out_features for m in one_layer.model_ if hasattr(m, "out_features")] == [8, 1]
    numpy_options = MetricClassifier(max_epochs=np.int64(3), batch_size=np.int64(64), random_state=np.int64(0))
    assert len(numpy_options.fit(X_train, y_train).history_) == 3
    a = MetricClassifier(max_epochs=3, random_state=np.random.RandomState(5)).fit(X_train, y_train)
    b = MetricClassifier(max_epochs=3, random_state=np.random.RandomState(5)).fit(X_train, y_train)
    np.testing.assert_array_equal(a.predict_proba(X_test), b.predict_proba(X_test))


def test_sharpness_reaches_the_multiclass_loss(wine):
    X, y = wine
    soft = MetricClassifier("mcc", sharpness=0.5, max_epochs=3, random_state=0).fit(X, y)
    sharp = MetricClassifier("mcc", sharpness=8.0, max_epochs=3, random_state=0).fit(X, y)
    assert soft.history_[0]["train_loss"] != sharp.history_[0]["train_loss"]
