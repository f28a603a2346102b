"""PNG plots of benchmark payloads (matplotlib, Agg backend, imported lazily).

* :func:`plot_quality`: per task, a grouped bar chart of the mean over
  datasets per metric and method, with error bars = standard deviation over
  seeds of the per-seed mean over datasets (quality and ablation payloads).
* :func:`plot_quality_per_dataset`: per task and metric, each method's
  difference to the reference per dataset (where it wins and where it loses).
* :func:`plot_speed`: forward + backward time against N (log-log) and the
  ratio to the baseline against N.
* :func:`plot_constrained`: per constraint, each method's rate of test
  constraints held against its mean test objective, at the plain rule and at
  the library's calibration (constrained payloads).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness.results import METRIC_LABELS, aggregate, seed_average_over_datasets

__all__ = ["plot_constrained", "plot_quality", "plot_quality_per_dataset", "plot_speed"]



def _save(plt: Any, fig: Any, path: Path, *, dpi: int) -> Path:
    """Lay out, write (creating folders) and close a figure."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path

def _suptitle(fig: Any, text: str, fontsize: float) -> None:
    """A figure title wrapped to the figure's width (long method lists would be cut off)."""
    chars = max(40, int(fig.get_figwidth() * 130 / fontsize))
    fig.suptitle(textwrap.fill(text, width=chars), fontsize=fontsize)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(payload: dict[str, Any]) -> dict[str, Any]:
    """One fixed colour per method, the same in every panel and plot of a payload."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(payload["methods"])}


def _ran(summary: dict[str, Any], metrics: list[str]) -> list[str]:
    """Methods with a result on this task (binary-only ones drop out of multi-class panels)."""
    return [m for m in summary["methods"] if any(summary["mean_over_datasets"][k][m] is not None for k in metrics)]


def plot_quality(payload: dict[str, Any], path: Path) -> Path:
    """Bar chart: mean over datasets per metric (x) and method (bars), one panel per task."""
    from benchmarks.harness.methods import method_label

    plt = _pyplot()
    colors = _colors(payload)
    agg = aggregate(payload["records"])
    tasks = [t for t in ("binary", "multiclass") if t in payload["summary"]]
    metrics = payload["spec"]["metrics"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks) + 1, 5.0), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        summ = payload["summary"][task]
        methods = _ran(summ, metrics)
        width = 0.8 / len(methods)
        x = np.arange(len(metrics))
        for i, m in enumerate(methods):
            means = [summ["mean_over_datasets"][k][m] for k in metrics]
            errs = [np.std(list(seed_average_over_datasets(agg[task], k, m).values()), ddof=1)
                    if len(seed_average_over_datasets(agg[task], k, m)) > 1 else 0.0 for k in metrics]
            means_arr = np.array([np.nan if v is None else v for v in means])
            ax.bar(x + (i - (len(methods) - 1) / 2) * width, means_arr, width, yerr=errs, capsize=2,
                   label=method_label(m, task), color=colors.get(m),
                   edgecolor="black" if m == payload["reference"] else None,
                   linewidth=1.2 if m == payload["reference"] else 0)
        ax.set_xticks(x, [METRIC_LABELS.get(k, k) for k in metrics])
        finite = [v for k in metrics for v in summ["mean_over_datasets"][k].values() if v is not None]
        low = max(0.0, min(finite) - 0.1) if finite else 0.0
        ax.set_ylim(low, min(1.0, max(finite) + 0.05) if finite else 1.0)
        ax.set_ylabel("test score, mean over datasets")
        ax.set_title(f"{'binary' if task == 'binary' else 'multi-class'}: {len(summ['datasets'])} datasets, "
                     f"{len(payload['spec']['seeds'])} seeds (error bar: std over seeds)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, ncol=min(4, len(methods)), loc="upper center", bbox_to_anchor=(0.5, -0.08))
    _suptitle(fig, payload["title"].replace("`", ""), 10)
    return _save(plt, fig, path, dpi=110)


def plot_quality_per_dataset(payload: dict[str, Any], path: Path) -> Path:
    """Per dataset, ``reference - method`` of seed-means for each metric (positive: reference ahead)."""
    from benchmarks.harness.methods import method_label

    plt = _pyplot()
    colors = _colors(payload)
    agg = aggregate(payload["records"])
    reference = payload["reference"]
    metrics = payload["spec"]["metrics"]
    tasks = [t for t in ("binary", "multiclass") if t in payload["summary"]]
    fig, axes = plt.subplots(len(tasks), len(metrics), figsize=(3.6 * len(metrics), 3.4 * len(tasks) + 0.6),
                             squeeze=False)
    for row, task in zip(axes, tasks):
        summ = payload["summary"][task]
        others = [m for m in _ran(summ, metrics) if m != reference]
        datasets = summ["datasets"]
        y = np.arange(len(datasets))
        height = 0.8 / max(1, len(others))
        for ax, k in zip(row, metrics):
            for i, m in enumerate(others):
                diffs = [agg[task][d][k][reference]["mean"] - agg[task][d][k][m]["mean"]
                         if m in agg[task][d].get(k, {}) and reference in agg[task][d].get(k, {}) else np.nan
                         for d in datasets]
                ax.barh(y + (i - (len(others) - 1) / 2) * height, diffs, height, label=method_label(m, task),
                        color=colors.get(m))
            ax.axvline(0, color="black", linewidth=0.8)
            ax.set_yticks(y, datasets, fontsize=7)
            ax.set_title(f"{task}: {METRIC_LABELS.get(k, k)}", fontsize=9)
            ax.set_xlabel(f"{method_label(reference, task)} minus method", fontsize=8)
            ax.grid(axis="x", alpha=0.3)
        row[0].legend(fontsize=6)
    _suptitle(fig, f"{payload['title'].replace('`', '')}: per-dataset differences (right of 0: "
              f"{method_label(reference)} ahead)", 9)
    return _save(plt, fig, path, dpi=100)


def plot_speed(payload: dict[str, Any], path: Path) -> Path:
    """Left: median forward + backward time vs N (log-log); right: ratio to the baseline vs N."""
    plt = _pyplot()
    spec = payload["spec"]
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    fig, (ax_t, ax_r) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (name, row) in enumerate(payload["losses"].items()):
        style = "-" if row["task"] == "binary" else "--"
        sizes = [int(n) for n in row["median_ms"]["fwd_bwd"]]
        med = [row["median_ms"]["fwd_bwd"][str(n)] for n in sizes]
        lo = [row["p25_ms"]["fwd_bwd"][str(n)] for n in sizes]
        hi = [row["p75_ms"]["fwd_bwd"][str(n)] for n in sizes]
        line = ax_t.plot(sizes, med, style, marker="o", markersize=3, label=row["label"], color=cmap(i % 20))[0]
        ax_t.fill_between(sizes, lo, hi, color=line.get_color(), alpha=0.15)
        if row["ratio"]["fwd_bwd"] and name not in (spec["baseline"], spec["multiclass_baseline"]):
            ax_r.plot(sizes, [row["ratio"]["fwd_bwd"][str(n)] for n in sizes], style, marker="o", markersize=3,
                      color=line.get_color(), label=f"{row['label']} / {row['baseline']}")
    ax_r.axhline(1.0, color="black", linewidth=0.8)
    ax_r.axhline(spec["goal_ratio"], color="red", linewidth=0.8, linestyle=":", label=f"goal {spec['goal_ratio']}x")
    for ax, ylabel in ((ax_t, "forward + backward, median ms (band: quartiles)"),
                       (ax_r, "ratio of medians to the baseline")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size N")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle(f"{payload['title'].replace('`', '')} (CPU, {spec['threads']} threads; "
                 f"dashed: C={spec['num_classes']})",
                 fontsize=10)
    return _save(plt, fig, path, dpi=110)


def plot_constrained(payload: dict[str, Any], path: Path) -> Path:
    """One panel per constraint: held rate on test (x) against mean test objective (y) per method.

    Two markers per method, joined by a line: the calibration confidence 0.5
    (the plain rule, a circle) and the library's default (a triangle); the
    reference is drawn larger. One legend below the panels.
    """
    import matplotlib

    plt = _pyplot()
    summary = payload["summary"]["constraints"]
    constraints = payload["spec"]["constraints"]
    default = payload["default_confidence"]
    shown = [q for q in (0.5, default) if any(abs(q - c) < 1e-12 for c in payload["spec"]["confidences"])]
    markers = {0.5: "o", default: "^"}
    methods = list(payload["methods"])
    cmap = matplotlib.colormaps["tab10" if len(methods) <= 10 else "tab20"]
    colors = {m: cmap(i % cmap.N) for i, m in enumerate(methods)}
    cols = min(2, len(constraints))
    rows = -(-len(constraints) // cols)
    legend_rows = -(-(sum(m not in payload.get("unavailable", {}) for m in methods) + len(shown)) // 4)
    legend_inches = 0.15 + 0.2 * legend_rows
    height = 4.6 * rows + legend_inches
    fig, axes = plt.subplots(rows, cols, figsize=(6.0 * cols, height), squeeze=False)
    for ax, constraint in zip(axes.flat, constraints):
        for m in methods:
            points = []
            for q in shown:
                part = summary[constraint][f"{q:g}"]
                if m in part["methods"] and part["objective"]["mean"][m] is not None:
                    points.append((q, part["held_rate"][m], part["objective"]["mean"][m]))
            if not points:
                continue
            reference = m == payload["reference"]
            ax.plot([p[1] for p in points], [p[2] for p in points], color=colors[m], lw=2.5 if reference else 1)
            for q, x, y in points:
                ax.scatter([x], [y], color=colors[m], marker=markers[q], s=70 if reference else 30, zorder=3)
        ax.set_title(constraint, fontsize=10)
        ax.set_xlabel("constraint held on test (rate over tables x seeds)")
        ax.set_ylabel("mean test objective")
        ax.set_xlim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(constraints):]:
        ax.set_visible(False)
    handles = [plt.Line2D([], [], color=colors[m], lw=2.5 if m == payload["reference"] else 1,
                          label=payload["methods"][m].get("label", m)) for m in methods
               if m not in payload.get("unavailable", {})]
    handles += [plt.Line2D([], [], color="gray", marker=markers[q], ls="",
                           label=f"q = {q:g}" + (" (plain rule)" if q == 0.5 else " (library default)"))
                for q in shown]
    fig.legend(handles=handles, loc="lower center", ncol=min(4, len(handles)), fontsize=8, frameon=False)
    _suptitle(fig, payload["title"], 10)
    fig.tight_layout(rect=(0, legend_inches / height, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
