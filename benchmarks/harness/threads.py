"""Thread limits scoped to a benchmark run: set on entry, the caller's restored on exit.

``torch.set_num_threads`` is process-wide. A harness that sets it and returns
leaves every later computation in the caller's process (a notebook, a test
session, the next suite of ``metricopt bench all``) on the benchmark's thread
count. :func:`torch_threads` sets it for a ``with`` block only; every runner of
:mod:`benchmarks` uses it, in the harness process and in each worker.

Example:
    >>> import torch
    >>> before = torch.get_num_threads()
    >>> with torch_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Iterator

from metricopt._checks import describe

__all__ = ["torch_threads"]


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[int]:
    """``torch.set_num_threads(threads)`` inside the block; the previous count is restored on exit, also on error.

    Args:
        threads: intra-op threads for the block, an integer >= 1.

    Raises:
        ValueError: ``threads`` is not an integer >= 1 (nothing is changed).
    """
    import torch

    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
        raise ValueError(f"`threads` must be an integer >= 1; got {describe(threads)}")
    before = torch.get_num_threads()
    if int(threads) != before:
        torch.set_num_threads(int(threads))
    try:
        yield int(threads)
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
