"""Forward + backward time of the RaMBO losses on a CUDA GPU (the paper: AP on 1M items, 7 ms on a V100).

metricopt never needs a GPU; this script only reports what one gives. Median of
20 timed calls after 5 warm-up calls, synchronised; writes
``benchmarks/results/gpu_rank_speed.{json,md}``.

    python -m benchmarks.gpu_rank_speed
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
AP_SIZES = (4096, 65536, 1_000_000, 10_000_000)
RECALL_SIZES = (1024, 4096)


def _median_ms(step, repeats: int = 20, warmup: int = 5) -> float:
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e3


def main() -> int:
    from benchmarks.harness.results import collect_metadata
    from metricopt.losses import RecallLoss, average_precision_loss

    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure", file=sys.stderr)
        return 1
    device = torch.device("cuda")
    generator = torch.Generator(device=device).manual_seed(0)
    rows = []
    for n in AP_SIZES:
        scores = torch.randn(n, device=device, generator=generator).requires_grad_()
        target = (torch.rand(n, device=device, generator=generator) < 0.1).long()
        ms = _median_ms(lambda s=scores, t=target: average_precision_loss(s, t).backward())
        rows.append({"loss": "APLoss, one ranking (10% positives)", "n": n, "median_ms": round(ms, 3)})
    recall = RecallLoss()
    for n in RECALL_SIZES:
        embeddings = torch.randn(n, 128, device=device, generator=generator).requires_grad_()
        labels = torch.arange(n, device=device) % int(n**0.5)
        ms = _median_ms(lambda e=embeddings, y=labels: recall(e, y).backward())
        rows.append({"loss": "RecallLoss loglog, batch of 128-d embeddings", "n": n, "median_ms": round(ms, 3)})
    metadata = collect_metadata(sys.argv)
    metadata["gpu"] = torch.cuda.get_device_name(device)
    metadata["torch_build"] = torch.__version__  # with its CUDA suffix (the package metadata has none)
    payload = {"metadata": metadata, "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "gpu_rank_speed.json").write_text(json.dumps(payload, indent=1) + "\n")
    (RESULTS / "gpu_rank_speed.md").write_text(report(payload))
    print(report(payload), end="")
    return 0


def report(payload: dict) -> str:
    """The Markdown file of a saved result (``python -m benchmarks render`` calls it)."""
    metadata, rows = payload["metadata"], payload["rows"]
    lines = ["# RaMBO losses on a GPU: forward + backward, median ms", "",
             f"- command: `{metadata['command']}`; GPU {metadata['gpu']}; "
             f"torch {metadata.get('torch_build', metadata['versions']['torch'])}",
             f"- git commit: `{metadata.get('git_commit')}`", "", "| loss | N | median ms |", "| --- | --- | --- |"]
    lines += [f"| {r['loss']} | {r['n']:,} | {r['median_ms']:.2f} |" for r in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
