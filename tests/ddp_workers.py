"""Process bodies for the multi-process tests (tests/test_distributed.py).

Spawned processes import these by module name, so they live in a plain module
that the tests put on the children's path (this directory), not in a test file.
"""

from __future__ import annotations

import os
from pathlib import Path

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
