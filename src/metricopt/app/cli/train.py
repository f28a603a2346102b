"""``metricopt train``: arguments to a configuration, the run of its family, the table and the files."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from metricopt.app.cli.blackbox import (
    blackbox_config,
    resolve_family,
    run_blackbox_command,
)
from metricopt.app.cli.common import (
    BASELINE,
    TrainConfig,
    check_data_options,
    check_numbers,
    metric_name,
    parse_hidden,
    shared_fields,
)
from metricopt.app.cli.confusion import run_confusion
from metricopt.app.cli.ranking import RANK_METRIC_FORMS, rank_options, run_rank
from metricopt.app.cli.wording import flag_errors, one_line_warnings
from metricopt.app.launch import launch, torchrun_group, torchrun_rank, torchrun_world_size
from metricopt.app.recipes.blackbox import (
    BLACKBOX_METHOD,
    BLACKBOX_ONLY_METRICS,
    format_blackbox_table,
)
from metricopt.app.recipes.ranking import (
    RANK_METHOD,
    RANK_METRICS,
    is_rank_metric,
    parse_rank_metric,
)
from metricopt.distributed import is_distributed
from metricopt.metrics import METRIC_NAMES
from metricopt.metrics.constrained import is_constrained, parse_constrained

__all__ = ["command", "config_from_args", "format_table", "run_train"]

#: Methods that can train for a rank metric.
RANK_LOSSES = (RANK_METHOD, BASELINE)


def _parse_metric(text: str) -> str:
    """The canonical metric name (lower case, see :func:`metric_name`) of a confusion or a rank metric."""
    name = metric_name(text)
    if name in METRIC_NAMES:
        return name
    if is_constrained(name):  # "recall@precision>=0.95": a malformed one raises with the accepted forms
        return parse_constrained(name).name
    if is_rank_metric(name):
        return str(parse_rank_metric(name))
    head = name.split("@")[0]
    if head in RANK_METRICS and name != "recall":
        parse_rank_metric(text)  # raises the rank-metric error with the reason
    raise ValueError(
        f"--metric must be a confusion metric ({', '.join(METRIC_NAMES)}), a constrained one (e.g. "
        f"recall@precision>=0.95, tpr@fpr<=0.01), a rank metric ({RANK_METRIC_FORMS} "
        f"with K an integer >= 1, e.g. recall@4), or with --method {BLACKBOX_METHOD} a black-box metric "
        f"({', '.join(BLACKBOX_ONLY_METRICS)} or MODULE:FUNCTION); metric names are case-insensitive; "
        f"got --metric={text!r}"
    )


def _resolve_method(metric: str, loss: str | None) -> str:
    """``--loss``, defaulting to ``rambo`` for a rank metric and ``anyloss`` otherwise."""
    rank = is_rank_metric(metric)
    if loss is None:
        return RANK_METHOD if rank else "anyloss"
    if rank and loss not in RANK_LOSSES:
        raise ValueError(
            f"--loss {loss} trains for confusion-matrix metrics, not for the rank metric --metric {metric}; "
            f"use --loss {RANK_METHOD} (the default for rank metrics) or --loss {BASELINE}"
        )
    if not rank and loss == RANK_METHOD:
        raise ValueError(
            f"--loss {RANK_METHOD} needs a rank metric (--metric {RANK_METRIC_FORMS}); got --metric {metric}"
        )
    return loss


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Turn parsed ``train`` arguments into a :class:`TrainConfig`; check them all, before any output.

    Checked here: every numeric option's range, the metric name (case-insensitive, recorded in lower case),
    options of another family (errors naming the option and the metric), combinations of options and, for
    ``--method blackbox``, MetricOpt's options and that ``--metric`` resolves to a callable with a direction.
    The library's errors name its Python arguments; they are re-raised naming the options (:func:`flag_errors`).
    """
    with flag_errors():
        check_numbers(args)
        if resolve_family(args) == BLACKBOX_METHOD:
            if getattr(args, "model", "mlp") != "mlp":
                raise ValueError(f"--model {args.model} is for confusion-matrix metrics; --method {BLACKBOX_METHOD} "
                                 "fine-tunes an MLP's adapter")
            if getattr(args, "tune_threshold", False):
                raise ValueError(f"--tune-threshold is for confusion-matrix metrics; --method {BLACKBOX_METHOD} "
                                 "scores the black-box metric as it is")
            return blackbox_config(args)
        metric = _parse_metric(args.metric)
        method = _resolve_method(metric, args.loss)
        if getattr(args, "tune_threshold", False) and is_rank_metric(metric):
            raise ValueError(f"--tune-threshold tunes the decision threshold of a confusion-matrix metric; "
                             f"got --metric {metric} (a rank metric has no threshold)")
        if args.amplification is not None and is_rank_metric(metric):
            raise ValueError(f"--amplification applies to the AnyLoss confusion loss (confusion-matrix metrics) "
                             f"only; got --metric {metric}")
        rank_fields = rank_options(args, metric)
        check_data_options(args)
        config = TrainConfig(**shared_fields(args), metric=metric, loss=method,
                             hidden_sizes=parse_hidden(args.hidden), tune_threshold=args.tune_threshold,
                             **rank_fields)
        return _with_model(config, args)


def _with_model(config: TrainConfig, args: argparse.Namespace) -> TrainConfig:
    """``--model``: LightGBM takes binary confusion-matrix metrics, anyloss or bce, one process, a numeric L."""
    if getattr(args, "model", "mlp") == "mlp":
        return config
    if is_rank_metric(config.metric):
        raise ValueError(f"--model {args.model} trains for confusion-matrix metrics; got --metric {config.metric}")
    from metricopt.app.recipes.boosting import DEFAULT_BOOSTING_AMPLIFICATION, OBJECTIVE_OF_LOSS

    if config.loss not in OBJECTIVE_OF_LOSS:
        raise ValueError(f"--model {args.model} takes --loss {', '.join(OBJECTIVE_OF_LOSS)}; "
                         f"got --loss {config.loss}")
    if is_constrained(config.metric) and config.loss == "anyloss":
        raise ValueError(f"--model {args.model} has no constrained AnyLoss objective (--metric {config.metric}); "
                         "use --loss bce or weighted_bce: the threshold is calibrated for the constraint")
    if config.nproc != 1:
        raise ValueError(f"--model {args.model} trains in one process; got --nproc {config.nproc}")
    if config.amplification == "auto":
        raise ValueError(f"--amplification auto is for the MLP's batches; with --model {args.model} give a number")
    amplification = DEFAULT_BOOSTING_AMPLIFICATION if args.amplification is None else config.amplification
    return dataclasses.replace(config, model=args.model, amplification=amplification)


def run_train(config: TrainConfig, *, show_progress: bool = True,
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train the chosen method and the ``bce`` baseline; return the results.

    Rank metrics (``ap``, ``auroc``, ``ndcg@K``, ``recall@K``) go through
    :mod:`metricopt.app.recipes.ranking`; confusion-matrix metrics through
    :mod:`metricopt.app.recipes.classification` and :mod:`metricopt.evaluation`; ``--method
    metricopt`` (black-box metrics) through :mod:`metricopt.app.recipes.blackbox`
    (then the baseline is loss-only fine-tuning, not ``bce``).

    Args:
        config: what to train.
        show_progress: draw a tqdm bar per method (only on a terminal).
        log: called with one-line status messages (``None``: silent).

    With ``config.nproc > 1`` (and no process group yet) the run happens in
    that many processes (:func:`metricopt.app.launch.launch`, torch's launcher); process 0
    shows the progress, logs with ``print`` when ``log`` is given, and returns the results.
    Within a process group (torchrun's, see :func:`command`) every process calls this function
    and each gets the results.

    Returns:
        The JSON-ready results (see :func:`main`'s ``--output``), without
        ``elapsed_seconds`` and ``plot``.
    """
    if config.nproc > 1 and not is_distributed():
        return launch(_train_process, config.nproc, config, show_progress, log is not None)
    torch.manual_seed(config.seed)  # every call below is seeded; this guards any global-RNG use
    if config.loss == BLACKBOX_METHOD:
        return run_blackbox_command(config, show_progress=show_progress, log=log)
    if is_rank_metric(config.metric):
        return run_rank(config, show_progress=show_progress, log=log)
    return run_confusion(config, show_progress=show_progress, log=log)


def _train_process(config: TrainConfig, show_progress: bool, verbose: bool) -> dict[str, Any]:
    """One process of ``--nproc``: :func:`run_train`, with progress, messages and warnings from process 0 only."""
    lead = dist.get_rank() == 0
    with one_line_warnings(), _warnings_from(lead):  # a spawned process starts without the command's format
        return run_train(config, show_progress=show_progress and lead, log=print if verbose and lead else None)


@contextlib.contextmanager
def _warnings_from(lead: bool) -> Iterator[None]:
    """Warnings shown by process 0 only: every process reads the same data and options, so they repeat its own."""
    with warnings.catch_warnings():
        if not lead:
            warnings.simplefilter("ignore")
        yield


def _under_torchrun(config: TrainConfig, world: int) -> TrainConfig:
    """The configuration of one process of a torchrun job of ``world`` processes (``nproc`` records them)."""
    if config.loss == BLACKBOX_METHOD:
        raise ValueError(f"--method {BLACKBOX_METHOD} runs in one process; torchrun started {world} "
                         f"(WORLD_SIZE={world}): run it without torchrun")
    if config.model != "mlp":
        raise ValueError(f"--model {config.model} trains in one process; torchrun started {world} (WORLD_SIZE={world})")
    if config.nproc != 1:
        raise ValueError(f"--nproc starts processes of its own; under torchrun (WORLD_SIZE={world}) leave it out "
                         f"and give the processes to torchrun (--nproc-per-node, --nnodes)")
    return dataclasses.replace(config, nproc=world)


def format_table(results: dict[str, Any]) -> str:
    """The test metrics of the method and the baseline side by side, with the delta.

    For ``--method blackbox``: the black-box metric of the pre-trained model,
    loss-only fine-tuning and MetricOpt (:func:`metricopt.app.recipes.blackbox.format_blackbox_table`).
    """
    positive = results.get("positive_class")
    if results["method"] == BLACKBOX_METHOD:
        table = format_blackbox_table(results)
        return table if positive is None else f"{table}\npositive class: {positive}"
    method, baseline, metric = results["method"], results["baseline_method"], results["metric"]
    ours, theirs = results["test_metrics"], results["baseline_metrics"]
    label = f"{method}({metric})" if method in ("anyloss", RANK_METHOD) else method
    rows = [(name, _yes(ours[name]), _yes(theirs[name]), "") if name.endswith(" held") else
            (f"{name} *" if name == metric else name, f"{ours[name]:.4f}", f"{theirs[name]:.4f}",
             f"{ours[name] - theirs[name]:+.4f}") for name in ours]
    rows.append(("best epoch", str(results["best_epoch"]), str(results["baseline_best_epoch"]), ""))
    header = ("test metric", label, baseline, "delta")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join([cells[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(cells[1:], widths[1:]))]).rstrip()

    scoring = results.get("scoring") or f"threshold {results['config']['threshold']:g}"
    positive_text = "" if positive is None else f"positive class {positive}, "
    title = (f"{results['dataset']}: exact metrics on the test split (n_test={results['n_test']}, "
             f"{positive_text}{scoring}; * = trained-for metric; delta = {method} - {baseline})")
    rule = "-" * len(line(header))
    return "\n".join([title, line(header), rule, *(line(r) for r in rows)])


def _yes(flag: float) -> str:
    return "yes" if flag else "no"


def _check_output_file(option: str, path: str) -> None:
    """``path`` can be written: not a folder, writable if it exists, in an existing writable folder.

    A missing folder is an error naming it (one rule for ``--output`` and ``--plot``): a mistyped folder
    must not silently become a new tree of folders, and the check comes before training.
    """
    file = Path(path)
    if not path.strip() or file.is_dir():
        raise ValueError(f"{option} must be a file name, but {option}={path!r} is a folder")
    if file.exists() and not os.access(file, os.W_OK):
        raise ValueError(f"{option}={path!r} exists and is not writable")
    folder = file.absolute().parent
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if existing.is_dir() and existing != folder:
        raise ValueError(f"{option}={path!r} cannot be written: the folder {str(file.parent)!r} does not exist "
                         "(create it first)")
    folder = existing
    if not folder.is_dir():
        raise ValueError(f"{option}={path!r} cannot be written: {str(folder)!r} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{option}={path!r} cannot be written: the folder {str(folder)!r} is not writable")


def _check_plot_format(path: str) -> None:
    """matplotlib picks the format from the extension; an unknown one would fail only after training."""
    from matplotlib.backend_bases import FigureCanvasBase

    formats = sorted(FigureCanvasBase.get_supported_filetypes())
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in formats:
        found = f"its extension {suffix!r} is not" if suffix else "it has no extension to name"
        raise ValueError(f"--plot={path!r}: {found} an image format; use one of {', '.join(formats)}")


def _output_paths(args: argparse.Namespace, config: TrainConfig) -> str | None:
    """Check ``--output`` and the plot path before any training; return the plot path (None: no plot)."""
    plot = None
    if not args.no_plot:
        from metricopt.app.plots import default_plot_path

        name = Path(config.csv).stem if config.csv is not None else str(config.dataset)
        plot = args.plot if args.plot is not None else default_plot_path(name, config.metric)
        _check_output_file("--plot", plot)
        _check_plot_format(plot)
    if args.output is not None:
        _check_output_file("--output", args.output)
        if plot is not None and Path(plot).absolute() == Path(args.output).absolute():
            raise ValueError(f"--output and --plot name the same file {args.output!r}; give two names")
    return plot


def _write_json(results: dict[str, Any], path: str) -> Path:
    out = Path(path)  # its folder exists: checked by _output_paths before training
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return out


def command(args: argparse.Namespace) -> int:
    """``metricopt train``; under torchrun every process runs it as one job, and process 0 reports.

    Started by torchrun (its environment describes 2+ processes, no group yet), the process joins
    that group for the run (:func:`metricopt.app.launch.torchrun_group`) and destroys it after;
    process 0 alone prints the status line, the table and the warnings, and checks and writes
    ``--output`` and ``--plot`` (on its machine: the files are written there). A bad option is
    the same error in every process: process 0 prints it, the others exit with status 2 silently.
    """
    start = time.perf_counter()
    world = torchrun_world_size()
    lead = world == 1 or torchrun_rank() == 0
    with _warnings_from(lead):
        try:
            config = config_from_args(args)
            if world > 1:
                config = _under_torchrun(config, world)
        except Exception as exc:
            from metricopt.app.cli import USAGE_ERROR, USER_ERRORS

            if lead or not isinstance(exc, USER_ERRORS):
                raise
            return USAGE_ERROR
        path = _output_paths(args, config) if lead else None  # before training: a bad path must not waste a run
        log = None if args.quiet or not lead else print
        with torchrun_group() if world > 1 else contextlib.nullcontext():
            results = run_train(config, show_progress=lead and not args.quiet, log=log)
    if not lead:
        return 0
    print(format_table(results))
    plot = None
    if path is not None:
        from metricopt.app.plots import plot_finetune_curves, plot_learning_curves

        if config.loss == BLACKBOX_METHOD:
            plot = str(plot_finetune_curves(results["history"], config.metric, path,
                                            higher_is_better=results["higher_is_better"]))
            print(f"fine-tuning curves: {plot}")
        else:
            plot = str(plot_learning_curves(results["history"], config.metric, path))
            print(f"learning curves: {plot}")
    results["plot"] = plot
    results["elapsed_seconds"] = round(time.perf_counter() - start, 3)
    if args.verbose:
        if config.loss == BLACKBOX_METHOD:
            from metricopt.app.recipes.blackbox import format_time_breakdown

            print(format_time_breakdown(results, results["elapsed_seconds"]))
        else:
            print(f"time: {results['elapsed_seconds']:.1f} s in all, start-up and output included")
    if args.output is not None:
        print(f"results: {_write_json(results, args.output)}")
    return 0
