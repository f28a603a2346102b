"""Argument checks shared by the whole package.

Every check raises ``ValueError`` or ``TypeError`` with a message that names the
argument and the value it got; none uses ``assert`` (which ``python -O`` strips).
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "check_choice",
    "check_finite",
    "check_integer",
    "check_nonnegative",
    "check_positive",
    "check_same_shape",
    "check_tensor",
    "describe",
]


def describe(value: Any) -> str:
    """Short printable description of ``value`` for error messages."""
    if isinstance(value, Tensor):
        return f"tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices`` (listed in the message)."""
    choices = tuple(choices)
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ValueError(f"`{name}` must be one of {valid}; got {describe(value)}")


def check_positive(name: str, value: Any) -> float:
    """Return ``value`` as a float, raising unless it is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a number > 0; got {describe(value)}")
    value = float(value)
    if not (value > 0 and value != float("inf")):
        raise ValueError(f"`{name}` must be a finite number > 0; got {value!r}")
    return value


def check_integer(name: str, value: Any, minimum: int = 1) -> int:
    """Return ``value`` as an int, raising unless it is an integer (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}; got {describe(value)}")
    return int(value)


def check_nonnegative(name: str, value: Any) -> float:
    """Return ``value`` as a float, raising unless it is a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value < float("inf")):
        raise ValueError(f"`{name}` must be a finite number >= 0; got {describe(value)}")
    return float(value)


def check_same_shape(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    """Raise ``ValueError`` naming both arguments unless the tensors have the same shape."""
    if a.shape != b.shape:
        raise ValueError(
            f"`{name_a}` and `{name_b}` must have the same shape; got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def check_tensor(name: str, value: Any) -> Tensor:
    """Raise ``TypeError`` unless ``value`` is a tensor."""
    if not isinstance(value, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor; got {type(value).__name__}")
    return value


def check_finite(name: str, value: Tensor) -> None:
    """Raise ``ValueError`` if a floating tensor holds NaN or infinity.

    One pass in the usual case: a finite sum proves every element finite; only
    a non-finite sum (NaN, inf, or an overflow of large finite values) triggers
    the elementwise check.
    """
    if not value.is_floating_point() or bool(torch.isfinite(value.sum())):
        return
    if not bool(torch.isfinite(value).all()):
        bad = value[~torch.isfinite(value)].flatten()[:3].tolist()
        raise ValueError(f"`{name}` must be finite; it contains {bad} ({describe(value)})")
