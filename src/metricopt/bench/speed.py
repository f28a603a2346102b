"""Speed of the losses: forward and forward + backward time against BCEWithLogits.

For each batch size N, every loss gets the same ``(N,)`` logits (binary) or
``(N, C)`` logits (multi-class) and labels with a fixed positive rate. After
``warmup`` untimed calls, each of ``repeats`` rounds times every loss once, in
turn (:func:`metricopt.bench.timing.interleaved_times`), so a load spike on the
machine hits all losses alike; the report gives
the median (and quartiles) per loss and the ratio of medians to the baseline
(``BCEWithLogitsLoss`` for binary losses, ``cross_entropy`` for multi-class
ones), all measured in one run.

"forward" is the loss call with autograd recording (what training pays);
"forward + backward" adds ``loss.backward()`` down to the logits.
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

from metricopt.bench import peers
from metricopt.bench.results import collect_metadata, load_average
from metricopt.bench.specs import SpeedSpec, spec_to_dict
from metricopt.bench.timing import interleaved_times, time_once
from metricopt.losses import ConfusionLoss

__all__ = ["LOSS_FACTORIES", "run_speed"]

LossFn = Callable[[Tensor, Tensor], Tensor]


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
    """Run a :class:`SpeedSpec`; returns the JSON-ready payload."""
    from tqdm.auto import tqdm

    unknown = [n for n in spec.losses if n not in LOSS_FACTORIES]
    if unknown:
        raise ValueError(f"unknown loss(es) {unknown} in `losses`; known: {sorted(LOSS_FACTORIES)}")
    torch.set_num_threads(spec.threads)
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
    times: dict[str, dict[str, dict[int, list[float]]]] = {
        name: {"fwd": {}, "fwd_bwd": {}} for name in losses
    }
    start = time.perf_counter()
    for n in tqdm(spec.sizes, desc=spec.name, unit="size", disable=not progress):
        inputs = {task: _inputs(task, n, spec, generator) for task in ("binary", "multiclass")}
        timers = {
            (name, key): partial(time_once, fn, *inputs[task], backward=key == "fwd_bwd")
            for name, (_, task, fn) in losses.items()
            for key in ("fwd", "fwd_bwd")
        }
        for (name, key), values in interleaved_times(timers, repeats=spec.repeats, warmup=spec.warmup).items():
            times[name][key][n] = values
    wall = time.perf_counter() - start
    rows: dict[str, Any] = {}
    for name, (label, task, _) in losses.items():
        base = spec.baseline if task == "binary" else spec.multiclass_baseline
        row: dict[str, Any] = {"label": label, "task": task, "baseline": base,
                               "median_ms": {}, "p25_ms": {}, "p75_ms": {}, "ratio": {}}
        for key in ("fwd", "fwd_bwd"):
            med = {n: float(np.median(v)) * 1e3 for n, v in times[name][key].items()}
            row["median_ms"][key] = {str(n): v for n, v in med.items()}
            row["p25_ms"][key] = {str(n): float(np.percentile(v, 25)) * 1e3 for n, v in times[name][key].items()}
            row["p75_ms"][key] = {str(n): float(np.percentile(v, 75)) * 1e3 for n, v in times[name][key].items()}
            if base in times:
                row["ratio"][key] = {
                    str(n): med[n] / (float(np.median(times[base][key][n])) * 1e3) for n in med
                }
            else:
                row["ratio"][key] = {}
        rows[name] = row
    metadata["load_average_at_end"] = load_average()
    payload: dict[str, Any] = {
        "suite": spec.name,
        "kind": spec.kind,
        "title": f"Loss speed (`{spec.name}`): forward and forward + backward against BCEWithLogits",
        "protocol": (
            f"CPU, torch threads {spec.threads}; N in {tuple(spec.sizes)}; binary logits (N,) with positive rate "
            f"{spec.positive_rate}, multi-class logits (N, {spec.num_classes}); {spec.warmup} warm-up calls per loss, "
            f"then {spec.repeats} interleaved rounds (each round times every loss once); median of the rounds. "
            f"Binary losses are divided by `{spec.baseline}`, multi-class ones by `{spec.multiclass_baseline}`. "
            f"Goal: AnyLoss forward + backward at most {spec.goal_ratio}x its baseline. AnyLoss runs with its "
            "defaults (input validation on) unless the label says otherwise; AUCM includes the sigmoid and the "
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


def _goal_notes(payload: dict[str, Any], spec: SpeedSpec) -> list[str]:
    notes = []
    for name, row in payload["losses"].items():
        if not name.startswith("anyloss") or not row["ratio"]["fwd_bwd"]:
            continue
        ratios = row["ratio"]["fwd_bwd"]
        over = [n for n, r in ratios.items() if r > spec.goal_ratio]
        worst = max(ratios.values())
        verdict = "meets" if not over else f"misses at N = {', '.join(over)}"
        notes.append(f"{row['label']}: {verdict} the {spec.goal_ratio}x goal (worst forward + backward ratio "
                     f"{worst:.2f}).")
    return notes
