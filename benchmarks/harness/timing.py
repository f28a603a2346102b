"""Interleaved wall-clock timing of loss calls, shared by the speed benchmarks.

:func:`time_once` times one loss call (optionally with ``backward()``) on a
leaf tensor; :func:`interleaved_times` runs warm-up calls and then rounds in
which every timer runs once, in turn, so that a load spike on the machine hits
all of them alike (optionally after one untimed call of the same timer). :mod:`benchmarks.suites.speed` and
:mod:`benchmarks.suites.rank_speed` both time through these two functions.

Example:
    >>> import torch
    >>> x = torch.randn(8, requires_grad=True)
    >>> timers = {"sum": lambda: time_once(lambda z, y: z.sum(), x, None, backward=True)}
    >>> times = interleaved_times(timers, repeats=3, warmup=1)
    >>> len(times["sum"])
    3
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any, TypeVar

from torch import Tensor

__all__ = ["interleaved_times", "time_once"]

K = TypeVar("K", bound=Hashable)


def time_once(
    fn: Callable[[Tensor, Any], Tensor], inputs: Tensor, target: Any, *, backward: bool,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Seconds for ``fn(inputs, target)`` (plus ``.backward()`` if asked); clears ``inputs.grad`` first, untimed.

    ``clock``: wall time by default; ``time.thread_time`` for the calling thread's CPU time (one thread).
    """
    inputs.grad = None
    start = clock()
    loss = fn(inputs, target)
    if backward:
        loss.backward()
    return clock() - start


def interleaved_times(
    timers: Mapping[K, Callable[[], float]],
    *,
    repeats: int,
    warmup: int,
    max_seconds: float | None = None,
    min_repeats: int = 1,
    settle_below_s: float | None = None,
) -> dict[K, list[float]]:
    """Warm every timer up, then time ``repeats`` interleaved rounds.

    Args:
        timers: key -> a call that runs once and returns its own duration in
            seconds (e.g. a :func:`time_once` closure), so set-up outside the
            timed region stays untimed.
        repeats: rounds; each round calls every (still active) timer once, in
            the mapping's order.
        warmup: untimed calls per timer before the first round (at least one
            when ``max_seconds`` is set; warm-up stops early once it has used a
            quarter of ``max_seconds``).
        max_seconds: per-timer budget of timed seconds: a timer that has
            ``min_repeats`` times and has spent ``max_seconds`` leaves the
            later rounds (``None``: every timer runs all rounds).
        min_repeats: times every timer gets regardless of ``max_seconds``.
        settle_below_s: if set, a timer whose previous call took less than
            this gets one untimed call right before each timed one, so that
            the timed call does not pay for the cache and allocator state the
            previous timer left behind (a loss timed right after one that
            touched hundreds of MiB can take several times longer on its next
            call). Calls this long or longer are timed as they come.

    Returns:
        key -> list of durations in seconds (``repeats`` of them unless cut by
        ``max_seconds``).
    """
    if repeats < 1 or warmup < 0 or min_repeats < 1:
        raise ValueError(f"need repeats >= 1, warmup >= 0, min_repeats >= 1; got {repeats}, {warmup}, {min_repeats}")
    last: dict[K, float] = {}
    for key, timer in timers.items():
        spent = 0.0
        for i in range(max(warmup, 1) if max_seconds is not None or settle_below_s is not None else warmup):
            if max_seconds is not None and i > 0 and spent >= 0.25 * max_seconds:
                break
            last[key] = timer()
            spent += last[key]
    times: dict[K, list[float]] = {key: [] for key in timers}
    for _ in range(repeats):
        for key, timer in timers.items():
            done = times[key]
            if max_seconds is not None and len(done) >= min_repeats and sum(done) >= max_seconds:
                continue
            if settle_below_s is not None and last[key] < settle_below_s:
                timer()
            last[key] = timer()
            done.append(last[key])
    return times
