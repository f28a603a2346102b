"""Markdown and PNG reports of the black-box suites (payloads of :mod:`benchmarks.suites.blackbox`).

Every number is a COST (lower is better): ``mcr``, ``1 - aucpr``, ``cost``, ``1 - R@1``;
the tables and plots say so in their titles. Bold marks the lowest mean. The
defaults sweep's report opens with the choice of defaults
(:mod:`benchmarks.suites.blackbox_selection`): one row per variant; the
guidance sweep's with the choice of ``guidance`` and ``start`` by its own rule.
Payloads written before a method or a meta-training field existed (no
``tuned_threshold`` runs, no ``trusted`` rows) render as they did.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness.results import _metadata_lines, _row
from benchmarks.suites.blackbox_selection import finite_mean

__all__ = ["blackbox_markdown", "plot_blackbox"]


#: How each metric's cost reads in tables and plot titles.
COST_LABELS = {"mcr": "mcr", "aucpr": "1 - AUCPR", "cost": "cost (20 FN + FP) / N", "recall@1": "1 - R@1"}


def _label(payload: dict[str, Any], method: str) -> str:
    return payload["methods"].get(method, method)


def _pair_label(payload: dict[str, Any], pair: str) -> str:
    a, b = pair.split(" vs ")
    return f"{_label(payload, a)} vs {_label(payload, b)}"


def _keys(payload: dict[str, Any], group: dict[str, Any]) -> list[str]:
    keys = [f"`{group['setting']}`", COST_LABELS.get(group["metric"], group["metric"])]
    return keys + [group["variant"]] if len(payload.get("variants", [])) > 1 else keys


def _key_heads(payload: dict[str, Any]) -> list[str]:
    return ["setting", "metric (as a cost)"] + (["variant"] if len(payload.get("variants", [])) > 1 else [])


def _mean_std(cell: dict[str, Any], *, bold: bool) -> str:
    text = f"{cell['mean']:.4f} ± {cell['std']:.4f}"
    return f"**{text}**" if bold else text


def _wtl_cell(r: dict[str, Any]) -> str:
    if r["n"] == 0:
        return "N/A"
    return f"{r['wins']}/{r['ties']}/{r['losses']}" + (
        f" ({r['mean_diff']:+.4f})" if r.get("mean_diff") is not None else "")


def _distribution_text(d: dict[str, Any]) -> str:
    """A resolved TaskDistribution record in a few words."""
    return (f"subset {d['subset'][0]:g}-{d['subset'][1]:g}, balance {d['class_balance']:g}, "
            f"lr x{d['learning_rate'][0]:g}-{d['learning_rate'][1]:g}, phi0 std {d['initial_phi_std']:g}")


def _selection_lines(payload: dict[str, Any]) -> list[str]:
    """The choice of defaults: criterion, noise and rule per variant, then per (setting, metric)."""
    selection = payload["summary"]["selection"]
    if not selection["variants"]:
        return ["## Choice of defaults", "", "No run of the reference variant: nothing to choose from.", ""]
    spec = payload["spec"]
    pair = _pair_label(payload, selection["pair"])
    reference = selection["reference"]
    shared = ", same loss-only runs" if selection["baseline_shared"] else "; the loss-only runs DIFFER between variants"
    cells = len(selection["variants"][0]["criterion"]["by_group"])
    lines = [f"## Choice of defaults: {pair}, test cost difference on validation tasks (negative: MetricOpt better)",
             "", (f"Seeds {tuple(spec['seeds'])} (disjoint from the reporting seeds {tuple(spec['reporting_seeds'])})"
                  f" x {spec['held_out_tasks']} held-out tasks x {cells} (setting, metric). Criterion: mean over "
                  "(setting, metric) of the mean difference, the costs of different metrics averaged as they are (a "
                  "metric whose costs differ more weighs more; the W/T/L columns count runs instead); ± std over "
                  "seeds of the per-seed criterion. W/T/L: "
                  f"paired runs against loss-only (tie = |difference| <= {spec['tie_tolerance']:g}). Against the "
                  f"reference (`{reference}`, the current defaults): mean ± standard error of the per-seed criterion "
                  "differences, and the runs' W/T/L of this variant's MetricOpt against the reference's (same "
                  f"tasks{shared})."), "",
             _row(["variant", "sweep", "lambda_v", "meta-training tasks", "criterion ± std over seeds",
                   "W/T/L vs loss-only", "vs reference: difference ± se", "W/T/L vs reference", "clearly better"]),
             _row(["---"] * 9)]
    for e in selection["variants"]:
        c = e["criterion"]
        versus = e.get("vs_reference")
        lines.append(_row([
            f"`{e['label']}`" + (" (reference)" if e["label"] == reference else ""),
            ", ".join(e["sweeps"]) or "-", f"{e['value_weight']:g}", _distribution_text(e["task_distribution"]),
            f"{c['mean_diff']:+.4f} ± {c['std_over_seeds']:.4f}", f"{c['wins']}/{c['ties']}/{c['losses']}",
            "-" if versus is None else f"{versus['mean']:+.4f} ± " + (
                "n/a (1 seed)" if math.isnan(versus["se"]) else f"{versus['se']:.4f}"),
            "-" if versus is None else "{wins}/{ties}/{losses}".format(**versus["runs"]),
            "yes" if e["clearly_better"] else "no"]))
    groups = list(dict.fromkeys((g["setting"], g["metric"]) for e in selection["variants"]
                                for g in e["criterion"]["by_group"]))
    lines += ["", f"Per (setting, metric): mean difference {pair} over seeds x tasks (W/T/L).", "",
              _row(["variant", *(f"`{s}` {COST_LABELS.get(m, m)}" for s, m in groups)]),
              _row(["---"] * (1 + len(groups)))]
    for e in selection["variants"]:
        cells = {(g["setting"], g["metric"]): g for g in e["criterion"]["by_group"]}
        lines.append(_row([f"`{e['label']}`"] + [
            "N/A" if k not in cells else
            f"{cells[k]['mean_diff']:+.4f} ({cells[k]['wins']}/{cells[k]['ties']}/{cells[k]['losses']})"
            for k in groups]))
    lines += ["", f"Rule (fixed before the run): {selection['rule']}.", ""]
    for sweep, what in (("value_weight", "value weight lambda_v"),
                        ("task_distribution", "meta-training task distribution")):
        chosen = selection["chosen"][sweep]
        lines.append(f"- {what}: " + (f"**change** to `{chosen['label']}`" if chosen["changed"] else
                                      f"**keep** the current default (`{reference}`): no variant is clearly better"))
    if all(c["changed"] for c in selection["chosen"].values()):
        lines.append("- both sweeps changed: their combination was not run together.")
    return lines + [""]


def _pct(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:+.1%}"


def _opt(value: float | None, fmt: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def _wtl_text(r: dict[str, Any]) -> str:
    return "N/A" if r["n"] == 0 else f"{r['wins']}/{r['ties']}/{r['losses']}"


def _guidance_lines(payload: dict[str, Any]) -> list[str]:
    """The choice of ``guidance`` and ``start``: H_v, R_v and the diagnostics per variant, per-group costs."""
    choice = payload["summary"]["guidance"]
    if not choice["variants"]:
        return ["## Choice of guidance and start", "", "No MetricOpt run: nothing to choose from.", ""]
    spec = payload["spec"]
    reference = choice["reference"]
    label = lambda key: _label(payload, choice["methods"][key])
    groups = [tuple(g) for g in choice["groups"]]
    lines = [f"## Choice of guidance and start: {label('M')} against the pre-trained model, its tuned threshold and "
             f"{label('L')} on validation tasks (test cost, lower is better)", "",
             (f"Seeds {tuple(spec['seeds'])} (disjoint from the reporting seeds {tuple(spec['reporting_seeds'])}) x "
              f"{spec['held_out_tasks']} held-out tasks x {len(groups)} (setting, metric). H: groups where MetricOpt's "
              "mean test cost is above the pre-trained model's (harm). R: mean over groups of MetricOpt's excess over "
              "the best of the pre-trained model, its tuned threshold and loss-only fine-tuning, relative to the "
              "pre-trained model's cost; ± std over seeds of the per-seed R (each from that seed's means). W/T/L: "
              f"paired (seed, task) runs of MetricOpt against the other (tie = |difference| <= "
              f"{spec['tie_tolerance']:g}). Trusted: the share of meta-trainings whose value function passed the "
              "library's check (else MetricOpt ran loss-only); held-out rho: the pooled held-out rank correlation "
              "the check judges; within-run rho: the mean per-run rank correlation of the later half of the tasks."),
             "", _row(["variant", "guidance", "start", "H (groups harmed)", "R ± std over seeds",
                       f"W/T/L vs {label('L')}", f"W/T/L vs {label('T')}", "trusted", "held-out rho",
                       "within-run rho", "meta-training s (median)"]), _row(["---"] * 11)]
    for e in choice["variants"]:
        name = f"`{e['label']}`" + (" (reference)" if e["label"] == reference else "")
        lines.append(_row([
            f"**{name}**" if e["label"] == choice["chosen"] else name, str(e["guidance"]), str(e["start"]),
            f"{e['harm']} of {len(e['groups'])}", f"{_pct(e['excess'])} ± {_opt(e['excess_std'] * 100, '.1f')}%",
            _wtl_text(e["vs_loss_only"]), _wtl_text(e["vs_tuned_threshold"]),
            "n/a" if e["trusted"] is None else f"{e['trusted']:.0%} of {e['meta_trainings']}",
            _opt(e["held_out_rank_correlation"], ".2f"), _opt(e["rank_correlation_within"], ".2f"),
            _opt(e["meta_seconds_median"], ".1f")]))
    fixed = {(g["setting"], g["metric"]): g for g in choice["variants"][0]["groups"]}
    lines += ["", f"Per (setting, metric): mean test cost over seeds x tasks of {label('P')} and {label('T')} (the "
              f"same for every variant), and per variant {label('M')} / {label('L')}, with R's term for the group "
              "in brackets; (harm): MetricOpt above the pre-trained model.", "",
              _row(["setting", "metric (as a cost)", label("P"), label("T"),
                    *(f"`{e['label']}`" for e in choice["variants"])]),
              _row(["---"] * (4 + len(choice["variants"])))]
    tuned = choice["methods"]["T"]
    for g in groups:
        cells = []
        for e in choice["variants"]:
            c = next((x for x in e["groups"] if (x["setting"], x["metric"]) == g), None)
            cells.append("N/A" if c is None else
                         f"{c[choice['methods']['M']]:.4f} / {c[choice['methods']['L']]:.4f} ({_pct(c['excess'])})"
                         + (" (harm)" if c["harm"] else ""))
        row = fixed.get(g, {})
        lines.append(_row([f"`{g[0]}`", COST_LABELS.get(g[1], g[1]),
                           _opt(row.get(choice["methods"]["P"]), ".4f"),
                           "N/A" if tuned not in row else f"{row[tuned]:.4f}", *cells]))
    chosen = choice["chosen"]
    lines += ["", f"Rule (fixed before the run): {choice['rule']}.", "",
              f"- chosen: **`{chosen}`** " + ("(the reference: the current defaults are kept)" if chosen == reference
                                             else f"(differs from the reference `{reference}`: change the defaults)")]
    if not choice["fixed_shared"]:
        lines.append("- WARNING: the pre-trained or tuned-threshold costs differ between variants (they should not)")
    return lines + [""]


def _trust_lines(payload: dict[str, Any], groups: list[dict[str, Any]]) -> list[str]:
    """Per group: how often the value function passed the trust check, its rank correlations, the tuned threshold."""
    heads = _key_heads(payload)
    lines = ["", "## Value function check and tuned threshold (per meta-training; mean over seeds)", "",
             ("Trusted: meta-trainings whose value function passed the library's check (pooled held-out rank "
              "correlation of the later half of the tasks; when it fails MetricOpt runs loss-only"
              + ("" if payload["spec"].get("trust_check", True) else ", not applied in this run") + "). "
              "Threshold: the pre-trained model's decision threshold (a probability) tuned on all validation "
              "rows (binary datasets)."), "",
             _row([*heads, "trusted", "held-out rho", "within-run rho", "tuned threshold", "threshold evaluations"]),
             _row(["---"] * (len(heads) + 5))]
    for g in groups:
        meta = [r for r in payload["meta_training"]
                if (r["setting"], r["metric"], r["variant"]) == (g["setting"], g["metric"], g["variant"])]
        trusted = [r["trusted"] for r in meta if r.get("trusted") is not None]
        lines.append(_row(_keys(payload, g) + [
            f"{sum(trusted)} of {len(trusted)}" if trusted else "n/a",
            _opt(finite_mean(meta, "held_out_rank_correlation"), ".2f"),
            _opt(finite_mean(meta, "rank_correlation_within"), ".2f"), _opt(finite_mean(meta, "threshold"), ".3f"),
            _opt(finite_mean(meta, "threshold_evaluations"), ".0f")]))
    return lines


def blackbox_markdown(payload: dict[str, Any]) -> str:
    """The Markdown report of a ``blackbox``, ``blackbox_ablation`` or ``blackbox_defaults`` payload."""
    spec, summary = payload["spec"], payload["summary"]
    groups = summary["groups"]
    methods = [m for m in payload["methods"] if any(m in g["methods"] for g in groups)]
    heads = _key_heads(payload)
    lines = [f"# {payload['title']}", "", *_metadata_lines(payload), "", payload.get("protocol", ""), ""]
    if payload.get("unavailable"):
        lines += ["Not run: " + "; ".join(f"{k} ({v})" for k, v in payload["unavailable"].items()), ""]
    if "selection" in summary:
        lines += _selection_lines(payload)
    if "guidance" in summary:
        lines += _guidance_lines(payload)
    if "direct_loss" in methods:
        lines += ["Direct losses (the metric's own loss in metricopt, fine-tuning phi with Adam): "
                  + "; ".join(f"{k}: {v}" for k, v in payload["direct_losses"].items()) + ".", ""]
    lines += [(f"## Test cost, lower is better: mean over {len(spec['seeds'])} seeds x {spec['held_out_tasks']} "
               "held-out tasks ± std over seeds (of the per-seed means)"), "",
              "Costs: mcr = misclassification rate; 1 - AUCPR; cost = (20 FN + FP) / N per sample"
              + ("; 1 - R@1 (retrieval: test classes unseen in training)"
                 if any(g["metric"] == "recall@1" for g in groups) else "") + ". Bold: lowest.",
              "", _row([*heads, *(_label(payload, m) for m in methods)]), _row(["---"] * (len(heads) + len(methods)))]
    for g in groups:
        cells = g["methods"]
        lines.append(_row(_keys(payload, g) + [
            _mean_std(cells[m], bold=m in g["best"]) if m in cells else "N/A" for m in methods]))
    pairs = list(dict.fromkeys(p for g in groups for p in g["wtl"]))
    if pairs:
        tol = spec["tie_tolerance"]
        others = "loss-only fine-tuning" + (" and the tuned threshold" if any(p.endswith(" vs tuned_threshold")
                                                                             for p in pairs) else "")
        lines += ["", f"## MetricOpt against {others}: paired wins / ties / losses (lower test cost wins)",
                  "", (f"Over the (seed, held-out task) runs, which share data, start and batch order; tie = "
                       f"|difference| <= {tol:g}. In brackets: mean test-cost difference, MetricOpt minus the "
                       "other (negative: MetricOpt better)."), "",
                  _row([*heads, *(_pair_label(payload, p) for p in pairs)]), _row(["---"] * (len(heads) + len(pairs)))]
        for g in groups:
            lines.append(_row(_keys(payload, g) + [_wtl_cell(g["wtl"][p]) if p in g["wtl"] else "N/A"
                                                   for p in pairs]))
        totals = summary["wtl_totals"]
        lines.append(_row(["**total**"] + [""] * (len(heads) - 1) + [
            f"**{totals[p]['wins']}/{totals[p]['ties']}/{totals[p]['losses']}**" for p in pairs]))
    lines += ["", "## Validation cost at the kept phi (mean over seeds x tasks; lower is better)", "",
              _row([*heads, *(_label(payload, m) for m in methods)]), _row(["---"] * (len(heads) + len(methods)))]
    for g in groups:
        cells = g["methods"]
        lines.append(_row(_keys(payload, g) + [
            "N/A" if m not in cells or cells[m]["val_mean"] is None else f"{cells[m]['val_mean']:.4f}"
            for m in methods]))
    lines += ["", f"## Kept phi and fine-tuning time (over every run; T = {spec['steps']})", "",
              _row(["method", "mean kept step", "runs that kept phi = 0", "mean fine-tuning seconds"]),
              _row(["---"] * 4)]
    for m in methods:
        cells = [g["methods"][m] for g in groups if m in g["methods"]]
        weights = np.array([c["n_runs"] for c in cells], dtype=float)
        step, start, seconds = (float(np.average([c[k] for c in cells], weights=weights))
                                for k in ("best_step_mean", "kept_start", "seconds_mean"))
        lines.append(_row([_label(payload, m), f"{step:.1f}", f"{start:.0%}", f"{seconds:.2f}"]))
    threads = sorted({r["threads"] for r in payload["meta_training"]})
    lines += ["", f"## Meta-training time: median over seeds, wall seconds (torch threads {threads})", "",
              _row([*heads, "value function (Reptile)", "learned optimizer", "learned / value"]),
              _row(["---"] * (len(heads) + 3))]
    fmt = lambda v, f: "N/A" if v is None else format(v, f)
    for g in groups:
        meta = g["meta"]
        lines.append(_row(_keys(payload, g) + [fmt(meta["value_seconds_median"], ".1f"),
                                               fmt(meta["learned_seconds_median"], ".1f"),
                                               fmt(meta["learned_ratio_median"], ".2f")]))
    if any("trusted" in r for r in payload["meta_training"]):  # payloads of before the check have no such rows
        lines += _trust_lines(payload, groups)
    return "\n".join(lines).rstrip() + "\n"


def _bars(ax: Any, payload: dict[str, Any], group: dict[str, Any], colors: dict[str, Any]) -> None:
    cells = group["methods"]
    methods = [m for m in payload["methods"] if m in cells]
    x = np.arange(len(methods))
    means = np.array([cells[m]["mean"] for m in methods])
    ax.bar(x, means, yerr=[cells[m]["std"] for m in methods], capsize=2, color=[colors[m] for m in methods],
           edgecolor=["black" if m in group["best"] else "none" for m in methods])
    ax.set_xticks(x, [_label(payload, m) for m in methods], rotation=60, ha="right", fontsize=6.5)
    low, high = float(means.min()), float(means.max())
    pad = 0.15 * (high - low) + 0.02 * abs(high) + 1e-4
    ax.set_ylim(max(0.0, low - 3 * pad), high + 2 * pad)
    ax.set_title(f"{group['setting']}: {COST_LABELS.get(group['metric'], group['metric'])}", fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def _sweeps(payload: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    spec, variants = payload["spec"], payload["variants"]
    k_sweep = [v for v in variants if v["phi_size"] == spec["phi_size"]
               and v["evaluations"] in spec["evaluations_grid"]]
    phi_sweep = [v for v in variants if v["evaluations"] == spec["evaluations"]
                 and v["phi_size"] in spec["phi_size_grid"]]
    return [("K (metric observations per run)", k_sweep), ("|phi|", sorted(phi_sweep, key=lambda v: v["phi_size"]))]


def _ablation(plt: Any, payload: dict[str, Any], colors: dict[str, Any]) -> Any:
    groups = payload["summary"]["groups"]
    panels = list(dict.fromkeys((g["setting"], g["metric"]) for g in groups))
    sweeps = _sweeps(payload)
    fig, axes = plt.subplots(len(panels), 3, figsize=(13, 3.4 * len(panels) + 0.8), squeeze=False)
    for row, (setting, metric) in zip(axes, panels):
        by_variant = {g["variant"]: g for g in groups if (g["setting"], g["metric"]) == (setting, metric)}
        for ax, (what, sweep) in zip(row[:2], sweeps):
            labels = [v["label"] for v in sweep if v["label"] in by_variant]
            x = np.arange(len(labels))
            for m in payload["methods"]:
                cells = [by_variant[v]["methods"].get(m) for v in labels]
                if any(c is None for c in cells) or not cells:
                    continue
                ax.errorbar(x, [c["mean"] for c in cells], yerr=[c["std"] for c in cells], marker="o", capsize=3,
                            color=colors[m], label=_label(payload, m))
            ax.set_xticks(x, labels, fontsize=7)
            ax.set_title(f"{setting}\ntest {COST_LABELS.get(metric, metric)} vs {what}", fontsize=8)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        k_labels = [v["label"] for v in sweeps[0][1] if v["label"] in by_variant]
        seconds = [by_variant[v]["meta"]["value_seconds_median"] or 0.0 for v in k_labels]
        row[2].bar(np.arange(len(k_labels)), seconds, color="grey")
        row[2].set_xticks(np.arange(len(k_labels)), k_labels, fontsize=7)
        row[2].set_title(f"{setting}, {metric}\nvalue meta-training, median seconds, vs K", fontsize=8)
        row[2].grid(axis="y", alpha=0.3)
    return fig


def _preset_order(payload: dict[str, Any], record: dict[str, Any]) -> int:
    """Position in the spec's ``distribution_grid`` of the preset a resolved distribution record matches."""
    plain = lambda v: [plain(x) for x in v] if isinstance(v, (list, tuple)) else v
    for i, (_, overrides) in enumerate(payload["spec"]["distribution_grid"]):
        if all(plain(record.get(k)) == plain(v) for k, v in overrides):
            return i
    return len(payload["spec"]["distribution_grid"])


def _defaults(plt: Any, payload: dict[str, Any]) -> Any:
    """The criterion (error bars: std over seeds) and each (setting, metric)'s mean difference, per sweep."""
    selection = payload["summary"]["selection"]
    fig = plt.figure(figsize=(12, 5.4))
    grid = fig.add_gridspec(2, 2, height_ratios=(5, 1))
    axes = [fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])]
    for ax, (sweep, what) in zip(axes, (("value_weight", "value weight lambda_v (log scale)"),
                                           ("task_distribution", "meta-training task distribution"))):
        entries = [e for e in selection["variants"] if sweep in e["sweeps"]]
        if sweep == "value_weight":
            entries.sort(key=lambda e: e["value_weight"])
            x = np.array([e["value_weight"] for e in entries], dtype=float)
            ax.set_xscale("log")
            ax.set_xticks(x, [f"{v:g}" for v in x])
        else:
            entries.sort(key=lambda e: _preset_order(payload, e["task_distribution"]))
            x = np.arange(len(entries), dtype=float)
            ax.set_xticks(x, [e["label"] for e in entries], fontsize=7)
        groups = list(dict.fromkeys((g["setting"], g["metric"]) for e in entries for g in e["criterion"]["by_group"]))
        for setting, metric in groups:
            y = [next((g["mean_diff"] for g in e["criterion"]["by_group"] if (g["setting"], g["metric"])
                       == (setting, metric)), np.nan) for e in entries]
            ax.plot(x, y, marker=".", lw=0.8, alpha=0.6, label=f"{setting}: {COST_LABELS.get(metric, metric)}")
        ax.errorbar(x, [e["criterion"]["mean_diff"] for e in entries],
                    yerr=[e["criterion"]["std_over_seeds"] for e in entries], color="black", lw=2, marker="o",
                    capsize=4, label="criterion: mean over (setting, metric)")
        ax.axhline(0.0, color="grey", lw=0.8, ls="--")
        ax.set_xlabel(what, fontsize=8)
        ax.set_ylabel(f"test cost difference, {_pair_label(payload, selection['pair'])}", fontsize=7)
        ax.grid(alpha=0.3)
    legend = fig.add_subplot(grid[1, :])
    legend.axis("off")
    legend.legend(*axes[0].get_legend_handles_labels(), loc="center", ncol=4, fontsize=7, frameon=False)
    return fig


def _guidance(plt: Any, payload: dict[str, Any]) -> Any:
    """Per variant: R (error bar: std over seeds; dots: the per-seed R) with H above; per group: R's terms."""
    choice = payload["summary"]["guidance"]
    entries = choice["variants"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5.2), gridspec_kw={"width_ratios": (1, 1.3)})
    x = np.arange(len(entries), dtype=float)
    labels = [f"{e['guidance']}\n{e['start']}" if e.get("guidance") else e["label"] for e in entries]
    for i, e in enumerate(entries):
        seeds = [v for v in e["excess_by_seed"].values() if v is not None and not math.isnan(v)]
        left.scatter(np.full(len(seeds), i) + 0.12, seeds, s=10, color="grey", alpha=0.7, zorder=2)
        chosen = e["label"] == choice["chosen"]
        left.errorbar([i], [e["excess"]], yerr=[e["excess_std"]], marker="o", capsize=4, zorder=3,
                      color="tab:red" if chosen else "black")
        left.annotate(f"H={e['harm']}", (i, e["excess"]), textcoords="offset points", xytext=(-8, 12), fontsize=7)
    left.axhline(0.0, color="grey", lw=0.8, ls="--")
    left.set_xticks(x, labels, fontsize=6.5, rotation=30, ha="right")
    left.set_xlabel("guidance, start", fontsize=7)
    left.set_ylabel("R: relative excess of MetricOpt over the best alternative", fontsize=7)
    left.set_title("R per variant (dots: per seed; red: chosen); H = groups harmed", fontsize=8)
    left.grid(alpha=0.3)
    groups = [tuple(g) for g in choice["groups"]]
    width = 0.8 / max(1, len(groups))
    for j, g in enumerate(groups):
        values = [next((c["excess"] for c in e["groups"] if (c["setting"], c["metric"]) == g), np.nan)
                  for e in entries]
        values = [np.nan if v is None else v for v in values]
        right.bar(x - 0.4 + width * (j + 0.5), values, width, label=f"{g[0]}: {COST_LABELS.get(g[1], g[1])}")
    right.axhline(0.0, color="grey", lw=0.8)
    right.set_xticks(x, labels, fontsize=6.5, rotation=30, ha="right")
    right.set_ylabel("(M - min(L, P, T)) / P per group", fontsize=7)
    right.set_title("R's term per (setting, metric)", fontsize=8)
    right.grid(axis="y", alpha=0.3)
    right.legend(fontsize=6.5)
    return fig


def plot_blackbox(payload: dict[str, Any], path: Path) -> Path:
    """Main suites: test-cost bars (error bar: std over seeds) per (setting, metric); ablations: cost vs K and
    vs |phi| per method, and meta-training seconds vs K; the defaults sweep: the selection criterion per sweep."""
    import matplotlib

    from benchmarks.harness.plots import _pyplot, _save, _suptitle

    plt = _pyplot()
    cmap = matplotlib.colormaps["tab10"]
    colors = {m: cmap(i % 10) for i, m in enumerate(payload["methods"])}
    if payload["kind"] == "blackbox_ablation":
        fig = _ablation(plt, payload, colors)
    elif payload["kind"] == "blackbox_defaults" and payload["summary"]["selection"]["variants"]:
        fig = _defaults(plt, payload)
    elif payload["kind"] == "blackbox_guidance" and payload["summary"]["guidance"]["variants"]:
        fig = _guidance(plt, payload)
    else:
        groups = payload["summary"]["groups"]
        cols = min(6, max(1, len(groups)))
        rows = -(-len(groups) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(2.9 * cols + 0.6, 3.3 * rows + 0.8), squeeze=False)
        for ax, group in zip(axes.flat, groups):
            _bars(ax, payload, group, colors)
        for ax in list(axes.flat)[len(groups):]:
            ax.axis("off")
    _suptitle(fig, payload["title"].replace("`", "") + f" (error bars: std over {len(payload['spec']['seeds'])} "
              "seeds)", 9)
    return _save(plt, fig, path, dpi=100)
