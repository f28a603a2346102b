"""Load user data from CSV files into :class:`TabularDataset` objects.

The training CSV defines the encoding: numeric columns are kept (NaN filled
with the training median), every other column is one-hot encoded over the
training categories. An optional test CSV is encoded with exactly the same
columns, categories and medians; categories it has that training lacked
encode as all zeros.

The target column may hold any values. Classes are sorted; with two classes
the less frequent one (ties: the larger sorted value) is the positive class
and becomes label 1, the other label 0. ``class_names`` records the original
values as strings.

Example:
    >>> from metricopt.data import load_csv
    >>> train, test = load_csv("train.csv", "label", test_path="test.csv")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metricopt.data._encoding import FrameEncoder
from metricopt.data.datasets import TabularDataset

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas as pd

__all__ = ["load_csv"]


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as exc:  # pragma: no cover - pandas is usually present
        raise ImportError("load_csv needs pandas; fix: pip install pandas") from exc
    return pandas


def _read(path: Any, argument: str, *, as_text: bool = False) -> pd.DataFrame:
    """Read a CSV into a frame, turning every failure into a ValueError."""
    pd = _pandas()
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"{argument} must be a file path, got {argument}={path!r}")
    file = Path(path)
    if not file.exists():
        raise ValueError(f"{argument}={str(path)!r} does not exist")
    if not file.is_file():
        raise ValueError(f"{argument}={str(path)!r} is not a file")
    try:
        frame = pd.read_csv(file, dtype=str if as_text else None)
    except pd.errors.EmptyDataError as exc:
        raise ValueError(f"{argument}={str(path)!r} is empty") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        detail = " ".join(str(exc).split())
        raise ValueError(f"{argument}={str(path)!r} could not be read as CSV: {detail}") from exc
    if len(frame) == 0:
        raise ValueError(f"{argument}={str(path)!r} has a header but no data rows")
    return frame.rename(columns=lambda c: str(c).strip())


def _is_text(series: pd.Series) -> bool:
    pd = _pandas()
    dtype = series.dtype
    return not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)


def _target_values(series: pd.Series) -> pd.Series:
    """Target values for matching: stripped strings, or numbers."""
    if _is_text(series):
        missing = series.isna()
        out = series.astype(object).astype(str).str.strip().astype(object)
        out[missing] = np.nan
        return out
    return series


def _class_order(values: pd.Series) -> list[Any]:
    """Raw class values in label order (binary: negative, then positive)."""
    counts = values.value_counts()
    classes = sorted(counts.index.tolist())
    if len(classes) == 2:
        low, high = classes
        # Positive = less frequent; a tie goes to the larger sorted value.
        positive = low if counts[low] < counts[high] else high
        negative = high if positive == low else low
        return [negative, positive]
    return classes


def _check_target(frame: pd.DataFrame, target: str, argument: str, path: Any) -> pd.Series:
    if target not in frame.columns:
        columns = [str(c) for c in frame.columns]
        raise ValueError(
            f"target={target!r} is not a column of {argument}={str(path)!r}; "
            f"available columns (first 10): {columns[:10]}"
        )
    values = _target_values(frame[target])
    n_missing = int(values.isna().sum())
    if n_missing:
        raise ValueError(
            f"target={target!r} has {n_missing} missing value(s) in "
            f"{argument}={str(path)!r}; drop or fill those rows"
        )
    return values


def _dataset(
    name: str, X: np.ndarray, y: np.ndarray, encoder: FrameEncoder,
    class_names: tuple[str, ...], path: Any,
) -> TabularDataset:
    return TabularDataset(
        name=name,
        X=X,
        y=y,
        feature_names=encoder.feature_names,
        class_names=class_names,
        task="binary" if len(class_names) == 2 else "multiclass",
        source=f"csv:{os.fspath(path)}",
        license="user data",
    )


def load_csv(
    path: str | os.PathLike[str],
    target: str,
    *,
    test_path: str | os.PathLike[str] | None = None,
) -> tuple[TabularDataset, TabularDataset | None]:
    """Load a training CSV (and optionally a test CSV) for classification.

    Args:
        path: Training CSV with a header row.
        target: Name of the label column.
        test_path: Optional test CSV with the same feature columns and the
            target column; it is encoded with the training file's categories,
            columns and medians.

    Returns:
        ``(train, test)``; ``test`` is ``None`` without ``test_path``.

    Raises:
        ValueError: A file does not exist, is not readable as CSV or has no
            data rows; ``target`` is not a column (of either file); the target
            has missing values or a single class; there are no feature
            columns; the test target holds values unseen in training; the test
            file lacks a feature column or holds text in a numeric column.
    """
    if not isinstance(target, str) or not target.strip():
        raise ValueError(f"target must be a column name, got target={target!r}")
    target = target.strip()
    frame = _read(path, "path")
    values = _check_target(frame, target, "path", path)
    order = _class_order(values)
    if len(order) < 2:
        raise ValueError(
            f"target={target!r} has a single class {str(order[0])!r} in "
            f"path={str(path)!r}; at least 2 classes are needed"
        )
    index = {value: i for i, value in enumerate(order)}
    class_names = tuple(str(v) for v in order)
    features = frame.drop(columns=[target])
    if features.shape[1] == 0:
        raise ValueError(
            f"path={str(path)!r} has no feature columns besides target={target!r}"
        )
    encoder = FrameEncoder.fit(features)
    X = encoder.transform(features, argument=f"path={str(path)!r}")
    y = values.map(index).to_numpy().astype(np.int64)
    train = _dataset(Path(path).stem, X, y, encoder, class_names, path)
    if test_path is None:
        return train, None

    test_frame = _read(test_path, "test_path", as_text=True)
    if target not in test_frame.columns:
        raise ValueError(
            f"test_path={str(test_path)!r} lacks the target column target={target!r}"
        )
    test_values = _check_target(test_frame, target, "test_path", test_path)
    if not _is_text(values):
        pd = _pandas()
        numeric = pd.to_numeric(test_values, errors="coerce")
        # Text that is not a number cannot match a numeric class; keep it as is.
        test_values = numeric.astype(object).where(numeric.notna(), test_values)
    codes = test_values.map(index)
    if codes.isna().any():
        unseen = sorted({str(v) for v in test_values[codes.isna()]})
        raise ValueError(
            f"test_path={str(test_path)!r} has target values {unseen[:10]} not "
            f"seen in path={str(path)!r} (classes {list(class_names)})"
        )
    X_test = encoder.transform(test_frame, argument=f"test_path={str(test_path)!r}")
    y_test = codes.to_numpy().astype(np.int64)
    test = _dataset(Path(test_path).stem, X_test, y_test, encoder, class_names, test_path)
    return train, test
