"""A suite's partial file: its finished jobs as JSON lines after a header, so that a killed run resumes.

The first line is ``{"header": spec_to_dict(spec)}``; each later line is one
finished job's output, appended (and flushed) as the job finishes. A restart
of the same spec reads the finished jobs back and runs only the others; a
file written for another spec is an error, never silently mixed in. A line
cut short by a kill is ignored, and :func:`start` rewrites the file without
it before anything is appended.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any

from benchmarks.harness.specs import spec_to_dict

__all__ = ["append", "header", "read", "start"]


def header(spec: Any) -> dict[str, Any]:
    """The first line of ``spec``'s partial file (as it reads back from JSON)."""
    return json.loads(json.dumps({"header": spec_to_dict(spec)}))


def read(path: Path | None, spec: Any, key: Callable[[dict[str, Any]], Hashable | None], *,
         what: str = "jobs") -> dict[Hashable, dict[str, Any]]:
    """The finished jobs of a partial file by ``key(output)`` (``{}`` if there is no file).

    ``key`` returns None for an output that does not count as finished; one that
    raises ``KeyError``, ``TypeError`` or ``ValueError`` is skipped like a line cut short.

    Raises:
        ValueError: the file was written for another spec (its header differs).
    """
    if path is None or not Path(path).exists():
        return {}
    lines = Path(path).read_text().splitlines()
    try:
        first = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError:
        first = None
    if first is None:  # killed while writing the header: nothing finished
        return {}
    if first != header(spec):
        raise ValueError(f"{path} holds the {what} of another spec than this run's (its header differs); "
                         "delete it to start afresh, or give the run another --name")
    done: dict[Hashable, dict[str, Any]] = {}
    for line in lines[1:]:
        try:
            out = json.loads(line)
            name = key(out)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
        if name is not None:
            done[name] = out
    return done


def start(path: Path, spec: Any, done: Mapping[Hashable, Any]) -> None:
    """Write the header and the finished jobs afresh (drops a line cut short, which a later append would join)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(x) + "\n" for x in (header(spec), *done.values())))


def append(path: Path | None, out: Mapping[str, Any]) -> None:
    """Add one finished job's output (nothing without a file)."""
    if path is None:
        return
    with Path(path).open("a") as handle:
        handle.write(json.dumps(out) + "\n")
        handle.flush()
