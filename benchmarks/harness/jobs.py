"""Running a suite's tasks: in this process, or in spawned worker processes, as each finishes.

Every suite splits its work into independent tasks (a dataset and seed, a
method) and collects their outputs; :func:`run_tasks` is the one loop that
runs them, so the suites differ only in what a task does and what they make
of its output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any, TypeVar

__all__ = ["run_tasks"]

Task = TypeVar("Task", bound=tuple)


def run_tasks(function: Callable[..., Any], tasks: Sequence[Task], *, args: tuple[Any, ...] = (),
              jobs: int = 1) -> Iterator[tuple[Task, Any]]:
    """``(task, function(*args, *task))`` for every task, yielded as each finishes.

    ``jobs == 1`` runs them here, in order; more runs them in ``jobs`` spawned
    processes (``function`` and its arguments must pickle) and yields in the
    order they finish. A task's exception propagates.
    """
    if jobs == 1:
        for task in tasks:
            yield task, function(*args, *task)
        return
    if not tasks:
        return
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(function, *args, *task): task for task in tasks}
        for future in as_completed(futures):
            yield futures[future], future.result()
