"""Which of two classes is the positive one: the rule shared by the estimator, the CSV loader and the CLI.

The positive class decides what F1, precision, recall, specificity, Jaccard,
AP and every other one-sided metric measure, so it is never guessed:

* ``pos_label`` given: it must be one of the two classes.
* ``pos_label=None``: scikit-learn's convention, its default ``pos_label=1``
  (``f1_score``, the ``"f1"`` scorer): when one of the two labels is ``1``
  (or ``True``, or ``1.0``), it is positive, so ``{0, 1}``, ``{-1, 1}``,
  ``{False, True}`` and ``{1, 2}`` make ``1`` / ``True`` positive. Any other
  pair (``"bad"``/``"good"``, ``"no"``/``"yes"``, ``"0"``/``"1"`` as text,
  ``0``/``2``, ...) has no convention: a :class:`PositiveClassError` names the
  classes and asks for ``pos_label``. Neither the sort order nor the class
  frequencies decide, because both change silently with the encoding or the
  sample (a fold of a cross-validation, a resampled training set).
* More than two classes: there is no positive class, and ``pos_label`` must
  be None (multi-class metrics average over the classes).

Example:
    >>> positive_class([0, 1])
    1
    >>> positive_class(["bad", "good"], "bad")
    'bad'
    >>> positive_class(["bad", "good"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    metricopt.app.data.labels.PositiveClassError: the positive class of the labels ['bad', 'good'] is ambiguous...
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["DEFAULT_POS_LABEL", "PositiveClassError", "positive_class"]

#: scikit-learn's default ``pos_label``: the positive class whenever it is one of the labels.
DEFAULT_POS_LABEL = 1


class PositiveClassError(ValueError):
    """The positive class is ambiguous, not one of the classes, or given for multi-class labels.

    Attributes:
        classes: the classes (as given to :func:`positive_class`).
        pos_label: the ``pos_label`` that was given (None when it was missing).
        where: what the labels belong to (e.g. ``"target='y' in path='a.csv'"``), or ``""``.
    """

    def __init__(self, message: str, *, classes: Sequence[Any], pos_label: Any, where: str) -> None:
        super().__init__(message)
        self.classes = list(classes)
        self.pos_label = pos_label
        self.where = where


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except (TypeError, ValueError):  # e.g. an array compared with a label
        return False


def _conventional(classes: Sequence[Any]) -> Any:
    """The class equal to 1 (``1``, ``1.0``, ``True``, numpy's too), never text; None if there is none."""
    for value in classes:
        if not isinstance(value, (str, bytes)) and _equal(value, DEFAULT_POS_LABEL):
            return value
    return None


def positive_class(classes: Sequence[Any], pos_label: Any = None, *, argument: str = "pos_label",
                   where: str = "") -> Any:
    """The positive class among ``classes`` (None for more than two classes); see the module docstring.

    Args:
        classes: the distinct labels, sorted (e.g. ``np.unique(y).tolist()``).
        pos_label: the positive class chosen by the caller, or None for the convention.
        argument: how the caller names ``pos_label`` in its messages (the command line passes its option).
        where: what the labels belong to, for the messages (``""``: "the labels").

    Returns:
        The element of ``classes`` that is positive (``pos_label`` itself when given), or None for
        more than two classes.

    Raises:
        PositiveClassError: ``pos_label`` is not one of two classes, is given for more than two
            classes, or is None for two labels without a convention.
    """
    classes = list(classes)
    shown = classes[:10] + (["..."] if len(classes) > 10 else [])
    subject = f"the labels {shown}" if not where else f"{where} (classes {shown})"
    if len(classes) != 2:
        if pos_label is None:
            return None
        raise PositiveClassError(
            f"{argument} applies to binary targets only; got {argument}={pos_label!r} for {subject} with "
            f"{len(classes)} classes", classes=classes, pos_label=pos_label, where=where)
    if pos_label is not None:
        for value in classes:
            if _equal(value, pos_label):
                return value
        raise PositiveClassError(
            f"{argument}={pos_label!r} is not one of the two classes of {subject}", classes=classes,
            pos_label=pos_label, where=where)
    conventional = _conventional(classes)
    if conventional is not None:
        return conventional
    options = " or ".join(f"{argument}={c!r}" if argument.isidentifier() else f"{argument} {c}" for c in classes)
    raise PositiveClassError(
        f"the positive class of {subject} is ambiguous: by convention 1 (or True) is positive, and neither "
        f"label is; name it with {options}",
        classes=classes, pos_label=pos_label, where=where)
