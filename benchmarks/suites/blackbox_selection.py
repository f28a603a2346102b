"""Choosing MetricOpt's defaults from a ``blackbox_defaults`` payload: criterion, noise and rule.

The sweep (:class:`~benchmarks.harness.specs.BlackBoxDefaultsSpec`) runs every
variant on the same held-out tasks of validation seeds, against the same
loss-only runs. Everything here is DECIDED by us (the paper tunes nothing of
this in print), and fixed before the sweep was run:

* Criterion of a variant (lower is better): the mean over (setting, metric) of
  the mean over seeds x held-out tasks of the test-cost difference
  ``selection_pair[0] - selection_pair[1]`` (MetricOpt minus loss-only; the
  costs of different metrics are averaged as they are).
* Its noise: the same mean per seed; the std over seeds of those per-seed
  values. Against the reference (the spec's own defaults, run once and shared
  by both sweeps): the per-seed differences of the criterion, paired (same
  seed, tasks and loss-only runs), their mean and standard error
  (std / sqrt(seeds)).
* Rule: a variant is clearly better than the reference when (1) its criterion
  is lower by more than ``Z`` standard errors of that paired difference and
  (2) its wins minus losses against loss-only (over every paired run) are at
  least the reference's. With one seed there is no noise estimate and nothing
  is clearly better. Each sweep (``value_weight``, task distribution)
  chooses separately: the clearly better variant with the lowest criterion,
  else the reference (the current default is kept).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["RULE", "Z", "selection_summary"]

#: Standard errors by which a variant must beat the reference.
Z = 2.0
RULE = (f"a variant replaces the current default only if its criterion is lower than the reference's by more than "
        f"{Z:g} standard errors of the paired per-seed difference (std over seeds / sqrt(seeds)) AND its wins "
        f"minus losses against loss-only fine-tuning are at least the reference's; each sweep chooses separately "
        f"(lowest criterion among the clearly better variants), else the current default is kept")

RunKey = tuple[str, str, int, int]  # (setting, metric, seed, task)


def _costs(payload: dict[str, Any], method: str) -> dict[str, dict[RunKey, float]]:
    """``variant -> (setting, metric, seed, task) -> test cost`` of ``method``."""
    out: dict[str, dict[RunKey, float]] = {}
    for r in payload["runs"]:
        if r["method"] == method:
            out.setdefault(r["variant"], {})[(r["setting"], r["metric"], r["seed"], r["task"])] = r["test_cost"]
    return out


def _wtl(diffs: list[float], tolerance: float) -> dict[str, int]:
    d = np.asarray(diffs, dtype=float)
    wins, losses = int((d < -tolerance).sum()), int((d > tolerance).sum())
    return {"wins": wins, "ties": len(d) - wins - losses, "losses": losses, "n": len(d)}


def _group_mean(diffs: dict[RunKey, float], seed: int | None = None) -> float:
    """Mean over (setting, metric) of the mean over runs (of ``seed`` only, if given)."""
    groups: dict[tuple[str, str], list[float]] = {}
    for (setting, metric, s, _), d in diffs.items():
        if seed is None or s == seed:
            groups.setdefault((setting, metric), []).append(d)
    return float(np.mean([np.mean(v) for v in groups.values()]))


def _criterion(diffs: dict[RunKey, float], tolerance: float) -> dict[str, Any]:
    seeds = sorted({k[2] for k in diffs})
    by_seed = {s: _group_mean(diffs, s) for s in seeds}
    groups = sorted({k[:2] for k in diffs})
    return {
        "mean_diff": _group_mean(diffs), "by_seed": by_seed,
        "std_over_seeds": float(np.std(list(by_seed.values()), ddof=1)) if len(seeds) > 1 else 0.0,
        **_wtl(list(diffs.values()), tolerance),
        "by_group": [{"setting": g[0], "metric": g[1], "mean_diff": float(np.mean(v)), **_wtl(v, tolerance)}
                     for g in groups for v in [[d for k, d in diffs.items() if k[:2] == g]]],
    }


def _against(row: dict[str, Any], reference: dict[str, Any], own: dict[RunKey, float],
             theirs: dict[RunKey, float], tolerance: float) -> dict[str, Any]:
    """Paired comparison of a variant's criterion and MetricOpt runs with the reference's."""
    deltas = [row["by_seed"][s] - reference["by_seed"][s] for s in row["by_seed"] if s in reference["by_seed"]]
    std = float(np.std(deltas, ddof=1)) if len(deltas) > 1 else math.nan
    return {"mean": float(np.mean(deltas)), "std_over_seeds": std, "se": std / math.sqrt(len(deltas)),
            "runs": _wtl([own[k] - theirs[k] for k in own if k in theirs], tolerance)}


def selection_summary(payload: dict[str, Any]) -> dict[str, Any]:
    """The choice of defaults of a ``blackbox_defaults`` payload (see the module docstring).

    Returns ``{"pair", "reference", "rule", "z", "baseline_shared", "variants", "chosen"}``: per variant
    (in run order) its ``criterion`` (``mean_diff``, ``by_seed``, ``std_over_seeds``, wins/ties/losses
    against loss-only, ``by_group``), ``sweeps`` it belongs to, ``vs_reference`` (paired per-seed mean and
    standard error; per-run wins/ties/losses of its MetricOpt against the reference's) and
    ``clearly_better``; ``chosen`` per sweep: the label kept, and whether it changes the default.
    """
    spec = payload["spec"]
    tolerance = spec["tie_tolerance"]
    method, baseline = spec["selection_pair"]
    reference = payload["reference_variant"]
    ours, theirs = _costs(payload, method), _costs(payload, baseline)
    records = [v for v in payload["variants"] if v["label"] in ours]
    diffs = {v["label"]: {k: c - theirs[v["label"]][k] for k, c in ours[v["label"]].items()
                          if k in theirs.get(v["label"], {})} for v in records}
    out: dict[str, Any] = {"pair": f"{method} vs {baseline}", "reference": reference, "rule": RULE, "z": Z,
                           "baseline_shared": all(theirs[v["label"]] == theirs.get(reference) for v in records),
                           "variants": [], "chosen": {}}
    if reference not in diffs or not diffs[reference]:
        return out
    ref_record = next(v for v in records if v["label"] == reference)
    ref_row = _criterion(diffs[reference], tolerance)
    sweeps = {"value_weight": lambda v: v["task_distribution"] == ref_record["task_distribution"],
              "task_distribution": lambda v: v["value_weight"] == ref_record["value_weight"]}
    for v in records:
        row = _criterion(diffs[v["label"]], tolerance) if v["label"] != reference else ref_row
        entry = {"label": v["label"], "value_weight": v["value_weight"], "task_distribution": v["task_distribution"],
                 "sweeps": [name for name, member in sweeps.items() if member(v)], "criterion": row}
        if v["label"] != reference:
            versus = _against(row, ref_row, ours[v["label"]], ours[reference], tolerance)
            entry["vs_reference"] = versus
            # one seed gives no noise estimate (se NaN): then nothing is clearly better
            entry["clearly_better"] = bool(-versus["mean"] > Z * versus["se"]
                                           and row["wins"] - row["losses"] >= ref_row["wins"] - ref_row["losses"])
        else:
            entry["clearly_better"] = False
        out["variants"].append(entry)
    for sweep in sweeps:
        better = [e for e in out["variants"] if sweep in e["sweeps"] and e["clearly_better"]]
        best = min(better, key=lambda e: e["criterion"]["mean_diff"], default=None)
        out["chosen"][sweep] = {"label": reference if best is None else best["label"], "changed": best is not None}
    return out
