"""Load user data from CSV files into :class:`TabularDataset` objects.

The training CSV defines the encoding: numeric columns are kept (NaN filled
with the training median), every other column is one-hot encoded over the
training categories. An optional test CSV is encoded with exactly the same
columns, categories and medians; categories it has that training lacked
encode as all zeros.

``drop`` names columns left out of the features (identifiers, free text);
a name that is not a column is an error listing the columns. A non-numeric
column that looks like an identifier (at least 20 distinct values and at
least half as many as rows, see
:func:`metricopt.app.data._encoding.looks_like_identifier`) gets a
``UserWarning`` suggesting ``drop``.

The target column may hold any values and must appear once in the header (a
second copy would be renamed by pandas, e.g. ``label.1``, and leak the label
into the features: an error). Classes are sorted; with two classes the
positive class (``pos_label``, or by :mod:`metricopt.app.data.labels`' rule the
value 1 or True, and otherwise an error naming the classes) becomes label 1,
the other label 0. ``class_names`` records the original values as strings.

Example:
    >>> from metricopt.app.data import load_csv
    >>> train, test = load_csv("train.csv", "label", test_path="test.csv")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metricopt.app.data._encoding import FrameEncoder
from metricopt.app.data.datasets import TabularDataset
from metricopt.app.data.labels import positive_class

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


def _matching_class(classes: list[Any], pos_label: Any) -> Any:
    """The class ``pos_label`` names: the value itself, or its text (``"1"`` names 1 and 1.0, ``"true"`` True)."""
    if pos_label is None or not isinstance(pos_label, str):
        return pos_label
    text = pos_label.strip()
    for value in classes:
        if isinstance(value, bool):
            if text.lower() == str(value).lower():
                return value
        elif str(value) == text:
            return value
        elif not isinstance(value, str):
            try:
                if float(text) == float(value):
                    return value
            except ValueError:
                pass
    return pos_label


def _class_order(values: pd.Series, raw: pd.Series, pos_label: Any, where: str) -> list[Any]:
    """Class values in label order (binary: negative, then positive; see :mod:`metricopt.app.data.labels`).

    ``values`` are the matching values (:func:`_target_values`: text for a
    boolean column), ``raw`` the column as read (booleans stay booleans, so
    True/False has the convention of 1/0).
    """
    classes = sorted(values.unique().tolist())
    if _pandas().api.types.is_bool_dtype(raw.dtype):
        as_read = [value == "True" for value in classes]
    else:
        as_read = classes
    positive = positive_class(as_read, _matching_class(as_read, pos_label), where=where)
    if positive is None:
        return classes
    index = as_read.index(positive)
    return [classes[1 - index], classes[index]]


def _check_header(path: Any, target: str, argument: str) -> None:
    """The target column must appear once in the raw header (pandas renames copies to ``target.1``, ...)."""
    pd = _pandas()
    try:
        header = pd.read_csv(Path(path), header=None, nrows=1, dtype=str).iloc[0].tolist()
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, IndexError):  # _read reported or will report it
        return
    positions = [i + 1 for i, name in enumerate(header) if isinstance(name, str) and name.strip() == target]
    if len(positions) > 1:
        raise ValueError(
            f"target={target!r} is a column {len(positions)} times in {argument}={str(path)!r} (columns "
            f"{', '.join(map(str, positions))} of the header); the copies would be features holding the label: "
            "remove or rename them"
        )


def _check_target(frame: pd.DataFrame, target: str, argument: str, path: Any) -> pd.Series:
    _check_header(path, target, argument)
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


def _drop_names(drop: Any) -> tuple[str, ...]:
    """``drop`` as a tuple of stripped column names (a single string is one name)."""
    if drop is None:
        return ()
    names = (drop,) if isinstance(drop, str) else tuple(drop)
    if not all(isinstance(name, str) and name.strip() for name in names):
        raise ValueError(f"`drop` must be column names; got {names!r}")
    return tuple(dict.fromkeys(name.strip() for name in names))


def _check_drop(frame: pd.DataFrame, drop: tuple[str, ...], target: str, path: Any) -> None:
    """Every name in ``drop`` is a feature column of the training file."""
    if target in drop:
        raise ValueError(f"`drop` names the target column {target!r}; the target is never a feature")
    columns = [str(c) for c in frame.columns]
    missing = [name for name in drop if name not in columns]
    if missing:
        shown = columns[:20] + ([f"... ({len(columns)} in all)"] if len(columns) > 20 else [])
        what = "is not a column" if len(missing) == 1 else "are not columns"
        raise ValueError(
            f"`drop` names {', '.join(map(repr, missing))}, which {what} of path={str(path)!r}; "
            f"available columns: {shown}"
        )


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
    pos_label: Any = None,
    drop: str | Sequence[str] | None = None,
) -> tuple[TabularDataset, TabularDataset | None]:
    """Load a training CSV (and optionally a test CSV) for classification.

    Args:
        path: Training CSV with a header row.
        target: Name of the label column.
        test_path: Optional test CSV with the same feature columns and the
            target column; it is encoded with the training file's categories,
            columns and medians.
        pos_label: the positive class of a binary target: a value of the
            column or its text (``"yes"``, ``"1"`` for 1, ``"true"`` for
            True). None: 1 or True when it is one of the two classes, else a
            ValueError naming them (:mod:`metricopt.app.data.labels`). Must be None
            for more than two classes.
        drop: columns of the training file to leave out of the features
            (e.g. identifiers); a string is one column. Each must be a column
            of ``path`` other than ``target``; the test file may lack them.

    Returns:
        ``(train, test)``; ``test`` is ``None`` without ``test_path``.

    Raises:
        ValueError: A file does not exist, is not readable as CSV or has no
            data rows; ``target`` is not a column (of either file) or is one
            several times; the target has missing values or a single class;
            the positive class is ambiguous or ``pos_label`` is not a class
            (:class:`metricopt.app.data.labels.PositiveClassError`); there are no feature
            columns; the test target holds values unseen in training; the test
            file lacks a feature column or holds text in a numeric column; a
            name in ``drop`` is not a column or is ``target``.

    Warns:
        UserWarning: a non-numeric column looks like an identifier or has more
            than 200 categories (one warning per column, suggesting ``drop``).
    """
    if not isinstance(target, str) or not target.strip():
        raise ValueError(f"target must be a column name, got target={target!r}")
    target = target.strip()
    drop = _drop_names(drop)
    frame = _read(path, "path")
    values = _check_target(frame, target, "path", path)
    _check_drop(frame, drop, target, path)
    distinct = values.unique()
    if len(distinct) < 2:
        raise ValueError(
            f"target={target!r} has a single class {str(distinct[0])!r} in "
            f"path={str(path)!r}; at least 2 classes are needed"
        )
    order = _class_order(values, frame[target], pos_label, f"target={target!r} in path={str(path)!r}")
    index = {value: i for i, value in enumerate(order)}
    class_names = tuple(str(v) for v in order)
    features = frame.drop(columns=[target, *drop])
    if features.shape[1] == 0:
        dropped = f" and the `drop` columns {list(drop)}" if drop else ""
        raise ValueError(
            f"path={str(path)!r} has no feature columns besides target={target!r}{dropped}"
        )
    encoder = FrameEncoder.fit(features, hint="leave it out with `drop`={column!r}")
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
