"""Speed of the losses: forward and forward + backward time against BCEWithLogits and a naive soft F1.

For each batch size N, every loss gets the same ``(N,)`` logits (binary) or
``(N, C)`` logits (multi-class) and integer labels with a fixed positive rate;
each loss converts the labels itself, inside the timed call (as
``BCEWithLogitsLoss`` needs float targets). After ``warmup`` untimed calls,
each of ``repeats`` rounds times every loss once, in turn
(:func:`benchmarks.harness.timing.interleaved_times`), so a load spike on the
machine hits all losses alike, and every timed call follows an untimed call of
the same loss, so that it does not pay for the allocator and cache state that
the previous loss left behind (measured: up to 1.5x on the next call at
N = 65,536). The report gives the median (and quartiles) per loss and the ratios
of medians, all measured in one run:

* to the baseline: ``BCEWithLogitsLoss`` for binary losses, ``cross_entropy``
  for multi-class ones;
* to the reference, for binary losses: the naive five-line soft F1
  (``p = sigmoid(z)``; ``1 - 2 TP / (2 TP + FP + FN)`` with TP, FP, FN the sums
  of ``y p``, ``(1 - y) p``, ``y (1 - p)``), what a user would write by hand
  (float32-unsafe: see :mod:`metricopt.losses.soft_confusion`). A sigmoid Dice
  (``1 - (2 sum p y + 1) / (sum p + sum y + 1)``) is timed beside it.

"forward" is the loss call with autograd recording (what training pays);
"forward + backward" adds ``loss.backward()`` down to the logits.

Clock: wall time, or with ``clock="cpu"`` (one thread only; ``"auto"`` picks it
for one thread) the thread's CPU time, which does not count the time the
process waits for a core. The named ``speed`` suite uses one thread and CPU
time because the reference machine (2 cores) is shared: with 2 threads, every
OpenMP parallel region waits for the second thread to get a core, 8 to 24 ms
when other processes hold them (measured in one run: BCEWithLogits forward +
backward 5.2 ms at N = 256 and 0.034 ms at N = 1,024; a (2, N) x (N, 2) matrix
product 24 ms at N = 256), and the wall-clock medians of one thread still
include its waits for the core.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from benchmarks.harness.results import collect_metadata, load_average
from benchmarks.harness.specs import SpeedSpec, spec_to_dict
from benchmarks.harness.threads import torch_threads
from benchmarks.harness.timing import interleaved_times, time_once
from benchmarks.peers import classification as peers
from metricopt.losses import ConfusionLoss

__all__ = ["LOSS_FACTORIES", "naive_soft_f1", "run_speed", "sigmoid_dice"]

LossFn = Callable[[Tensor, Tensor], Tensor]

#: A timed call shorter than this is preceded by an untimed call of the same loss (all calls here).
SETTLE_BELOW_S = 1.0


def naive_soft_f1(logits: Tensor, target: Tensor) -> Tensor:
    """The five-line soft F1 a user would write (the reference of the speed table; float32-unsafe)."""
    y = target.to(logits.dtype)
    p = torch.sigmoid(logits)
    tp, fp, fn = (y * p).sum(), ((1 - y) * p).sum(), (y * (1 - p)).sum()
    return 1 - 2 * tp / (2 * tp + fp + fn)


def sigmoid_dice(logits: Tensor, target: Tensor) -> Tensor:
    """A batch-level soft Dice loss on sigmoid probabilities, smoothed by 1."""
    y = target.to(logits.dtype)
    p = torch.sigmoid(logits)
    return 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)


def _bce() -> LossFn:
    criterion = torch.nn.BCEWithLogitsLoss()
    return lambda z, y: criterion(z, y.to(z.dtype))


def _ce(num_classes: int) -> LossFn:
    return F.cross_entropy


def _aucm() -> LossFn | None:
    return peers.make_aucm(0.1)


#: name -> (label, task, factory(num_classes) returning a loss or None when a peer is missing, peer).
LOSS_FACTORIES: dict[str, tuple[str, str, Callable[[int], LossFn | None], str | None]] = {
    "bce": ("BCEWithLogits", "binary", lambda c: _bce(), None),
    "naive_f1": ("naive soft F1 (5 lines)", "binary", lambda c: naive_soft_f1, None),
    "sigmoid_dice": ("sigmoid Dice", "binary", lambda c: sigmoid_dice, None),
    "anyloss_f1": ("AnyLoss F1 (L=73)", "binary", lambda c: ConfusionLoss("f1"), None),
    "anyloss_f1_auto": ("AnyLoss F1 (auto L)", "binary", lambda c: ConfusionLoss("f1", amplification="auto"), None),
    "anyloss_mcc": ("AnyLoss MCC (L=73)", "binary", lambda c: ConfusionLoss("mcc"), None),
    "anyloss_f1_novalidate": (
        "AnyLoss F1 (validate=False)", "binary", lambda c: ConfusionLoss("f1", validate=False), None),
    "dice": ("MONAI DiceLoss", "binary", lambda c: peers.dice_loss_fn(2), "monai"),
    "aucm": ("LibAUC AUCMLoss", "binary", lambda c: _aucm(), "libauc"),
    "ce_c10": ("CrossEntropy (C classes)", "multiclass", _ce, None),
    "anyloss_f1_c10": ("AnyLoss macro F1 (C classes)", "multiclass", lambda c: ConfusionLoss("f1"), None),
    "anyloss_mcc_c10": ("AnyLoss MCC (C classes)", "multiclass", lambda c: ConfusionLoss("mcc"), None),
    "dice_c10": ("MONAI DiceLoss (C classes)", "multiclass", lambda c: peers.dice_loss_fn(c), "monai"),
}


def _inputs(task: str, n: int, spec: SpeedSpec, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    if task == "binary":
        logits = torch.randn(n, generator=generator) * 2
        target = (torch.rand(n, generator=generator) < spec.positive_rate).long()
    else:
        logits = torch.randn(n, spec.num_classes, generator=generator) * 2
        target = torch.randint(0, spec.num_classes, (n,), generator=generator)
    return logits.requires_grad_(True), target


def run_speed(spec: SpeedSpec, *, progress: bool = True, command: Sequence[str] | None = None) -> dict[str, Any]:
    """Run a :class:`SpeedSpec`; returns the JSON-ready payload. The caller's torch thread count is restored."""
    unknown = [n for n in (*spec.losses, *dict(spec.size_limits)) if n not in LOSS_FACTORIES]
    if unknown:
        raise ValueError(f"unknown loss(es) {unknown} in `losses` or `size_limits`; known: {sorted(LOSS_FACTORIES)}")
    if spec.clock not in ("auto", "wall", "cpu") or (spec.clock == "cpu" and spec.threads != 1):
        raise ValueError(f"`clock` must be 'auto', 'wall', or 'cpu' with one thread (a thread's CPU time misses the "
                         f"others' work); got clock={spec.clock!r} with threads={spec.threads}")
    with torch_threads(spec.threads):
        return _run(spec, progress, command)


def _run(spec: SpeedSpec, progress: bool, command: Sequence[str] | None) -> dict[str, Any]:
    from tqdm.auto import tqdm

    metadata = collect_metadata(command)
    generator = torch.Generator().manual_seed(spec.seed)
    losses: dict[str, tuple[str, str, LossFn]] = {}
    unavailable: dict[str, str] = {}
    for name in spec.losses:
        label, task, factory, peer = LOSS_FACTORIES[name]
        fn = factory(spec.num_classes)
        if fn is None:
            unavailable[name] = peers.peer_status(peer) if peer else "not available"
            continue
        losses[name] = (label.replace("C classes", f"C={spec.num_classes}"), task, fn)
    limits = dict(spec.size_limits)
    times: dict[str, dict[str, dict[int, list[float]]]] = {
        name: {"fwd": {}, "fwd_bwd": {}} for name in losses
    }
    start = time.perf_counter()
    for n in tqdm(spec.sizes, desc=spec.name, unit="size", disable=not progress):
        inputs = {task: _inputs(task, n, spec, generator) for task in ("binary", "multiclass")}
        clock = time.thread_time if _clock(spec) == "cpu" else time.perf_counter
        timers = {
            (name, key): partial(time_once, fn, *inputs[task], backward=key == "fwd_bwd", clock=clock)
            for name, (_, task, fn) in losses.items()
            if n <= limits.get(name, n)
            for key in ("fwd", "fwd_bwd")
        }
        measured = interleaved_times(timers, repeats=spec.repeats, warmup=spec.warmup, max_seconds=spec.max_seconds,
                                     min_repeats=spec.min_repeats, settle_below_s=SETTLE_BELOW_S)
        for (name, key), values in measured.items():
            times[name][key][n] = values
    wall = time.perf_counter() - start
    rows = {name: _row(name, label, task, times, spec) for name, (label, task, _) in losses.items()}
    metadata["load_average_at_end"] = load_average()
    limited = ", ".join(f"{name} up to N = {n}" for name, n in spec.size_limits if name in losses)
    payload: dict[str, Any] = {
        "suite": spec.name,
        "kind": spec.kind,
        "title": f"Loss speed (`{spec.name}`): forward and forward + backward against BCEWithLogits",
        "protocol": (
            f"CPU, torch threads {spec.threads}, {'thread CPU time' if _clock(spec) == 'cpu' else 'wall time'}; "
            f"N in {tuple(spec.sizes)}; binary logits (N,) with positive rate "
            f"{spec.positive_rate}, multi-class logits (N, {spec.num_classes}); integer labels, converted by each "
            f"loss inside the timed call. {spec.warmup} warm-up calls per loss, then up to {spec.repeats} interleaved "
            f"rounds (each round times every loss once, each timed call right after an untimed call of the same "
            f"loss; a loss leaves the rounds once it has {spec.min_repeats} times and {spec.max_seconds:g} s of "
            f"them); median of the rounds{'; ' + limited if limited else ''}. Binary losses are divided by "
            f"`{spec.baseline}` (and by the naive soft F1 `{spec.reference}` in the notes), multi-class ones by "
            f"`{spec.multiclass_baseline}`. Goals for AnyLoss F1 with its defaults (input validation on): forward + "
            f"backward at most {spec.goal_ratio}x `{spec.baseline}` at N = {spec.goal_size} and at most "
            f"{spec.reference_goal_ratio}x `{spec.reference}` at every N. AUCM includes the sigmoid and the "
            "projection of alpha used in the quality benchmark."
        ),
        "spec": spec_to_dict(spec),
        "metadata": metadata,
        "wall_seconds": round(wall, 1),
        "peers": peers.peer_versions(),
        "unavailable": unavailable,
        "losses": rows,
    }
    payload["notes"] = _goal_notes(payload, spec)
    return payload


def _clock(spec: SpeedSpec) -> str:
    """``"cpu"`` or ``"wall"``: ``spec.clock`` with ``"auto"`` resolved (CPU time for one thread)."""
    if spec.clock == "auto":
        return "cpu" if spec.threads == 1 else "wall"
    return spec.clock


def _ratios(times: dict[str, dict[str, dict[int, list[float]]]], name: str, other: str, key: str) -> dict[str, float]:
    """Ratio of medians ``name / other`` at each N where both were timed."""
    if other not in times:
        return {}
    mine, theirs = times[name][key], times[other][key]
    return {str(n): float(np.median(v) / np.median(theirs[n])) for n, v in mine.items() if n in theirs}


def _row(name: str, label: str, task: str, times: dict[str, Any], spec: SpeedSpec) -> dict[str, Any]:
    base = spec.baseline if task == "binary" else spec.multiclass_baseline
    row: dict[str, Any] = {"label": label, "task": task, "baseline": base,
                           "median_ms": {}, "p25_ms": {}, "p75_ms": {}, "ratio": {}}
    if task == "binary":
        row["reference"] = spec.reference
        row["ratio_to_reference"] = {}
    for key in ("fwd", "fwd_bwd"):
        measured = times[name][key]
        row["median_ms"][key] = {str(n): float(np.median(v)) * 1e3 for n, v in measured.items()}
        row["p25_ms"][key] = {str(n): float(np.percentile(v, 25)) * 1e3 for n, v in measured.items()}
        row["p75_ms"][key] = {str(n): float(np.percentile(v, 75)) * 1e3 for n, v in measured.items()}
        row["ratio"][key] = _ratios(times, name, base, key)
        if task == "binary":
            row["ratio_to_reference"][key] = _ratios(times, name, spec.reference, key)
    return row


def _goal_notes(payload: dict[str, Any], spec: SpeedSpec) -> list[str]:
    """Per AnyLoss row: the goals, and the ratios to the naive soft F1 (the Markdown tables show the baseline's)."""
    notes = []
    for name, row in payload["losses"].items():
        if not name.startswith("anyloss") or not row["ratio"]["fwd_bwd"]:
            continue
        ratios = row["ratio"]["fwd_bwd"]
        if row["task"] == "binary" and str(spec.goal_size) in ratios:
            at_goal = ratios[str(spec.goal_size)]
            verdict = "meets" if at_goal <= spec.goal_ratio else "misses"
            notes.append(f"{row['label']}: {at_goal:.2f}x `{row['baseline']}` at N = {spec.goal_size}, forward + "
                         f"backward: {verdict} the {spec.goal_ratio}x goal.")
        elif row["task"] != "binary":
            notes.append(f"{row['label']}: forward + backward {min(ratios.values()):.2f}x to "
                         f"{max(ratios.values()):.2f}x `{row['baseline']}`.")
        to_reference = row.get("ratio_to_reference", {}).get("fwd_bwd")
        if to_reference:
            over = [n for n, r in to_reference.items() if r > spec.reference_goal_ratio]
            verdict = "meets" if not over else f"misses at N = {', '.join(over)}"
            cells = ", ".join(f"N={n}: {r:.2f}" for n, r in to_reference.items())
            notes.append(f"{row['label']} / naive soft F1 (`{spec.reference}`), forward + backward: {cells}; {verdict} "
                         f"the {spec.reference_goal_ratio}x goal.")
    return notes
