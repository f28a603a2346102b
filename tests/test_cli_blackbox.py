"""Tests for black-box metrics in ``metricopt train`` (``--method blackbox``, MetricOpt).

Covers :mod:`metricopt.app.recipes.blackbox` and the CLI around it. Runs are tiny
(3 pre-training epochs, 3 meta-training tasks of 20 steps with 4 metric
observations, phi of size 8), a few seconds each. End-to-end tests recompute
the pre-trained model's test metric independently (the backbone retrained
through the library, scored with scikit-learn or by hand) and check the JSON
against the table.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score

from metricopt.app.cli import build_parser, config_from_args, main
from metricopt.app.data import load_dataset, train_val_test_split
from metricopt.app.plots import plot_finetune_curves
from metricopt.app.recipes.blackbox import (
    BlackBoxOptions,
    guidance_rows,
    make_adapter,
    make_blackbox_metric,
    parse_evaluations,
    pretrain_backbone,
    run_blackbox,
    task_data,
    warmup_tasks,
)
from metricopt.app.recipes.classification import make_mlp
from metricopt.blackbox.adapters import FiLM, InputBias
from metricopt.blackbox.threshold import ShiftedLogit
from metricopt.predict import predict_proba

pytestmark = pytest.mark.usefixtures("one_thread")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# --no-trust-check: 3 meta-training tasks are too few for the value function's check (its own test is below).
TINY = ("--epochs", "3", "--meta-tasks", "3", "--finetune-steps", "20", "--evaluations", "4", "--phi-size", "8",
        "--hidden", "16", "--no-trust-check")
JSON_KEYS = {
    "metric", "method", "test_score", "baseline", "baseline_method", "pretrained_score", "higher_is_better",
    "delta", "dataset", "source", "task", "class_names", "n_features", "n_train", "n_val", "n_test", "test_scores",
    "val_scores", "test_metrics", "baseline_metrics", "pretrained_metrics", "best_step", "baseline_best_step",
    "metric_evaluations", "meta_training", "history", "pretrain_history", "seconds", "config", "seed",
    "metricopt_version", "torch_version", "python_version", "torch_threads", "plot", "elapsed_seconds",
}
METRICS_MODULE = '''
import numpy as np
import torch

def neg_brier(y_true, y_score):
    """Higher is better: minus the Brier score of the positive-class probabilities."""
    return -float(np.mean((np.asarray(y_score) - np.asarray(y_true)) ** 2))

def weight_norm(model):
    """Takes the model: the norm of its trainable parameters (phi), lower is better."""
    return float(sum(p.detach().norm() for p in model.parameters() if p.requires_grad))

def three(a, b, c):
    return 0.0

def broken(y_true, y_score):
    raise ZeroDivisionError("boom")

def not_a_number(y_true, y_score):
    return float("nan")

NOT_CALLABLE = 3
'''


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temporary working directory holding ``bbmetrics.py``, importable as a ``--metric`` module."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bbmetrics.py").write_text(METRICS_MODULE)
    (tmp_path / "bbbroken_import.py").write_text("raise RuntimeError('cannot load me')\n")
    monkeypatch.delitem(sys.modules, "bbmetrics", raising=False)
    yield tmp_path
    for name in ("bbmetrics", "bbbroken_import"):
        sys.modules.pop(name, None)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _train_json(workdir: Path, capsys: pytest.CaptureFixture[str], *argv: str,
                output: str = "run.json") -> tuple[dict, str, str]:
    code, out, err = _run(capsys, "train", *TINY, *argv, "--output", output)
    assert code == 0, err
    return json.loads((workdir / output).read_text(), parse_constant=_strict), out, err


def _strict(constant: str) -> float:
    raise AssertionError(f"the JSON output holds {constant}, which strict JSON does not allow")


def _split(name: str = "breast_cancer", seed: int = 0):
    data = load_dataset(name)
    return data, train_val_test_split(data.X, data.y, random_state=seed)


def _pretrained_probs(name: str = "breast_cancer", hidden: tuple[int, ...] = (16,)) -> tuple[np.ndarray, np.ndarray]:
    """Test probabilities of the backbone retrained through the library (phi = 0 is the backbone)."""
    data, split = _split(name)
    model, _ = pretrain_backbone(split, num_classes=data.n_classes, hidden_sizes=hidden, epochs=3)
    return predict_proba(model, split.X_test), split.y_test


def _table_row(out: str, label: str) -> list[str]:
    return next(line for line in out.splitlines() if line.startswith(label)).split()


def _check_results(results: dict, *, metric: str, higher_is_better: bool) -> None:
    assert JSON_KEYS <= results.keys()
    assert (results["metric"], results["method"], results["baseline_method"]) == (metric, "blackbox", "loss_only")
    assert results["higher_is_better"] is higher_is_better
    scores = results["test_scores"]
    assert (results["pretrained_score"], results["baseline"], results["test_score"]) == (
        scores["pretrained"], scores["loss_only"], scores["blackbox"])
    assert results["delta"] == pytest.approx(results["test_score"] - results["baseline"])
    assert results["n_train"] + results["n_val"] + results["n_test"] == 569
    # K = 4 observations per fine-tuning run, each on the guiding rows and (when they are apart: not with guidance
    # "validation") on the selecting rows; 4 test evaluations (breast_cancer is binary: the tuned threshold too),
    # and the threshold tuned with one evaluation per candidate, c = 0 included.
    per_run = 4 if results["guidance"] == "validation" else 8
    assert results["metric_evaluations"]["loss_only"] == results["metric_evaluations"]["blackbox"] == per_run
    assert results["metric_evaluations"]["test"] == 4
    assert 2 <= results["metric_evaluations"]["tuned_threshold"] <= 101 + 2 * 200  # candidates + the resamples
    assert scores["tuned_threshold"] == results["tuned_threshold_score"]
    assert 0 < results["tuned_threshold"] < 1
    confidence = results["tuned_threshold_confidence"]  # None: the best candidate was 0.5 itself
    assert confidence is None or 0 <= confidence <= 1
    if confidence is not None and confidence < 0.9:  # the guard kept 0.5
        assert results["tuned_threshold"] == 0.5 and scores["tuned_threshold"] == scores["pretrained"]
    if results["val_scores"]["tuned_threshold"] != results["val_scores"]["pretrained"]:  # tuning found better
        better = results["val_scores"]["tuned_threshold"] > results["val_scores"]["pretrained"]
        assert better == higher_is_better
    meta = results["meta_training"]
    assert meta["tasks"] == 3 and meta["warmup_tasks"] == 1 and len(meta["history"]) == 3
    assert meta["reptile_iterations"] + meta["joint_steps"] > 0 and meta["seconds"] >= 0
    for name in ("loss_only", "blackbox"):
        rows = results["history"][name]
        assert [row["step"] for row in rows] == list(range(21))
        observed = [row for row in rows if "val_score" in row]
        assert [row["step"] for row in observed] == [0, 7, 13, 20]
        if (results["guidance"], results["start"]) == ("validation", "pretrained"):  # step 0 is that model there
            assert observed[0]["val_score"] == pytest.approx(results["val_scores"]["pretrained"])
    assert [row["epoch"] for row in results["pretrain_history"]] == [1, 2, 3]
    assert results["config"]["blackbox"]["phi_size"] == 8 and results["config"]["loss"] == "blackbox"


# ---------------------------------------------------------------------------
# end to end


def test_builtin_mcr_implies_metricopt(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results, out, err = _train_json(workdir, capsys, "--metric", "mcr")
    _check_results(results, metric="mcr", higher_is_better=False)
    assert results["meta_training"]["resumed_from"] is None
    # Independent check: the pre-trained model's misclassification rate, by scikit-learn.
    probs, y_test = _pretrained_probs()
    assert results["pretrained_score"] == pytest.approx(1 - accuracy_score(y_test, probs > 0.5))
    assert results["pretrained_metrics"]["accuracy"] == pytest.approx(1 - results["pretrained_score"])
    assert results["test_metrics"]["accuracy"] == pytest.approx(1 - results["test_score"])
    # The table: three rows with the direction and the deltas vs loss-only fine-tuning.
    assert "lower is better" in out and "delta = row - loss-only fine-tuning" in out
    # Rows: "pretrained (phi = 0)  test  delta  val", "loss-only fine-tuning  test  val  step",
    # "MetricOpt  test  delta  val  step".
    for label, key, column in (("pretrained", "pretrained", 4), ("loss-only", "loss_only", 2),
                               ("MetricOpt", "blackbox", 1)):
        value = float(_table_row(out, label)[column])
        assert value == pytest.approx(results["test_scores"][key], abs=5e-5)
    assert float(_table_row(out, "MetricOpt")[2]) == pytest.approx(results["delta"], abs=2e-4)
    assert float(_table_row(out, "pretrained")[5]) == pytest.approx(results["pretrained_delta"], abs=2e-4)
    # The fine-tuning plot, at the default path; no tqdm bar when stderr is not a terminal, log lines instead.
    assert (workdir / "metricopt-breast_cancer-mcr.png").read_bytes()[:8] == PNG_MAGIC
    assert results["plot"] == "metricopt-breast_cancer-mcr.png"
    assert err == ""
    assert "meta-training: task 3/3" in out and "pre-trained the backbone" in out


def test_custom_scores_metric_and_same_seed_same_result(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ("--metric", "bbmetrics:neg_brier", "--higher-is-better", "--no-plot", "--quiet")
    results, out, _ = _train_json(workdir, capsys, *argv)
    _check_results(results, metric="bbmetrics:neg_brier", higher_is_better=True)
    assert results["metric_takes"] == "scores" and results["plot"] is None
    probs, y_test = _pretrained_probs()
    assert results["pretrained_score"] == pytest.approx(-np.mean((probs - y_test) ** 2), rel=1e-6)
    assert "higher is better" in out and "meta-training: task" not in out  # --quiet: the table only
    assert not list(workdir.glob("*.png"))
    again, _, _ = _train_json(workdir, capsys, *argv, output="again.json")
    assert again["test_scores"] == results["test_scores"] and again["history"] == results["history"]


def test_model_metric_film_adam_csv(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, _ = _split()
    rows = ["label," + ",".join(f"f{i}" for i in range(data.X.shape[1]))]
    # 0/1 labels: with no/yes the positive class is ambiguous (issue 12: --pos-label names it, tested with the CLI).
    rows += [f"{int(y)}," + ",".join(f"{v:.6g}" for v in x) for x, y in zip(data.X, data.y)]
    (workdir / "data.csv").write_text("\n".join(rows) + "\n")
    results, _, _ = _train_json(
        workdir, capsys, "--csv", "data.csv", "--target", "label", "--method", "blackbox", "--metric",
        "bbmetrics:weight_norm", "--lower-is-better", "--adapter", "film", "--optimizer", "adam", "--no-plot")
    assert results["metric_takes"] == "model" and results["higher_is_better"] is False
    assert results["config"]["blackbox"]["adapter"] == "film"
    assert results["pretrained_score"] == 0.0  # phi = 0 has norm 0
    assert results["test_score"] >= 0.0 and results["dataset"] == "data"


def test_multiclass_builtin_with_explicit_method(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results, _, _ = _train_json(workdir, capsys, "--dataset", "wine", "--method", "blackbox", "--metric", "aucpr",
                                "--no-plot", "--quiet")
    assert results["task"] == "multiclass" and results["higher_is_better"] is True
    assert 0.0 <= results["pretrained_score"] <= 1.0
    assert results["n_train"] + results["n_val"] + results["n_test"] == 178


def test_value_function_check_falls_back_to_loss_only_with_a_warning(
        workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 3 meta-training tasks leave one held-out trajectory of 4 observations: too few to pass the check.
    code, out, err = _run(capsys, "train", *TINY[:-1], "--metric", "mcr", "--no-plot", "--output", "run.json",
                          "--verbose")
    assert code == 0, err
    assert "warning: MetricOpt falls back to loss-only fine-tuning" in err and "--no-trust-check" in err
    results = json.loads((workdir / "run.json").read_text())
    meta = results["meta_training"]
    assert meta["trusted"] is False and meta["guided"] is False
    # The fallback is loss-only fine-tuning with the same seed: the very same run.
    assert results["history"]["blackbox"] == results["history"]["loss_only"]
    assert results["test_score"] == results["baseline"]
    assert "fell back to loss-only fine-tuning" in out
    # --verbose: where the time went, stage by stage, within the whole run's time.
    line = next(line for line in out.splitlines() if line.startswith("time: "))
    assert "pre-training" in line and "3 fine-tuning runs" in line and "in all" in line
    seconds = results["seconds"]
    parts = seconds["meta_training_finetuning"] + seconds["meta_training_value"]
    # (each figure is rounded to the millisecond)
    assert seconds["meta_training_metric"] <= seconds["meta_training_finetuning"] + 1e-3
    assert parts <= seconds["meta_training"] + 2e-3
    assert sum(seconds[k] for k in ("pretrain", "meta_training", "test")) <= results["elapsed_seconds"] + 3e-3
    followed = _train_json(workdir, capsys, "--metric", "mcr", "--no-plot", output="followed.json")[0]
    assert followed["meta_training"]["trusted"] is False and followed["meta_training"]["guided"] is True


def test_guidance_split_and_a_tuned_threshold_start(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results, out, _ = _train_json(workdir, capsys, "--metric", "cost", "--guidance", "split", "--start",
                                  "tuned_threshold", "--no-plot")
    assert (results["guidance"], results["start"]) == ("split", "tuned_threshold")
    assert results["config"]["blackbox"]["guidance"] == "split"
    # Each observation scores the guiding half and the selecting half of the validation rows.
    assert results["metric_evaluations"]["loss_only"] == results["metric_evaluations"]["blackbox"] == 8
    assert "from the tuned-threshold model" in out and "the kept phi chosen on the other half" in out
    assert results["val_scores"]["tuned_threshold"] < results["val_scores"]["pretrained"]  # the 20:1 cost moved it


def test_run_blackbox_starts_at_the_tuned_threshold_and_guides_on_its_rows() -> None:
    data, split = _split()
    options = BlackBoxOptions(meta_tasks=3, finetune_steps=20, evaluations=4, phi_size=8, guidance="split",
                              start="tuned_threshold", trust_check=False)
    run = run_blackbox(split, "cost", num_classes=2, options=options, hidden_sizes=(16,), epochs=3)
    head = run.adapter.backbone
    assert isinstance(head, ShiftedLogit) and head.shift == run.threshold.shift != 0.0
    guide, select = guidance_rows(split, "split")
    # At phi = 0 the adapter is the tuned-threshold model: the first observation of both runs, on the guiding half,
    # and the selecting half's cost there.
    run.adapter.reset_phi()
    metric = run.metric
    for result in run.finetuned.values():
        assert result.trajectory.observed_costs[0] == metric.cost(
            metric.evaluate(run.adapter, split.X_val[guide], split.y_val[guide]))
        assert result.history[0]["select_cost"] == metric.cost(
            metric.evaluate(run.adapter, split.X_val[select], split.y_val[select]))
    assert metric.evaluate(run.adapter, split.X_val, split.y_val) == pytest.approx(run.threshold.value)


def test_guidance_rows_are_disjoint_stratified_and_seeded() -> None:
    _, split = _split()
    y_val = np.asarray(split.y_val)
    everything, none = guidance_rows(split, "validation")
    assert none is None and everything.tolist() == list(range(len(y_val)))
    guide, select = guidance_rows(split, "split", seed=3)
    assert not set(guide) & set(select) and len(guide) + len(select) == len(y_val)
    for c in (0, 1):
        assert abs((y_val[guide] == c).sum() - (y_val[select] == c).sum()) <= 1
    assert guidance_rows(split, "split", seed=3)[0].tolist() == guide.tolist()
    assert guidance_rows(split, "split", seed=4)[0].tolist() != guide.tolist()
    train_rows, validation = guidance_rows(split, "train")
    assert validation.tolist() == list(range(len(y_val)))
    assert np.bincount(np.asarray(split.y_train)[train_rows]).tolist() == np.bincount(y_val).tolist()
    data = task_data(split, 2, guidance="train")
    assert torch.equal(data.X_val, torch.as_tensor(split.X_train[train_rows]))
    assert torch.equal(data.X_select, torch.as_tensor(split.X_val))
    with pytest.raises(ValueError, match="`guidance`"):
        guidance_rows(split, "test")


def test_checkpoint_resumes(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ("--metric", "mcr", "--checkpoint", "ck/meta.pt", "--no-plot")
    first, out, _ = _train_json(workdir, capsys, *argv)
    assert "resumed" not in out and first["meta_training"]["resumed_from"] is None
    assert (workdir / "ck" / "meta.pt").is_file() and (workdir / "ck" / "meta.pt.run.json").is_file()
    second, out, _ = _train_json(workdir, capsys, *argv, output="second.json")
    assert "meta-training resumed from checkpoint 'ck/meta.pt' at task 3 of 3" in out
    assert "resumed from its checkpoint at task 3" in out  # the table's footer says so too
    assert second["meta_training"]["resumed_from"] == 3
    assert second["metric_evaluations"]["meta_training"] == 0 < first["metric_evaluations"]["meta_training"]
    assert second["test_scores"] == first["test_scores"] and second["history"] == first["history"]
    # Another run's settings: refused before meta-training, the checkpoint untouched.
    stamp = (workdir / "ck" / "meta.pt").stat().st_mtime_ns
    code, _, err = _run(capsys, "train", *TINY, *argv, "--value-weight", "2")
    assert code == 2 and err.count("\n") == 1
    assert "holds the meta-training of another run" in err and "value_weight 1.0 -> 2.0" in err
    assert (workdir / "ck" / "meta.pt").stat().st_mtime_ns == stamp
    # A truncated checkpoint (a kill while copying it): one line naming it, before any training.
    good = (workdir / "ck" / "meta.pt").read_bytes()
    (workdir / "ck" / "meta.pt").write_bytes(good[: len(good) // 2])
    code, out, err = _run(capsys, "train", *TINY, *argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "error: --checkpoint 'ck/meta.pt' is truncated or corrupt" in lines[0] and "pre-trained" not in out
    (workdir / "ck" / "meta.pt").write_bytes(good)
    (workdir / "ck" / "meta.pt.run.json").unlink()
    code, _, err = _run(capsys, "train", *TINY, *argv)
    assert code == 2 and "has no run record" in err


# ---------------------------------------------------------------------------
# errors: one line on stderr, exit status 2


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--metric", "bbnosuchmodule:f", "--higher-is-better"], "cannot import module 'bbnosuchmodule'"),
        (["--metric", "bbbroken_import:f", "--higher-is-better"], "RuntimeError: cannot load me"),
        (["--metric", "bbmetrics:three", "--higher-is-better"], "must take (y_true, y_score) or (model)"),
        (["--metric", "bbmetrics:nope", "--higher-is-better"], "has no attribute 'nope'"),
        (["--metric", "bbmetrics:NOT_CALLABLE", "--lower-is-better"], "not callable"),
        (["--metric", "bbmetrics:neg_brier"], "pass --higher-is-better or --lower-is-better"),
        (["--metric", "bbmetrics:neg_brier", "--higher-is-better", "--lower-is-better"], "contradict each other"),
        (["--method", "blackbox", "--metric", "f1", "--higher-is-better", "--lower-is-better"], "contradict"),
        (["--metric", "mcr", "--higher-is-better"], "--higher-is-better contradicts the built-in metric 'mcr'"),
        (["--method", "blackbox", "--metric", "f1", "--lower-is-better"], "built-in metric 'f1'"),
        (["--metric", "f1", "--phi-size", "8"], "--phi-size applies to --method blackbox"),
        (["--metric", "ap", "--checkpoint", "x.pt"], "--checkpoint applies to --method blackbox"),
        (["--loss", "bce", "--meta-tasks", "2"], "--meta-tasks applies to --method blackbox"),
        (["--higher-is-better"], "--higher-is-better applies to --method blackbox"),
        (["--optimizer", "adam"], "--optimizer applies to --method blackbox"),
        (["--metric", "bbmetrics:neg_brier", "--higher-is-better", "--loss", "anyloss"],
         "only --method blackbox trains for it"),
        (["--metric", "mcr", "--loss", "bce"], "only --method blackbox trains for it"),
        (["--method", "blackbox", "--metric", "ndcg@10"], "is not a black-box metric"),
        (["--method", "blackbox", "--metric", "ap", "--margin", "0.1"], "--margin applies to the rank losses"),
        (["--metric", "mcr", "--evaluations", "1"], "--evaluations must be at least 2"),
        (["--metric", "mcr", "--evaluations", "1.5"], "must lie in (0, 1]"),
        (["--metric", "mcr", "--evaluations", "many"], "--evaluations must be a count"),
        (["--metric", "mcr", "--phi-size", "0"], "--phi-size must be an integer >= 1"),
        (["--metric", "mcr", "--meta-tasks", "0"], "--meta-tasks"),
        (["--metric", "mcr", "--value-weight=-1"], "--value-weight"),
        (["--metric", "mcr", "--finetune-lr", "0"], "--finetune-lr"),
        (["--metric", "mcr", "--adapter", "film", "--hidden", ""],
         "--adapter 'film' modulates the hidden Linear layers and this model has none (--hidden is empty)"),
        (["--metric", "cost", "--dataset", "wine"], "binary only"),
        (["--metric", "mcr", "--target", "y"], "--target needs --csv"),
    ],
)
def test_input_errors_are_one_line(
    workdir: Path, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    before = set(workdir.iterdir())
    code, out, err = _run(capsys, "train", "--no-plot", *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("metricopt: error: "), err
    assert expected in lines[0]
    assert "Traceback" not in err and not out  # fails before any training or status line
    assert set(workdir.iterdir()) - before <= {workdir / "__pycache__"}


@pytest.mark.parametrize(("function", "expected"), [
    ("broken", "metric 'bbmetrics:broken' raised ZeroDivisionError: boom"),
    ("not_a_number", "metric 'bbmetrics:not_a_number' returned nan"),
])
def test_metric_failing_during_the_run_is_one_line(
    workdir: Path, capsys: pytest.CaptureFixture[str], function: str, expected: str
) -> None:
    code, _, err = _run(capsys, "train", *TINY, "--metric", f"bbmetrics:{function}", "--higher-is-better",
                        "--no-plot", "--quiet", "-o", "run.json")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("metricopt: error: ") and expected in lines[0], err
    assert not (workdir / "run.json").exists()


def test_other_methods_unchanged_by_the_new_options() -> None:
    parser = build_parser()
    config = config_from_args(parser.parse_args(["train", "--metric", "gmean"]))
    assert (config.loss, config.metric, config.higher_is_better, config.blackbox) == ("anyloss", "gmean", None, None)
    config = config_from_args(parser.parse_args(["train", "--metric", "ap"]))
    assert (config.loss, config.blackbox) == ("rambo", None)
    config = config_from_args(parser.parse_args(["train", "--metric", "mcr", "--evaluations", "5%"]))
    assert (config.loss, config.higher_is_better, config.blackbox.evaluations) == ("blackbox", False, 0.05)
    config = config_from_args(parser.parse_args(["train", "--method", "blackbox"]))
    assert (config.metric, config.higher_is_better, config.blackbox) == ("f1", True, BlackBoxOptions())


def test_help_lists_blackbox_options(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "train", "--help")
    assert code == 0
    for text in ("--method", "blackbox", "MODULE:FUNCTION", "--higher-is-better", "--lower-is-better", "--adapter",
                 "--phi-size", "--meta-tasks", "--finetune-steps", "--evaluations", "--value-weight", "--optimizer",
                 "--finetune-lr", "--checkpoint", "metricopt train --metric mcr"):
        assert text in out


# ---------------------------------------------------------------------------
# library pieces


def test_parse_evaluations_and_options() -> None:
    assert parse_evaluations(" 12 ") == 12 and parse_evaluations("0.1") == 0.1 and parse_evaluations("2.5%") == 0.025
    assert BlackBoxOptions(finetune_steps=200, evaluations=0.05).evaluation_count == 10
    assert BlackBoxOptions(finetune_steps=10, evaluations=50).evaluation_count == 11  # at most T + 1
    with pytest.raises(ValueError, match="`evaluations` must be a count"):
        parse_evaluations("ten")
    with pytest.raises(ValueError, match="`adapter` must be one of input_bias, film; got 'lora'"):
        BlackBoxOptions(adapter="lora")
    with pytest.raises(ValueError, match="`optimizer` must be one of"):
        BlackBoxOptions(optimizer="rmsprop")
    with pytest.raises(ValueError, match="`checkpoint` must be a file path"):
        BlackBoxOptions(checkpoint=" ")
    assert [warmup_tasks(n) for n in (1, 3, 8, 16, 40, 2000)] == [1, 1, 2, 4, 4, 4]
    config = BlackBoxOptions(meta_tasks=8, finetune_steps=30, optimizer="adam").finetune_config(64)
    assert (config.steps, config.optimizer, config.batch_size) == (30, "adam", 64)
    assert BlackBoxOptions(meta_tasks=8).meta_config(seed=3).warmup_tasks == 2


def test_make_blackbox_metric_and_adapters() -> None:
    assert make_blackbox_metric("cost").higher_is_better is False
    assert make_blackbox_metric("aucpr", higher_is_better=True).name == "aucpr"
    with pytest.raises(ValueError, match="binary only"):
        make_blackbox_metric("cost", num_classes=3)
    with pytest.raises(ValueError, match="not a black-box metric"):
        make_blackbox_metric("recall@4")
    backbone = make_mlp(5, 1, (4, 3))
    x = torch.randn(7, 5)
    expected = backbone(x)
    adapter = make_adapter(backbone, "film", phi_size=6)
    assert isinstance(adapter, FiLM) and adapter.film_layers == ("0", "2")
    assert torch.equal(adapter(x), expected)
    adapter.remove()
    assert isinstance(make_adapter(make_mlp(5, 1, (4,)), phi_size=6), InputBias)
    with pytest.raises(ValueError, match="`adapter` 'film' modulates"):
        make_adapter(make_mlp(5, 1, ()), "film")


def test_plot_finetune_curves(tmp_path: Path) -> None:
    rows = [{"step": 0.0, "loss": 0.7, "val_score": 0.5}, {"step": 1.0, "loss": 0.6},
            {"step": 2.0, "val_score": 0.5}]
    out = plot_finetune_curves({"loss_only": rows, "blackbox": rows}, "my:metric $x$", tmp_path / "a" / "c.png",
                               higher_is_better=True)
    assert out.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="no steps"):
        plot_finetune_curves({"x": []}, "m", tmp_path / "d.png", higher_is_better=False)


def test_method_metricopt_is_a_deprecated_name_of_blackbox(capsys: pytest.CaptureFixture[str]) -> None:
    from metricopt.app.cli import build_parser, config_from_args

    args = build_parser().parse_args(["train", "--method", "metricopt", "--metric", "mcr"])
    assert args.loss == "blackbox" and config_from_args(args).loss == "blackbox"
    assert "--method metricopt is now --method blackbox" in capsys.readouterr().err
