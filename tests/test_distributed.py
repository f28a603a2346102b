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
import ddp_workers  # spawned processes import it by this name, from HERE


def _run(tmp_path: Path, sizes: list[int], *, use_gather: bool = True) -> list[dict]:
    """Run ``ddp_workers.gradient_worker`` on ``len(sizes)`` gloo processes; their saved results."""
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), *([path] if path else [])])
    try:
        mp.spawn(ddp_workers.gradient_worker, args=(sizes, str(tmp_path / "init"), str(tmp_path), use_gather),
                 nprocs=len(sizes), join=True)
    finally:
        if path is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = path
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(len(sizes))]


def _reference(n: int) -> list[torch.Tensor]:
    """The gradient of one process holding the whole batch."""
    X, y = ddp_workers.data(n)
    model = ddp_workers.model()
    ddp_workers.soft_f1_loss(model(X), y.double()).backward()
    return [p.grad for p in model.parameters()]


def _max_relative_error(got: list[torch.Tensor], want: list[torch.Tensor]) -> float:
    return max(float((g - w).abs().max() / w.abs().max()) for g, w in zip(got, want))


@pytest.mark.parametrize("sizes", [[7, 7], [9, 4], [5, 4, 3, 6]], ids=["2 even", "2 uneven", "4 uneven"])
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
