"""Why MetricOpt's learned optimizer trails the paper: its meta-training options swept, cost beside gain.

``python -m benchmarks.learned_sweep`` from the repository root (``python -m benchmarks render
benchmarks/results/learned_sweep.json`` re-creates the Markdown from the JSON).

Per (setting, metric, seed), on VALIDATION seeds only (10, 11, 12 by default; the reported seeds 0..4 are
never used), exactly as ``benchmarks.suites.blackbox._cell`` prepares a cell with the
``BlackBoxSpec()`` defaults (read from ``benchmarks.harness.specs`` at run time and recorded in the JSON):

1. ``benchmarks.suites.blackbox_tasks.load_data`` / ``pretrain`` (MLP (64, 64), 30 epochs, seeded) /
   ``make_adapter("input_bias", ...)`` (|phi| 128) under a ``ShiftedLogit`` head; on binary data the
   pre-trained model's threshold is tuned on all validation rows and meta-training and fine-tuning start there
   (``start="tuned_threshold"``); the pool is ``metricopt.app.recipes.blackbox.task_data(guidance="train")``,
   meta-training observes its guiding rows only.
2. The value function: ``meta_train`` (``MetaConfig(tasks=24, warmup_tasks=4, fit=<spec.value_fit>)``), used by
   MetricOpt (SGD) when its trust check passes (the library's fallback otherwise: loss-only).
3. The learned optimizer, ``meta_train_learned``, once per VARIANT (:data:`VARIANTS`: the benchmark's
   configuration ``LearnedConfig(tasks=24, warmup_tasks=4)`` and one option changed at a time), timed. Note:
   ``meta_train_learned`` trains its value function with its own Reptile loop whatever ``MetaConfig.fit`` says
   (the benchmark passes ``fit="joint"``; it is ignored); the ``no_metric`` variant (``metric_weight=0``: the
   rule learns from the loss alone) measures what that value function contributes.
4. ``held_out`` tasks ``TaskDistribution().sample(1_000_000 + j, ...)`` fine-tuned from phi = 0 with the same
   budget and batch seed by: loss-only SGD (``FineTuneConfig`` as the suite: 200 steps, K = 5 %, lr 0.05,
   momentum 0.9), MetricOpt (SGD), the UNTRAINED rule (``LearnedOptimizer`` at its initialisation: the
   normalised gradient step ``phi - base_step * grad / rms``, zero meta-training) and every learned variant.
   Recorded per run: test cost at the kept phi (best observed on the selection rows, phi = 0 included), test
   cost at the last phi (no selection: what the optimiser itself reached), the kept step, fine-tuning seconds.
5. Diagnostics per learned variant: how far meta-training moved the rule's weights from their initialisation;
   along its held-out runs, its step against the untrained rule's step on the same inputs (their state does not
   depend on the weights, so both see identical features) and against plain SGD's ``lr * grad``;
   ``L_opt`` (lambda 50, T 20, the variant's own value function, fixed batches) of 20 steps of the trained rule
   minus that of the untrained rule on the held-out tasks; ``L_opt`` over the meta-iterations (history).
   For the default variant, the agreement of two independent meta-gradient estimates (``smoothed_gradient``,
   samples 4, on one held-out unroll): their cosine and each estimator's signal-to-noise ratio
   ``|mean|^2 / variance of the mean``.

Decision rule, fixed before the sweep ran (``RULE``): a variant replaces the library's default only if its mean
paired test-cost difference against the DEFAULT learned variant is below zero by more than two standard errors
(clustered by meta-training run) on the pooled runs, it is not worse on either metric, and its meta-training
costs at most 3x the default's (the paper's own budget ratio).

Cells are cached in ``--cache`` (JSON lines; ``--force`` recomputes). One process, ``torch.set_num_threads(1)``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

#: (dataset, metric) cells, input-bias adapter. Sized for ~30 min on one core (about 3 min per cell and seed);
#: yeast4's mcr is left out: every method keeps phi = 0 there in the blackbox_tabular results.
SETTINGS: tuple[tuple[str, str], ...] = (("page_blocks0", "mcr"), ("page_blocks0", "cost"), ("yeast4", "cost"))
SEEDS: tuple[int, ...] = (10, 11, 12)
REPORTED_SEEDS = frozenset(range(5))
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = Path("/tmp/learned_sweep/cells.jsonl")
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results"
RULE = ("A variant replaces the library's default only if its mean paired test-cost difference against the "
        "default learned variant is below zero by more than two standard errors (clustered by meta-training run) "
        "on the pooled runs, it is not worse on either metric, and its meta-training costs at most 3x the "
        "default's.")

#: Learned-optimizer variants: name -> (description, LearnedConfig overrides on top of the benchmark's).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "default": ("the benchmark's: 24 tasks (4 warm-up), unroll 20, sigma 0.1, 1 rule update per task, "
                "Adam lr 1e-3, lambda 50", {}),
    "unroll50": ("unroll_steps 50 (T / 4 of the 200-step budget)", {"unroll_steps": 50}),
    "sigma0.03": ("smoothing sigma 0.03", {"sigma": 0.03}),
    "sigma0.3": ("smoothing sigma 0.3", {"sigma": 0.3}),
    "updates4": ("optimizer_updates 4: 4x the rule's meta-iterations on the same 24 tasks (84 instead of 21)",
                 {"optimizer_updates": 4}),
    "lr1e-2": ("Adam learning rate 1e-2 on the rule's weights (10x)", {"learning_rate": 1e-2}),
    "updates4_lr1e-2": ("both: 84 rule updates at lr 1e-2", {"optimizer_updates": 4, "learning_rate": 1e-2}),
    "no_metric": ("metric_weight 0: L_opt = L_loss, the value function plays no part", {"metric_weight": 0.0}),
}
DEFAULT_VARIANTS: tuple[str, ...] = tuple(VARIANTS)
#: Fine-tuning methods besides the learned variants (``learned:<variant>``).
BASE_METHODS = ("sgd", "metricopt_sgd", "untrained_rule")
LABELS = {"sgd": "loss-only SGD", "metricopt_sgd": "MetricOpt (SGD)",
          "untrained_rule": "untrained rule (normalised gradient step, no meta-training)"}


@dataclass(frozen=True)
class Budget:
    """The sizes of one cell (the defaults are the black-box suite's)."""

    meta_tasks: int = 24
    warmup_tasks: int = 4
    steps: int = 200
    held_out: int = 4
    diagnostic_steps: int = 20


# --------------------------------------------------------------------------------------------------- one cell


class _Compare:
    """Runs ``rule`` in ``finetune`` and records, per step, its step against the untrained rule's and SGD's.

    The rule's state (running averages of the gradient, loss and cost) does not depend on its weights, so the
    untrained ``reference`` evaluated on the same ``(phi, gradient, state, loss, cost)`` sees the same features.
    """

    def __init__(self, rule: Any, reference: Any, learning_rate: float) -> None:
        self.rule, self.reference, self.learning_rate = rule, reference, learning_rate
        self.rows: list[tuple[float, float, float, float, float]] = []

    def reset(self, phi: Tensor) -> None:
        self.rule.reset(phi)

    @torch.no_grad()
    def step(self, phi: Tensor, gradient: Tensor, loss: float, cost: float | None) -> Tensor:
        phi, gradient = phi.detach(), gradient.detach()
        state = self.rule.state
        following, self.rule.state = self.rule.update(phi, gradient, state, loss, cost)
        reference, _ = self.reference.update(phi, gradient, state, loss, cost)
        ours, theirs = following - phi, reference - phi
        cosine = float(torch.nn.functional.cosine_similarity(ours, -gradient, dim=0)) if gradient.norm() > 0 else 0.0
        self.rows.append((float(ours.norm()), float(theirs.norm()), float((ours - theirs).norm()),
                          float(self.learning_rate * gradient.norm()), cosine))
        return following

    def summary(self) -> dict[str, float]:
        if not self.rows:
            return {}
        ours, theirs, diff, sgd, cos = (torch.tensor(c, dtype=torch.float64) for c in zip(*self.rows))
        return {"step_norm": float(ours.mean()), "untrained_step_norm": float(theirs.mean()),
                "relative_deviation": float((diff / theirs.clamp_min(1e-12)).mean()),
                "step_ratio_untrained": float((ours / theirs.clamp_min(1e-12)).mean()),
                "step_ratio_sgd": float((ours / sgd.clamp_min(1e-12)).mean()),
                "cosine_with_negative_gradient": float(cos.mean())}


def _weights_moved(rule: Any, initial: Any) -> dict[str, float]:
    moved = [(w - w0).detach().abs().max() for w, w0 in zip(rule.parameters(), initial.parameters())]
    last = list(rule.network.parameters())[-2:]
    return {"max_weight_change": float(max(moved)),
            "last_layer_norm": float(torch.cat([w.detach().reshape(-1) for w in last]).norm())}


def _thirds(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if math.isfinite(v)]
    if len(values) < 3:
        return math.nan, math.nan
    k = len(values) // 3
    return statistics.fmean(values[:k]), statistics.fmean(values[-k:])


def run_cell(split: Any, num_classes: int, backbone: Any, dataset: str, metric_name: str, seed: int, *,
             variants: Sequence[str] = DEFAULT_VARIANTS, budget: Budget = Budget(),
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Meta-train (value function, each learned variant) and fine-tune the held-out tasks of one cell.

    Returns ``{"key", "dataset", "metric", "seed", "runs": [...], "meta": {...}, "seconds"}``; each run row:
    ``task, method, test_cost, final_test_cost, val_cost, best_step, seconds``; ``meta`` holds the value
    function's seconds and trust, and per variant its seconds, history summary and diagnostics.
    """
    from benchmarks.harness.specs import BlackBoxSpec
    from benchmarks.suites.blackbox import cell_parts
    from metricopt.blackbox import MetaConfig, TaskDistribution, finetune, meta_train
    from metricopt.blackbox.learned import LearnedConfig, LearnedOptimizer, meta_train_learned, smoothed_gradient
    from metricopt.blackbox.learned_objective import batch_indices, unroll
    from metricopt.blackbox.threshold import tune_threshold
    from metricopt.losses import cross_entropy_loss

    if seed in REPORTED_SEEDS:
        raise ValueError(f"`seed` {seed} is one of the reported seeds {sorted(REPORTED_SEEDS)}: validation only")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"`variants` has unknown names {unknown}; known: {list(VARIANTS)}")
    started = time.perf_counter()
    spec = BlackBoxSpec()
    phi_size = spec.phi_size
    parts = cell_parts(spec, split, num_classes, backbone, "input_bias", metric_name, seed, steps=budget.steps)
    head, adapter, metric, pool, meta_pool = parts.head, parts.adapter, parts.metric, parts.pool, parts.meta_pool
    sgd, distribution, held_out = parts.sgd, parts.distribution, TaskDistribution()

    def test_cost(phi: Tensor | None = None) -> float:
        if phi is not None:
            adapter.reset_phi(phi)
        return metric.cost(metric.evaluate(adapter, split.X_test, split.y_test))

    adapter.reset_phi()
    shift = 0.0
    if num_classes == 2 and spec.start == "tuned_threshold":
        shift = tune_threshold(adapter, metric, split.X_val, split.y_val).shift
    head.shift = shift
    meta_config = MetaConfig(tasks=budget.meta_tasks, warmup_tasks=budget.warmup_tasks, fit=spec.value_fit,
                             seed=seed)
    clock = time.perf_counter()
    meta = meta_train(adapter, cross_entropy_loss, metric, meta_pool, finetune_config=sgd, config=meta_config,
                      distribution=distribution)
    value_seconds = time.perf_counter() - clock
    guided = bool(meta.trust.trusted or not spec.trust_check)
    info: dict[str, Any] = {
        "value_seconds": value_seconds, "trusted": bool(meta.trust.trusted), "guided": guided,
        "trust_rank_correlation": meta.trust.rank_correlation, "start_shift": float(shift), "variants": {},
        "spec": {k: getattr(spec, k) for k in ("sgd_learning_rate", "batch_size", "value_weight", "evaluations",
                                               "phi_size", "guidance", "start", "value_fit", "trust_check")},
    }
    rules: dict[str, Any] = {"untrained_rule": LearnedOptimizer(seed=seed)}
    values: dict[str, Any] = {}
    for name in variants:
        overrides = VARIANTS[name][1]
        loop = {k: overrides[k] for k in ("tasks", "warmup_tasks") if k in overrides}
        config = LearnedConfig(**{"tasks": budget.meta_tasks, "warmup_tasks": budget.warmup_tasks, "seed": seed,
                                  "value": dataclasses.replace(meta_config, **loop), **overrides})
        clock = time.perf_counter()
        result = meta_train_learned(adapter, cross_entropy_loss, metric, meta_pool, finetune_config=sgd,
                                    config=config, distribution=distribution)
        seconds = time.perf_counter() - clock
        history = result.history
        trained = [r for r in history if math.isfinite(r["objective"])]
        first, last = _thirds([r["objective"] for r in trained])
        untrained = LearnedOptimizer(hidden=config.hidden, base_step=config.base_step, seed=seed)
        rules[f"learned:{name}"], values[name] = result.optimizer, result.value
        info["variants"][name] = {
            "seconds": seconds, "rule_updates": len(trained) * config.optimizer_updates,
            "objective_first_third": first, "objective_last_third": last,
            "objective": [r["objective"] for r in trained],
            "skipped_updates": sum(r["skipped_updates"] for r in trained),
            "nonfinite": sum(r["nonfinite"] for r in trained),
            "optimizer_seconds": sum(r["optimizer_seconds"] for r in history),
            "value_training_seconds": sum(r["value_seconds"] for r in history),
            "collect_seconds": sum(r["collect_seconds"] for r in history),
            **_weights_moved(result.optimizer, untrained),
        }
        log(f"  {dataset}/{metric_name}/{seed} {name:16s} {seconds:6.1f} s, {info['variants'][name]['rule_updates']} "
            f"rule updates, max weight change {info['variants'][name]['max_weight_change']:.4f}")

    methods: dict[str, tuple[Any, Any]] = {"sgd": (None, None), "metricopt_sgd": (meta.value if guided else None, None)}
    methods.update({name: (None, rule) for name, rule in rules.items()})
    runs: list[dict[str, Any]] = []
    steps: dict[str, list[dict[str, float]]] = {}
    objective_gap: dict[str, list[float]] = {}
    agreement: list[dict[str, float]] = []
    for j in range(budget.held_out):
        task = held_out.sample(1_000_000 + j, seed=seed, labels=pool.y_train.long(), phi_size=phi_size, guided=False)
        data = pool.train_subset(task.indices)
        for method, (value, rule) in methods.items():
            compare = None
            if rule is not None:
                reference = LearnedOptimizer(hidden=rule.hidden, base_step=rule.base_step, seed=seed)
                rule = compare = _Compare(rule, reference, spec.sgd_learning_rate)
            adapter.reset_phi()
            head.shift = shift
            clock = time.perf_counter()
            run = finetune(adapter, cross_entropy_loss, metric, data, config=sgd, value=value, rule=rule,
                           seed=task.seed)
            seconds = time.perf_counter() - clock
            kept = test_cost()
            final = test_cost(run.trajectory.phis[-1])
            runs.append({"task": j, "method": method, "test_cost": kept, "final_test_cost": final,
                         "val_cost": None if run.best_value is None else metric.cost(run.best_value),
                         "best_step": run.best_step, "seconds": seconds})
            if compare is not None:
                steps.setdefault(method, []).append(compare.summary())
        # L_opt of T diagnostic steps from phi = 0: trained rule minus untrained rule, the variant's value function
        batches = batch_indices(len(data.X_train), spec.batch_size, budget.diagnostic_steps + 1, task.seed)
        adapter.reset_phi()
        for name, value in values.items():
            rule = rules[f"learned:{name}"]
            reference = LearnedOptimizer(hidden=rule.hidden, base_step=rule.base_step, seed=seed)
            with torch.no_grad():
                pair = [float(unroll(r, adapter, cross_entropy_loss, value, data, steps=budget.diagnostic_steps,
                                     batches=batches)) for r in (rule, reference)]
            objective_gap.setdefault(name, []).append(pair[0] - pair[1])
        if j == 0 and "default" in values:  # two independent meta-gradient estimates on the same unroll
            rule = rules["learned:default"]

            def objective(weights: dict[str, Tensor], rule: Any = rule, value: Any = values["default"],
                          data: Any = data, batches: Any = batches) -> Tensor:
                return unroll(rule, adapter, cross_entropy_loss, value, data, steps=budget.diagnostic_steps,
                              batches=batches, parameters=weights)

            estimates = [smoothed_gradient(objective, dict(rule.named_parameters()), sigma=0.1, samples=4,
                                           generator=torch.Generator().manual_seed(seed * 100 + k))
                         for k in range(2)]

            def flat(g: dict[str, Tensor] | None) -> Tensor:
                return torch.cat([t.reshape(-1) for t in g.values()]) if g is not None else torch.zeros(1)

            row = {"cosine": float(torch.nn.functional.cosine_similarity(
                flat(estimates[0].gradient), flat(estimates[1].gradient), dim=0))}
            for kind in ("pathwise", "evolution"):
                snr = [float(flat(getattr(e, kind)).square().sum()) / max(getattr(e, f"{kind}_variance"), 1e-30)
                       for e in estimates]
                row[f"{kind}_snr"] = statistics.fmean(snr)
            agreement.append(row)
    adapter.remove()
    for name in variants:
        summaries = steps.get(f"learned:{name}", [])
        info["variants"][name]["steps"] = {k: statistics.fmean(s[k] for s in summaries) for k in summaries[0]} \
            if summaries else {}
        info["variants"][name]["heldout_objective_gap"] = statistics.fmean(objective_gap[name])
    untrained_steps = steps.get("untrained_rule", [])
    info["untrained_steps"] = {k: statistics.fmean(s[k] for s in untrained_steps) for k in untrained_steps[0]} \
        if untrained_steps else {}
    info["gradient_agreement"] = agreement[0] if agreement else {}
    return {"key": f"{dataset}/{metric_name}/{seed}", "dataset": dataset, "metric": metric_name, "seed": seed,
            "runs": runs, "meta": info, "seconds": time.perf_counter() - started}


def run_dataset(dataset: str, metrics: Sequence[str], seed: int, *, done: set[str], variants: Sequence[str],
                budget: Budget, save: Callable[[dict[str, Any]], None], log: Callable[[str], None] = print) -> None:
    """Load and pre-train once for (dataset, seed); run every metric's cell not in ``done``; ``save`` each."""
    from benchmarks.suites.blackbox_tasks import load_data, pretrain

    todo = [m for m in metrics if f"{dataset}/{m}/{seed}" not in done]
    if not todo:
        return
    split, num_classes = load_data(dataset, seed)
    backbone = pretrain(split, num_classes, "mlp", epochs=30, seed=seed)
    for metric_name in todo:
        cell = run_cell(split, num_classes, backbone, dataset, metric_name, seed, variants=variants, budget=budget,
                        log=log)
        log(f"{cell['key']}: {cell['seconds']:.0f} s")
        save(cell)


# --------------------------------------------------------------------------------------------------- statistics


def _methods(cells: Sequence[dict[str, Any]]) -> list[str]:
    seen: list[str] = []
    for cell in cells:
        for run in cell["runs"]:
            if run["method"] not in seen:
                seen.append(run["method"])
    return seen


def _paired(cells: Sequence[dict[str, Any]], method: str, reference: str, field: str) -> dict[str, Any]:
    """Paired differences ``method - reference`` over runs; the standard error is clustered by cell."""
    diffs, cell_means = [], []
    for cell in cells:
        by = {(r["task"], r["method"]): r for r in cell["runs"]}
        here = [by[(t, method)][field] - by[(t, reference)][field] for (t, m) in by if m == method
                and (t, reference) in by]
        if here:
            diffs += here
            cell_means.append(statistics.fmean(here))
    if not diffs:
        return {"n": 0}
    se = statistics.stdev(cell_means) / math.sqrt(len(cell_means)) if len(cell_means) > 1 else math.nan
    return {"n": len(diffs), "cells": len(cell_means), "mean": statistics.fmean(diffs), "se": se,
            "wins": sum(d < 0 for d in diffs), "ties": sum(d == 0 for d in diffs), "losses": sum(d > 0 for d in diffs)}


def summarise(cells: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per metric (and pooled): per method mean costs, paired differences vs loss-only SGD and vs the default
    learned variant, meta-training seconds; per variant the diagnostics (means over cells)."""
    methods = _methods(cells)
    groups = {"pooled": list(cells)}
    for metric in sorted({c["metric"] for c in cells}):
        groups[metric] = [c for c in cells if c["metric"] == metric]
    out: dict[str, Any] = {}
    for group, members in groups.items():
        rows = {}
        for method in methods:
            runs = [r for c in members for r in c["runs"] if r["method"] == method]
            if not runs:
                continue
            row = {"test_cost": statistics.fmean(r["test_cost"] for r in runs),
                   "final_test_cost": statistics.fmean(r["final_test_cost"] for r in runs),
                   "kept_phi0": statistics.fmean(r["best_step"] == 0 for r in runs),
                   "finetune_seconds": statistics.fmean(r["seconds"] for r in runs),
                   "vs_sgd": _paired(members, method, "sgd", "test_cost"),
                   "final_vs_sgd": _paired(members, method, "sgd", "final_test_cost")}
            if "learned:default" in methods:
                row["vs_default"] = _paired(members, method, "learned:default", "test_cost")
            if method.startswith("learned:"):
                row["meta_seconds"] = statistics.fmean(c["meta"]["variants"][method[8:]]["seconds"] for c in members)
            elif method == "metricopt_sgd":
                row["meta_seconds"] = statistics.fmean(c["meta"]["value_seconds"] for c in members)
            else:
                row["meta_seconds"] = 0.0
            rows[method] = row
        out[group] = rows
    diagnostics = {}
    for name in [m[8:] for m in methods if m.startswith("learned:")]:
        entries = [c["meta"]["variants"][name] for c in cells]

        def mean(get: Callable[[dict[str, Any]], float], entries: list[dict[str, Any]] = entries) -> float:
            values = [get(e) for e in entries]
            values = [v for v in values if v is not None and math.isfinite(v)]
            return statistics.fmean(values) if values else math.nan

        diagnostics[name] = {
            "rule_updates": mean(lambda e: e["rule_updates"]),
            "max_weight_change": mean(lambda e: e["max_weight_change"]),
            "last_layer_norm": mean(lambda e: e["last_layer_norm"]),
            "relative_deviation": mean(lambda e: e["steps"].get("relative_deviation", math.nan)),
            "step_ratio_untrained": mean(lambda e: e["steps"].get("step_ratio_untrained", math.nan)),
            "step_ratio_sgd": mean(lambda e: e["steps"].get("step_ratio_sgd", math.nan)),
            "cosine_with_negative_gradient": mean(lambda e: e["steps"].get("cosine_with_negative_gradient", math.nan)),
            "heldout_objective_gap": mean(lambda e: e["heldout_objective_gap"]),
            "objective_first_third": mean(lambda e: e["objective_first_third"]),
            "objective_last_third": mean(lambda e: e["objective_last_third"]),
            "skipped_updates": sum(e["skipped_updates"] for e in entries),
            "nonfinite": sum(e["nonfinite"] for e in entries),
            "optimizer_seconds": mean(lambda e: e["optimizer_seconds"]),
            "value_training_seconds": mean(lambda e: e["value_training_seconds"]),
            "collect_seconds": mean(lambda e: e["collect_seconds"]),
        }
    agreement = [c["meta"]["gradient_agreement"] for c in cells if c["meta"].get("gradient_agreement")]
    untrained = [c["meta"]["untrained_steps"] for c in cells if c["meta"].get("untrained_steps")]
    return {"groups": out, "diagnostics": diagnostics,
            "gradient_agreement": {k: statistics.fmean(a[k] for a in agreement) for k in agreement[0]}
            if agreement else {},
            "gradient_agreement_cells": len(agreement),
            "untrained_steps": {k: statistics.fmean(u[k] for u in untrained) for k in untrained[0]}
            if untrained else {},
            "value_seconds": statistics.fmean(c["meta"]["value_seconds"] for c in cells) if cells else math.nan,
            "trusted": sum(c["meta"]["trusted"] for c in cells)}


def decide(summary: dict[str, Any]) -> dict[str, Any]:
    """Apply :data:`RULE` to every variant; returns ``{"adopt": [...], "checks": {variant: {...}}}``."""
    pooled = summary["groups"].get("pooled", {})
    default = pooled.get("learned:default")
    checks, adopt = {}, []
    for method, row in pooled.items():
        if not method.startswith("learned:") or method == "learned:default" or default is None:
            continue
        paired = row.get("vs_default", {"n": 0})
        better = paired["n"] > 0 and math.isfinite(paired.get("se", math.nan)) and \
            paired["mean"] < -2 * paired["se"]
        per_metric = all(summary["groups"][g][method]["vs_default"]["mean"] <= 0 for g in summary["groups"]
                         if g != "pooled" and method in summary["groups"][g])
        cheap = row["meta_seconds"] <= 3 * default["meta_seconds"]
        checks[method[8:]] = {"better_by_2se": better, "not_worse_per_metric": per_metric, "cost_within_3x": cheap}
        if better and per_metric and cheap:
            adopt.append(method[8:])
    return {"rule": RULE, "adopt": adopt, "checks": checks}


def build_payload(cells: Sequence[dict[str, Any]], metadata: dict[str, Any], *, variants: Sequence[str],
                  budget: Budget, wall: float) -> dict[str, Any]:
    summary = summarise(cells)
    return {"kind_note": "sweep script benchmarks.learned_sweep", "metadata": metadata, "wall_seconds": wall,
            "settings": sorted({(c["dataset"], c["metric"]) for c in cells}),
            "seeds": sorted({c["seed"] for c in cells}),
            "budget": dataclasses.asdict(budget), "variants": {v: VARIANTS[v][0] for v in variants},
            "spec": cells[0]["meta"]["spec"] if cells else {}, "summary": summary, "decision": decide(summary),
            "cells": list(cells)}


# --------------------------------------------------------------------------------------------------- report


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _label(method: str) -> str:
    return f"learned `{method[8:]}`" if method.startswith("learned:") else LABELS.get(method, method)


def _diff(p: dict[str, Any], digits: int = 4) -> str:
    if not p or p.get("n", 0) == 0:
        return "-"
    return f"{p['mean']:+.{digits}f} ± {_fmt(p['se'], digits)}"


def _wtl(p: dict[str, Any]) -> str:
    return "-" if not p or p.get("n", 0) == 0 else f"{p['wins']}/{p['ties']}/{p['losses']}"


def report(payload: dict[str, Any]) -> str:
    """The Markdown report, from the JSON payload alone."""
    meta, summary = payload["metadata"], payload["summary"]
    budget, groups = payload["budget"], summary["groups"]
    lines: list[str] = []
    say = lines.append
    say("# Learned optimizer sweep (`learned_sweep`): why MetricOpt (learned) trails, cost beside gain\n")
    say(f"- command: `{meta.get('command', '')}`")
    dirty = " (working tree had uncommitted changes)" if meta.get("git_dirty") else ""
    say(f"- git commit: `{meta.get('git_commit', '?')}`{dirty}")
    say(f"- date: {meta.get('date', '?')}; wall time of the cells, summed: {payload['wall_seconds']:.0f} s; "
        f"machine: {meta.get('cpu_model') or meta.get('machine', '?')}, {meta.get('cpu_count', '?')} CPUs, torch "
        f"threads {meta.get('torch_threads', '?')}, one process; load average at start "
        f"{meta.get('load_average_at_start', '?')} (the machine was shared with another benchmark)")
    settings = ", ".join(f"{d} {m}" for d, m in payload["settings"])
    say(f"- settings (input-bias adapter): {settings}; VALIDATION seeds {payload['seeds']} (never the reported "
        f"0..4); {budget['held_out']} held-out tasks per (setting, metric, seed)\n")
    spec = payload.get("spec", {})
    say(f"Protocol: the black-box suite's cell (`benchmarks.suites.blackbox._cell`) with the `BlackBoxSpec()` "
        f"defaults: start at the tuned threshold ({spec.get('start')}), guidance {spec.get('guidance')!r}, "
        f"{budget['meta_tasks']} meta-training tasks ({budget['warmup_tasks']} warm-up), value function fit "
        f"{spec.get('value_fit')!r} for MetricOpt (SGD), fine-tuning {budget['steps']} steps, K = "
        f"{spec.get('evaluations')} of T, SGD lr {spec.get('sgd_learning_rate')} (momentum 0.9), batch "
        f"{spec.get('batch_size')}; every method keeps the phi with the best observed selection cost (phi = 0 "
        "included). Costs: mcr; cost = (20 FN + FP) / N; lower is better. `test` = test cost at the kept phi "
        "(what the benchmark reports); `last phi` = test cost at the run's last phi (no selection: what the "
        "optimiser reached by itself). Differences are paired (same task, data, start and batches), method minus "
        "loss-only SGD, ± standard error over the meta-training runs (one per setting, metric and seed); W/T/L "
        "over the runs (a win: lower test cost). Meta s = wall seconds of the meta-training the method needs "
        f"(value function: {_fmt(summary['value_seconds'], 1)} s on average). The value function passed the "
        f"library's trust check in {summary['trusted']} of {len(payload['cells'])} meta-training runs; where it "
        "failed, MetricOpt (SGD) ran loss-only (the library's fallback), as the suite does.\n")
    say("Variants of the learned optimizer (one `LearnedConfig` option changed at a time):\n")
    for name, text in payload["variants"].items():
        say(f"- `{name}`: {text}")
    say(f"- {LABELS['untrained_rule']}: `LearnedOptimizer()` as initialised, never meta-trained (0 s).\n")

    for group in [g for g in groups if g != "pooled"] + ["pooled"]:
        rows = []
        for method, r in groups[group].items():
            rows.append([_label(method), _fmt(r["test_cost"]), _diff(r["vs_sgd"]), _wtl(r["vs_sgd"]),
                         _fmt(r["final_test_cost"]), _diff(r["final_vs_sgd"]), f"{100 * r['kept_phi0']:.0f}%",
                         _fmt(r["meta_seconds"], 1), _fmt(r["finetune_seconds"], 2)])
        title = "all runs (mcr and cost pooled; costs of different scales)" if group == "pooled" else group
        say(f"## {title}\n")
        say(_table(["method", "test", "test vs SGD", "W/T/L vs SGD", "last phi", "last phi vs SGD",
                    "kept phi = 0", "meta s", "fine-tune s"], rows))
        say("")

    diag = summary["diagnostics"]
    if diag:
        say("## What meta-training did to the rule (means over the meta-training runs)\n")
        say("Rule updates = Adam steps on the rule's weights; max |dw| = largest change of any weight from its "
            "initialisation; |W_out| = norm of the output layer (initialised at 0, so 0 = the untrained rule); on "
            "the held-out runs, per step: deviation = |step - untrained rule's step| / |untrained step| on the same "
            "inputs; step / untrained and step / SGD = ratios of step norms (SGD: lr x |grad|, without momentum); "
            "cos = cosine of the step with -grad; L_opt gap = L_opt (lambda 50, 20 steps from phi = 0, the "
            "variant's value function) of the trained rule minus the untrained rule's on the held-out tasks "
            "(< 0: meta-training improved its own objective); L_opt first / last third = mean L_opt at the "
            "perturbed weights over the first and last third of the meta-iterations (different tasks each: "
            "noisy); opt s / value s = seconds of the rule's updates / of the value function's training inside "
            "the meta-training.\n")
        rows = []
        for name, d in diag.items():
            rows.append([f"`{name}`", _fmt(d["rule_updates"], 0), _fmt(d["max_weight_change"]),
                         _fmt(d["last_layer_norm"], 3), _fmt(d["relative_deviation"], 3),
                         _fmt(d["step_ratio_untrained"], 3), _fmt(d["step_ratio_sgd"], 2),
                         _fmt(d["cosine_with_negative_gradient"], 3), _fmt(d["heldout_objective_gap"], 3),
                         f"{_fmt(d['objective_first_third'], 1)} / {_fmt(d['objective_last_third'], 1)}",
                         f"{_fmt(d['optimizer_seconds'], 1)} / {_fmt(d['value_training_seconds'], 1)}",
                         f"{d['skipped_updates']:.0f} / {d['nonfinite']:.0f}"])
        say(_table(["variant", "rule updates", "max abs dw", "W_out", "deviation", "step / untrained",
                    "step / SGD", "cos(step, -grad)", "L_opt gap", "L_opt first / last third", "opt s / value s",
                    "skipped / non-finite"], rows))
        say("")
        u = summary.get("untrained_steps", {})
        if u:
            say(f"The untrained rule on its own held-out runs: step / SGD {_fmt(u.get('step_ratio_sgd'), 2)}, "
                f"cos(step, -grad) {_fmt(u.get('cosine_with_negative_gradient'), 3)}.\n")
    agreement = summary.get("gradient_agreement", {})
    if agreement:
        say(f"Meta-gradient signal (default variant, after meta-training, one held-out 20-step unroll per run, "
            f"{summary['gradient_agreement_cells']} runs): cosine between two independent estimates of the "
            f"smoothed gradient (sigma 0.1, 4 antithetic pairs each) {_fmt(agreement['cosine'], 3)}; "
            f"signal-to-noise |mean|^2 / variance of the mean: pathwise {_fmt(agreement['pathwise_snr'], 3)}, "
            f"evolution strategies {_fmt(agreement['evolution_snr'], 3)} (1 = as much noise as signal).\n")

    decision = payload["decision"]
    say("## Decision rule (fixed before the sweep ran)\n")
    say(decision["rule"] + "\n")
    pooled = groups.get("pooled", {})
    rows = [[f"`{v}`", _diff(pooled.get(f"learned:{v}", {}).get("vs_default", {}), 5),
             "yes" if c["better_by_2se"] else "no", "yes" if c["not_worse_per_metric"] else "no",
             "yes" if c["cost_within_3x"] else "no"] for v, c in decision["checks"].items()]
    if rows:
        say(_table(["variant", "test vs default (pooled)", "better than default by > 2 SE",
                    "not worse on either metric", "cost <= 3x"], rows))
        say("")
    say(f"Variants that pass the rule: {', '.join(decision['adopt']) or 'none'} (this script changes no default; "
        "see docs/benchmarks/learned.md for what was done with the result).\n")
    say("## Reproduce\n")
    say("```\n# from the repository root, in the project's environment (~30 min on one core; cells cached in "
        "/tmp/learned_sweep/cells.jsonl)\nOMP_NUM_THREADS=1 python -m benchmarks.learned_sweep\n"
        "# the Markdown again from the saved JSON\n"
        "python -m benchmarks render benchmarks/results/learned_sweep.json\n```\n")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------- main


def _read_cache(path: Path) -> dict[str, dict[str, Any]]:
    cells: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                cell = json.loads(line)
                cells[cell["key"]] = cell
    return cells


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.harness.results import _clean, collect_metadata, write_sweep

    parser = argparse.ArgumentParser(prog="python -m benchmarks.learned_sweep", description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="finished cells (JSON lines)")
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--variants", nargs="*", default=list(DEFAULT_VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="*", type=int, default=list(SEEDS))
    parser.add_argument("--settings", nargs="*", default=[f"{d}/{m}" for d, m in SETTINGS],
                        help="dataset/metric cells (input-bias adapter)")
    parser.add_argument("--held-out", type=int, default=Budget().held_out)
    parser.add_argument("--force", action="store_true", help="recompute cached cells")
    parser.add_argument("--no-write", action="store_true", help="print only")
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(arguments)
    reported = sorted(set(args.seeds) & REPORTED_SEEDS)
    if reported:
        parser.error(f"seeds {reported} are the reported seeds; this sweep uses validation seeds only")
    torch.set_num_threads(1)
    budget = Budget(held_out=args.held_out)
    metadata = collect_metadata(arguments)
    metadata["command"] = " ".join(["python -m benchmarks.learned_sweep", *arguments])
    metadata["machine"] = platform.processor() or platform.machine()
    started = time.perf_counter()
    cells = {} if args.force else _read_cache(args.cache)
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    if args.force and args.cache.exists():
        args.cache.unlink()

    def save(cell: dict[str, Any]) -> None:
        cells[cell["key"]] = cell
        with args.cache.open("a") as handle:
            handle.write(json.dumps(_clean(cell)) + "\n")

    settings = [tuple(s.split("/")) for s in args.settings]
    datasets = list(dict.fromkeys(d for d, _ in settings))
    for seed in args.seeds:
        for dataset in datasets:
            run_dataset(dataset, [m for d, m in settings if d == dataset], seed, done=set(cells),
                        variants=args.variants, budget=budget, save=save)
    keys = [f"{d}/{m}/{s}" for s in args.seeds for d, m in settings]
    chosen = [json.loads(json.dumps(_clean(cells[k]))) for k in keys if k in cells]
    payload = build_payload(chosen, metadata, variants=args.variants, budget=budget,
                            wall=sum(c["seconds"] for c in chosen))
    if args.no_write:
        print(report(json.loads(json.dumps(_clean(payload)))))
        return 0
    text = write_sweep(payload, args.output_dir, "learned_sweep", report)
    print(text)
    print(f"elapsed {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
