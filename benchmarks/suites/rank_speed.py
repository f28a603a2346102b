"""Speed and memory of the rank losses: one ranking and retrieval batches, peers side by side.

Two parts, each a list of sizes N and of losses (:class:`~benchmarks.harness.specs.RankSpeedSpec`):

* **ranking**: one ranking of ``N`` scores, ``(N,)`` float32 logits
  (``2 * randn``) with ``requires_grad`` and a binary target with
  ``positive_rate`` positives (at least one). Losses: metricopt ``APLoss``
  (RaMBO, defaults), ``BCEWithLogits`` (reference), and the AP peers of
  :mod:`benchmarks.peers.ranking` (torchsort soft-rank AP, LibAUC APLoss,
  blackbox-backprop MapLoss), each with its defaults.
* **retrieval**: a batch of ``N`` embeddings ``(N, embedding_dim)``
  (``randn``, ``requires_grad``) with ``sqrt(N)`` classes of ``sqrt(N)`` items
  in shuffled order (so pytorch-metric-learning's SmoothAPLoss is valid).
  Losses: metricopt ``RecallLoss`` (loglog, defaults) and the retrieval peers
  (torchsort AP, PML FastAP / SmoothAP / contrastive / triplet /
  multi-similarity, blackbox-backprop RecallLoss).

Per part and size, in increasing N:

1. **Estimate before calling.** A loss that was skipped at a smaller N stays
   skipped. Otherwise its time per call at N is estimated from its time at the
   last measured size (the smaller of the median and the one-thread probe's
   call, so that a median inflated by machine load does not skip a loss),
   grown as ``N ** slope`` (slope: the log-log slope of its last two such
   times, clipped to ``[1, time_exponent]``; ``time_exponent`` alone with one
   point) and its memory from its last measured peak grown as
   ``N ** memory_exponent`` (declared per loss: 1 for sort-based rankings, 2 for
   pairwise matrices, 3 for SmoothAP's and the triplet miner's ``N x N x N``
   tensors). An estimate over the part's per-call budget or over
   ``memory_budget_gib`` skips the loss at N and above: ``"skipped: too slow at
   N=..."`` / ``"skipped: too much memory at N=..."`` with the numbers.
2. **Memory probe** (below), one forward + backward in a forked child, which
   also guards the harness: the child's address space is capped, so an
   allocation over the budget fails there, not in the harness, and a child that
   does not finish in ``probe_timeout_s`` is killed. A failed probe, or one
   call slower than ``threads`` x the budget in the probe, skips the loss at N
   and above.
3. **Timing** in the harness process, ``torch.set_num_threads(threads)``, of
   every loss still running at N: :func:`benchmarks.harness.timing.interleaved_times`
   (``warmup`` untimed calls, then ``repeats`` interleaved rounds of forward +
   backward with ``inputs.grad`` cleared outside the timed region; a loss
   leaves the rounds once it has ``min_repeats`` times and ``max_cell_seconds``
   of them). A loss whose calls take less than ``settle_below_s`` gets one
   untimed call right before each timed one: without it, a loss timed right
   after LibAUC (which touches ~70 MiB at N=4096) ran 2-10x slower than alone
   (cold caches and allocator), and the penalty fell on whichever loss came
   next in the order. Median and quartiles. A median over the budget keeps
   the data at N and skips larger N.

**Peak memory** (:func:`measure_peak_memory`): the extra resident memory of
one forward + backward, measured in a child made by ``os.fork`` (multiprocessing
``"fork"`` context) that shares the harness's tensors. The child runs one
torch thread (libgomp's thread pool does not survive ``fork``: a parallel op
in the child would hang), makes one unmeasured warm-up call (the child's first
call faults in the library code it runs, file pages that ``fork`` does not
copy, and sets up autograd's per-process state: a floor of 2-8 MiB that is not
the call's memory; skipped for calls estimated to take ``settle_below_s`` or
more, which allocate hundreds of MiB), calls ``gc.collect()`` and glibc ``malloc_trim(0)`` (so
free heap pages, the warm-up's and those inherited from the harness, are not
silently reused; the harness's objects are frozen across the fork, ``gc.freeze()``,
so the child's collections skip them instead of copying the whole inherited
heap), reads its resident set size (``VmRSS``), resets the kernel's high-water
mark (``echo 5 > /proc/self/clear_refs``), runs the call and reads the
high-water mark again (``VmHWM``; ``ru_maxrss`` where the reset is not
allowed). Extra peak
= high-water mark - resident size before the call: everything the call touched,
torch tensors, NumPy arrays and C++ extension buffers alike; memory reserved
but never written (``torch.empty`` left untouched) is not resident and not
counted. The run validates the probe on a known allocation (``torch.ones`` of
``memory_check_mib`` MiB inside the call) and reports the reading.

The report gives the time and memory tables, the goals (at ``goal_size``:
metricopt APLoss at least ``goal_speedup`` x faster than LibAUC APLoss and at
most ``goal_torchsort_ratio`` x torchsort's time; at ``retrieval_goal_size``
RecallLoss at most ``goal_sort_ratio`` x one row-wise sort of its similarity
matrix, the ``row_sort`` reference row, which sorts without a gradient;
log-log slopes of APLoss's time and memory over ``slope_range`` at most
``linear_slope_max``) stated as met / missed, and a PNG of time and memory
against N per part.
"""

from __future__ import annotations

import ctypes
import gc
import math
import multiprocessing
import resource
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from benchmarks.harness.results import (
    _metadata_lines,
    _row,
    collect_metadata,
    load_average,
)
from benchmarks.harness.specs import RankSpeedSpec, spec_to_dict
from benchmarks.harness.threads import torch_threads
from benchmarks.harness.timing import interleaved_times, time_once

__all__ = [
    "RANKING_LOSSES",
    "RETRIEVAL_LOSSES",
    "RankLossEntry",
    "goal_checks",
    "loglog_slope",
    "measure_peak_memory",
    "plot_rank_speed",
    "rank_speed_markdown",
    "refresh_summary",
    "run_rank_speed",
    "write_reports",
]

LossFn = Callable[[Tensor, Tensor], Tensor]
_MIB = 2**20
_GIB = 2**30
PARTS = ("ranking", "retrieval")


@dataclass(frozen=True)
class RankLossEntry:
    """A loss of the benchmark.

    Attributes:
        label: table label.
        factory: ``n -> loss`` for inputs of size ``n`` (raises
            ``ModuleNotFoundError`` when a peer is not installed).
        time_exponent: upper bound on the growth of its time in N (the estimate
            before calling uses at most this log-log slope).
        memory_exponent: growth of its peak memory in N used by the estimate.
    """

    label: str
    factory: Callable[[int], LossFn]
    time_exponent: float
    memory_exponent: float


def _bce(n: int) -> LossFn:
    criterion = torch.nn.BCEWithLogitsLoss()
    return lambda z, y: criterion(z, y.to(z.dtype))


def _rambo_ap(n: int) -> LossFn:
    from metricopt.losses import APLoss

    return APLoss()


def _rambo_recall(n: int) -> LossFn:
    from metricopt.losses import RecallLoss

    return RecallLoss()


def _row_sort(n: int) -> LossFn:
    """The reference of the recall loss's speed goal: one row-wise sort (descending, with indices) of the batch's
    ``N x N`` cosine similarities, computed once per input and not timed; no gradient (a zero loss attached to the
    embeddings, so that the runner's backward call costs nothing)."""
    cache: dict[tuple[int, tuple[int, ...]], Tensor] = {}

    def sort_once(embeddings: Tensor, labels: Tensor) -> Tensor:
        key = (embeddings.data_ptr(), tuple(embeddings.shape))
        if key not in cache:
            cache.clear()
            with torch.no_grad():
                unit = torch.nn.functional.normalize(embeddings.detach(), dim=-1)
                cache[key] = unit @ unit.T
        cache[key].sort(dim=-1, descending=True)
        return embeddings.view(-1)[0] * 0

    return sort_once


def _ap_peer(name: str, n: int) -> LossFn:
    from benchmarks.peers.ranking import make_ap_peer

    return make_ap_peer(name, n)


def _retrieval_peer(name: str, n: int) -> LossFn:
    from benchmarks.peers.ranking import make_retrieval_peer

    return make_retrieval_peer(name)


#: One-ranking losses: ``forward(scores (N,), target (N,) in {0, 1})``.
RANKING_LOSSES: dict[str, RankLossEntry] = {
    "rambo_ap": RankLossEntry("metricopt APLoss (RaMBO)", _rambo_ap, 1.2, 1.0),
    "bce": RankLossEntry("BCEWithLogits (reference)", _bce, 1.2, 1.0),
    "torchsort_ap": RankLossEntry("torchsort soft-rank AP", partial(_ap_peer, "torchsort_ap"), 1.2, 1.0),
    "libauc_ap": RankLossEntry("LibAUC APLoss (SOAP)", partial(_ap_peer, "libauc_ap"), 2.0, 2.0),
    "bbb_map": RankLossEntry("blackbox-backprop MapLoss", partial(_ap_peer, "bbb_map"), 1.2, 1.0),
}

#: Retrieval losses: ``forward(embeddings (N, D), labels (N,))``.
RETRIEVAL_LOSSES: dict[str, RankLossEntry] = {
    "rambo_recall": RankLossEntry("metricopt RecallLoss (RaMBO, loglog)", _rambo_recall, 2.2, 2.0),
    "row_sort": RankLossEntry("one row-wise sort of the N x N similarities (reference)", _row_sort, 2.2, 2.0),
    "torchsort_ap": RankLossEntry("torchsort soft-rank AP", partial(_retrieval_peer, "torchsort_ap"), 2.2, 2.0),
    "pml_fastap": RankLossEntry("PML FastAPLoss", partial(_retrieval_peer, "pml_fastap"), 2.2, 2.0),
    "pml_smoothap": RankLossEntry("PML SmoothAPLoss", partial(_retrieval_peer, "pml_smoothap"), 3.0, 3.0),
    "bbb_recall": RankLossEntry("blackbox-backprop RecallLoss", partial(_retrieval_peer, "bbb_recall"), 2.2, 2.0),
    "pml_contrastive": RankLossEntry("PML ContrastiveLoss", partial(_retrieval_peer, "pml_contrastive"), 2.2, 2.0),
    "pml_triplet": RankLossEntry("PML TripletMarginLoss (semihard miner)", partial(_retrieval_peer, "pml_triplet"),
                                 3.0, 3.0),
    "pml_multisimilarity": RankLossEntry("PML MultiSimilarityLoss (+ miner)",
                                         partial(_retrieval_peer, "pml_multisimilarity"), 2.2, 2.0),
}


def _registry(part: str) -> dict[str, RankLossEntry]:
    return RANKING_LOSSES if part == "ranking" else RETRIEVAL_LOSSES


# ---------------------------------------------------------------------------
# inputs


def ranking_inputs(n: int, positive_rate: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``(N,)`` logits (``2 * randn``, requires grad) and a binary target with at least one positive."""
    scores = torch.randn(n, generator=generator) * 2
    target = (torch.rand(n, generator=generator) < positive_rate).long()
    target[0] = 1
    return scores.requires_grad_(True), target


def retrieval_inputs(n: int, dim: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``(N, dim)`` embeddings (requires grad) and labels: ``sqrt(N)`` classes x ``sqrt(N)`` items, shuffled."""
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"retrieval batch sizes must be squares (classes = items per class); got {n}")
    embeddings = torch.randn(n, dim, generator=generator)
    labels = torch.arange(side).repeat_interleave(side)[torch.randperm(n, generator=generator)]
    return embeddings.requires_grad_(True), labels


# ---------------------------------------------------------------------------
# peak memory probe


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _malloc_trim() -> None:
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _is_memory_error(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return "allocate" in text and ("memory" in text or "bytes" in text)


def _probe_child(conn: Any, call: Callable[[], Any], limit_bytes: int | None, warmup: bool) -> None:
    result: dict[str, Any]
    try:
        torch.set_num_threads(1)  # the parent's OpenMP pool is gone after fork
        if limit_bytes is not None:
            vm = _status_kib("VmSize")
            if vm is not None:
                _, hard = resource.getrlimit(resource.RLIMIT_AS)
                soft = vm * 1024 + limit_bytes
                if hard != resource.RLIM_INFINITY:
                    soft = min(soft, hard)
                resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        if warmup:
            # The child's first call faults in the library code it runs (file pages, not copied by fork) and
            # sets up per-process autograd state: 2-8 MiB that are not the call's memory.
            call()
        gc.collect()
        _malloc_trim()
        rss_kib = _status_kib("VmRSS")
        baseline = rss_kib * 1024 if rss_kib is not None else _maxrss_bytes()
        reset = _reset_peak()
        maxrss_before = _maxrss_bytes()
        start = time.perf_counter()
        call()
        seconds = time.perf_counter() - start
        hwm = _status_kib("VmHWM")
        if reset and hwm is not None:
            peak, method = hwm * 1024, "VmHWM after clear_refs"
        else:
            peak, method = _maxrss_bytes(), "ru_maxrss (high-water mark not reset)"
            if peak <= maxrss_before:  # below the inherited mark: unknown
                peak = None
        result = {"ok": True, "seconds": seconds, "baseline_bytes": baseline, "method": method,
                  "extra_bytes": None if peak is None else max(0, peak - baseline)}
    except BaseException as exc:  # noqa: BLE001 - report everything to the parent
        result = {"ok": False, "memory": _is_memory_error(exc), "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    try:
        conn.send(result)
    finally:
        conn.close()


def measure_peak_memory(
    call: Callable[[], Any], *, limit_bytes: int | None = None, timeout_s: float = 120.0, warmup: bool = True
) -> dict[str, Any]:
    """Extra peak resident memory of ``call()`` in a forked child (see the module docstring).

    Args:
        call: runs the measured work (e.g. one forward + backward); it sees the
            caller's objects (``fork``), so set-up done before is not counted.
        warmup: call it once, unmeasured, before the measured call (the first
            call in the child faults in the code it runs: a floor of 2-8 MiB).
        limit_bytes: cap on the child's address space above its size at the
            start (``RLIMIT_AS``): allocations beyond it fail in the child.
        timeout_s: the child is killed after this many seconds.

    Returns:
        ``{"ok": True, "extra_bytes", "seconds" (of the measured call, one thread), "baseline_bytes", "method"}``
        or ``{"ok": False, "error", "memory" (bool: an allocation failed or the
        child was killed), "timeout" (bool)}``.
    """
    ctx = multiprocessing.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_probe_child, args=(sender, call, limit_bytes, warmup), daemon=True)
    # Frozen, the objects the child inherits are left out of its collections (the gc.collect() before the
    # baseline and any automatic one during the call): a collection writes to every object it walks, so the
    # child copied the whole inherited heap page by page (0.7 s per probe in a pytest-sized heap, 0.07 s frozen).
    # They are the caller's objects, never counted, so the reading is the same; unfrozen again once forked.
    gc.freeze()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork of a multi-threaded process (3.12+)
            process.start()
    finally:
        gc.unfreeze()
    sender.close()
    try:
        if receiver.poll(timeout_s):
            try:
                result = receiver.recv()
            except EOFError:
                result = None
        else:
            process.kill()
            process.join(10)
            return {"ok": False, "memory": False, "timeout": True,
                    "error": f"the probe did not finish within {timeout_s:g} s"}
    finally:
        receiver.close()
    process.join(30)
    if process.is_alive():
        process.kill()
        process.join(10)
    if result is None:
        code = process.exitcode
        return {"ok": False, "memory": code is not None and code < 0, "timeout": False,
                "error": f"the probe process died (exit code {code}; a negative code is a signal, "
                         "-9 usually the out-of-memory killer)"}
    result.setdefault("timeout", False)
    return result


def _known_allocation(mib: int) -> Callable[[], Any]:
    def call() -> Any:
        block = torch.ones(mib * _MIB // 4)
        return float(block[-1])

    return call


def validate_memory_probe(mib: int) -> dict[str, Any]:
    """Probe a known allocation (``torch.ones`` of ``mib`` MiB); returns expected and measured MiB."""
    result = measure_peak_memory(_known_allocation(mib), timeout_s=60)
    measured = result["extra_bytes"] / _MIB if result.get("ok") and result.get("extra_bytes") is not None else None
    return {"expected_mib": mib, "measured_mib": measured, "method": result.get("method"),
            "error": result.get("error")}


# ---------------------------------------------------------------------------
# runner


def _budget(spec: RankSpeedSpec, part: str) -> float:
    return spec.ranking_call_budget_s if part == "ranking" else spec.retrieval_call_budget_s


def _estimate(history: list[tuple[int, float, float | None]], n: int, entry: RankLossEntry
              ) -> tuple[float, float | None, int]:
    """Estimated seconds per call and peak bytes at ``n`` from the measured ``(N, median s, peak bytes)``."""
    n_last, t_last, m_last = history[-1]
    slope = entry.time_exponent
    if len(history) >= 2:
        n_prev, t_prev, _ = history[-2]
        if t_prev > 0 and t_last > 0:
            slope = min(max(math.log(t_last / t_prev) / math.log(n_last / n_prev), 1.0), entry.time_exponent)
    seconds = t_last * (n / n_last) ** slope
    memory = None if m_last is None else max(m_last, _MIB) * (n / n_last) ** entry.memory_exponent
    return seconds, memory, n_last


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.3g} s"


def _fmt_bytes(value: float) -> str:
    return f"{value / _GIB:.2f} GiB" if value >= _GIB else f"{value / _MIB:.1f} MiB"


def _guarded(fn: LossFn, x: Tensor, y: Tensor, errors: dict[str, str], name: str) -> Callable[[], float]:
    """A timer of one forward + backward that records an exception instead of raising (and then stops calling)."""

    def timer() -> float:
        if name in errors:
            return 0.0
        try:
            return time_once(fn, x, y, backward=True)
        except Exception as exc:  # noqa: BLE001 - a failing loss is reported, not fatal
            errors[name] = f"{type(exc).__name__}: {str(exc)[:300]}"
            return 0.0

    return timer


def _run_part(spec: RankSpeedSpec, part: str, progress: bool) -> dict[str, Any]:
    from tqdm.auto import tqdm

    registry = _registry(part)
    names = spec.ranking_losses if part == "ranking" else spec.retrieval_losses
    sizes = spec.ranking_sizes if part == "ranking" else spec.retrieval_sizes
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ValueError(f"unknown {part} loss(es) {unknown}; known: {sorted(registry)}")
    budget = _budget(spec, part)
    limit = int(spec.memory_budget_gib * _GIB)
    generator = torch.Generator().manual_seed(spec.seed + (0 if part == "ranking" else 1))
    rows: dict[str, dict[str, Any]] = {
        name: {"label": registry[name].label, "median_ms": {}, "p25_ms": {}, "p75_ms": {}, "repeats": {},
               "peak_mib": {}, "probe_s": {}, "status": {}}
        for name in names
    }
    unavailable: dict[str, str] = {}
    history: dict[str, list[tuple[int, float, float | None]]] = {name: [] for name in names}
    stopped: dict[str, str] = {}  # name -> the reason it is no longer run
    for n in tqdm(sizes, desc=f"{spec.name} {part}", unit="size", disable=not progress):
        if part == "ranking":
            x, y = ranking_inputs(n, spec.positive_rate, generator)
        else:
            x, y = retrieval_inputs(n, spec.embedding_dim, generator)
        active: dict[str, LossFn] = {}
        for name in names:
            row, entry = rows[name], registry[name]
            if name in unavailable:
                continue
            if name in stopped:
                row["status"][str(n)] = stopped[name]
                continue
            est_s = 0.0
            if history[name]:
                est_s, est_bytes, n_last = _estimate(history[name], n, entry)
                _, t_last, m_last = history[name][-1]
                if est_s > budget:
                    stopped[name] = (f"skipped: too slow at N={n} (estimated {_fmt_s(est_s)} per call from "
                                     f"{_fmt_s(t_last)} at N={n_last}; budget {budget:g} s)")
                elif est_bytes is not None and est_bytes > limit:
                    stopped[name] = (f"skipped: too much memory at N={n} (estimated {_fmt_bytes(est_bytes)} from "
                                     f"{_fmt_bytes(m_last or 0)} at N={n_last}; budget {spec.memory_budget_gib:g} GiB)")
                if name in stopped:
                    row["status"][str(n)] = stopped[name]
                    continue
            try:
                fn = entry.factory(n)
            except ModuleNotFoundError as exc:
                unavailable[name] = f"not installed: {exc}"
                continue
            # The child's warm-up call removes a floor of a few MiB; calls estimated to take a second or more
            # allocate hundreds of MiB, where it does not matter, and are measured on their first call.
            probe = measure_peak_memory(partial(_one_call, fn, x, y), limit_bytes=limit,
                                        timeout_s=spec.probe_timeout_s, warmup=est_s < spec.settle_below_s)
            if not probe["ok"]:
                if probe.get("timeout"):
                    stopped[name] = f"skipped: too slow at N={n} ({probe['error']})"
                elif probe.get("memory"):
                    stopped[name] = (f"skipped: too much memory at N={n} (one forward + backward failed under the "
                                     f"{spec.memory_budget_gib:g} GiB cap: {probe['error']})")
                else:
                    stopped[name] = f"error at N={n}: {probe['error']}"
                row["status"][str(n)] = stopped[name]
                continue
            row["probe_s"][str(n)] = probe["seconds"]
            if probe["extra_bytes"] is not None:
                row["peak_mib"][str(n)] = probe["extra_bytes"] / _MIB
            if probe["seconds"] > budget * spec.threads:
                stopped[name] = (f"skipped: too slow at N={n} (one call took {_fmt_s(probe['seconds'])} in the "
                                 f"one-thread memory probe; budget {budget:g} s)")
                row["status"][str(n)] = stopped[name]
                continue
            active[name] = fn
        errors: dict[str, str] = {}
        timers = {name: _guarded(fn, x, y, errors, name) for name, fn in active.items()}
        times = interleaved_times(timers, repeats=spec.repeats, warmup=spec.warmup,
                                  max_seconds=spec.max_cell_seconds, min_repeats=spec.min_repeats,
                                  settle_below_s=spec.settle_below_s) if timers else {}
        for name, values in times.items():
            row = rows[name]
            if name in errors:
                stopped[name] = f"error at N={n}: {errors[name]}"
                row["status"][str(n)] = stopped[name]
                continue
            median = float(np.median(values))
            row["median_ms"][str(n)] = median * 1e3
            row["p25_ms"][str(n)] = float(np.percentile(values, 25)) * 1e3
            row["p75_ms"][str(n)] = float(np.percentile(values, 75)) * 1e3
            row["repeats"][str(n)] = len(values)
            row["status"][str(n)] = "ok"
            peak = row["peak_mib"].get(str(n))
            # The one-thread probe time guards the estimate against a median inflated by load (a busy
            # second core stalls every two-thread parallel region), the median against a slow child.
            basis = min(median, row["probe_s"].get(str(n), median))
            history[name].append((n, basis, None if peak is None else peak * _MIB))
            if median > budget:
                stopped[name] = (f"skipped: too slow at N={n} (median {_fmt_s(median)} per call over the "
                                 f"{budget:g} s budget); not run at larger N")
        del x, y, active, timers
        gc.collect()
    return {"sizes": list(sizes), "call_budget_s": budget, "losses": rows, "unavailable": unavailable}


def _one_call(fn: LossFn, x: Tensor, y: Tensor) -> None:
    x.grad = None
    fn(x, y).backward()


def run_rank_speed(spec: RankSpeedSpec, *, progress: bool = True,
                   command: Sequence[str] | None = None) -> dict[str, Any]:
    """Run a :class:`~benchmarks.harness.specs.RankSpeedSpec`; returns the JSON-ready payload."""
    from benchmarks.peers.ranking import rank_peer_versions

    with torch_threads(spec.threads):
        metadata = collect_metadata(command)
        start = time.perf_counter()
        validation = validate_memory_probe(spec.memory_check_mib)
        parts = {part: _run_part(spec, part, progress) for part in PARTS}
        wall = time.perf_counter() - start
        metadata["load_average_at_end"] = load_average()
        payload: dict[str, Any] = {
            "suite": spec.name,
            "kind": spec.kind,
            "title": (f"Rank-loss speed and memory (`{spec.name}`): forward + backward, one ranking and retrieval "
                      "batches"),
            "protocol": _protocol(spec),
            "memory_probe": {
                "method": ("extra peak resident memory of one forward + backward in a forked child (one torch thread), "
                           f"measured on its second call (the first faults in library code; calls estimated at "
                           f"{spec.settle_below_s:g} s or more: on the first): VmHWM after resetting it via "
                           "/proc/self/clear_refs, minus VmRSS before the call, after gc.collect() and malloc_trim(0); "
                           "memory allocated but never written is not counted"),
                "validation": validation,
            },
            "spec": spec_to_dict(spec),
            "metadata": metadata,
            "wall_seconds": round(wall, 1),
            "peers": rank_peer_versions(),
            "parts": parts,
        }
        refresh_summary(payload)
        return payload


def _protocol(spec: RankSpeedSpec) -> str:
    return (
        f"CPU, torch threads {spec.threads}, float32. One ranking: N in {tuple(spec.ranking_sizes)}, logits (N,) "
        f"= 2 * randn with requires_grad, {spec.positive_rate:.0%} positives. Retrieval: N in "
        f"{tuple(spec.retrieval_sizes)} embeddings (N, {spec.embedding_dim}) = randn, sqrt(N) classes x sqrt(N) "
        "items, shuffled. Every loss with its defaults. Time: forward + backward (loss call and .backward() to the "
        f"inputs); {spec.warmup} warm-up calls, then up to {spec.repeats} interleaved rounds (each round times "
        f"every loss still running at that N once, a loss faster than {spec.settle_below_s:g} s per call after one "
        "untimed call of itself, so that it does not pay for the caches the previous loss left cold); a loss leaves "
        f"the rounds after {spec.max_cell_seconds:g} s of timed calls once it has {spec.min_repeats}; median "
        "[quartiles]. Budgets: one call "
        f"{spec.ranking_call_budget_s:g} s (one ranking) / {spec.retrieval_call_budget_s:g} s (retrieval), "
        f"{spec.memory_budget_gib:g} GiB extra memory; a loss estimated (from its last measured size) or measured "
        "over a budget is skipped at that N (estimate, failed or slow memory probe) or at larger N (measured median "
        "over budget), as listed under the tables."
    )


# ---------------------------------------------------------------------------
# summary: goals and slopes


def loglog_slope(points: dict[int, float]) -> float | None:
    """Least-squares slope of log(value) against log(N) (None with fewer than two positive points)."""
    pts = [(n, v) for n, v in sorted(points.items()) if v is not None and v > 0]
    if len(pts) < 2:
        return None
    xs = np.log([p[0] for p in pts])
    ys = np.log([p[1] for p in pts])
    return float(np.polyfit(xs, ys, 1)[0])


def _in_range(values: dict[str, float], lo: int, hi: int) -> dict[int, float]:
    return {int(n): v for n, v in values.items() if lo <= int(n) <= hi}


def _median_ms(payload: dict[str, Any], part: str, name: str, n: int) -> float | None:
    row = payload["parts"][part]["losses"].get(name)
    return None if row is None else row["median_ms"].get(str(n))


def _why_missing(payload: dict[str, Any], part: str, name: str, n: int) -> str:
    data = payload["parts"][part]
    if name in data.get("unavailable", {}):
        return f"{name} {data['unavailable'][name]}"
    row = data["losses"].get(name)
    if row is None:
        return f"{name} not in the suite"
    return f"{name}: {row['status'].get(str(n), f'N={n} not in the sizes')}"


def goal_checks(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's goals, each ``{goal, measured, target, verdict ('met' / 'missed' / 'not measured'), detail}``."""
    spec = payload["spec"]
    n = spec["goal_size"]
    goals: list[dict[str, Any]] = []
    ours = _median_ms(payload, "ranking", "rambo_ap", n)
    for peer, goal, target in (
        ("libauc_ap", f"speed-up over LibAUC APLoss at N={n}", f">= {spec['goal_speedup']:g}x"),
        ("torchsort_ap", f"time relative to torchsort soft-rank AP at N={n}", f"<= {spec['goal_torchsort_ratio']:g}x"),
    ):
        theirs = _median_ms(payload, "ranking", peer, n)
        if ours is None or theirs is None:
            missing = _why_missing(payload, "ranking", "rambo_ap" if ours is None else peer, n)
            goals.append({"goal": goal, "measured": None, "target": target, "verdict": "not measured",
                          "detail": missing})
            continue
        if peer == "libauc_ap":
            value = theirs / ours
            ok = value >= spec["goal_speedup"]
        else:
            value = ours / theirs
            ok = value <= spec["goal_torchsort_ratio"]
        goals.append({"goal": goal, "measured": value, "target": target, "verdict": "met" if ok else "missed",
                      "detail": f"medians: APLoss {ours:.3f} ms, {peer} {theirs:.3f} ms"})
    if "retrieval_goal_size" in spec:  # (results from before this goal have no such row)
        goals.append(_sort_goal(payload))
    lo, hi = spec["slope_range"]
    row = payload["parts"]["ranking"]["losses"].get("rambo_ap")
    for what, key, unit in (("time", "median_ms", "ms"), ("peak memory", "peak_mib", "MiB")):
        goal = f"log-log slope of APLoss {what} vs N, N={lo}..{hi}"
        target = f"<= {spec['linear_slope_max']:g} (linear 1.0; N log N about 1.08)"
        points = {} if row is None else _in_range(row[key], lo, hi)
        if lo not in points or hi not in points:
            missing = [m for m in (lo, hi) if m not in points]
            goals.append({"goal": goal, "measured": None, "target": target, "verdict": "not measured",
                          "detail": "; ".join(_why_missing(payload, "ranking", "rambo_ap", m) for m in missing)})
            continue
        slope = loglog_slope(points)
        goals.append({"goal": goal, "measured": slope, "target": target,
                      "verdict": "met" if slope is not None and slope <= spec["linear_slope_max"] else "missed",
                      "detail": ", ".join(f"N={k}: {v:.3g} {unit}" for k, v in sorted(points.items()))})
    return goals


def _sort_goal(payload: dict[str, Any]) -> dict[str, Any]:
    """RecallLoss's forward + backward time over one row-wise sort of its similarities at the retrieval goal size."""
    spec = payload["spec"]
    n, target = spec["retrieval_goal_size"], f"<= {spec['goal_sort_ratio']:g}x"
    goal = f"RecallLoss time relative to one row-wise sort of its similarities at N={n}"
    ours, sort = (_median_ms(payload, "retrieval", name, n) for name in ("rambo_recall", "row_sort"))
    if ours is None or sort is None:
        missing = _why_missing(payload, "retrieval", "rambo_recall" if ours is None else "row_sort", n)
        return {"goal": goal, "measured": None, "target": target, "verdict": "not measured", "detail": missing}
    value = ours / sort
    return {"goal": goal, "measured": value, "target": target,
            "verdict": "met" if value <= spec["goal_sort_ratio"] else "missed",
            "detail": f"medians: RecallLoss {ours:.1f} ms, sort {sort:.1f} ms"}


def _slopes(payload: dict[str, Any]) -> dict[str, dict[str, dict[str, float | None]]]:
    spec = payload["spec"]
    ranges = {"ranking": spec["slope_range"], "retrieval": spec["retrieval_slope_range"]}
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for part, data in payload["parts"].items():
        lo, hi = ranges[part]
        out[part] = {
            name: {"time": loglog_slope(_in_range(row["median_ms"], lo, hi)),
                   "memory": loglog_slope(_in_range(row["peak_mib"], lo, hi))}
            for name, row in data["losses"].items()
        }
    return out


def refresh_summary(payload: dict[str, Any]) -> dict[str, Any]:
    """(Re)compute the derived ``goals``, ``slopes`` and ``notes`` of a payload from its measurements."""
    payload["goals"] = goal_checks(payload)
    payload["slopes"] = _slopes(payload)
    payload["notes"] = [f"{g['goal']}: {g['verdict']}" + (f" ({g['measured']:.2f}; target {g['target']})"
                                                          if g["measured"] is not None else f" ({g['detail']})")
                        for g in payload["goals"]]
    return payload


# ---------------------------------------------------------------------------
# reports

_PART_TITLES = {"ranking": "One ranking (N scores)", "retrieval": "Retrieval batch (N embeddings)"}


def _short_status(status: str | None) -> str:
    if status is None:
        return "–"
    if "too slow" in status:
        return "skipped (time)"
    if "too much memory" in status:
        return "skipped (memory)"
    if status.startswith("error"):
        return "error"
    return "–"


def _cell(row: dict[str, Any], n: int, fmt: Callable[[dict[str, Any], str], str | None]) -> str:
    text = fmt(row, str(n))
    return text if text is not None else _short_status(row["status"].get(str(n)))


def _time_cell(row: dict[str, Any], n: str) -> str | None:
    if n not in row["median_ms"]:
        return None
    return f"{row['median_ms'][n]:.3g} [{row['p25_ms'][n]:.3g}, {row['p75_ms'][n]:.3g}]"


def _mem_cell(row: dict[str, Any], n: str) -> str | None:
    return f"{row['peak_mib'][n]:.3g}" if n in row["peak_mib"] else None


def rank_speed_markdown(payload: dict[str, Any]) -> str:
    """The Markdown report of a rank-speed payload."""
    spec = payload["spec"]
    md = payload["metadata"]
    probe = payload["memory_probe"]
    val = probe["validation"]
    lines = [f"# {payload['title']}", "", *_metadata_lines(payload),
             f"- load average at end: {md.get('load_average_at_end')}", "", payload["protocol"], "",
             f"Peak memory: {probe['method']}. Check: a call allocating {val['expected_mib']} MiB (`torch.ones`) "
             + (f"read {val['measured_mib']:.1f} MiB." if val.get("measured_mib") is not None
                else f"could not be read ({val.get('error')})."), ""]
    lo, hi = spec["slope_range"]
    lines += [f"## Goals (one ranking; N={spec['goal_size']} and slopes over N={lo}..{hi})", "",
              _row(["goal", "measured", "target", "verdict", "detail"]), _row(["---"] * 5)]
    for g in payload["goals"]:
        value = "–" if g["measured"] is None else f"{g['measured']:.2f}"
        lines.append(_row([g["goal"], value, g["target"], f"**{g['verdict']}**", g["detail"]]))
    lines.append("")
    ranges = {"ranking": spec["slope_range"], "retrieval": spec["retrieval_slope_range"]}
    for part, data in payload["parts"].items():
        sizes = data["sizes"]
        title = _PART_TITLES.get(part, part)
        rows = data["losses"]
        shown = {k: r for k, r in rows.items() if k not in data.get("unavailable", {})}
        reference = "rambo_ap" if part == "ranking" else "rambo_recall"
        heads = [f"N={n}" for n in sizes]
        lines += [f"## {title}: forward + backward time, median ms [quartiles]", "",
                  _row(["loss", *heads]), _row(["---"] * (len(sizes) + 1))]
        lines += [_row([r["label"], *(_cell(r, n, _time_cell) for n in sizes)]) for r in shown.values()]
        lines.append("")
        if reference in shown:
            ref = shown[reference]
            lines += [f"## {title}: time relative to {ref['label']} (median / its median)", "",
                      _row(["loss", *heads]), _row(["---"] * (len(sizes) + 1))]
            for r in shown.values():
                cells = []
                for n in sizes:
                    a, b = r["median_ms"].get(str(n)), ref["median_ms"].get(str(n))
                    cells.append(f"{a / b:.3g}" if a is not None and b else _short_status(r["status"].get(str(n))))
                lines.append(_row([r["label"], *cells]))
            lines.append("")
        lines += [f"## {title}: extra peak memory of one forward + backward, MiB", "",
                  _row(["loss", *heads]), _row(["---"] * (len(sizes) + 1))]
        lines += [_row([r["label"], *(_cell(r, n, _mem_cell) for n in sizes)]) for r in shown.values()]
        lines.append("")
        lo, hi = ranges[part]
        slopes = payload["slopes"][part]
        lines += [f"## {title}: log-log slope vs N over N={lo}..{hi} (measured points only)", "",
                  _row(["loss", "time slope", "memory slope"]), _row(["---"] * 3)]
        for k, r in shown.items():
            s = slopes.get(k, {})
            lines.append(_row([r["label"], *("–" if s.get(w) is None else f"{s[w]:.2f}" for w in ("time", "memory"))]))
        lines.append("")
        skipped = {}
        for k, r in shown.items():
            reasons = [s for s in r["status"].values() if s != "ok"]
            if reasons:
                skipped[k] = reasons[0]
        if skipped or data.get("unavailable"):
            lines += [f"Skipped / not run ({title.lower()}):", ""]
            lines += [f"- {rows[k]['label']}: {reason}" for k, reason in skipped.items()]
            lines += [f"- {k}: {v}" for k, v in data.get("unavailable", {}).items()]
            lines.append("")
    for note in payload.get("extra_notes", []):
        lines.append(f"- {note}")
    return "\n".join(lines).rstrip() + "\n"


def plot_rank_speed(payload: dict[str, Any], path: Path) -> Path:
    """Log-log time (left) and peak memory (right) against N, one row per part; band: quartiles of time."""
    from benchmarks.harness.plots import _pyplot, _save

    plt = _pyplot()
    import matplotlib

    parts = list(payload["parts"])
    cmap = matplotlib.colormaps["tab10"]
    fig, axes = plt.subplots(len(parts), 2, squeeze=False, figsize=(12, 4.6 * len(parts)))
    for (ax_t, ax_m), part in zip(axes, parts):
        data = payload["parts"][part]
        for i, (name, row) in enumerate(data["losses"].items()):
            color = cmap(i % 10)
            ours = name.startswith("rambo")
            style = {"marker": "o", "markersize": 3.5, "linewidth": 2.2 if ours else 1.2, "color": color,
                     "label": row["label"]}
            sizes = sorted(int(n) for n in row["median_ms"])
            if sizes:
                med = [row["median_ms"][str(n)] for n in sizes]
                ax_t.plot(sizes, med, **style)
                ax_t.fill_between(sizes, [row["p25_ms"][str(n)] for n in sizes],
                                  [row["p75_ms"][str(n)] for n in sizes], color=color, alpha=0.15)
            msizes = sorted(int(n) for n in row["peak_mib"])
            if msizes:
                ax_m.plot(msizes, [max(row["peak_mib"][str(n)], 1e-3) for n in msizes], **style)
        for ax, ylabel in ((ax_t, "forward + backward, median ms (band: quartiles)"),
                           (ax_m, "extra peak memory of one call, MiB")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("N (scores)" if part == "ranking" else "N (embeddings per batch)")
            ax.set_ylabel(ylabel)
            ax.set_title(_PART_TITLES.get(part, part), fontsize=10)
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=7)
    spec = payload["spec"]
    fig.suptitle(f"{payload['title'].replace('`', '')} (CPU, {spec['threads']} threads; lines end where a loss was "
                 "skipped)", fontsize=10)
    return _save(plt, fig, path, dpi=110)


def write_reports(payload: dict[str, Any], output_dir: Path, *, plots: bool = True) -> dict[str, Path]:
    """Write ``<suite>.md`` and ``<suite>.png`` of a rank-speed payload (not its JSON); returns the paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    name = payload["suite"]
    if plots:
        paths["png"] = plot_rank_speed(payload, output_dir / f"{name}.png")
    paths["md"] = output_dir / f"{name}.md"
    paths["md"].write_text(rank_speed_markdown(payload))
    return paths
