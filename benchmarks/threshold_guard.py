"""Is the validation winner worth taking? The bootstrap guard of ``tune_threshold``, chosen on validation data.

``python -m benchmarks.threshold_guard --jobs 2`` from the repository root
(``python -m benchmarks render benchmarks/results/threshold_guard.json``
re-creates the Markdown from the JSON).

Why: tuning the pre-trained model's decision threshold on the validation rows
(:func:`metricopt.blackbox.threshold.tune_threshold`) is the obvious baseline
for a threshold metric and MetricOpt's starting point; on tables with few
positives the validation winner can be worse on new rows than the untuned
model (``benchmarks/results/blackbox_tabular.md``: page_blocks0 mcr, abalone19
cost). ``tune_threshold(min_confidence=q)`` keeps the winner only if it beats
the untuned model on at least a share ``q`` of class-stratified bootstrap
resamples of the validation rows.

Protocol, per (table, seed): the black-box suite's tabular split and backbone
(:func:`benchmarks.suites.blackbox_tasks.load_data` 60/20/20 with
``random_state = seed``; the MLP (64, 64) pre-trained 30 epochs with
cross-entropy), then per metric (``mcr``, ``cost`` = (20 FN + FP) / N) the
threshold tuned on the validation rows with the library's candidates and 200
resamples (seed 0); each ``q`` of :data:`CANDIDATES` keeps the winner or the
untuned model by the same confidence, exactly as the library decides
(checked against ``tune_threshold(min_confidence=q)`` for each ``q``, one
table and seed, in the tests); test cost of the kept threshold.
Tables: :func:`metricopt.app.data.collection.validation_tables` (never the
report tables), seeds :data:`SEEDS` (never the reported seeds 0-4).

The rule (:data:`RULE`), fixed before the run: per ``q`` and (table, metric)
cell, the relative test cost = mean over seeds of the tuned test cost / mean
over seeds of the untuned test cost (both floored at one false alarm, 1 / test
rows). Among the ``q`` whose mean relative cost
over the cells is within 0.01 of the lowest, take the one with the fewest
cells whose relative cost is above 1.01 (worse than untuned by over 1 %);
ties: the smallest ``q``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: The ``min_confidence`` values compared (0: no guard, the plain winner).
CANDIDATES: tuple[float, ...] = (0.0, 0.7, 0.8, 0.9, 0.95)
METRICS: tuple[str, ...] = ("mcr", "cost")
SEEDS: tuple[int, ...] = (10, 11, 12, 13, 14)
RESAMPLES = 200
EPOCHS = 30
RULE = ("per q and (table, metric) cell: relative test cost = seed-mean tuned test cost / seed-mean untuned test "
        "cost (both floored at 1 / test rows; amended after the first run stopped at an untuned cost of 0, before "
        "any summary was computed); among the q whose mean relative cost over the cells is within 0.01 of the "
        "lowest, the one with the fewest cells above 1.01; ties: the smallest q")
DEFAULT_OUTPUT = Path("benchmarks/results")
PROTOCOL = ("Protocol: per (table, seed), the black-box suite's tabular split (60/20/20, random_state = seed) and "
            f"backbone (MLP (64, 64), {EPOCHS} epochs of cross-entropy); per metric, the threshold tuned on the "
            "validation rows (metricopt.blackbox.threshold.tune_threshold, the library's candidates); each q keeps "
            "the validation winner if it beats the untuned model on at least a share q of the resamples, else the "
            "untuned model (q = 0: always the winner); the test cost of the kept threshold.")


def run_job(table: str, seed: int, epochs: int = EPOCHS, resamples: int = RESAMPLES) -> list[dict[str, Any]]:
    """Per metric: the winner, its confidence and the test cost each candidate ``q`` keeps, on ``table``, ``seed``."""
    import torch

    from benchmarks.suites.blackbox_tasks import load_data, pretrain
    from metricopt.blackbox import make_metric
    from metricopt.blackbox.threshold import ShiftedLogit, tune_threshold

    torch.set_num_threads(1)
    split, num_classes = load_data(f"collection:{table}", seed)
    if num_classes != 2:
        raise ValueError(f"table {table!r} is not binary")
    backbone = pretrain(split, 2, "mlp", epochs=epochs, seed=seed)
    rows = []
    for name in METRICS:
        metric = make_metric(name, num_classes=2)

        def test_cost(shift: float, metric: Any = metric) -> float:
            return metric.cost(metric.evaluate(ShiftedLogit(backbone, shift), split.X_test, split.y_test))

        # the smallest positive q: the winner and its confidence, computed once; each q then decides as the library
        found = tune_threshold(backbone, metric, split.X_val, split.y_val, min_confidence=1e-12, resamples=resamples)
        kept = {q: (found.best_shift if found.confidence is None or (q > 0 and found.confidence >= q) or q == 0
                    else 0.0) for q in CANDIDATES}
        rows.append({
            "table": table, "seed": seed, "metric": name,
            "validation_positives": int((split.y_val == 1).sum()), "validation_rows": len(split.y_val),
            "best_shift": found.best_shift, "confidence": found.confidence,
            "test_rows": len(split.y_test), "untuned_test": test_cost(0.0),
            "untuned_val": metric.cost(found.untuned_value),
            "test": {str(q): test_cost(shift) for q, shift in kept.items()},
        })
    return rows


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per candidate: mean relative cost, cells worse than untuned by over 1 %, better by over 1 %; the choice."""
    cells: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault((r["table"], r["metric"]), []).append(r)
    per_q: dict[str, Any] = {}
    for q in map(str, CANDIDATES):
        rel = []
        for runs in cells.values():
            # floored at one test row's smallest cost (one false alarm): an untuned cost of 0 leaves no ratio
            floor = 1.0 / min(r["test_rows"] for r in runs)
            untuned = max(float(np.mean([r["untuned_test"] for r in runs])), floor)
            tuned = max(float(np.mean([r["test"][q] for r in runs])), floor)
            rel.append(tuned / untuned)
        rel_arr = np.array(rel)
        per_q[q] = {"mean_relative": float(np.mean(rel_arr)), "median_relative": float(np.median(rel_arr)),
                    "worse": int((rel_arr > 1.01).sum()), "better": int((rel_arr < 0.99).sum()),
                    "cells": len(rel)}
    lowest = min(v["mean_relative"] for v in per_q.values())
    near = [q for q, v in per_q.items() if v["mean_relative"] <= lowest + 0.01]
    chosen = min(near, key=lambda q: (per_q[q]["worse"], float(q)))
    return {"per_q": per_q, "chosen": float(chosen), "near_lowest": [float(q) for q in near], "rule": RULE}


def report(payload: dict[str, Any]) -> str:
    """The Markdown of a payload (from its JSON alone)."""
    s, meta = payload["summary"], payload["metadata"]
    lines = [
        "# Threshold guard: `tune_threshold(min_confidence=q)` on validation tables and seeds", "",
        f"- command: `{meta.get('command', '')}`",
        f"- git commit: `{meta.get('git_commit', '?')}`; date {meta.get('date', '?')}; wall "
        f"{payload['wall_seconds']:.0f} s",
        f"- {len(payload['tables'])} validation tables x seeds {tuple(payload['seeds'])} x metrics "
        f"{', '.join(payload['metrics'])} (test COSTS, lower is better: mcr; cost = (20 FN + FP) / N); "
        f"{payload['resamples']} class-stratified bootstrap resamples of the validation rows", "",
        PROTOCOL, "",
        f"Rule, fixed before the run: {s['rule']}.", "",
        "| q | mean relative test cost | median | cells worse than untuned (> 1.01) | cells better (< 0.99) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for q, v in s["per_q"].items():
        mark = " (chosen)" if float(q) == s["chosen"] else ""
        lines.append(f"| {float(q):g}{mark} | {v['mean_relative']:.4f} | {v['median_relative']:.4f} | "
                     f"{v['worse']} / {v['cells']} | {v['better']} / {v['cells']} |")
    lines += ["", f"Chosen: min_confidence = {s['chosen']:g} (candidates within 0.01 of the lowest mean: "
              f"{', '.join(f'{q:g}' for q in s['near_lowest'])}).", "",
              "Relative test cost: per (table, metric), the seed-mean test cost at the kept threshold over the "
              "seed-mean test cost of the untuned model (threshold 0.5); below 1 the tuning helped.", ""]
    rows = payload["rows"]
    conf = [r["confidence"] for r in rows if r["confidence"] is not None]
    if conf:
        lines += [f"Confidence of the validation winner over the untuned model, where the winner moved the threshold "
                  f"({len(conf)} of {len(rows)} runs): median {np.median(conf):.2f}, below 0.9 in "
                  f"{np.mean(np.array(conf) < 0.9):.0%} of them.", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.harness.jobs import run_tasks
    from benchmarks.harness.results import collect_metadata, write_sweep
    from metricopt.app.data import collection

    parser = argparse.ArgumentParser(prog="python -m benchmarks.threshold_guard", description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--tables", nargs="*", default=None, help="validation table names (default: all)")
    parser.add_argument("--seeds", type=int, nargs="*", default=list(SEEDS))
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT)
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(arguments)
    validation = [t.name for t in collection.validation_tables()]
    tables = args.tables or validation
    if set(tables) - set(validation) or set(args.seeds) & {0, 1, 2, 3, 4}:
        parser.error("--tables must be validation tables and --seeds must avoid the reported seeds 0-4")
    metadata = collect_metadata(arguments)
    metadata["command"] = " ".join(["python -m benchmarks.threshold_guard", *arguments])
    start, rows = time.perf_counter(), []
    tasks = [(t, s) for t in tables for s in args.seeds]
    for i, (task, out) in enumerate(run_tasks(run_job, tasks, jobs=args.jobs), 1):
        rows += out
        print(f"[{i}/{len(tasks)}] {task[0]} seed {task[1]}: " + "; ".join(
            f"{r['metric']} untuned {r['untuned_test']:.4f} winner {r['test']['0.0']:.4f} conf "
            f"{r['confidence'] if r['confidence'] is None else round(r['confidence'], 2)}" for r in out)
            + f" ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    rows.sort(key=lambda r: (r["table"], r["metric"], r["seed"]))
    payload = {"metadata": metadata, "tables": tables, "seeds": args.seeds, "metrics": list(METRICS),
               "candidates": list(CANDIDATES), "resamples": RESAMPLES, "epochs": EPOCHS,
               "wall_seconds": round(time.perf_counter() - start, 1), "summary": summarise(rows), "rows": rows}
    text = write_sweep(payload, args.output_dir, "threshold_guard", report)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
