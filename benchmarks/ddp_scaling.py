"""Scaling of the losses under DDP: time per step and gradient error against world size and batch size.

For world sizes 1, 2 and 4 (CPU processes, gloo, one torch thread each) and
global batches of 256, 1024 and 4096 rows, each loss family trains an MLP
(32 -> 64 -> outputs) under ``DistributedDataParallel`` with the global batch
split evenly over the processes:

* time per step: median wall time of forward + loss (with the gather) +
  backward (with DDP's all-reduce), measured on rank 0 after warm-up steps;
* gradient error: the largest absolute difference between rank 0's averaged
  DDP gradient and one process's full-batch gradient, relative to the largest
  full-batch gradient entry, with the gather (``distributed=True``, the
  default) and without it (``distributed=False``: each process's local batch
  only, what a loss without a gather computes).

On a 2-core machine 4 processes share the cores, so the 4-process times
include the oversubscription; the report states the machine's CPU count.
Writes ``benchmarks/results/ddp_scaling.{json,md}`` (``--output-dir`` and
``--name`` change where).

    python -m benchmarks.ddp_scaling            # about 5 minutes on 2 cores
    python -m benchmarks.ddp_scaling --quick    # seconds: one batch size, 2 processes
    python -m benchmarks.ddp_scaling --world-sizes 1,2,4,8 --name ddp_scaling_16cpu   # on a bigger machine
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

RESULTS = Path(__file__).resolve().parent / "results"
FEATURES = 32
LOSSES = ("confusion_f1", "ap", "recall")
WORLD_SIZES = (1, 2, 4)
BATCHES = (256, 1024, 4096)
WARMUP, STEPS = 2, 8


def make(name: str, distributed: bool) -> tuple[nn.Module, nn.Module]:
    """The criterion and the MLP (the same weights for every world size) of loss family ``name``."""
    from metricopt.losses import APLoss, ConfusionLoss, RecallLoss

    criterion = {"confusion_f1": lambda: ConfusionLoss("f1", distributed=distributed),
                 "ap": lambda: APLoss(distributed=distributed),
                 "recall": lambda: RecallLoss(distributed=distributed)}[name]()
    torch.manual_seed(0)
    outputs = 16 if name == "recall" else 1
    return criterion, nn.Sequential(nn.Linear(FEATURES, 64), nn.ReLU(), nn.Linear(64, outputs))


def batch(name: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(n)
    X = torch.randn(n, FEATURES, generator=generator)
    y = torch.randint(0, 32, (n,), generator=generator) if name == "recall" else (
        torch.rand(n, generator=generator) < 0.1).long()
    return X, y


def reference_gradient(name: str, n: int) -> list[torch.Tensor]:
    criterion, model = make(name, distributed=False)
    X, y = batch(name, n)
    criterion(model(X), y).backward()
    return [p.grad.clone() for p in model.parameters()]


def worker(rank: int, world: int, init_file: str, out_file: str, name: str, n: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        X, y = batch(name, n)
        rows = slice(rank * n // world, (rank + 1) * n // world)
        out: dict = {}
        for distributed in (True, False):
            criterion, model = make(name, distributed)
            ddp = nn.parallel.DistributedDataParallel(model)
            times = []
            for step in range(WARMUP + STEPS):
                ddp.zero_grad()
                dist.barrier()
                start = time.perf_counter()
                criterion(ddp(X[rows]), y[rows]).backward()
                times.append(time.perf_counter() - start)
                if step == 0:
                    grads = [p.grad.clone() for p in ddp.parameters()]
            out[str(distributed)] = {"grads": grads, "ms": statistics.median(times[WARMUP:]) * 1e3}
            del ddp
        if rank == 0:
            torch.save(out, out_file)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    os._exit(0)  # torch 2.13 + gloo can abort at interpreter exit (see tests/ddp_workers.py)


def relative_error(got: list[torch.Tensor], want: list[torch.Tensor]) -> float:
    scale = max(float(w.abs().max()) for w in want)
    return max(float((g - w).abs().max()) for g, w in zip(got, want)) / scale


def measure(name: str, world: int, n: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out_file = os.path.join(tmp, "out.pt")
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        mp.spawn(worker, args=(world, os.path.join(tmp, "init"), out_file, name, n), nprocs=world, join=True)
        out = torch.load(out_file, weights_only=True)
    want = reference_gradient(name, n)
    return {"loss": name, "world_size": world, "global_batch": n,
            "ms_per_step": round(out["True"]["ms"], 3), "ms_per_step_local_only": round(out["False"]["ms"], 3),
            "gradient_error": relative_error(out["True"]["grads"], want),
            "gradient_error_local_only": relative_error(out["False"]["grads"], want)}


def _oversubscribed(records: list[dict], metadata: dict) -> str:
    cpus, most = metadata.get("cpu_count"), max(r["world_size"] for r in records)
    return f" ({most} processes oversubscribe {cpus} cores)" if isinstance(cpus, int) and most > cpus else ""


def markdown(records: list[dict], metadata: dict) -> str:
    lines = [
        "# Losses under DDP: time per step and gradient error against world size and batch size",
        "",
        f"- command: `{metadata['command']}`",
        (f"- git commit: `{metadata.get('git_commit')}`; date {metadata.get('date')}; "
        f"machine: {metadata.get('cpu_model', '?')}, {metadata.get('cpu_count', '?')} CPUs; "
        f"torch {torch.__version__}, gloo, "
        f"1 thread per process{_oversubscribed(records, metadata)}"),
        (f"- MLP 32 -> 64 -> 1 (16-d embeddings for recall), global batch split evenly; median of {STEPS} steps "
        f"after {WARMUP} warm-up; gradient error: max |DDP - one process full batch| / max |full batch|"),
        "",
        ("| loss | processes | global batch | ms per step (gather) | ms per step (local only) "
        "| gradient error (gather) | gradient error (local only) |"),
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in records:
        lines.append(f"| {r['loss']} | {r['world_size']} | {r['global_batch']} | {r['ms_per_step']:.2f} | "
                     f"{r['ms_per_step_local_only']:.2f} | {r['gradient_error']:.1e} | "
                     f"{r['gradient_error_local_only']:.1e} |")
    return "\n".join(lines)


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, got {text!r}")
    return sizes


def report(payload: dict) -> str:
    """The Markdown file of a saved result (``python -m benchmarks render`` calls it)."""
    return markdown(payload["records"], payload["metadata"]) + "\n"


def main(argv: list[str]) -> int:
    from benchmarks.harness.results import collect_metadata

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 processes, batch 256, results to the temp folder")
    parser.add_argument("--world-sizes", type=_sizes, default=WORLD_SIZES, help="comma-separated process counts")
    parser.add_argument("--batches", type=_sizes, default=BATCHES, help="comma-separated global batch sizes")
    parser.add_argument("--output-dir", type=Path, default=None, help="default: benchmarks/results")
    parser.add_argument("--name", default=None, help="result file stem (default: ddp_scaling)")
    args = parser.parse_args(argv)
    quick = args.quick
    metadata = collect_metadata(["python", "-m", "benchmarks.ddp_scaling", *argv])
    worlds, batches = ((1, 2), (256,)) if quick else (args.world_sizes, args.batches)
    stem = args.name or ("ddp_scaling_quick" if quick else "ddp_scaling")
    target = args.output_dir or (Path(tempfile.gettempdir()) if quick else RESULTS)
    target.mkdir(parents=True, exist_ok=True)
    records = []
    for name in LOSSES:
        for n in batches:
            for world in worlds:
                records.append(measure(name, world, n))
                r = records[-1]
                print(f"{name} W={world} B={n}: {r['ms_per_step']:.2f} ms/step, gradient error "
                      f"{r['gradient_error']:.1e} (local only {r['gradient_error_local_only']:.1e})", file=sys.stderr)
                # rewritten after every record, so a run cut short keeps what it measured
                (target / f"{stem}.json").write_text(json.dumps({"metadata": metadata, "records": records},
                                                                indent=1) + "\n")
                (target / f"{stem}.md").write_text(report({"metadata": metadata, "records": records}))
    print(f"wrote {target / (stem + '.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
