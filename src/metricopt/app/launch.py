"""Running a function in several processes joined in one ``torch.distributed`` group, on one machine.

:func:`launch` is what ``metricopt train --nproc N`` uses: it starts ``N``
processes (``torch.multiprocessing``, spawn), joins them in a process group
(gloo on CPU, NCCL when there is a GPU for every process), runs the same
function in each and returns what process 0 returned. Inside, the library's
losses gather their batch across the processes (:mod:`metricopt.distributed`)
and :func:`metricopt.app.recipes.classification.fit` shards each batch and wraps the model in
DDP, so no code changes between one process and several.

DECIDED:

* Single machine only, no ``torchrun`` needed: the group is initialised
  through a file in a temporary directory (no port to pick or race for), and
  gloo talks over the loopback interface (``GLOO_SOCKET_IFNAME``, unless the
  caller set it), so a machine without a network works.
* Each process gets ``cpu_count // N`` torch threads (at least 1), so ``N``
  processes do not oversubscribe the cores ``N``-fold.
* A process that raises sends its exception back and exits; the others are
  stopped, and :func:`launch` raises the same exception type with the rank
  and the process's traceback appended.
* A process that succeeded ends with ``os._exit(0)`` after saving its result
  and destroying the group: with torch 2.13 and gloo about one process in ten
  aborts at interpreter exit (SIGABRT, "terminate called without an active
  exception") after all work is done (measured: 20 repeated 2-process runs);
  ``os._exit`` skips that teardown.
* Interrupting: only the calling process handles SIGINT. The processes are
  started with SIGINT ignored (an ignored signal stays ignored in the spawned
  interpreter), so Ctrl-C, which the terminal sends to every process of the
  group, never lands in a worker half-way through importing torch (a
  traceback per worker) and a SIGINT sent to the caller alone is not lost.
  The caller's KeyboardInterrupt stops every worker (SIGTERM, on which a
  worker releases its semaphores and exits at once; SIGKILL after a grace
  period) before it propagates, so no worker outlives :func:`launch`. A
  worker also receives SIGTERM when the caller dies (Linux: PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing.util
import os
import pickle
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.multiprocessing.spawn import ProcessException

__all__ = ["BACKENDS", "default_backend", "launch"]

T = TypeVar("T")

#: Backends :func:`launch` accepts (``None``: :func:`default_backend`).
BACKENDS = ("gloo", "nccl")
#: Seconds the workers get to exit after SIGTERM before SIGKILL, when :func:`launch` is interrupted.
STOP_GRACE_SECONDS = 5.0


def default_backend(nproc: int) -> str:
    """``"nccl"`` when CUDA has a GPU for each of ``nproc`` processes, else ``"gloo"`` (CPU)."""
    if torch.cuda.is_available() and dist.is_nccl_available() and torch.cuda.device_count() >= nproc:
        return "nccl"
    return "gloo"


def _loopback() -> str | None:
    """The loopback interface's name (``lo`` on Linux, ``lo0`` on macOS), or None."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except (OSError, AttributeError):
        return None
    return next((name for name in names if name.startswith("lo")), None)


def _check_nproc(nproc: Any) -> int:
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"`nproc` must be an integer >= 1; got {nproc!r}")
    return nproc


def _terminated(signum: int, frame: Any) -> None:
    """SIGTERM in a worker (:func:`launch` stops it, or its parent died): leave at once, semaphores released."""
    _exit(128 + signum)


def _die_with_parent() -> None:
    """Linux: SIGTERM when the parent dies (torch's own setting, SIGINT, is ignored in the workers)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG


def _worker(rank: int, fn: Callable[..., Any], args: tuple[Any, ...], nproc: int, backend: str,
            threads: int, folder: str) -> None:
    """One process: join the group, run ``fn(*args)``, save the result (process 0) or the error."""
    out = Path(folder)
    signal.signal(signal.SIGTERM, _terminated)
    _die_with_parent()
    if hasattr(signal, "pthread_sigmask"):  # blocked by _sigint_held in the parent; ignored here anyway
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    try:
        torch.set_num_threads(threads)
        if backend == "nccl":
            torch.cuda.set_device(rank)
        dist.init_process_group(backend, init_method=f"file://{out / 'init'}", rank=rank, world_size=nproc)
        result = fn(*args)
        if rank == 0:
            (out / "result.tmp").write_bytes(pickle.dumps(result))
            os.replace(out / "result.tmp", out / "result.pkl")
        dist.barrier()
        dist.destroy_process_group()
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent
        text = "".join(traceback.format_exception(exc))
        try:
            payload = pickle.dumps((exc, text))
        except Exception:  # noqa: BLE001 - an exception that does not pickle: its type name and text
            payload = pickle.dumps((RuntimeError(f"{type(exc).__name__}: {exc}"), text))
        (out / f"error{rank}.pkl").write_bytes(payload)
        _exit(1)
    _exit(0)  # see the module docstring: skip gloo's teardown at interpreter exit


def _exit(status: int) -> None:
    """Leave the process without the interpreter's teardown, after what that teardown would have released.

    ``multiprocessing``'s exit handler releases the semaphores the process made
    (tqdm makes one for its bars); without it the parent's resource tracker
    warns that they leaked.
    """
    # Each step may fail when a signal handler interrupted the same call (a reentrant flush); exit anyway.
    for step in (multiprocessing.util._exit_function, sys.stdout.flush, sys.stderr.flush):
        with contextlib.suppress(Exception):
            step()
    os._exit(status)


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """While the workers start: SIGINT ignored (they inherit that) and blocked (so none arriving is lost).

    On leaving, the caller's handler is back and a SIGINT that arrived
    meanwhile is delivered to it. Only the main thread handles signals; in
    another thread, or with a handler installed outside Python, nothing changes.
    """
    if (threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask")
            or signal.getsignal(signal.SIGINT) is None):
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _stop(processes: Sequence[Any], grace: float = STOP_GRACE_SECONDS) -> None:
    """Stop every worker: SIGTERM, then SIGKILL after ``grace`` seconds; a second Ctrl-C meanwhile waits."""
    with _sigint_held():
        for process in processes:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + grace
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()


def _raise_first_error(folder: Path, nproc: int, failure: Exception) -> None:
    for rank in range(nproc):
        path = folder / f"error{rank}.pkl"
        if path.exists():
            exc, text = pickle.loads(path.read_bytes())
            if isinstance(exc, Exception):
                where = f"(in process {rank} of {nproc}; its traceback:)\n{text.rstrip()}"
                if hasattr(exc, "add_note"):  # Python >= 3.11
                    exc.add_note(where)
                    raise exc
                raise exc from RuntimeError(where)
    raise RuntimeError(f"a process of metricopt.app.launch(nproc={nproc}) failed: {failure}") from failure


def launch(fn: Callable[..., T], nproc: int, *args: Any, backend: str | None = None,
           threads: int | None = None) -> T:
    """``fn(*args)`` in ``nproc`` processes joined in one process group; process 0's return value.

    ``fn`` and ``args`` must pickle (``fn`` a module-level function), since
    the processes are spawned. Inside ``fn``, ``torch.distributed`` is
    initialised (rank ``dist.get_rank()``, world size ``nproc``); with NCCL the
    current CUDA device is the rank's. ``nproc=1`` calls ``fn(*args)`` in this
    process, without a group.

    Args:
        fn: the function every process runs.
        nproc: number of processes (>= 1).
        *args: its arguments, the same in every process.
        backend: ``"gloo"`` or ``"nccl"`` (default: :func:`default_backend`).
        threads: torch threads per process (default: ``cpu_count // nproc``, at least 1).

    Raises:
        ValueError: bad ``nproc``, ``backend`` or ``threads``, or NCCL without a GPU per process.
        Exception: the first failing process's exception, with its rank and traceback as a note.
        KeyboardInterrupt: SIGINT (Ctrl-C) reached this process; every worker has been stopped.
    """
    nproc = _check_nproc(nproc)
    if not callable(fn):
        raise TypeError(f"`fn` must be callable; got {type(fn).__name__}")
    backend = default_backend(nproc) if backend is None else backend
    if backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {BACKENDS}; got {backend!r}")
    if backend == "nccl" and (not torch.cuda.is_available() or torch.cuda.device_count() < nproc):
        raise ValueError(f"`backend`='nccl' needs a CUDA GPU for each of nproc={nproc} processes; "
                         f"found {torch.cuda.device_count() if torch.cuda.is_available() else 0}")
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // nproc)
    elif isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"`threads` must be an integer >= 1; got {threads!r}")
    if nproc == 1:
        return fn(*args)
    loopback = _loopback() if backend == "gloo" and "GLOO_SOCKET_IFNAME" not in os.environ else None
    if loopback is not None:
        os.environ["GLOO_SOCKET_IFNAME"] = loopback  # the spawned processes inherit it
    try:
        with tempfile.TemporaryDirectory(prefix="metricopt-launch-") as folder:
            context = None
            try:
                with _sigint_held():
                    context = mp.start_processes(_worker, args=(fn, args, nproc, backend, threads, folder),
                                                 nprocs=nproc, join=False, start_method="spawn")
                while not context.join():
                    pass
            except ProcessException as failure:
                _raise_first_error(Path(folder), nproc, failure)
            except BaseException:  # KeyboardInterrupt above all: no worker may outlive this call
                if context is not None:
                    _stop(context.processes)
                raise
            return pickle.loads((Path(folder) / "result.pkl").read_bytes())
    finally:
        if loopback is not None:
            os.environ.pop("GLOO_SOCKET_IFNAME", None)
