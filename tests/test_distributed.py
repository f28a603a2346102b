"""metricopt.distributed.gather: real gloo processes on CPU, DDP gradients against one process.

The multi-process tests share one group of gloo processes per world size (2 and 4), started on first use and
kept for the module (:class:`_Group`): each test sends its workload to the group and checks what comes back.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.process
import os
import sys
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection, wait
from pathlib import Path

import pytest
import torch

from metricopt.distributed import gather, is_distributed, world_size

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import ddp_workers  # noqa: E402 - the worker processes import it by this name, from HERE (on sys.path first)

#: A collective that some process never joins fails after this long (gloo's timeout in the workers): how a
#: "does not block" test fails if a loss all-gathers on one process.
COLLECTIVE_TIMEOUT_S = 30.0
#: Starting a group: at most the fork server's start (an interpreter importing torch and metricopt), then forks.
START_TIMEOUT_S = 180.0
#: One workload (milliseconds of work); past this the group is killed and the test fails.
TASK_TIMEOUT_S = 2 * COLLECTIVE_TIMEOUT_S + 30.0
#: After one process reports an error, how long the others get to report theirs before the group is killed.
GRACE_S = 5.0


class GroupFailed(Exception):
    """A group of worker processes failed to start or to finish a workload (the message says which process did
    what); the group is gone."""


class _Group:
    """``world`` gloo processes (:func:`ddp_workers.serve`), started on the first workload and reused for every
    later one, so a test pays for its workload, not for a spawn and the imports of torch and metricopt.

    The processes come from multiprocessing's fork server (``"forkserver"``): one fresh interpreter per pytest
    process that imports ``ddp_workers`` (torch, metricopt) and ``torch._dynamo`` (DDP imports it on first use,
    0.8 s) once, then forks a copy for each process asked of it. Each process is then as fresh as a spawned one
    (no pytest state, no process group; the fork server runs nothing but those imports) without paying the
    imports: after the fork server's first start (~2 s) a group starts in well under a second, which matters
    under pytest-xdist, where every worker that runs tests of this module starts its own groups (and its own fork
    server, which lives until that pytest process exits). Errors come back through the pipe (the processes'
    stderr is the fork server's, which pytest does not show with the test).

    A workload that fails on any process (an exception, a process that dies, or no answer within
    ``TASK_TIMEOUT_S``) kills the group and fails its test; the next workload starts a fresh group, so one
    broken workload (e.g. a "does not block" loss that does block) fails only its own test. A group that cannot
    start fails every later workload of its world size at once instead of waiting ``START_TIMEOUT_S`` again.
    """

    def __init__(self, world: int, workdir: Path) -> None:
        self.world, self.workdir = world, workdir
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self.conns: list[Connection] = []
        self.starts = 0
        self.start_failure: str | None = None

    def run(self, body: Callable[..., None], sizes: list[int], out_dir: Path, args: tuple) -> list[dict]:
        """Run ``body(rank, sizes, out_dir, *args)`` on every process; their saved results, in rank order."""
        assert len(sizes) == self.world
        if self.start_failure is not None:
            raise GroupFailed(f"the group of {self.world} processes could not start earlier in this module:\n"
                              f"{self.start_failure}")
        if not self.processes:
            try:
                self._start()
            except GroupFailed as exc:
                self.start_failure = str(exc)
                raise
        for conn in self.conns:
            try:
                conn.send((body.__name__, sizes, str(out_dir), args))
            except OSError:  # the process is gone: _replies reports it
                pass
        self._replies("done", TASK_TIMEOUT_S, f"workload {body.__name__}{(sizes, *args)}")
        return [torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in range(self.world)]

    def _start(self) -> None:
        self.starts += 1
        init_file = self.workdir / f"init-{self.world}-{self.starts}"  # a fresh rendezvous file per group
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["ddp_workers", "torch._dynamo"])  # used when the fork server starts
        env = {"GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME") or "lo"}  # loopback: CI has no network
        saved = os.environ.get("PYTHONPATH")  # a fork server started here imports ddp_workers from HERE
        os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), *([saved] if saved else [])])
        try:
            for rank in range(self.world):
                parent_end, child_end = context.Pipe()
                process = context.Process(target=ddp_workers.serve, name=f"ddp-{self.world}-rank{rank}", daemon=True,
                                          args=(rank, self.world, str(init_file), child_end, COLLECTIVE_TIMEOUT_S, env))
                process.start()
                child_end.close()
                self.processes.append(process)
                self.conns.append(parent_end)
        finally:
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved
        self._replies("imported", START_TIMEOUT_S, "start (fork server and imports)")
        for conn in self.conns:
            try:
                conn.send("init")
            except OSError:  # the process is gone: _replies reports it
                pass
        self._replies("ready", COLLECTIVE_TIMEOUT_S + 30.0, "start (joining the process group)")

    def _replies(self, expected: str, timeout_s: float, what: str) -> None:
        """Wait for ``expected`` from every process; on anything else, or none within ``timeout_s``, kill the
        group and raise :class:`GroupFailed`."""
        deadline = time.monotonic() + timeout_s
        pending = {conn: rank for rank, conn in enumerate(self.conns)}
        problems: dict[int, str] = {}
        while pending and (remaining := deadline - time.monotonic()) > 0:
            for conn in wait(list(pending), timeout=remaining):
                rank = pending.pop(conn)
                try:
                    kind, detail = conn.recv()
                except (EOFError, OSError):
                    self.processes[rank].join(5)
                    kind, detail = "died", f"exit code {self.processes[rank].exitcode}"
                if kind != expected:
                    problems[rank] = f"{kind}: {detail}"
                    deadline = min(deadline, time.monotonic() + GRACE_S)
        if not problems and not pending:
            return
        silent = f"no answer within {timeout_s:g} s" if not problems else f"no answer {GRACE_S:g} s after that"
        for rank in pending.values():
            problems[rank] = silent
        self.close(kill=True)
        report = "\n".join(f"process {rank}: {problems[rank]}" for rank in sorted(problems))
        raise GroupFailed(f"{self.world}-process group, {what}:\n{report}")

    def close(self, *, kill: bool = False) -> None:
        """Stop the processes: ask them to leave the group, or kill them; then join them."""
        if not kill:
            for conn in self.conns:
                try:
                    conn.send(None)
                except OSError:
                    pass
        deadline = time.monotonic() + (0 if kill else 30.0)
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(10)
        for conn in self.conns:
            conn.close()
        self.processes, self.conns = [], []


class _Groups(dict):
    """The module's groups by world size, each made on first use."""

    def __init__(self, workdir: Path) -> None:
        super().__init__()
        self.workdir = workdir

    def __missing__(self, world: int) -> _Group:
        group = self[world] = _Group(world, self.workdir)
        return group


@pytest.fixture(scope="module")
def groups(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Groups]:
    """The gloo process groups of this module's tests, one per world size, started on first use and stopped at
    the end of the module (under pytest-xdist: per worker that runs tests of this module)."""
    made = _Groups(tmp_path_factory.mktemp("ddp_groups"))
    try:
        yield made
    finally:
        for group in made.values():
            group.close()


def _on_group(groups: _Groups, tmp_path: Path, body: Callable[..., None], sizes: list[int], args: tuple) -> list[dict]:
    """Run ``body(rank, sizes, out_dir, *args)`` on the module's group of ``len(sizes)`` gloo processes; their
    saved results, in rank order. A failure in the group fails the test with each process's message."""
    try:
        return groups[len(sizes)].run(body, sizes, tmp_path, args)
    except GroupFailed as exc:
        failure = str(exc)
    pytest.fail(failure, pytrace=False)  # outside the except block: the message once, without a chained traceback


def _run(groups: _Groups, tmp_path: Path, sizes: list[int], *, use_gather: bool = True) -> list[dict]:
    return _on_group(groups, tmp_path, ddp_workers.gradient_body, sizes, (use_gather,))


def _reference(n: int) -> list[torch.Tensor]:
    """The gradient of one process holding the whole batch."""
    X, y = ddp_workers.data(n)
    model = ddp_workers.model()
    ddp_workers.soft_f1_loss(model(X), y.double()).backward()
    return [p.grad for p in model.parameters()]


def _max_relative_error(got: list[torch.Tensor], want: list[torch.Tensor]) -> float:
    """Largest absolute difference over all parameters, relative to the largest gradient entry (a rank loss's
    bias gradient is 0 up to rounding, so per-tensor ratios would divide rounding noise by 0); an all-zero
    reference gradient needs an all-zero one (1e-12 absolute)."""
    scale = max(float(w.abs().max()) for w in want)
    diff = max(float((g - w).abs().max()) for g, w in zip(got, want))
    return diff / scale if scale > 0 else (0.0 if diff < 1e-12 else float("inf"))


@pytest.mark.parametrize("sizes", [[7, 7], [9, 4], [5, 4, 3, 6]], ids=["2 even", "2 uneven", "4 uneven"])
def test_ddp_gradients_with_gather_equal_one_process_holding_the_whole_batch(
    groups: _Groups, tmp_path: Path, sizes: list[int]
) -> None:
    results = _run(groups, tmp_path, sizes)
    reference = _reference(sum(sizes))
    for r in results:
        assert r["distributed"] and r["world_size"] == len(sizes) and r["rows"] == sum(sizes)
        assert _max_relative_error(r["grads"], reference) < 1e-6


def test_the_shard_loss_alone_gives_a_different_gradient(groups: _Groups, tmp_path: Path) -> None:
    """The control: without gather, DDP averages gradients of shard losses, which is not the global gradient."""
    results = _run(groups, tmp_path, [9, 4], use_gather=False)
    assert _max_relative_error(results[0]["grads"], _reference(13)) > 1e-3


def test_without_a_process_group_gather_returns_its_input() -> None:
    x = torch.randn(3, 2, requires_grad=True)
    assert not is_distributed() and world_size() == 1
    assert gather(x) is x


@pytest.mark.parametrize("bad, error", [([1.0], TypeError), (torch.tensor(1.0), ValueError)])
def test_gather_rejects_bad_input_naming_the_argument(bad: object, error: type) -> None:
    with pytest.raises(error, match="`tensor`"):
        gather(bad)  # type: ignore[arg-type]


def _run_loss(groups: _Groups, tmp_path: Path, sizes: list[int], name: str, steps: int) -> list[dict]:
    return _on_group(groups, tmp_path, ddp_workers.loss_body, sizes, (name, steps))


def _loss_reference(name: str, n: int, steps: int) -> tuple[list[list[torch.Tensor]], object]:
    """One process, the whole batch, the same steps: gradients per step and the memory afterwards."""
    criterion, model = ddp_workers.loss_setup(name)
    grads = []
    for step in range(steps):
        X, y = ddp_workers.loss_batch(name, n, step)
        model.zero_grad()
        criterion(ddp_workers.loss_outputs(name, model, X), y).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    return grads, ddp_workers.loss_state(criterion)


@pytest.mark.parametrize("name", ddp_workers.LOSSES)
@pytest.mark.parametrize("sizes", [[11, 6], [6, 5, 4, 7]], ids=["2 uneven", "4 uneven"])
def test_every_loss_family_gives_one_process_gradients_and_equal_memories_under_ddp(
    groups: _Groups, tmp_path: Path, name: str, sizes: list[int]
) -> None:
    steps = 3
    results = _run_loss(groups, tmp_path, sizes, name, steps)
    want, memory = _loss_reference(name, sum(sizes), steps)
    assert any(float(g.abs().max()) > 0 for step in want for g in step)  # the comparison is not of zeros
    for r in results:
        for got, expected in zip(r["grads"], want):
            assert _max_relative_error(got, expected) < 1e-6
        if memory is not None:
            # bitwise equal on every rank; equal to one process's up to float rounding (a shard's matmul may
            # round differently from the whole batch's in the last bit)
            assert all(torch.equal(a, b) for a, b in zip(r["memory"], results[0]["memory"]))
            assert all(torch.allclose(a.double(), b.double(), rtol=1e-12, atol=0) for a, b in zip(r["memory"], memory))
            assert all(a.shape == b.shape for a, b in zip(r["memory"], memory))


@pytest.mark.parametrize("name", ddp_workers.ONE_PROCESS_LOSSES)
def test_a_loss_called_on_one_process_without_gradient_does_not_block(
    groups: _Groups, tmp_path: Path, name: str
) -> None:
    results = _on_group(groups, tmp_path, ddp_workers.one_process_loss_body, [8, 8], (name,))
    criterion, model = ddp_workers.loss_setup(name)
    X, y = ddp_workers.loss_batch(name, 8, 0)
    with torch.no_grad():  # the value of process 0's own batch, as documented
        expected = float(criterion(ddp_workers.loss_outputs(name, model, X), y))
    assert results[0]["no_grad"] == pytest.approx(expected) and results[0]["detached"] == pytest.approx(expected)


@pytest.mark.slow
def test_ddp_scaling_benchmark_smoke() -> None:
    """python -m benchmarks.ddp_scaling --quick (2 processes, batch 256): runs, and its gathered gradients are exact."""
    import json
    import subprocess
    import tempfile

    result = Path(tempfile.gettempdir()) / "ddp_scaling_quick.json"
    result.unlink(missing_ok=True)
    done = subprocess.run([sys.executable, "-m", "benchmarks.ddp_scaling", "--quick"], check=False,
                          capture_output=True, text=True, timeout=600, cwd=HERE.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    records = json.loads(result.read_text())["records"]
    assert {(r["loss"], r["world_size"]) for r in records} >= {("ap", 2), ("confusion_f1", 2), ("recall", 2)}
    for r in records:
        assert r["gradient_error"] < 1e-5  # float32
        if r["world_size"] > 1:
            assert r["gradient_error_local_only"] > 1e-3
