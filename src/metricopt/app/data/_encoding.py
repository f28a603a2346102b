"""Turn a pandas feature frame into a float32 matrix, fitted on training data.

Numeric columns keep their values, with missing entries filled by the
training median. Every other column is treated as categorical and one-hot
encoded over the categories seen in training; an unknown or missing category
encodes as all zeros. The fitted encoder is applied unchanged to held-out
frames, so train and test matrices share columns, categories and medians.

pandas is only needed by the caller that builds the frame; this module never
imports it at module level.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas as pd

#: Categorical columns with more levels than this trigger a warning, since
#: they are usually identifiers that one-hot encoding would blow up.
MANY_LEVELS = 200

#: A non-numeric column looks like an identifier when its distinct values are
#: at least this fraction of the rows (on average two rows or fewer per value:
#: too few to learn anything about a category from) ...
IDENTIFIER_FRACTION = 0.5
#: ... and at least this many (tiny tables are never warned about).
IDENTIFIER_MIN_VALUES = 20


def looks_like_identifier(n_values: int, n_rows: int) -> bool:
    """Whether a non-numeric column with ``n_values`` distinct values in ``n_rows`` rows looks like an identifier.

    The rule: at least :data:`IDENTIFIER_MIN_VALUES` distinct values, and at
    least :data:`IDENTIFIER_FRACTION` of the rows (a value per row is the
    extreme case).

    >>> looks_like_identifier(5600, 5600), looks_like_identifier(600, 1000), looks_like_identifier(40, 1000)
    (True, True, False)
    >>> looks_like_identifier(10, 10)  # too small a table to tell
    False
    """
    return n_values >= IDENTIFIER_MIN_VALUES and n_values >= IDENTIFIER_FRACTION * n_rows


def _level_warning(column: str, n_levels: int, n_rows: int, hint: str) -> str | None:
    """The warning about a categorical column's many levels (None: nothing to say)."""
    if looks_like_identifier(n_levels, n_rows):
        return (f"column {column!r} has {n_levels} distinct values in {n_rows} rows and looks like an identifier "
                f"(one-hot encoding makes a feature of each value): {hint}")
    if n_levels > MANY_LEVELS:
        return (f"column {column!r} has {n_levels} categories; one-hot encoding makes one feature per "
                f"category ({hint} if it is an identifier)")
    return None


def _is_numeric(series: pd.Series) -> bool:
    """Whether a column is numeric; bool columns count as categorical."""
    import pandas as pd

    dtype = series.dtype
    return bool(pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype))


def _as_category_strings(series: pd.Series) -> pd.Series:
    """Categorical values as stripped strings, missing values kept as NaN."""
    values = series.astype(object)
    missing = values.isna()
    out = values.astype(str).str.strip().astype(object)
    out[missing] = np.nan
    return out


@dataclass(frozen=True)
class FrameEncoder:
    """A fitted numeric/one-hot encoding of a feature frame.

    Attributes:
        columns: Input column names, in order.
        numeric_medians: Median used to fill NaN, per numeric column.
        categories: Sorted category strings, per categorical column.
        feature_names: Names of the output columns (``col=value`` for one-hot).
    """

    columns: tuple[str, ...]
    numeric_medians: dict[str, float]
    categories: dict[str, tuple[str, ...]]
    feature_names: tuple[str, ...]

    @classmethod
    def fit(cls, frame: pd.DataFrame, *, hint: str = "drop it") -> FrameEncoder:
        """Learn column kinds, medians and categories from a training frame.

        A categorical column that looks like an identifier
        (:func:`looks_like_identifier`) or has more than :data:`MANY_LEVELS`
        categories gets a ``UserWarning`` (one per column) ending in ``hint``.

        Args:
            frame: Feature columns only (no target).
            hint: what to do about such a column; ``{column}`` is replaced by
                its name (e.g. ``"leave it out with `drop`={column!r}"``).

        Returns:
            The fitted encoder.
        """
        medians: dict[str, float] = {}
        categories: dict[str, tuple[str, ...]] = {}
        names: list[str] = []
        for col in frame.columns:
            series = frame[col]
            key = str(col)
            if _is_numeric(series):
                values = series.to_numpy(dtype=np.float64, na_value=np.nan)
                finite = values[np.isfinite(values)]
                medians[key] = float(np.median(finite)) if finite.size else 0.0
                names.append(key)
            else:
                levels = _as_category_strings(series).dropna().unique().tolist()
                levels = tuple(sorted(levels))
                message = _level_warning(key, len(levels), len(frame), hint.format(column=key))
                if message is not None:
                    warnings.warn(message, stacklevel=3)
                categories[key] = levels
                names.extend(f"{key}={level}" for level in levels)
        return cls(
            columns=tuple(str(c) for c in frame.columns),
            numeric_medians=medians,
            categories=categories,
            feature_names=tuple(names),
        )

    def transform(self, frame: pd.DataFrame, *, argument: str = "frame") -> np.ndarray:
        """Encode a frame with the fitted columns, medians and categories.

        Args:
            frame: Must contain every fitted column; extra columns are ignored.
            argument: Name used in error messages (e.g. ``"test_path='x.csv'"``).

        Returns:
            ``float32`` array of shape ``(len(frame), len(feature_names))``.

        Raises:
            ValueError: A fitted column is missing, or a numeric column holds
                values that are not numbers.
        """
        import pandas as pd

        renamed = frame.rename(columns=lambda c: str(c))
        missing = [c for c in self.columns if c not in renamed.columns]
        if missing:
            raise ValueError(
                f"{argument} lacks feature column(s) {missing[:10]} present in "
                "the training data"
            )
        blocks: list[np.ndarray] = []
        n = len(renamed)
        for col in self.columns:
            series = renamed[col]
            if col in self.numeric_medians:
                if not _is_numeric(series):
                    converted = pd.to_numeric(series, errors="coerce")
                    bad = converted.isna() & series.notna()
                    if bad.any():
                        example = series[bad].iloc[0]
                        raise ValueError(
                            f"{argument}: numeric column {col!r} holds a "
                            f"non-numeric value {example!r}"
                        )
                    series = converted
                values = series.to_numpy(dtype=np.float64, na_value=np.nan)
                values = np.where(np.isnan(values), self.numeric_medians[col], values)
                blocks.append(values.reshape(n, 1))
            else:
                levels = self.categories[col]
                index = {level: i for i, level in enumerate(levels)}
                onehot = np.zeros((n, len(levels)), dtype=np.float64)
                codes = _as_category_strings(series).map(index)
                rows = np.flatnonzero(codes.notna().to_numpy())
                onehot[rows, codes.to_numpy()[rows].astype(np.int64)] = 1.0
                blocks.append(onehot)
        if not blocks:
            return np.zeros((n, 0), dtype=np.float32)
        return np.hstack(blocks).astype(np.float32)


def encode_frame(frame: pd.DataFrame) -> tuple[np.ndarray, tuple[str, ...]]:
    """Fit an encoder on ``frame`` and encode it.

    Args:
        frame: Feature columns only.

    Returns:
        ``(X, feature_names)`` with ``X`` float32.
    """
    encoder = FrameEncoder.fit(frame)
    return encoder.transform(frame), encoder.feature_names
