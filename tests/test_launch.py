"""metricopt.app.launch, ``metricopt train --nproc`` and ``torchrun -m metricopt train``: real gloo processes on CPU.

The multi-process runs must report what one process reports: every loss
gathers the global batch and DDP averages exact gradients, so the histories
agree to float rounding and the test metrics are the same.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from metricopt.app.cli import main
from metricopt.app.launch import launch, torchrun_world_size
from metricopt.distributed import is_distributed

#: The signals torch's launcher installs handlers for (launch puts the caller's back).
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


#: What a process of launch sees, as an expression for ``eval`` (the processes are spawned: a function of
#: this module would not import in them).
GROUP_FACTS = ("(__import__('torch').distributed.get_world_size(), __import__('torch').distributed.get_rank(), "
               "__import__('torch').distributed.get_backend(), __import__('torch').get_num_threads(), "
               "__import__('os').environ.get('GLOO_SOCKET_IFNAME'))")


def test_launch_joins_the_processes_in_one_group_and_returns_process_0s_result() -> None:
    environment, handlers = dict(os.environ), {signum: signal.getsignal(signum) for signum in SIGNALS}
    world, rank, backend, threads, interface = launch(eval, 2, GROUP_FACTS)
    assert (world, rank, backend) == (2, 0, "gloo")
    assert threads == max(1, (os.cpu_count() or 1) // 2)
    assert interface is not None and interface.startswith("lo")  # one machine: the loopback interface
    assert not is_distributed()  # the caller's process joins no group
    # torch's launcher leaves its signal handlers and a variable behind; launch puts the caller's back
    assert dict(os.environ) == environment
    assert {signum: signal.getsignal(signum) for signum in SIGNALS} == handlers


def test_one_process_runs_here_without_a_group() -> None:
    assert launch(os.getpid, 1) == os.getpid()
    assert not dist.is_initialized()


def test_a_failing_process_raises_its_exception_here_with_its_rank() -> None:
    with pytest.raises(ValueError, match="invalid literal") as info:
        launch(int, 2, "not a number")  # both processes fail: the first to fail is reported
    notes = getattr(info.value, "__notes__", [])
    assert any("in process 0 of 2" in note or "in process 1 of 2" in note for note in notes), notes


def test_a_process_that_dies_without_an_exception_is_a_runtime_error_naming_it() -> None:
    with pytest.raises(RuntimeError, match=r"process [01] of 2 of metricopt.app.launch exited with status 3"):
        launch(os._exit, 2, 3)


@pytest.mark.parametrize("kwargs, match", [
    ({"nproc": 0}, "`nproc` must be an integer >= 1; got 0"),
    ({"nproc": True}, "`nproc` must be an integer >= 1; got True"),
    ({"nproc": "2"}, "`nproc` must be an integer >= 1; got '2'"),
    ({"nproc": 2, "backend": "mpi"}, "`backend` must be one of"),
    ({"nproc": 2, "threads": 0}, "`threads` must be an integer >= 1; got 0"),
])
def test_launch_rejects_bad_arguments_naming_them(kwargs: dict, match: str) -> None:
    nproc = kwargs.pop("nproc")
    with pytest.raises(ValueError, match=match):
        launch(dist.get_rank, nproc, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a GPU")
def test_nccl_without_a_gpu_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="'nccl' needs a CUDA GPU for each of nproc=2 processes; found 0"):
        launch(dist.get_rank, 2, backend="nccl")


def _train(tmp_path: Path, nproc: int, *options: str) -> dict:
    out = tmp_path / f"nproc{nproc}.json"
    assert main(["train", *options, "--nproc", str(nproc), "--no-plot", "-q", "-o", str(out)]) == 0
    return json.loads(out.read_text())


@pytest.mark.parametrize("options, rank_loss", [
    # 341 training rows in batches of 170: the last batch has one row, so process 1's share is empty
    (("--dataset", "breast_cancer", "--epochs", "3", "--batch-size", "170"), False),
    # multi-class MCC, weighted cross-entropy (a weighted mean, which DDP's average of shard means is not)
    (("--dataset", "wine", "--metric", "mcc", "--loss", "weighted_bce", "--epochs", "3", "--batch-size", "50"), False),
    # RaMBO's AP loss against BCE (data in scikit-learn)
    (("--dataset", "breast_cancer", "--metric", "ap", "--epochs", "3"), True),
], ids=["f1 empty share", "weighted ce multi-class", "rambo ap"])
def test_train_in_two_processes_reports_what_one_process_reports(
    tmp_path: Path, options: tuple, rank_loss: bool
) -> None:
    one, two = _train(tmp_path, 1, *options), _train(tmp_path, 2, *options)
    assert (one["world_size"], two["world_size"], two["backend"]) == (1, 2, "gloo")
    assert two["config"]["nproc"] == 2
    for method, history in one["history"].items():
        # The rank loss's gradient is piecewise constant in the scores and Adam's first steps are close to the
        # sign of the gradient: DDP sums the parameter gradients of the two shards in another order than one
        # process does (equal to rounding; tests/test_distributed.py checks the gradients themselves), and that
        # rounding flips the sign of near-zero components, so the weights after the first step already differ
        # (the second batch's scores summed to 3.6897 on one process and 3.6257 on two before the rank losses
        # moved to metricopt.losses.relevant_ranks, and 3.7406 and 3.6893 after). Only the first epoch, whose
        # loss is averaged over batches seen before and after that step, is then comparable; the AP loss's
        # value is piecewise constant, so it stays equal there.
        compared = history[:1] if rank_loss and method == "rambo" else history
        for a, b in zip(compared, two["history"][method], strict=False):
            assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5), (method, a["epoch"])
            assert b["val_score"] == a["val_score"], (method, a["epoch"])
    if rank_loss:
        assert two["baseline_metrics"] == one["baseline_metrics"]
        return
    assert two["test_metrics"] == one["test_metrics"]
    assert two["baseline_metrics"] == one["baseline_metrics"]
    assert (two["best_epoch"], two["baseline_best_epoch"]) == (one["best_epoch"], one["baseline_best_epoch"])


@pytest.mark.parametrize("argv, message", [
    (["--nproc", "0"], "--nproc must be >= 1 (processes to train with); got 0"),
    (["--nproc", "2", "--metric", "mcr"], "--method blackbox runs in one process, got --nproc 2"),
])
def test_bad_nproc_is_one_line_and_status_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", *argv, "--no-plot", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


# ---------------------------------------------------------------------------
# torchrun: one job, process 0 reports

TORCHRUN_ENVIRONMENT = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "localhost",
                        "MASTER_PORT": "29500"}


def test_torchrun_world_size_reads_torchruns_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TORCHRUN_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    assert torchrun_world_size() == 1
    for name, value in TORCHRUN_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    assert torchrun_world_size() == 2
    monkeypatch.delenv("MASTER_PORT")  # torchrun sets all five
    assert torchrun_world_size() == 1


@pytest.mark.parametrize("argv, message", [
    (["--nproc", "2"], "--nproc starts processes of its own; under torchrun (WORLD_SIZE=2) leave it out"),
    (["--metric", "mcr"], "--method blackbox runs in one process; torchrun started 2 (WORLD_SIZE=2)"),
    (["--model", "lightgbm"], "--model lightgbm trains in one process; torchrun started 2 (WORLD_SIZE=2)"),
])
def test_under_torchrun_options_it_replaces_are_one_line_from_process_0_and_status_2(
        argv: list[str], message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in TORCHRUN_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    assert main(["train", *argv, "--no-plot", "-q"]) == 2  # before joining the group: no process waits
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    monkeypatch.setenv("RANK", "1")  # the same error in process 1: status 2, nothing printed
    assert main(["train", *argv, "--no-plot", "-q"]) == 2
    assert capsys.readouterr() == ("", "")
    assert not dist.is_initialized()


def test_torchrun_runs_one_job_that_reports_what_one_process_reports(tmp_path: Path) -> None:
    options = ("--dataset", "breast_cancer", "--epochs", "3")
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "metricopt", "train", *options, "--no-plot", "--output", "torchrun.json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("exact metrics on the test split") == 1, run.stdout  # one table, not one per process
    assert run.stdout.count("in 2 processes (gloo, DDP)") == 1, run.stdout
    assert run.stdout.count("results: torchrun.json") == 1, run.stdout
    two, one = json.loads((tmp_path / "torchrun.json").read_text()), _train(tmp_path, 1, *options)
    assert (two["world_size"], two["backend"], two["config"]["nproc"]) == (2, "gloo", 2)
    assert two["test_metrics"] == one["test_metrics"]
    assert two["baseline_metrics"] == one["baseline_metrics"]


# ---------------------------------------------------------------------------
# Ctrl-C (issue 12, defect 11): every worker stops, one line, status 130


def _children(pid: int) -> dict[int, str]:
    """The live child processes of ``pid`` and their command lines (Linux /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (name) "
        if int(fields[1]) == pid and fields[0] != "Z":
            found[int(entry.name)] = command
    return found


def _wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("when", ["parent only, while training", "whole group, while the workers start"])
def test_sigint_stops_every_worker_with_one_line_and_status_130(tmp_path: Path, when: str) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # the workers' status line arrives as it is printed
    parent = subprocess.Popen(
        [sys.executable, "-m", "metricopt", "train", "--dataset", "breast_cancer", "--epochs", "100000",
         "--nproc", "2", "--no-plot"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True)  # its own process group, as a terminal job has
    try:
        if when.startswith("parent"):
            line = _wait_for(parent.stdout.readline, 180, "the status line")
            assert "in 2 processes" in line, line
            workers = _children(parent.pid)
            os.kill(parent.pid, signal.SIGINT)
        else:
            workers = _wait_for(lambda: {pid: cmd for pid, cmd in _children(parent.pid).items()
                                         if "spawn_main" in cmd} if len(_children(parent.pid)) >= 3 else None,
                                180, "the workers")
            os.killpg(parent.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        _, err = parent.communicate(timeout=60)
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
    assert parent.returncode == 130, err
    assert err == "metricopt: error: interrupted\n"  # no traceback from the parent or a worker
    assert sum("spawn_main" in cmd for cmd in workers.values()) == 2

    def all_gone() -> bool:
        for pid in workers:  # the command line guards against a reused pid
            with contextlib.suppress(OSError):
                if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return False
        return True

    _wait_for(all_gone, 10, "the workers to exit")
