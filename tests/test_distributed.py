"""metricopt.distributed.gather: real gloo processes on CPU, DDP gradients against one process."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from metricopt.distributed import gather, is_distributed, world_size

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import ddp_workers  # noqa: E402 - spawned processes import it by this name, from HERE (on sys.path first)


def _spawn(tmp_path: Path, worker: object, sizes: list[int], extra: tuple) -> list[dict]:
    """Run ``worker(rank, sizes, init_file, out_dir, *extra)`` on ``len(sizes)`` gloo processes; their saved
    results, in rank order."""
    saved = {key: os.environ.get(key) for key in ("PYTHONPATH", "GLOO_SOCKET_IFNAME")}
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), *([saved["PYTHONPATH"]] if saved["PYTHONPATH"] else [])])
    os.environ["GLOO_SOCKET_IFNAME"] = saved["GLOO_SOCKET_IFNAME"] or "lo"  # loopback: CI machines have no network
    try:
        mp.spawn(worker, args=(sizes, str(tmp_path / "init"), str(tmp_path), *extra), nprocs=len(sizes), join=True)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(len(sizes))]


def _run(tmp_path: Path, sizes: list[int], *, use_gather: bool = True) -> list[dict]:
    return _spawn(tmp_path, ddp_workers.gradient_worker, sizes, (use_gather,))


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


@pytest.mark.parametrize("sizes", [[7, 7], [9, 4], pytest.param([5, 4, 3, 6], marks=pytest.mark.slow)],
                         ids=["2 even", "2 uneven", "4 uneven"])  # 4 processes: the slow suite
def test_ddp_gradients_with_gather_equal_one_process_holding_the_whole_batch(tmp_path: Path, sizes: list[int]) -> None:
    results = _run(tmp_path, sizes)
    reference = _reference(sum(sizes))
    for r in results:
        assert r["distributed"] and r["world_size"] == len(sizes) and r["rows"] == sum(sizes)
        assert _max_relative_error(r["grads"], reference) < 1e-6


def test_the_shard_loss_alone_gives_a_different_gradient(tmp_path: Path) -> None:
    """The control: without gather, DDP averages gradients of shard losses, which is not the global gradient."""
    results = _run(tmp_path, [9, 4], use_gather=False)
    assert _max_relative_error(results[0]["grads"], _reference(13)) > 1e-3


def test_without_a_process_group_gather_returns_its_input() -> None:
    x = torch.randn(3, 2, requires_grad=True)
    assert not is_distributed() and world_size() == 1
    assert gather(x) is x


@pytest.mark.parametrize("bad, error", [([1.0], TypeError), (torch.tensor(1.0), ValueError)])
def test_gather_rejects_bad_input_naming_the_argument(bad: object, error: type) -> None:
    with pytest.raises(error, match="`tensor`"):
        gather(bad)  # type: ignore[arg-type]


def _run_loss(tmp_path: Path, sizes: list[int], name: str, steps: int) -> list[dict]:
    return _spawn(tmp_path, ddp_workers.loss_worker, sizes, (name, steps))


def _loss_reference(name: str, n: int, steps: int) -> tuple[list[list[torch.Tensor]], object]:
    """One process, the whole batch, the same steps: gradients per step and the memory afterwards."""
    criterion, model = ddp_workers.loss_setup(name)
    grads = []
    for step in range(steps):
        X, y = ddp_workers.loss_batch(name, n, step)
        model.zero_grad()
        criterion(ddp_workers.loss_outputs(name, model, X), y).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    return grads, (criterion.memory.contents() if hasattr(criterion, "memory") else None)


@pytest.mark.parametrize("name", ddp_workers.LOSSES)
@pytest.mark.parametrize("sizes", [[11, 6], pytest.param([6, 5, 4, 7], marks=pytest.mark.slow)],
                         ids=["2 uneven", "4 uneven"])  # 4 processes: the slow suite
def test_every_loss_family_gives_one_process_gradients_and_equal_memories_under_ddp(
    tmp_path: Path, name: str, sizes: list[int]
) -> None:
    steps = 3
    results = _run_loss(tmp_path, sizes, name, steps)
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
            assert all(len(a) == len(b) for a, b in zip(r["memory"], memory))


@pytest.mark.parametrize("name", ddp_workers.ONE_PROCESS_LOSSES)
def test_a_loss_called_on_one_process_without_gradient_does_not_block(tmp_path: Path, name: str) -> None:
    results = _spawn(tmp_path, ddp_workers.one_process_loss_worker, [8, 8], (name,))
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
