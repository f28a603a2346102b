"""Running a suite's tasks: in this process, or in spawned worker processes, as each finishes.

Every suite splits its work into independent tasks (a dataset and seed, a
method) and collects their outputs; :func:`run_tasks` is the one loop that
runs them, so the suites differ only in what a task does and what they make
of its output. :func:`run_resumable` adds the partial file
(:mod:`benchmarks.harness.partial`) for suites whose runs take hours.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["failures_of", "run_resumable", "run_summary", "run_tasks"]

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


def run_resumable(function: Callable[..., dict[str, Any]], tasks: Sequence[Task], *, spec: Any,
                  done: Mapping[Task, dict[str, Any]], partial_path: Path | None, jobs: int = 1,
                  progress: bool = True) -> tuple[list[dict[str, Any]], float]:
    """Run the ``tasks`` that ``done`` lacks, appending each output to the partial file as it finishes.

    ``done`` holds the finished tasks read back from the file
    (:func:`benchmarks.harness.partial.read`); the file is started afresh with
    them (:func:`benchmarks.harness.partial.start`) before anything runs, so a
    line cut short by a kill is dropped. Each output is
    ``function(spec, *task)`` for a task ``(table, seed, unit, ...)``, a dict
    whose ``"key"`` names its task.

    Returns:
        The outputs of every task (the finished ones first, in ``tasks`` order,
        then the new ones as they finished) and the wall seconds of the new ones.
    """
    from tqdm.auto import tqdm

    from benchmarks.harness import partial

    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"`jobs` must be a positive integer; got {jobs!r}")
    if partial_path is not None:
        partial.start(Path(partial_path), spec, done)
    outputs = [done[t] for t in tasks if t in done]
    todo = [t for t in tasks if t not in done]
    start = time.perf_counter()
    bar = tqdm(total=len(tasks), initial=len(outputs), desc=getattr(spec, "name", None), unit="task",
               disable=not progress, dynamic_ncols=True)
    for task, out in run_tasks(function, todo, args=(spec,), jobs=jobs):
        partial.append(partial_path, out)  # as each finishes, so a killed run keeps it
        outputs.append(out)
        bar.set_postfix_str(f"done {task[0]} seed {task[1]} " + " ".join(str(part) for part in task[2:]))
        bar.update()
    bar.close()
    return outputs, time.perf_counter() - start


def run_summary(tasks: Sequence[Task], done: Mapping[Task, dict[str, Any]], outputs: Sequence[dict[str, Any]], *,
                jobs: int, wall: float) -> dict[str, Any]:
    """The payload's account of a :func:`run_resumable` run: workers, wall and task seconds, resumed tasks."""
    return {
        "jobs": jobs,
        "wall_seconds": round(wall, 1),
        "tasks": len(tasks),
        "resumed_tasks": len(done.keys() & set(tasks)),
        "task_seconds": round(sum(out.get("seconds", 0.0) for out in outputs), 1),
    }


def failures_of(outputs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The units that failed in ``(table, seed, unit)`` task outputs (``out["failed"]``), sorted."""
    return sorted(
        ({"table": out["key"][0], "seed": out["key"][1], "unit": unit, "error": error}
         for out in outputs for unit, error in out.get("failed", {}).items()),
        key=lambda f: (f["table"], f["seed"], f["unit"]))
