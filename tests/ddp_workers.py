"""Process bodies for the multi-process tests (tests/test_distributed.py).

The worker processes import these by module name (multiprocessing's fork
server, which forks them, imports this module), so they live in a plain module
that the tests put on the path (this directory), not in a test file. The tests
start one group of processes per world size (:func:`serve`) and send it the
workloads (the ``*_body`` functions), one per test.
"""

from __future__ import annotations

import datetime
import os
import traceback
from multiprocessing.connection import Connection
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


def gradient_body(rank: int, sizes: list[int], out_dir: str, use_gather: bool) -> None:
    """One DDP step of ``soft_f1_loss`` on this rank's shard (gathered or not); saves the gradients."""
    X, y = data(sum(sizes))
    rows = shards(sizes)[rank]
    ddp = nn.parallel.DistributedDataParallel(model())
    logits, target = ddp(X[rows]), y[rows]
    if use_gather:
        logits, target = gather(logits), gather(target)
    soft_f1_loss(logits, target.double()).backward()
    torch.save({"grads": [p.grad for p in ddp.parameters()], "world_size": world_size(),
                "distributed": is_distributed(), "rows": len(logits)}, Path(out_dir) / f"rank{rank}.pt")


def _loss_factories() -> dict[str, tuple[Any, int, str]]:
    from metricopt.losses import APLoss, AUROCLoss, ConfusionLoss, NDCGLoss, RecallLoss, cross_entropy_loss

    return {  # name: (criterion factory, model outputs, target kind)
        "cross_entropy": (lambda: cross_entropy_loss, 1, "binary"),
        "confusion_f1": (lambda: ConfusionLoss("f1"), 1, "binary"),
        "confusion_mcc_multiclass": (lambda: ConfusionLoss("mcc"), 3, "classes"),
        "confusion_f1_count_average": (lambda: ConfusionLoss("f1", count_momentum=0.3), 1, "binary"),
        "confusion_mcc_count_average": (lambda: ConfusionLoss("mcc", count_momentum=0.3), 3, "classes"),
        "confusion_recall_at_precision": (lambda: ConfusionLoss("recall@precision>=0.7"), 1, "binary"),
        "ap_with_memory": (lambda: APLoss(memory_size=2), 1, "binary"),
        "auroc": (lambda: AUROCLoss(), 1, "binary"),
        "recall_with_memory": (lambda: RecallLoss(memory_size=2), 4, "classes"),
        "ndcg": (lambda: NDCGLoss(k=5), 1, "gains"),
    }


LOSSES = ("confusion_f1", "confusion_mcc_multiclass", "confusion_f1_count_average", "confusion_mcc_count_average",
          "confusion_recall_at_precision", "ap_with_memory", "auroc", "recall_with_memory", "ndcg")
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


def loss_state(criterion: Any) -> list[torch.Tensor] | None:
    """What a loss carries from batch to batch: the rank losses' memory, the confusion loss's count average or
    Lagrange multipliers."""
    if hasattr(criterion, "memory"):
        contents = criterion.memory.contents()
        return None if contents is None else list(contents)
    multipliers = getattr(criterion, "multipliers", None)
    if multipliers is not None:
        return [multipliers.values]
    average = getattr(criterion, "count_average", None)
    return None if average is None else list(average.rates)


def loss_outputs(name: str, model: nn.Module, X: torch.Tensor) -> torch.Tensor:
    out = model(X)
    return out.squeeze(1) if name == "ndcg" else out


def loss_body(rank: int, sizes: list[int], out_dir: str, name: str, steps: int) -> None:
    """``steps`` DDP steps of loss ``name`` (the module, defaults) on this rank's shards; saves each step's
    gradients and the memory afterwards."""
    criterion, model = loss_setup(name)
    ddp = nn.parallel.DistributedDataParallel(model)
    rows = shards(sizes)[rank]
    grads = []
    for step in range(steps):
        X, y = loss_batch(name, sum(sizes), step)
        ddp.zero_grad()
        criterion(loss_outputs(name, ddp, X[rows]), y[rows]).backward()
        grads.append([p.grad.clone() for p in ddp.parameters()])
    torch.save({"grads": grads, "memory": loss_state(criterion)}, Path(out_dir) / f"rank{rank}.pt")


def one_process_loss_body(rank: int, sizes: list[int], out_dir: str, name: str) -> None:
    """Process 0 alone calls loss ``name`` under ``torch.no_grad()`` and on inputs that do not require grad
    (a validation or logging step); the other processes go straight to the barrier that ends every workload
    (:func:`serve`). A loss that all-gathered there would block process 0 until the group's timeout (the
    test's failure), as it did on main."""
    values = {}
    if rank == 0:
        criterion, model = loss_setup(name)
        X, y = loss_batch(name, sizes[0], 0)
        with torch.no_grad():  # the value of process 0's own batch, as documented
            values["no_grad"] = float(criterion(loss_outputs(name, model, X), y))
        values["detached"] = float(criterion(loss_outputs(name, model, X).detach(), y))
    torch.save(values, Path(out_dir) / f"rank{rank}.pt")


#: The workloads :func:`serve` runs, by name: ``body(rank, sizes, out_dir, *args)``, each saving this rank's
#: results to ``out_dir/rank{rank}.pt``.
BODIES = {body.__name__: body for body in (gradient_body, loss_body, one_process_loss_body)}


def serve(rank: int, world: int, init_file: str, conn: Connection, timeout_s: float, env: dict[str, str]) -> None:
    """Process ``rank`` of a gloo group of ``world`` processes that runs workloads until told to stop; ``env`` is
    set in ``os.environ`` first.

    The protocol with the parent (tests/test_distributed.py), over ``conn``:

    1. send ``("imported", None)`` once torch and metricopt are imported; wait for ``"init"`` (the parent sends it
       when every process is imported, so no process waits in the group's rendezvous for another's imports);
    2. join the group (``timeout_s``: a collective that some process never joins fails after this long), barrier,
       send ``("ready", None)``;
    3. for each ``(body name, sizes, out_dir, args)`` received: run the body, then a barrier (every process has
       finished the workload before any starts the next), send ``("done", None)``. On an exception send
       ``("error", traceback)`` and exit: the group may be left inside a collective, so the parent replaces it;
    4. ``None`` (or the parent gone): leave the group and exit.
    """
    os.environ.update(env)
    torch.set_num_threads(1)  # up to 4 processes on 2 cores: no OpenMP threads spinning against each other
    try:
        conn.send(("imported", None))
        if conn.recv() != "init":
            os._exit(0)
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout_s))
        dist.barrier()
        conn.send(("ready", None))
        while (task := conn.recv()) is not None:
            name, sizes, out_dir, args = task
            BODIES[name](rank, sizes, out_dir, *args)
            dist.barrier()
            conn.send(("done", None))
        dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - reported to the parent, which fails the test with it
        try:
            conn.send(("error", traceback.format_exc()))
        except OSError:  # the parent is gone or gave up (it also sees EOFError on recv above)
            pass
        os._exit(1)
    # Skip interpreter finalization: with torch 2.13 and gloo, about 1 run in 10 aborts there ("terminate called
    # without an active exception", SIGABRT) after the process group is destroyed (measured with 20 repeated
    # 2-process runs; pytorch/pytorch PR 179291 describes gloo threads outliving the interpreter).
    os._exit(0)
