"""Stratified train/validation/test splits with train-only standardisation.

Both helpers return a :class:`Split` of float32 features and int64 labels.
Standardisation statistics come from the training part only, so no
information leaks from validation or test rows; constant training columns are
left unscaled (scale 1) instead of producing NaN or inf.

Example:
    >>> import numpy as np
    >>> from metricopt.app.data import train_val_test_split
    >>> X = np.arange(200, dtype=float).reshape(100, 2)
    >>> y = np.array([0] * 80 + [1] * 20)
    >>> s = train_val_test_split(X, y, test_size=0.2, val_size=0.2)
    >>> len(s.y_train), len(s.y_val), len(s.y_test), int(s.y_test.sum())
    (60, 20, 20, 4)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Split", "fit_standardization", "split_with_test", "train_val_test_split"]


@dataclass(frozen=True, eq=False)
class Split:
    """Train, validation and test arrays.

    Attributes:
        X_train: ``float32`` training features, shape ``(n_train, d)``.
        y_train: ``int64`` training labels.
        X_val: ``float32`` validation features.
        y_val: ``int64`` validation labels.
        X_test: ``float32`` test features.
        y_test: ``int64`` test labels.
        feature_mean: Per-feature training mean subtracted during
            standardisation, or ``None`` if not standardised.
        feature_scale: Per-feature training standard deviation divided by
            (1 for constant columns), or ``None`` if not standardised.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    feature_mean: np.ndarray | None = None
    feature_scale: np.ndarray | None = None

    def transform(self, X: Any) -> np.ndarray:
        """Apply this split's standardisation to new rows.

        Args:
            X: Features of shape ``(n, d)``.

        Returns:
            ``float32`` array, standardised if the split was.
        """
        X = _as_features(X, "X")
        if self.feature_mean is None or self.feature_scale is None:
            return X
        if X.shape[1] != self.feature_mean.shape[0]:
            raise ValueError(
                f"X must have {self.feature_mean.shape[0]} columns, got X.shape={X.shape}"
            )
        return ((X - self.feature_mean) / self.feature_scale).astype(np.float32)


def _as_features(X: Any, argument: str) -> np.ndarray:
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{argument} must be numeric, got {argument}={type(X).__name__}") from exc
    if arr.ndim != 2:
        raise ValueError(f"{argument} must be 2-D (n_samples, n_features), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{argument} contains NaN or inf; impute or drop them first")
    return arr


def _as_labels(y: Any, n: int, argument: str, x_argument: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(
            f"{argument} must be 1-D with one label per row of {x_argument} ({n}), "
            f"got shape {arr.shape}"
        )
    if arr.dtype.kind == "b":
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(
                f"{argument} must hold integer class labels, got dtype {arr.dtype}"
            )
    return arr.astype(np.int64)


def _check_fraction(value: Any, argument: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        raise ValueError(f"{argument} must be a float in (0, 1), got {argument}={value!r}")
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"{argument} must lie in (0, 1), got {argument}={value!r}")
    return float(value)


def _check_stratifiable(y: np.ndarray, argument: str, parts: int) -> None:
    classes, counts = np.unique(y, return_counts=True)
    if classes.size < 2:
        raise ValueError(
            f"{argument} must contain at least 2 classes to split, got only class "
            f"{classes.tolist()}"
        )
    if counts.min() < parts:
        small = classes[counts < parts].tolist()
        raise ValueError(
            f"cannot stratify: every class needs at least {parts} samples for "
            f"{parts} parts, but {argument} has classes {small[:10]} with fewer "
            f"(smallest count {int(counts.min())})"
        )


def _stratified(
    X: np.ndarray, y: np.ndarray, size: float, random_state: int | None, what: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    try:
        X_a, X_b, y_a, y_b = train_test_split(
            X, y, test_size=size, random_state=random_state, stratify=y
        )
    except ValueError as exc:
        raise ValueError(
            f"cannot make a stratified {what} split of {len(y)} rows with "
            f"{np.unique(y).size} classes ({exc})"
        ) from exc
    return X_a, X_b, y_a, y_b


def fit_standardization(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature training mean and scale; constant columns get scale 1.

    A column counts as constant when its standard deviation is zero up to
    rounding (at most 1e-10 of its mean), so it is centred but not divided by ~0.
    """
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    varies = (scale > 0) & (scale > 1e-10 * np.abs(mean))
    return mean, np.where(varies, scale, 1.0)


def _finish(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    standardize: bool,
) -> Split:
    mean = scale = None
    if standardize:
        mean, scale = fit_standardization(X_train)
        X_train = (X_train - mean) / scale
        X_val = (X_val - mean) / scale
        X_test = (X_test - mean) / scale
        mean = mean.astype(np.float32)
        scale = scale.astype(np.float32)
    return Split(
        X_train=np.ascontiguousarray(X_train, dtype=np.float32),
        y_train=np.ascontiguousarray(y_train, dtype=np.int64),
        X_val=np.ascontiguousarray(X_val, dtype=np.float32),
        y_val=np.ascontiguousarray(y_val, dtype=np.int64),
        X_test=np.ascontiguousarray(X_test, dtype=np.float32),
        y_test=np.ascontiguousarray(y_test, dtype=np.int64),
        feature_mean=mean,
        feature_scale=scale,
    )


def train_val_test_split(
    X: Any,
    y: Any,
    *,
    test_size: float = 0.2,
    val_size: float = 0.2,
    random_state: int | None = 0,
    standardize: bool = True,
) -> Split:
    """Split one dataset into stratified train, validation and test parts.

    Args:
        X: Features, shape ``(n, d)``; must be finite.
        y: Integer class labels, shape ``(n,)``.
        test_size: Fraction of all rows used for testing, in ``(0, 1)``.
        val_size: Fraction of all rows (not of the remainder) used for
            validation, in ``(0, 1)``; ``test_size + val_size < 1``.
        random_state: Seed for the shuffles.
        standardize: Standardise features with train-only mean and std.

    Returns:
        The :class:`Split`.

    Raises:
        ValueError: Bad shapes, non-finite ``X``, fractions out of range, or a
            class with fewer than 3 samples (stratification impossible).
    """
    test_size = _check_fraction(test_size, "test_size")
    val_size = _check_fraction(val_size, "val_size")
    if test_size + val_size >= 1.0:
        raise ValueError(
            f"test_size + val_size must be < 1, got test_size={test_size} + "
            f"val_size={val_size} = {test_size + val_size}"
        )
    X_arr = _as_features(X, "X")
    y_arr = _as_labels(y, X_arr.shape[0], "y", "X")
    _check_stratifiable(y_arr, "y", 3)
    X_rest, X_test, y_rest, y_test = _stratified(X_arr, y_arr, test_size, random_state, "test")
    X_train, X_val, y_train, y_val = _stratified(
        X_rest, y_rest, val_size / (1.0 - test_size), random_state, "validation"
    )
    return _finish(X_train, y_train, X_val, y_val, X_test, y_test, standardize)


def split_with_test(
    X_train: Any,
    y_train: Any,
    X_test: Any,
    y_test: Any,
    *,
    val_size: float = 0.2,
    random_state: int | None = 0,
    standardize: bool = True,
) -> Split:
    """Carve a stratified validation part out of training data; keep the test set.

    Args:
        X_train: Training features, shape ``(n, d)``.
        y_train: Training labels, shape ``(n,)``.
        X_test: Test features, shape ``(m, d)``.
        y_test: Test labels, shape ``(m,)``; every label must occur in
            ``y_train``.
        val_size: Fraction of the training rows used for validation.
        random_state: Seed for the shuffle.
        standardize: Standardise with the mean and std of the remaining
            training rows.

    Returns:
        The :class:`Split` (test rows in their given order).

    Raises:
        ValueError: Bad shapes, mismatched feature counts, ``val_size`` out of
            range, test labels unseen in training, or a class with fewer than
            2 training samples.
    """
    val_size = _check_fraction(val_size, "val_size")
    X_tr = _as_features(X_train, "X_train")
    y_tr = _as_labels(y_train, X_tr.shape[0], "y_train", "X_train")
    X_te = _as_features(X_test, "X_test")
    y_te = _as_labels(y_test, X_te.shape[0], "y_test", "X_test")
    if X_te.shape[1] != X_tr.shape[1]:
        raise ValueError(
            f"X_test must have the same number of columns as X_train "
            f"({X_tr.shape[1]}), got X_test.shape={X_te.shape}"
        )
    unseen = np.setdiff1d(np.unique(y_te), np.unique(y_tr))
    if unseen.size:
        raise ValueError(
            f"y_test holds labels {unseen.tolist()[:10]} that never occur in y_train"
        )
    _check_stratifiable(y_tr, "y_train", 2)
    X_fit, X_val, y_fit, y_val = _stratified(X_tr, y_tr, val_size, random_state, "validation")
    return _finish(X_fit, y_fit, X_val, y_val, X_te, y_te, standardize)
