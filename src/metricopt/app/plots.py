"""Plots of training runs, written to image files.

:func:`plot_learning_curves` draws what :func:`metricopt.app.recipes.classification.fit` records
(one history row per epoch) for several methods side by side: the training
loss in one panel, the validation score of the target metric in the other,
with each method's selected (best) epoch marked. :func:`plot_finetune_curves`
does the same for fine-tuning runs of the black-box family (one row per step,
the metric observed at a few steps). :func:`default_plot_path`
names the file after the dataset and the metric, with characters such as the
``@`` of ``recall@4`` made safe for file names.

Figures are built with :class:`matplotlib.figure.Figure` and saved through the
Agg canvas, never through ``pyplot``: no window opens, no global backend is
switched, and nothing leaks between calls. matplotlib is imported only when a
plot is drawn.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["default_plot_path", "plot_finetune_curves", "plot_learning_curves", "safe_file_part"]


def safe_file_part(text: str) -> str:
    """``text`` made safe for a file name: ``@`` becomes ``_at_``, other odd characters ``_``.

    Letters, digits, ``_``, ``-`` and ``.`` are kept; so are names that need no
    change (``"f1"``, ``"balanced_accuracy"``).

    >>> safe_file_part("recall@4"), safe_file_part("ndcg@10"), safe_file_part("my data/set")
    ('recall_at_4', 'ndcg_at_10', 'my_data_set')
    """
    return re.sub(r"[^\w.-]", "_", str(text).replace("@", "_at_"))


def default_plot_path(dataset: str, metric: str) -> str:
    """``metricopt-<dataset>-<metric>.png`` with both parts made safe by :func:`safe_file_part`.

    >>> default_plot_path("letter", "recall@1")
    'metricopt-letter-recall_at_1.png'
    """
    return f"metricopt-{safe_file_part(dataset)}-{safe_file_part(metric)}.png"


def _two_panels(histories: Mapping[str, Sequence[Any]], item: str, unit: str) -> tuple[Any, Any]:
    """Check that every history has rows; a figure with a loss panel and a score panel."""
    if not histories:
        raise ValueError(f"histories must name at least one {item}, got an empty mapping")
    for name, rows in histories.items():
        if len(rows) == 0:
            raise ValueError(f"history of {item} {name!r} has no {unit}")

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, 2)


def _finish(fig: Any, axes: Sequence[Any], path: str | os.PathLike[str]) -> Path:
    """Grid and legends on ``axes``; save ``fig`` to ``path`` (parents created)."""
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize="small")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out


def plot_learning_curves(
    histories: Mapping[str, Sequence[Mapping[str, float]]],
    metric: str,
    path: str | os.PathLike[str],
) -> Path:
    """Save training-loss and validation-score curves of several methods.

    Args:
        histories: ``method name -> history``, a history being one dict per
            epoch with ``epoch``, ``train_loss`` and optionally ``val_score``, or
            one dict per boosting round with ``round`` and ``val_score``
            (the rows of :attr:`metricopt.app.recipes.classification.FitResult.history`).
        metric: name of the validation metric, used for the axis label (any
            text, e.g. ``"recall@4"``: it is drawn literally, never as mathtext).
        path: output file; the format follows the suffix (``.png``, ``.pdf``,
            ``.svg``, ...). Missing parent folders are created.

    Returns:
        The path written.

    Raises:
        ValueError: ``histories`` is empty or a history has no rows.

    Example:
        >>> import tempfile, pathlib
        >>> rows = [{"epoch": 1.0, "train_loss": 0.7, "val_score": 0.5},
        ...         {"epoch": 2.0, "train_loss": 0.4, "val_score": 0.8}]
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     out = plot_learning_curves({"anyloss": rows}, "f1", pathlib.Path(tmp, "c.png"))
        ...     out.stat().st_size > 0
        True
    """
    fig, (loss_ax, score_ax) = _two_panels(histories, "method", "epochs")
    for index, (name, rows) in enumerate(histories.items()):
        color = f"C{index}"
        losses = [(row["epoch"], row["train_loss"]) for row in rows if "train_loss" in row]
        if losses:  # boosted trees (--model lightgbm) record validation scores only
            loss_ax.plot(*zip(*losses), color=color, label=name)
        step = "epoch" if all("epoch" in row for row in rows) else "round"  # boosted trees count rounds
        scored = [(row[step], row["val_score"]) for row in rows if "val_score" in row]
        if scored:
            x, y = zip(*scored)
            score_ax.plot(x, y, color=color, label=name)
            # fit() keeps the first epoch with the highest score: mark that one.
            best_epoch, best = max(scored, key=lambda item: (item[1], -item[0]))
            score_ax.plot([best_epoch], [best], marker="o", color=color, linestyle="none",
                          label=f"{name} best: {best:.4f} @ {step} {best_epoch:g}")

    loss_ax.set(title="training loss", xlabel="epoch", ylabel="loss (epoch mean over batches)")
    if not any("train_loss" in row for rows in histories.values() for row in rows):
        loss_ax.text(0.5, 0.5, "no training loss recorded\n(boosted trees: the rounds' validation scores only)",
                     ha="center", va="center", transform=loss_ax.transAxes)
        score_ax.set_xlabel("boosting round")
    # usetex/mathtext off for the metric name: "$" or "_" in a name must print as typed.
    score_ax.set_title(f"validation {metric}", usetex=False, parse_math=False)
    if not score_ax.get_xlabel():
        score_ax.set_xlabel("epoch")
    score_ax.set_ylabel(f"{metric} (higher is better)", usetex=False, parse_math=False)
    return _finish(fig, (loss_ax, score_ax), path)


def plot_finetune_curves(
    histories: Mapping[str, Sequence[Mapping[str, float]]],
    metric: str,
    path: str | os.PathLike[str],
    *,
    higher_is_better: bool,
) -> Path:
    """Save the training loss and the observed validation metric of fine-tuning runs.

    Args:
        histories: ``run name -> rows``, one row per step with ``step``, ``loss``
            (steps that took an optimiser step) and ``val_score`` (steps where
            the metric was observed), as ``metricopt train --method blackbox``
            records them.
        metric: the metric's name, drawn literally (never as mathtext).
        path: output file; the format follows the suffix. Missing parent
            folders are created.
        higher_is_better: the metric's direction; the best observation of each
            run (the one fine-tuning keeps: the first best) is marked.

    Returns:
        The path written.

    Raises:
        ValueError: ``histories`` is empty or a run has no rows.

    Example:
        >>> import tempfile, pathlib
        >>> rows = [{"step": 0.0, "loss": 0.7, "val_score": 0.2}, {"step": 1.0, "val_score": 0.1}]
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     out = plot_finetune_curves({"metricopt": rows}, "mcr", pathlib.Path(tmp, "c.png"),
        ...                                higher_is_better=False)
        ...     out.stat().st_size > 0
        True
    """
    fig, (loss_ax, score_ax) = _two_panels(histories, "run", "steps")
    sign = 1.0 if higher_is_better else -1.0
    for index, (name, rows) in enumerate(histories.items()):
        color = f"C{index}"
        losses = [(row["step"], row["loss"]) for row in rows if row.get("loss") is not None]
        if losses:
            x, y = zip(*losses)
            loss_ax.plot(x, y, color=color, label=name, linewidth=0.8)
        scored = [(row["step"], row["val_score"]) for row in rows if row.get("val_score") is not None]
        if scored:
            x, y = zip(*scored)
            score_ax.plot(x, y, color=color, marker=".", label=name)
            best_step, best = max(scored, key=lambda item: (sign * item[1], -item[0]))
            score_ax.plot([best_step], [best], marker="o", markersize=9, fillstyle="none", color=color,
                          linestyle="none", label=f"{name} kept: {best:.4f} @ step {best_step:g}")

    loss_ax.set(title="fine-tuning loss (one mini-batch per step)", xlabel="step", ylabel="loss")
    score_ax.set_title(f"validation {metric} (observed steps)", usetex=False, parse_math=False)
    score_ax.set_xlabel("step")
    better = "higher" if higher_is_better else "lower"
    score_ax.set_ylabel(f"{metric} ({better} is better)", usetex=False, parse_math=False)
    return _finish(fig, (loss_ax, score_ax), path)
