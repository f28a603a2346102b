"""Rankings too large for memory: processed in chunks of rows, or refused before anything is allocated.

A rank loss on a ``(B, L)`` matrix of scores (B rankings of L items) keeps a
few numbers per item: the scores, their sorted copy and its permutation, and
in the backward pass the gradient and a running count
(:mod:`metricopt.losses.relevant_ranks`), and a few numbers per relevant
item. :data:`BYTES_PER_ITEM` and :data:`BYTES_PER_RELEVANT` bound that
working set from above (the recall loss's measured peak is in
``benchmarks/results/rank_speed.md``). Before computing anything, a loss asks
:func:`row_chunk` how many rows it may process at once:

* all of them when the working set fits ``memory_limit``: one pass, nothing
  recomputed;
* otherwise as many rows as fit, each chunk under
  :func:`torch.utils.checkpoint.checkpoint`, so that only one chunk's working
  set is alive at a time and the backward pass recomputes the chunk's scores
  (about one more forward pass of time);
* a single row that does not fit raises ``ValueError`` naming the sizes,
  before any allocation.

``memory_limit=None`` (the default) is half the memory free on the scores'
device when the loss is called (``torch.cuda.mem_get_info`` on CUDA,
``MemAvailable`` of ``/proc/meminfo`` on a CPU; no limit where neither can be
read), looked up only when the working set exceeds :data:`SMALL_WORKING_SET`,
so an ordinary batch never pays for the lookup.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from metricopt._checks import describe

__all__ = [
    "BYTES_PER_ITEM", "BYTES_PER_RELEVANT", "SMALL_WORKING_SET", "check_memory_limit", "row_chunk", "run_in_chunks",
]

#: Working bytes per (row, item) of a rank loss, forward and backward, in units of the scores' itemsize (4 for
#: float32): scores, sorted scores, an int64 permutation (2 units), gradient, counts, and slack.
BYTES_PER_ITEM = 10
#: Working bytes per relevant item of a row: its column, its flags and a few float64 counts, forward and backward.
BYTES_PER_RELEVANT = 128
#: A working set below this many bytes never looks up the free memory.
SMALL_WORKING_SET = 1 << 30


def check_memory_limit(memory_limit: object) -> int | None:
    """Return ``memory_limit`` (bytes) as an int, or None, raising unless it is None or an integer > 0."""
    if memory_limit is None:
        return None
    if isinstance(memory_limit, bool) or not isinstance(memory_limit, numbers.Integral) or memory_limit <= 0:
        raise ValueError(f"`memory_limit` must be None or a number of bytes > 0; got {describe(memory_limit)}")
    return int(memory_limit)


def _free_memory(device: torch.device) -> int | None:
    """Bytes free on ``device`` now, or None where that cannot be read."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _size(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:,.0f} MiB" if n_bytes >= 2**20 else f"{n_bytes:,.0f} bytes"


def row_chunk(
    n_rows: int, row_length: int, relevant_per_row: int, itemsize: int, device: torch.device,
    memory_limit: int | None, what: str,
) -> int:
    """How many of ``n_rows`` rows of ``row_length`` items, at most ``relevant_per_row`` of them relevant, a
    rank loss may process at once (module docstring).

    Raises:
        ValueError: if one row alone needs more than the limit.
    """
    row_bytes = row_length * itemsize * BYTES_PER_ITEM + relevant_per_row * BYTES_PER_RELEVANT
    total = n_rows * row_bytes
    if memory_limit is None:
        if total <= SMALL_WORKING_SET:
            return max(n_rows, 1)
        free = _free_memory(device)
        if free is None:
            return max(n_rows, 1)
        limit, source = free // 2, f"half the {_size(free)} free on {device.type}"
    else:
        limit, source = memory_limit, f"memory_limit={memory_limit}"
    if row_bytes > limit:
        raise ValueError(
            f"{what}: one ranking of {row_length:,} items needs about {_size(row_bytes)} of working memory, more than "
            f"{_size(limit)} ({source}); rank fewer items at once (a smaller batch or memory) or raise `memory_limit`"
        )
    return max(1, min(n_rows, limit // row_bytes))


def run_in_chunks(part: Callable[[int, int], tuple[Tensor, ...]], n_rows: int, chunk: int) -> tuple[Tensor, ...]:
    """``part(0, n_rows)``, or its outputs per chunk of ``chunk`` rows concatenated, each chunk checkpointed."""
    if chunk >= n_rows:
        return part(0, n_rows)
    pieces = [
        checkpoint(part, start, min(start + chunk, n_rows), use_reentrant=False)
        for start in range(0, n_rows, chunk)
    ]
    return tuple(torch.cat(outputs) for outputs in zip(*pieces, strict=True))
