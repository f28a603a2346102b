"""Several processes joined in one ``torch.distributed`` group, started by PyTorch's own launcher.

Two ways in, one training code: inside, the library's losses gather their
batch across the processes (:mod:`metricopt.distributed`) and
:func:`metricopt.app.recipes.classification.fit` shards each batch and wraps
the model in DDP, so nothing changes between one process and several.

* ``torchrun ... -m metricopt train`` (one node or several): every process
  runs the command; :func:`torchrun_world_size` sees torchrun's environment and
  :func:`torchrun_group` joins the group it describes for the run.
* ``metricopt train --nproc N`` (one machine): :func:`launch` starts ``N``
  processes with torch's launcher (``elastic_launch``, standalone: what
  ``torchrun --standalone --nproc-per-node N`` does), runs the same function
  in each and returns what process 0 returned.

DECIDED:

* The group: gloo on CPU, NCCL when there is a GPU for every process of the
  node (the current CUDA device is the process's ``LOCAL_RANK``), joined
  through ``env://`` (torchrun's or the launcher's store). When every process
  of the group is on this machine (``--nproc``; torchrun with one node), gloo
  talks over the loopback interface (``GLOO_SOCKET_IFNAME``, unless set), so a
  machine without a network works; across nodes gloo picks the interface as
  it always does.
* Each process gets ``cpu_count // processes on the node`` torch threads (at
  least 1), so the processes do not oversubscribe the cores; under torchrun
  this replaces its default ``OMP_NUM_THREADS=1``.
* :func:`launch`: the launcher's configuration is ``torchrun --standalone``'s
  (c10d rendezvous at ``localhost:0``, one node) with no restarts (a failure
  is reported, not retried), its log files in a temporary folder removed
  afterwards, and its own log records (it logs each process it stops) kept
  from the terminal: the caller gets one exception, the command one line.
* A process that raises saves its exception and exits; the launcher stops
  the others (SIGTERM), and :func:`launch` raises the first failing
  process's exception (by time) with its rank and traceback as a note. A
  process that dies without one (a signal, a crash) is a ``RuntimeError``
  naming its rank and exit status.
* A process that succeeded leaves through the interpreter's normal exit,
  after destroying the group: no workaround. The previous launcher (spawn
  and a file store) needed ``os._exit(0)`` because processes aborted at
  interpreter exit; through this launcher no run aborted (the counts: the
  design notes, ``docs/design.md``, "Several processes"). Under torchrun, the
  command line ends its processes with :func:`end_process` (see there).
* Interrupting: the launcher turns SIGINT, SIGTERM, SIGHUP and SIGQUIT in
  the calling process into a stop of every process (the same signal, SIGKILL
  after :data:`STOP_GRACE_SECONDS`) before it returns, so no process outlives
  :func:`launch`; :func:`launch` then raises ``KeyboardInterrupt`` for SIGINT
  and hands any other signal to the caller's own handler (by default the
  process ends), and puts the caller's handlers back (the launcher leaves its
  own installed). The processes start with SIGINT blocked (:func:`launch`
  blocks it in the calling thread while the launcher runs; a helper thread
  takes it for the caller), so Ctrl-C, which the terminal sends to every
  process of the job, never lands in a process half-way through importing
  torch (a traceback per process); once running, a process leaves at once and
  quietly on SIGINT or SIGTERM, and on the death of the caller (torch sets
  ``PR_SET_PDEATHSIG``; a process whose caller died before that exits).
"""

from __future__ import annotations

import contextlib
import logging
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
import uuid
from collections.abc import Callable, Iterator
from multiprocessing import resource_tracker
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist

__all__ = ["BACKENDS", "default_backend", "end_process", "launch", "threads_per_process", "torchrun_group",
           "torchrun_rank", "torchrun_world_size"]

T = TypeVar("T")

#: Backends :func:`launch` accepts (``None``: :func:`default_backend`).
BACKENDS = ("gloo", "nccl")
#: Seconds the processes get to exit after the stop signal before SIGKILL, when :func:`launch` is interrupted.
STOP_GRACE_SECONDS = 5
#: What torchrun sets in each process it starts (``metricopt train`` joins that group when these are set).
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
#: The signals torch's launcher turns into a stop of every process (its default).
LAUNCHER_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT")
#: The loggers of torch's launcher, kept from the terminal while :func:`launch` runs.
LAUNCHER_LOGGERS = ("torch.distributed.elastic", "torch.distributed.launcher")


def default_backend(nproc: int) -> str:
    """``"nccl"`` when CUDA has a GPU for each of ``nproc`` processes, else ``"gloo"`` (CPU)."""
    if torch.cuda.is_available() and dist.is_nccl_available() and torch.cuda.device_count() >= nproc:
        return "nccl"
    return "gloo"


def threads_per_process(local_processes: int) -> int:
    """Torch threads for each of ``local_processes`` processes on this machine: ``cpu_count // n``, at least 1."""
    return max(1, (os.cpu_count() or 1) // local_processes)


def _loopback() -> str | None:
    """The loopback interface's name (``lo`` on Linux, ``lo0`` on macOS), or None."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except (OSError, AttributeError):
        return None
    return next((name for name in names if name.startswith("lo")), None)


def _join(backend: str, local_rank: int, threads: int, *, one_machine: bool) -> None:
    """Join the group the environment describes (``env://``): threads, device, loopback, then the group."""
    torch.set_num_threads(threads)
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    elif one_machine and "GLOO_SOCKET_IFNAME" not in os.environ:
        loopback = _loopback()
        if loopback is not None:
            os.environ["GLOO_SOCKET_IFNAME"] = loopback  # this process only
    dist.init_process_group(backend, init_method="env://")


# ---------------------------------------------------------------------------
# Under torchrun


def _environment_int(name: str) -> int:
    text = os.environ[name]
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"the environment variable {name} must be an integer (torchrun sets it); "
                         f"got {name}={text!r}") from None


def torchrun_world_size() -> int:
    """``WORLD_SIZE`` when torchrun started this process in a group of 2+ processes not joined yet; else 1.

    torchrun's environment: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR`` and ``MASTER_PORT`` all set. With a process group already
    initialised (the caller joined it) this is 1: nothing to join.
    """
    if dist.is_initialized() or any(name not in os.environ for name in TORCHRUN_VARIABLES):
        return 1
    return max(1, _environment_int("WORLD_SIZE"))


def torchrun_rank() -> int:
    """This process's ``RANK`` under torchrun (0 without torchrun's environment)."""
    return _environment_int("RANK") if "RANK" in os.environ else 0


@contextlib.contextmanager
def torchrun_group() -> Iterator[None]:
    """Join the process group torchrun's environment describes, for the duration; destroy it at the end.

    On a normal exit every process waits at a barrier before destroying the group; on an
    exception it destroys its side at once (torchrun stops the others).

    The backend and threads follow the processes on this node (``LOCAL_WORLD_SIZE``,
    see the module's DECIDED notes); with NCCL the current CUDA device is ``LOCAL_RANK``.
    """
    world = _environment_int("WORLD_SIZE")
    local_world = _environment_int("LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in os.environ else world
    _join(default_backend(local_world), _environment_int("LOCAL_RANK"), threads_per_process(local_world),
          one_machine=local_world == world)
    try:
        yield
    except BaseException:
        if dist.is_initialized():
            dist.destroy_process_group()
        raise
    dist.barrier()  # no process tears its side down while another still talks to it
    dist.destroy_process_group()


# ---------------------------------------------------------------------------
# launch: torch's launcher, standalone


def _check_nproc(nproc: Any) -> int:
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"`nproc` must be an integer >= 1; got {nproc!r}")
    return nproc


def end_process(status: int) -> None:
    """End a process of a multi-process job at once with ``status``, after flushing its output.

    The command line ends each torchrun process this way once the group is
    destroyed: interpreter exit runs the C++ teardown of torch's distributed
    objects, which aborted about one run in 50 (SIGABRT, "terminate called
    without an active exception", in process 1; the design notes have the counts).
    """
    _exit(status)


def _exit(status: int) -> None:
    """Leave the process at once, after what the interpreter's exit would have released.

    ``multiprocessing``'s exit handler releases the semaphores the process made
    (tqdm makes one for its bars); without it the resource tracker warns that
    they leaked.
    """
    # Each step may fail when a signal handler interrupted the same call (a reentrant flush); exit anyway.
    for step in (multiprocessing.util._exit_function, sys.stdout.flush, sys.stderr.flush):
        with contextlib.suppress(Exception):
            step()
    os._exit(status)


def _stopped(signum: int, frame: Any) -> None:
    """SIGINT or SIGTERM in a process of :func:`launch` (a stop, Ctrl-C, the caller died): leave quietly."""
    _exit(128 + signum)


def _worker(fn: Callable[..., Any], args: tuple[Any, ...], backend: str, threads: int, folder: str,
            caller: int) -> Any:
    """One process of :func:`launch`: join the group, run ``fn(*args)``; process 0's result, or save the error."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stopped)
    if hasattr(signal, "pthread_sigmask"):  # blocked since the start (see the module docstring)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if os.getppid() != caller:  # the caller died before torch asked for a signal on its death
        _exit(1)
    rank = int(os.environ["RANK"])
    try:
        _join(backend, int(os.environ["LOCAL_RANK"]), threads, one_machine=True)
        result = fn(*args)
        dist.barrier()
        dist.destroy_process_group()
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller
        text = "".join(traceback.format_exception(exc))
        try:
            payload = pickle.dumps((time.time(), exc, text))
        except Exception:  # noqa: BLE001 - an exception that does not pickle: its type name and text
            payload = pickle.dumps((time.time(), RuntimeError(f"{type(exc).__name__}: {exc}"), text))
        (Path(folder) / f"error{rank}.pkl").write_bytes(payload)
        _exit(1)
    return result if rank == 0 else None


def _raise_first_error(folder: Path, nproc: int, failure: Any) -> None:
    """The exception of the process that failed first (a note names it), else what the launcher saw."""
    saved = sorted(((pickle.loads(path.read_bytes()), int(path.stem[len("error"):]))
                    for path in folder.glob("error*.pkl")), key=lambda item: (item[0][0], item[1]))
    for (_, exc, text), rank in saved:
        if isinstance(exc, Exception):
            where = f"(in process {rank} of {nproc}; its traceback:)\n{text.rstrip()}"
            if hasattr(exc, "add_note"):  # Python >= 3.11
                exc.add_note(where)
                raise exc
            raise exc from RuntimeError(where)
    rank, process = failure.get_first_failure()
    how = (f"was killed by {process.signal_name()}" if process.exitcode < 0
           else f"exited with status {process.exitcode}")
    raise RuntimeError(f"process {rank} of {nproc} of metricopt.app.launch {how}") from None


@contextlib.contextmanager
def _launcher_quiet() -> Iterator[None]:
    """The launcher's log records go nowhere while it runs (see the module docstring); restored after."""
    saved = []
    for name in LAUNCHER_LOGGERS:
        logger = logging.getLogger(name)
        handler = logging.NullHandler()
        saved.append((logger, handler, logger.propagate))
        logger.addHandler(handler)
        logger.propagate = False
    try:
        yield
    finally:
        for logger, handler, propagate in saved:
            logger.removeHandler(handler)
            logger.propagate = propagate


@contextlib.contextmanager
def _signals_kept() -> Iterator[None]:
    """The caller's handlers of the launcher's signals, put back on leaving; SIGINT blocked in this thread.

    The launcher installs its own handlers and leaves them. While it runs,
    SIGINT is blocked in this (the main) thread, so the processes it spawns
    start with SIGINT blocked (the mask survives fork and exec); a helper
    thread with SIGINT unblocked receives it for this process, and Python runs
    the handler in the main thread as always. Only the main thread handles
    signals: in another thread nothing changes (nor does the launcher install handlers).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = [getattr(signal, name) for name in LAUNCHER_SIGNALS if hasattr(signal, name)]
    handlers = {signum: signal.getsignal(signum) for signum in signals}
    receiver, done = None, threading.Event()
    mask = None
    if hasattr(signal, "pthread_sigmask"):
        # Started now, not by the launcher: starting it unblocks SIGINT in the calling thread.
        resource_tracker.ensure_running()
        receiver = threading.Thread(target=done.wait, name="metricopt-launch-signals", daemon=True)
        receiver.start()  # before the block: its mask lets SIGINT in
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        for signum, handler in handlers.items():
            if handler is not None:  # None: a handler installed outside Python, not ours to replace
                signal.signal(signum, handler)
        if mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a SIGINT that arrived since: the caller's handler
        if receiver is not None:
            done.set()
            receiver.join()


def launch(fn: Callable[..., T], nproc: int, *args: Any, backend: str | None = None,
           threads: int | None = None) -> T:
    """``fn(*args)`` in ``nproc`` processes joined in one process group; process 0's return value.

    The processes are started by torch's launcher
    (:class:`torch.distributed.launcher.api.elastic_launch`, standalone on this
    machine, as ``torchrun --standalone`` would), so ``fn`` and ``args`` must
    pickle (``fn`` a module-level function). Inside ``fn``,
    ``torch.distributed`` is initialised (rank ``dist.get_rank()``, world size
    ``nproc``); with NCCL the current CUDA device is the rank's. ``nproc=1``
    calls ``fn(*args)`` in this process, without a group.

    Args:
        fn: the function every process runs.
        nproc: number of processes (>= 1).
        *args: its arguments, the same in every process.
        backend: ``"gloo"`` or ``"nccl"`` (default: :func:`default_backend`).
        threads: torch threads per process (default: ``cpu_count // nproc``, at least 1).

    Raises:
        ValueError: bad ``nproc``, ``backend`` or ``threads``, or NCCL without a GPU per process.
        Exception: the first failing process's exception, with its rank and traceback as a note.
        RuntimeError: a process died without an exception (a signal, a crash).
        KeyboardInterrupt: SIGINT (Ctrl-C) reached this process; every process has been stopped.
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
        threads = threads_per_process(nproc)
    elif isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"`threads` must be an integer >= 1; got {threads!r}")
    if nproc == 1:
        return fn(*args)

    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    received = None
    variable = "TORCHELASTIC_SIGNALS_TO_HANDLE"  # the launcher sets it here; put back as it was
    before = os.environ.get(variable)
    with tempfile.TemporaryDirectory(prefix="metricopt-launch-") as folder:
        config = LaunchConfig(
            min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"metricopt-{uuid.uuid4().hex}",
            rdzv_backend="c10d", rdzv_endpoint="localhost:0", local_addr="localhost", max_restarts=0,
            start_method="spawn", monitor_interval=0.1, signals_to_handle=",".join(LAUNCHER_SIGNALS),
            logs_specs=DefaultLogsSpecs(log_dir=folder), shutdown_timeout=STOP_GRACE_SECONDS)
        try:
            with _launcher_quiet(), _signals_kept():
                outputs = elastic_launch(config, _worker)(fn, args, backend, threads, folder, os.getpid())
        except SignalException as exc:
            received = exc.sigval
        except ChildFailedError as failure:
            _raise_first_error(Path(folder), nproc, failure)
        finally:
            if before is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = before
    if received is None:
        return outputs[0]
    if received == signal.SIGINT:
        raise KeyboardInterrupt
    signal.raise_signal(received)  # the caller's own handler (the default ends the process)
    raise RuntimeError(f"metricopt.app.launch was stopped by {received.name}")
