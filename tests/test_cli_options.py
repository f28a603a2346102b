"""Command-line friction a new user found (each test failed before its fix).

* ``--drop`` leaves CSV columns out (an identifier one-hot encoded into
  thousands of features), and a column that looks like an identifier warns.
* Metric names are case-insensitive, recorded in lower case.
* Options of another family (``--amplification`` with a rank or black-box
  metric) are errors naming the option and the metric.
* Numeric options are checked before any output.
* ``--output`` / ``--plot`` in a missing folder: an error naming it, before
  training, nothing created.
* Warnings are one line ``metricopt: warning: <message>``.
* Library messages name Python arguments; the command line names the options.
"""

from __future__ import annotations

import ast
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import metricopt
from metricopt.app.cli import build_parser, config_from_args, main

pytestmark = pytest.mark.usefixtures("one_thread")

SRC = Path(metricopt.__file__).parent
TINY = ("--epochs", "1", "--hidden", "4", "--no-plot", "--quiet")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training would be an error: these mistakes must be found before it starts."""
    def train(*args: object, **kwargs: object) -> None:
        raise AssertionError("training started")

    for name in ("confusion.train_classifier", "ranking.fit_rank_method", "blackbox.run_blackbox"):
        monkeypatch.setattr(f"metricopt.app.cli.{name}", train)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The one error line of a run that fails before any output."""
    code, out, err = _run(capsys, "train", *argv)
    assert code == 2 and not out, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("metricopt: error: "), err
    return lines[0]


def _id_csv(path: Path, n: int = 120, seed: int = 0) -> Path:
    """An identifier column ``id`` (one value per row) beside two numbers, a colour and the label."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue"], size=n)
    label = np.where(x1 + rng.normal(scale=0.5, size=n) > 0.3, "yes", "no")
    rows = [f"u{i:05d},{a:.4f},{b:.4f},{c},{d}" for i, (a, b, c, d) in enumerate(zip(x1, x2, colour, label))]
    path.write_text("id,x1,x2,colour,label\n" + "\n".join(rows) + "\n")
    return path


# ---------------------------------------------------------------------------
# a. --drop and the identifier warning


def test_drop_leaves_the_identifier_out_and_records_it(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _id_csv(workdir / "d.csv")
    code, _, err = _run(capsys, "train", "--csv", "d.csv", "--target", "label", "--pos-label", "yes",
                        "--drop", "id", *TINY, "-o", "r.json")
    assert code == 0, err
    assert "warning" not in err
    results = json.loads((workdir / "r.json").read_text())
    assert results["n_features"] == 5  # x1, x2 and the three colours
    assert results["config"]["drop"] == ["id"]


def test_without_drop_an_identifier_warns_once_in_one_line(workdir: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    _id_csv(workdir / "d.csv")
    code, _, err = _run(capsys, "train", "--csv", "d.csv", "--target", "label", "--pos-label", "yes", *TINY,
                        "-o", "r.json")
    assert code == 0, err
    warned = [line for line in err.splitlines() if "warning" in line]
    assert warned == [
        "metricopt: warning: column 'id' has 120 distinct values in 120 rows and looks like an identifier "
        "(one-hot encoding makes a feature of each value): leave it out with --drop='id'"
    ], err
    assert json.loads((workdir / "r.json").read_text())["n_features"] == 5 + 120


@pytest.mark.parametrize(("argv", "expected"), [
    (["--drop", "ID"], "--drop names 'ID', which is not a column of path='d.csv'; available columns: "
                       "['id', 'x1', 'x2', 'colour', 'label']"),
    (["--drop", "id,nope,x1"], "--drop names 'nope', which is not a column"),
    (["--drop", "label"], "--drop names the target column 'label'"),
    (["--drop", "id,"], "--drop must be comma-separated column names"),
    (["--drop", "id,x1,x2,colour"], "has no feature columns besides target='label' and the --drop columns"),
])
def test_drop_errors_name_the_option_and_the_columns(workdir: Path, capsys: pytest.CaptureFixture[str],
                                                     no_training: None, argv: list[str], expected: str) -> None:
    _id_csv(workdir / "d.csv", n=30)
    line = _error(capsys, "--csv", "d.csv", "--target", "label", "--pos-label", "yes", "--no-plot", *argv)
    assert expected in line


def test_drop_needs_a_csv(workdir: Path, capsys: pytest.CaptureFixture[str], no_training: None) -> None:
    line = _error(capsys, "--dataset", "breast_cancer", "--drop", "id", "--no-plot")
    assert "--drop needs --csv" in line and "--dataset breast_cancer" in line


def test_drop_may_be_repeated(workdir: Path) -> None:
    _id_csv(workdir / "d.csv", n=30)
    args = build_parser().parse_args(["train", "--csv", "d.csv", "--target", "label", "--drop", "id",
                                      "--drop", "x2, id"])
    assert config_from_args(args).drop == ("id", "x2")


# ---------------------------------------------------------------------------
# b. metric names are case-insensitive


@pytest.mark.parametrize(("given", "metric", "method"), [
    ("F1", "f1", "anyloss"), (" GMean ", "gmean", "anyloss"), ("MCC", "mcc", "anyloss"), ("AP", "ap", "rambo"),
    ("Recall@4", "recall@4", "rambo"), ("Recall", "recall", "anyloss"), ("MCR", "mcr", "blackbox"),
    ("AucPR", "aucpr", "blackbox"),
])
def test_metric_names_are_case_insensitive(given: str, metric: str, method: str) -> None:
    config = config_from_args(build_parser().parse_args(["train", "--metric", given]))
    assert (config.metric, config.loss) == (metric, method)


def test_blackbox_builtin_in_capitals_with_method() -> None:
    args = build_parser().parse_args(["train", "--method", "blackbox", "--metric", "F1"])
    config = config_from_args(args)
    assert (config.metric, config.higher_is_better) == ("f1", True)


def test_canonical_metric_in_the_json(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "train", "--metric", "F1", *TINY, "-o", "r.json")
    assert code == 0, err
    results = json.loads((workdir / "r.json").read_text())
    assert results["metric"] == results["config"]["metric"] == "f1" and "f1" in results["test_metrics"]


def test_unknown_metric_error_says_names_are_case_insensitive(capsys: pytest.CaptureFixture[str]) -> None:
    line = _error(capsys, "--metric", "F2")
    assert "case-insensitive" in line and "got --metric='F2'" in line


# ---------------------------------------------------------------------------
# c. options of another family are errors


@pytest.mark.parametrize(("argv", "expected"), [
    (["--metric", "ap", "--amplification", "5"],
     "--amplification applies to the AnyLoss confusion loss (confusion-matrix metrics) only; got --metric ap"),
    (["--metric", "NDCG@3", "--amplification", "auto"], "--amplification applies to the AnyLoss"),
    (["--metric", "mcr", "--amplification", "5"],
     "--amplification applies to the AnyLoss confusion loss, not to --method blackbox; got --metric mcr"),
    (["--method", "blackbox", "--metric", "f1", "--amplification", "73"], "got --metric f1"),
    (["--method", "blackbox", "--metric", "ap", "--margin", "0.1"], "--margin applies to the rank losses"),
    (["--metric", "f1", "--interpolation", "2"], "--interpolation applies to rank metrics"),
])
def test_options_of_another_family_name_option_and_metric(capsys: pytest.CaptureFixture[str], no_training: None,
                                                          argv: list[str], expected: str) -> None:
    assert expected in _error(capsys, "--no-plot", *argv)


def test_amplification_default_is_not_given() -> None:
    parser = build_parser()
    assert parser.parse_args(["train"]).amplification is None
    assert config_from_args(parser.parse_args(["train"])).amplification == 73.0
    assert config_from_args(parser.parse_args(["train", "--metric", "ap"])).amplification == 73.0
    assert config_from_args(parser.parse_args(["train", "--amplification", "auto"])).amplification == "auto"
    assert config_from_args(parser.parse_args(["train", "--amplification", "12.5"])).amplification == 12.5


# ---------------------------------------------------------------------------
# d. every numeric option checked in config_from_args, before any output


@pytest.mark.parametrize(("argv", "expected"), [
    (["--epochs", "0"], "--epochs must be an integer >= 1; got 0"),
    (["--epochs=-3"], "--epochs must be an integer >= 1; got -3"),
    (["--batch-size", "0"], "--batch-size must be an integer >= 1; got 0"),
    (["--lr", "0"], "--lr must be a finite number > 0; got 0.0"),
    (["--lr", "nan"], "--lr must be a finite number > 0; got nan"),
    (["--lr", "inf"], "--lr must be a finite number > 0; got inf"),
    (["--hidden", "64,0"], "got --hidden='64,0'"),
    (["--hidden", "64,-8"], "got --hidden='64,-8'"),
    (["--hidden", "64,,8"], "got --hidden='64,,8'"),
    (["--seed=-1"], "--seed must be an integer from 0 to 4294967295; got --seed=-1"),
    (["--amplification", "nan"], "got --amplification='nan'"),
    (["--amplification=-2"], "got --amplification='-2'"),
    (["--nproc", "0"], "--nproc must be >= 1"),
    (["--metric", "ap", "--interpolation", "nan"], "--interpolation must be a finite number > 0; got nan"),
    (["--metric", "ap", "--margin", "inf"], "--margin must be a finite number >= 0; got inf"),
    (["--metric", "ap", "--memory-size=-1"], "--memory-size must be an integer >= 0"),
    (["--metric", "recall@1", "--embedding-dim", "1"], "--embedding-dim must be an integer >= 2; got 1"),
    (["--metric", "mcr", "--finetune-steps", "0"], "--finetune-steps must be an integer >= 1; got 0"),
    (["--metric", "mcr", "--finetune-lr", "nan"], "--finetune-lr must be a finite number > 0; got nan"),
    (["--metric", "mcr", "--value-weight=-1"], "--value-weight must be a finite number >= 0; got -1.0"),
])
def test_numeric_options_checked_before_any_output(capsys: pytest.CaptureFixture[str], no_training: None,
                                                   argv: list[str], expected: str) -> None:
    with pytest.raises(ValueError, match="^--"):  # the configuration step itself names the option
        config_from_args(build_parser().parse_args(["train", *argv]))
    line = _error(capsys, *argv)  # nothing on stdout: no status line before the error
    assert expected in line


# ---------------------------------------------------------------------------
# e. --output and --plot in a missing folder


@pytest.mark.parametrize(("argv", "expected"), [
    (["--no-plot", "--output", "missing/dir/out.json"],
     "--output='missing/dir/out.json' cannot be written: the folder 'missing/dir' does not exist"),
    (["--plot", "figs/c.png"], "--plot='figs/c.png' cannot be written: the folder 'figs' does not exist"),
    (["--no-plot", "-o", "{tmp}/nope/r.json"], "the folder '{tmp}/nope' does not exist"),
])
def test_missing_output_folder_is_an_error_before_training(workdir: Path, capsys: pytest.CaptureFixture[str],
                                                           no_training: None, argv: list[str],
                                                           expected: str) -> None:
    line = _error(capsys, *(arg.format(tmp=workdir) for arg in argv))
    assert expected.format(tmp=workdir) in line
    assert list(workdir.iterdir()) == []  # no folder created


def test_existing_output_folder_is_written(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "runs").mkdir()
    code, out, err = _run(capsys, "train", *TINY, "-o", "runs/r.json")
    assert code == 0, err
    assert json.loads((workdir / "runs" / "r.json").read_text())["metric"] == "f1"


# ---------------------------------------------------------------------------
# f. warnings: one line, the hooks restored


def test_warnings_are_one_line_and_hooks_restored(workdir: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def run_train(*args: object, **kwargs: object) -> None:
        warnings.warn("the `learning_rate` is\nlarge", UserWarning, stacklevel=1)
        raise ValueError("stop here")

    monkeypatch.setattr("metricopt.app.cli.train.run_train", run_train)
    before = (warnings.showwarning, warnings.formatwarning)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        code, _, err = _run(capsys, "--no-plot", "-q")
    assert code == 2
    assert err.splitlines() == ["metricopt: warning: the --lr is large", "metricopt: error: stop here"]
    assert "test_cli_options.py" not in err
    assert (warnings.showwarning, warnings.formatwarning) == before


# ---------------------------------------------------------------------------
# 2. the library names its arguments, the command line its options


def test_flag_wording() -> None:
    from metricopt.app.cli.wording import FLAGS, flag_errors, flag_wording

    assert flag_wording("`adapter` must be one of input_bias, film; got 'x'") == \
        "--adapter must be one of input_bias, film; got 'x'"
    assert flag_wording("pass `higher_is_better=True` or `higher_is_better=False`") == \
        "pass --higher-is-better or --lower-is-better"
    assert flag_wording("`target` and `num_classes` stay") == "`target` and `num_classes` stay"
    assert all(flag.startswith("--") for flag in FLAGS.values())
    with pytest.raises(TypeError, match="^--metric 'x' names 3"), flag_errors():
        raise TypeError("`spec` 'x' names 3")
    with pytest.raises(ValueError, match="^unrelated$"), flag_errors():
        raise ValueError("unrelated")


#: Library modules whose messages must never name an option of the command line.
LIBRARY = sorted([*SRC.glob("app/recipes/*.py"), *SRC.glob("app/data/*.py"), SRC / "blackbox" / "metric.py"])


@pytest.mark.parametrize("path", LIBRARY, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_library_messages_name_no_option(path: Path) -> None:
    """No string in a ``raise`` or ``warnings.warn`` of a library module names a ``--flag``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        is_warn = (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                   and node.func.attr == "warn")
        if isinstance(node, ast.Raise) or is_warn:
            for part in ast.walk(node):
                if isinstance(part, ast.Constant) and isinstance(part.value, str) and " --" in f" {part.value}":
                    text = part.value
                    if "pip install" not in text:
                        found.append((part.lineno, text))
    assert not found, found


# ---------------------------------------------------------------------------
# --model lightgbm: boosted trees for binary confusion-matrix metrics


@pytest.mark.parametrize(("argv", "expected"), [
    (["--model", "lightgbm", "--metric", "ap"],
     "--model lightgbm trains for confusion-matrix metrics; got --metric ap"),
    (["--model", "lightgbm", "--loss", "focal"],
     "--model lightgbm takes --loss anyloss, bce, weighted_bce; got --loss focal"),
    (["--model", "lightgbm", "--nproc", "2"], "--model lightgbm trains in one process"),
    (["--model", "lightgbm", "--amplification", "auto"], "--amplification auto is for the MLP's batches"),
    (["--model", "lightgbm", "--metric", "mcr"], "--method blackbox fine-tunes an MLP's adapter"),
])
def test_lightgbm_model_option_errors(capsys: pytest.CaptureFixture[str], no_training: None,
                                      argv: list[str], expected: str) -> None:
    assert expected in _error(capsys, "--no-plot", *argv)


def test_lightgbm_model_trains_both_methods_and_records_the_model(workdir: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("lightgbm")
    parser = build_parser()
    assert config_from_args(parser.parse_args(["train", "--model", "lightgbm"])).amplification == 20.0
    assert config_from_args(parser.parse_args(["train", "--model", "lightgbm", "--amplification", "9"])).amplification \
        == 9.0
    assert main(["train", "--model", "lightgbm", "--metric", "mcc", "-q", "--plot", "curves.png",
                 "--output", "run.json"]) == 0
    results = json.loads((workdir / "run.json").read_text())
    assert results["config"]["model"] == "lightgbm" and results["config"]["amplification"] == 20.0
    assert results["test_score"] > 0.7 and results["baseline"] > 0.7  # every row malignant: MCC 0
    assert results["best_epoch"] == max(range(len(results["history"]["anyloss"])),
                                        key=lambda i: (results["history"]["anyloss"][i]["val_score"], -i)) + 1
    assert (workdir / "curves.png").stat().st_size > 1000
    capsys.readouterr()


@pytest.mark.parametrize(("argv", "expected"), [
    (["--tune-threshold", "--metric", "ap"], "--tune-threshold tunes the decision threshold of a confusion-matrix "
                                             "metric; got --metric ap"),
    (["--tune-threshold", "--metric", "mcr"], "--tune-threshold is for confusion-matrix metrics"),
    (["--tune-threshold", "--dataset", "wine"], "--tune-threshold tunes a binary decision threshold; the data have "
                                                "3 classes"),
    (["--model", "lightgbm", "--loss", "weighted_bce", "--dataset", "wine"],
     "--model lightgbm --loss weighted_bce weights the classes with LightGBM's is_unbalance"),
])
def test_tune_threshold_and_ensemble_option_errors(capsys: pytest.CaptureFixture[str], argv: list[str],
                                                   expected: str) -> None:
    assert expected in _error(capsys, "--no-plot", "--epochs", "1", *argv)


def test_ensemble_with_tuned_thresholds_scores_each_method_at_its_own(workdir: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """--model mlp+lightgbm --tune-threshold: the estimator's recipe from the command line; the thresholds
    reported are those that maximise the metric on the validation split, and the test scores are taken at them."""
    pytest.importorskip("lightgbm")
    assert main(["train", "--model", "mlp+lightgbm", "--loss", "weighted_bce", "--tune-threshold", "--metric",
                 "mcc", "--epochs", "5", "-q", "--no-plot", "--output", "run.json"]) == 0
    results = json.loads((workdir / "run.json").read_text())
    assert results["config"]["model"] == "mlp+lightgbm" and results["config"]["tune_threshold"] is True
    assert set(results["thresholds"]) == {"weighted_bce", "bce"}
    assert all(0 < t < 1 for t in results["thresholds"].values())
    assert "thresholds tuned on the validation split" in capsys.readouterr().out
    assert results["test_score"] > 0.7 and results["baseline"] > 0.7  # every row malignant: MCC 0
