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

The guidance sweep (:class:`~benchmarks.harness.specs.BlackBoxGuidanceSpec`,
which rows guide MetricOpt and where fine-tuning starts) has its own rule,
:data:`GUIDANCE_RULE` (:func:`guidance_scores`, :func:`choose_guidance`,
:func:`guidance_summary`), also fixed before that sweep was run. It asks first
that MetricOpt does no harm against the pre-trained model, then that it comes
close to the best of the cheap alternatives (the pre-trained model, its tuned
threshold, loss-only fine-tuning) in relative terms, so that the costs of
different metrics weigh alike.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["GUIDANCE_METHODS", "GUIDANCE_RULE", "RULE", "Z", "choose_guidance", "finite_mean", "guidance_scores",
           "guidance_summary", "selection_summary"]

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


# ---------------------------------------------------------------------------
# the guidance sweep

#: The methods of :data:`GUIDANCE_RULE`: M (MetricOpt), L (loss-only), P (pre-trained), T (tuned threshold).
GUIDANCE_METHODS: dict[str, str] = {"M": "metricopt_sgd", "L": "sgd", "P": "pretrained", "T": "tuned_threshold"}
#: The rule of the guidance sweep, fixed before it was run (DECIDED; never changed after seeing its results).
GUIDANCE_RULE = (
    "for each variant v and group g = (setting, metric), means over seeds x held-out tasks of the test cost: "
    "M_v(g) of MetricOpt (SGD), L_v(g) of loss-only SGD, P(g) of the pre-trained model and T(g) of the pre-trained "
    "model at its tuned threshold (P and T do not depend on the variant; T is missing on a multi-class group, whose "
    "minimum below is then over the others). Harm H_v = the number of groups with M_v(g) > P(g). Relative excess "
    "R_v = the mean over groups of (M_v(g) - min(L_v(g), P(g), T(g))) / P(g) (a group with P(g) = 0 is left out "
    "of R_v). The chosen variant minimises (H_v, R_v) lexicographically; an exact tie in both keeps the reference "
    "(the library's current defaults), else the first variant in run order"
)

Group = tuple[str, str]  # (setting, metric)


def guidance_scores(means: dict[str, dict[Group, dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """``H_v`` and ``R_v`` of :data:`GUIDANCE_RULE` from per-group mean costs.

    Args:
        means: ``variant -> (setting, metric) -> {"M", "L", "P", "T"?: mean test cost}`` (a group without
            ``"M"``, ``"L"`` or ``"P"`` is left out; without ``"T"`` the minimum is over the others).

    Returns:
        ``variant -> {"harm": H_v, "excess": R_v (NaN: no group), "groups": {g: {"excess", "harm"}}}``.

    >>> scores = guidance_scores({"a": {("d", "cost"): {"M": 0.3, "L": 0.4, "P": 0.5, "T": 0.2}}})
    >>> scores["a"]["harm"], round(scores["a"]["excess"], 6)
    (0, 0.2)
    """
    out: dict[str, dict[str, Any]] = {}
    for variant, groups in means.items():
        harm, excess, per_group = 0, [], {}
        for g, cell in groups.items():
            if not {"M", "L", "P"} <= set(cell):
                continue
            best = min(cell[k] for k in ("L", "P", "T") if k in cell)
            harmed = bool(cell["M"] > cell["P"])
            harm += harmed
            relative = (cell["M"] - best) / cell["P"] if cell["P"] > 0 else math.nan
            if not math.isnan(relative):
                excess.append(relative)
            per_group[g] = {"excess": relative, "harm": harmed}
        out[variant] = {"harm": harm, "excess": float(np.mean(excess)) if excess else math.nan, "groups": per_group}
    return out


def choose_guidance(scores: dict[str, dict[str, Any]], reference: str) -> str:
    """The variant of :data:`GUIDANCE_RULE`: lowest ``(H_v, R_v)``; exact ties keep ``reference``, then run order
    (the order of ``scores``). A NaN ``R_v`` ranks after every number.

    >>> choose_guidance({"a": {"harm": 1, "excess": 0.0}, "b": {"harm": 0, "excess": 0.3},
    ...                  "c": {"harm": 0, "excess": 0.1}}, "a")
    'c'
    """
    order = list(scores)
    key = lambda v: (scores[v]["harm"], math.inf if math.isnan(scores[v]["excess"]) else scores[v]["excess"],
                     v != reference, order.index(v))
    return min(order, key=key)


def _fixed_costs(payload: dict[str, Any], method: str) -> tuple[dict[RunKey, float], bool]:
    """``(setting, metric, seed, task) -> test cost`` of a method that does not depend on the variant (the
    reference's rows first), and whether every variant agrees."""
    reference = payload.get("reference_variant")
    rows = sorted((r for r in payload["runs"] if r["method"] == method), key=lambda r: r["variant"] != reference)
    out: dict[RunKey, float] = {}
    shared = True
    for r in rows:
        key = (r["setting"], r["metric"], r["seed"], r["task"])
        if key in out:
            shared = shared and out[key] == r["test_cost"]
        else:
            out[key] = r["test_cost"]
    return out, shared


def _means(costs: dict[RunKey, float], seed: int | None = None) -> dict[Group, float]:
    """Per (setting, metric): the mean over runs (of ``seed`` only, if given)."""
    groups: dict[Group, list[float]] = {}
    for (setting, metric, s, _), c in costs.items():
        if seed is None or s == seed:
            groups.setdefault((setting, metric), []).append(c)
    return {g: float(np.mean(v)) for g, v in groups.items()}


def finite_mean(rows: list[dict[str, Any]], key: str) -> float | None:
    """The mean of ``row[key]`` over the rows where it is a finite number (None: none is)."""
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return float(np.mean(values)) if values else None


def guidance_summary(payload: dict[str, Any]) -> dict[str, Any]:
    """The choice of ``guidance`` and ``start`` of a ``blackbox_guidance`` payload (:data:`GUIDANCE_RULE`).

    Returns ``{"rule", "reference", "methods", "fixed_shared", "groups", "variants", "chosen"}``: per variant (in
    run order) its ``guidance``, ``start``, ``harm`` (H_v), ``excess`` (R_v), ``excess_by_seed`` and
    ``excess_std`` (std over seeds of the per-seed R_v, each from that seed's means), ``groups`` (per
    (setting, metric): the mean cost of each method, the group's relative excess and harm), paired
    wins/ties/losses over (seed, task) runs of MetricOpt against loss-only (``vs_loss_only``) and against the
    tuned threshold (``vs_tuned_threshold``), ``trusted`` (the fraction of its meta-trainings whose value
    function passed the check; None when the rows do not say), ``held_out_rank_correlation`` and
    ``rank_correlation_within`` (means over its meta-trainings) and ``meta_seconds_median``; ``chosen``: the label.
    """
    tolerance = payload["spec"]["tie_tolerance"]
    reference = payload.get("reference_variant")
    names = GUIDANCE_METHODS
    per_variant = {k: _costs(payload, names[k]) for k in ("M", "L")}
    fixed = {k: _fixed_costs(payload, names[k]) for k in ("P", "T")}
    records = [v for v in payload["variants"] if v["label"] in per_variant["M"]]
    out: dict[str, Any] = {"rule": GUIDANCE_RULE, "reference": reference, "methods": dict(names),
                           "fixed_shared": all(shared for _, shared in fixed.values()), "variants": [],
                           "chosen": None}
    if not records:
        return out
    seeds = sorted({k[2] for c in per_variant["M"].values() for k in c})

    def cells(label: str, seed: int | None) -> dict[Group, dict[str, float]]:
        table: dict[Group, dict[str, float]] = {}
        sources = {"M": per_variant["M"].get(label, {}), "L": per_variant["L"].get(label, {}),
                   "P": fixed["P"][0], "T": fixed["T"][0]}
        for k, costs in sources.items():
            for g, mean in _means(costs, seed).items():
                table.setdefault(g, {})[k] = mean
        return {g: c for g, c in table.items() if "M" in c}

    means = {v["label"]: cells(v["label"], None) for v in records}
    scores = guidance_scores(means)
    by_seed = {s: guidance_scores({v["label"]: cells(v["label"], s) for v in records}) for s in seeds}
    out["groups"] = sorted({g for m in means.values() for g in m})
    for v in records:
        label = v["label"]
        ours = per_variant["M"][label]
        per_seed = {s: by_seed[s][label]["excess"] for s in seeds}
        finite = [x for x in per_seed.values() if not math.isnan(x)]
        meta = [r for r in payload.get("meta_training", []) if r["variant"] == label]
        trusted = [r["trusted"] for r in meta if r.get("trusted") is not None]
        seconds = [r["value_seconds"] for r in meta if r.get("value_seconds") is not None]
        out["variants"].append({
            "label": label, "guidance": v.get("guidance"), "start": v.get("start"),
            "harm": scores[label]["harm"], "excess": scores[label]["excess"], "excess_by_seed": per_seed,
            "excess_std": float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0,
            "groups": [{"setting": g[0], "metric": g[1], **{names[k]: c for k, c in means[label][g].items()},
                        **scores[label]["groups"].get(g, {"excess": math.nan, "harm": False})}
                       for g in out["groups"] if g in means[label]],
            "vs_loss_only": _wtl([c - per_variant["L"][label][k] for k, c in ours.items()
                                  if k in per_variant["L"].get(label, {})], tolerance),
            "vs_tuned_threshold": _wtl([c - fixed["T"][0][k] for k, c in ours.items() if k in fixed["T"][0]],
                                       tolerance),
            "trusted": float(np.mean(trusted)) if trusted else None, "meta_trainings": len(meta),
            "held_out_rank_correlation": finite_mean(meta, "held_out_rank_correlation"),
            "rank_correlation_within": finite_mean(meta, "rank_correlation_within"),
            "meta_seconds_median": float(np.median(seconds)) if seconds else None,
        })
    out["chosen"] = choose_guidance({e["label"]: e for e in out["variants"]},
                                    reference if reference is not None else out["variants"][0]["label"])
    return out
