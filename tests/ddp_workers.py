"""Process bodies for the multi-process tests (tests/test_distributed.py).

Spawned processes import these by module name, so they live in a plain module
that the tests put on the children's path (this directory), not in a test file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from metricopt.distributed import gather, is_distributed, world_size

FEATURES = 6


def data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` rows of features and binary labels (30 % positives), the same in every process."""
    generator = torch.Generator().manual_seed(0)
    X = torch.randn(n, FEATURES, generator=generator, dtype=torch.float64)
    y = (torch.rand(n, generator=generator) < 0.3).long()
    return X, y


def model() -> nn.Module:
    """A small MLP with the same initial weights in every process."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(FEATURES, 4), nn.Tanh(), nn.Linear(4, 1)).double()


def soft_f1_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Non-decomposable: 1 - soft F1 of the whole batch (a loss of a shard is a different function)."""
    p = torch.sigmoid(logits.squeeze(1))
    tp = (p * target).sum()
    return 1 - 2 * tp / (p.sum() + target.sum())


def shards(sizes: list[int]) -> list[slice]:
    """Rank ``r``'s rows of the global batch: consecutive blocks of ``sizes[r]`` rows."""
    starts = [sum(sizes[:r]) for r in range(len(sizes))]
    return [slice(s, s + n) for s, n in zip(starts, sizes)]


def gradient_worker(rank: int, sizes: list[int], init_file: str, out_dir: str, use_gather: bool) -> None:
    """One DDP step of ``soft_f1_loss`` on this rank's shard (gathered or not); saves the gradients."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=len(sizes))
    try:
        X, y = data(sum(sizes))
        rows = shards(sizes)[rank]
        ddp = nn.parallel.DistributedDataParallel(model())
        logits, target = ddp(X[rows]), y[rows]
        if use_gather:
            logits, target = gather(logits), gather(target)
        soft_f1_loss(logits, target.double()).backward()
        torch.save({"grads": [p.grad for p in ddp.parameters()], "world_size": world_size(),
                    "distributed": is_distributed(), "rows": len(logits)}, Path(out_dir) / f"rank{rank}.pt")
        del ddp
        dist.barrier()
    finally:
        dist.destroy_process_group()
    # Reached only on success, with the results saved. Skip interpreter finalization: with torch 2.13 and gloo,
    # about 1 run in 10 aborts there ("terminate called without an active exception", SIGABRT) after the
    # process group is destroyed (measured with 20 repeated 2-process runs; pytorch/pytorch PR 179291
    # describes gloo threads outliving the interpreter).
    os._exit(0)


def _loss_factories() -> dict[str, tuple[Any, int, str]]:
    from metricopt.losses import APLoss, AUROCLoss, ConfusionLoss, NDCGLoss, RecallLoss, cross_entropy_loss

    return {  # name: (criterion factory, model outputs, target kind)
        "cross_entropy": (lambda: cross_entropy_loss, 1, "binary"),
        "confusion_f1": (lambda: ConfusionLoss("f1"), 1, "binary"),
        "confusion_mcc_multiclass": (lambda: ConfusionLoss("mcc"), 3, "classes"),
        "ap_with_memory": (lambda: APLoss(memory_size=2), 1, "binary"),
        "auroc": (lambda: AUROCLoss(), 1, "binary"),
        "recall_with_memory": (lambda: RecallLoss(memory_size=2), 4, "classes"),
        "ndcg": (lambda: NDCGLoss(k=5), 1, "gains"),
    }


LOSSES = ("confusion_f1", "confusion_mcc_multiclass", "ap_with_memory", "auroc", "recall_with_memory", "ndcg")
#: Every family, cross-entropy included: none may all-gather where no gradient can flow.
ONE_PROCESS_LOSSES = (*LOSSES, "cross_entropy")


def loss_batch(name: str, n: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Step ``step``'s global batch of ``n`` rows for loss ``name``: features and targets."""
    kind = _loss_factories()[name][2]
    generator = torch.Generator().manual_seed(100 + step)
    X = torch.randn(n, FEATURES, generator=generator, dtype=torch.float64)
    if kind == "binary":
        y = (torch.rand(n, generator=generator) < 0.4).long()
    elif kind == "classes":
        y = torch.randint(0, 3, (n,), generator=generator)
    else:
        y = torch.randint(0, 3, (n,), generator=generator).double()
    return X, y


def loss_setup(name: str) -> tuple[nn.Module, nn.Module]:
    """Loss ``name``'s criterion and a linear model (the same weights in every process)."""
    factory, outputs, _ = _loss_factories()[name]
    torch.manual_seed(2)
    return factory(), nn.Linear(FEATURES, outputs).double()


def loss_outputs(name: str, model: nn.Module, X: torch.Tensor) -> torch.Tensor:
    out = model(X)
    return out.squeeze(1) if name == "ndcg" else out


def loss_worker(rank: int, sizes: list[int], init_file: str, out_dir: str, name: str, steps: int) -> None:
    """``steps`` DDP steps of loss ``name`` (the module, defaults) on this rank's shards; saves each step's
    gradients and the memory afterwards."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=len(sizes))
    try:
        criterion, model = loss_setup(name)
        ddp = nn.parallel.DistributedDataParallel(model)
        rows = shards(sizes)[rank]
        grads = []
        for step in range(steps):
            X, y = loss_batch(name, sum(sizes), step)
            ddp.zero_grad()
            criterion(loss_outputs(name, ddp, X[rows]), y[rows]).backward()
            grads.append([p.grad.clone() for p in ddp.parameters()])
        memory = criterion.memory.contents() if hasattr(criterion, "memory") else None
        torch.save({"grads": grads, "memory": list(memory) if memory is not None else None},
                   Path(out_dir) / f"rank{rank}.pt")
        del ddp
        dist.barrier()
    finally:
        dist.destroy_process_group()
    os._exit(0)  # see gradient_worker


def one_process_loss_worker(rank: int, sizes: list[int], init_file: str, out_dir: str, name: str) -> None:
    """Process 0 alone calls loss ``name`` under ``torch.no_grad()`` and on inputs that do not require grad
    (a validation or logging step); the other processes go straight to the barrier. A loss that all-gathered
    there would block process 0 until the group's timeout (the test's failure), as it did on main."""
    import datetime

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=len(sizes),
                            timeout=datetime.timedelta(seconds=30))
    try:
        values = {}
        if rank == 0:
            criterion, model = loss_setup(name)
            X, y = loss_batch(name, sizes[0], 0)
            with torch.no_grad():
                values["no_grad"] = float(criterion(loss_outputs(name, model, X), y))
            values["detached"] = float(criterion(loss_outputs(name, model, X).detach(), y))
        torch.save(values, Path(out_dir) / f"rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()
    os._exit(0)  # see gradient_worker
