"""How the command line words its messages: the program name, options in place of the library's
argument names, and one-line warnings.

Imports nothing but the standard library, so the command line can answer ``--help``, report
a bad option or an interrupt before torch loads.
"""

from __future__ import annotations

import contextlib
import re
import sys
import warnings
from collections.abc import Iterator
from typing import Any, TextIO

__all__ = ["FLAGS", "PROG", "flag_errors", "flag_wording", "one_line_warnings"]

PROG = "metricopt"

#: The library's argument names, as its messages write them (in backquotes), and the options that set them.
#: The library never names an option; :func:`flag_wording` puts the option in place of the argument.
FLAGS = {
    "adapter": "--adapter",
    "amplification": "--amplification",
    "batch_size": "--batch-size",
    "checkpoint": "--checkpoint",
    "drop": "--drop",
    "embedding_dim": "--embedding-dim",
    "epochs": "--epochs",
    "evaluations": "--evaluations",
    "finetune_learning_rate": "--finetune-lr",
    "finetune_steps": "--finetune-steps",
    "hidden_sizes": "--hidden",
    "higher_is_better=True": "--higher-is-better",
    "higher_is_better=False": "--lower-is-better",
    "interpolation": "--interpolation",
    "learning_rate": "--lr",
    "margin": "--margin",
    "memory_size": "--memory-size",
    "meta_tasks": "--meta-tasks",
    "metric": "--metric",
    "spec": "--metric",
    "nproc": "--nproc",
    "optimizer": "--optimizer",
    "phi_size": "--phi-size",
    "pos_label": "--pos-label",
    "seed": "--seed",
    "value_weight": "--value-weight",
}

_ARGUMENT = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*(?:=[A-Za-z0-9_]+)?)`")


def flag_wording(message: str) -> str:
    """``message`` with each backquoted library argument of :data:`FLAGS` replaced by its option.

    >>> flag_wording("`learning_rate` must be a finite number > 0; got -1.0")
    '--lr must be a finite number > 0; got -1.0'
    """
    return _ARGUMENT.sub(lambda match: FLAGS.get(match.group(1), match.group(0)), message)


@contextlib.contextmanager
def flag_errors() -> Iterator[None]:
    """Re-raise the library's ``ValueError`` / ``TypeError`` worded with the options (:func:`flag_wording`)."""
    try:
        yield
    except (ValueError, TypeError) as error:
        message = flag_wording(str(error))
        if message == str(error):
            raise
        raise (ValueError if isinstance(error, ValueError) else TypeError)(message) from error


def _format_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                    line: str | None = None) -> str:
    """One line ``metricopt: warning: <message>``: no source path, line number or code line."""
    return f"{PROG}: warning: {' '.join(flag_wording(str(message)).split())}\n"


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    stream = sys.stderr if file is None else file
    try:
        stream.write(_format_warning(message, category, filename, lineno, line))
    except OSError:  # stderr closed: a warning is not worth an error
        pass


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Warnings as one line while the command runs; the previous hooks are restored after it."""
    saved: tuple[Any, Any] = (warnings.showwarning, warnings.formatwarning)
    warnings.showwarning, warnings.formatwarning = _show_warning, _format_warning
    try:
        yield
    finally:
        warnings.showwarning, warnings.formatwarning = saved
