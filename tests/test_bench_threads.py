"""Tests of benchmarks.harness.threads and of its use: every harness entry point gives the caller's thread count back.

``torch.set_num_threads`` is process-wide; before, the runners set it and
returned, so a notebook or test session that ran a benchmark kept the
benchmark's thread count. Each entry point is run with its work replaced by a
probe that records the count inside (and, for half of them, raises), and the
caller's count is checked afterwards. The caller's count is set to differ from
the spec's, so a runner that does not restore it fails.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from benchmarks import cli
from benchmarks.harness.specs import get_suite
from benchmarks.harness.threads import torch_threads
from benchmarks.suites import blackbox as B
from benchmarks.suites import quality as Q
from benchmarks.suites import rank_speed as RS
from benchmarks.suites import retrieval as R


class _Stop(Exception):
    """Raised by a probe: the runner must restore the count on the way out of an error too."""


@pytest.fixture
def caller_threads() -> Iterator[int]:
    """The caller's count during the test: 3, which no smoke spec uses; the session's own count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    yield 3
    torch.set_num_threads(before)


def test_torch_threads_sets_and_restores(caller_threads: int) -> None:
    with torch_threads(1) as threads:
        assert threads == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == caller_threads
    with pytest.raises(_Stop), torch_threads(2):
        assert torch.get_num_threads() == 2
        raise _Stop
    assert torch.get_num_threads() == caller_threads
    with torch_threads(caller_threads):  # the same count: nothing to change
        assert torch.get_num_threads() == caller_threads
    assert torch.get_num_threads() == caller_threads


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True, None])
def test_torch_threads_rejects_bad_counts(bad: Any, caller_threads: int) -> None:
    with pytest.raises(ValueError, match="`threads` must be an integer >= 1; got"):
        with torch_threads(bad):
            pass
    assert torch.get_num_threads() == caller_threads


def _probe(seen: list[int], *, stop: bool, result: Any = None) -> Callable[..., Any]:
    def probe(*args: Any, **kwargs: Any) -> Any:
        seen.append(torch.get_num_threads())
        if stop:
            raise _Stop
        return result

    return probe


def _spec(kind: str, threads: int = 1) -> Any:
    return dataclasses.replace(get_suite(kind, smoke=True), threads=threads)


# (entry point, the attribute replaced by the probe, does the probe raise, the call)
ENTRY_POINTS: dict[str, tuple[Any, str, bool, Callable[[], Any]]] = {
    "blackbox.run_job": (B, "_run_job", False, lambda: B.run_job(_spec("blackbox"), "breast_cancer", 0)),
    "blackbox.run_suite": (B, "collect_metadata", True, lambda: B.run_suite(_spec("blackbox"), progress=False)),
    "quality.run_task": (Q, "load_dataset", True, lambda: Q.run_task(_spec("quality"), "breast_cancer", 0, [])),
    "quality.run_suite": (Q, "collect_metadata", True, lambda: Q.run_suite(_spec("quality"), progress=False)),
    "retrieval.run_task": (R, "load_data", True, lambda: R.run_task(_spec("retrieval"), "digits", 0, "rambo")),
    "retrieval.run_suite": (R, "collect_metadata", True, lambda: R.run_suite(_spec("retrieval"), progress=False)),
    "rank_speed.run_rank_speed": (RS, "collect_metadata", True,
                                  lambda: RS.run_rank_speed(_spec("rank_speed", 2), progress=False)),
    "cli.main": (cli, "run_named", False, lambda: cli.main(["ablation", "--smoke", "--quiet", "--no-plots"])),
}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_every_runner_gives_the_callers_thread_count_back(name: str, caller_threads: int,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    module, attribute, stop, call = ENTRY_POINTS[name]
    seen: list[int] = []
    monkeypatch.setattr(module, attribute, _probe(seen, stop=stop, result={}))
    if stop:
        with pytest.raises(_Stop):
            call()
    else:
        call()
    expected = 2 if name == "rank_speed.run_rank_speed" else 1
    assert seen == [expected]  # the spec's count inside
    assert torch.get_num_threads() == caller_threads  # the caller's afterwards
