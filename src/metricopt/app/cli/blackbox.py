"""``metricopt train --method blackbox``: MetricOpt for a black-box metric, against loss-only fine-tuning."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from metricopt.app.cli.common import (
    TrainConfig,
    check_data_options,
    dataset_info,
    load_data,
    metric_name,
    parse_hidden,
    positive_text,
    provenance,
    shared_fields,
    split_sizes,
)
from metricopt.app.recipes.blackbox import (
    BLACKBOX_METHOD,
    BLACKBOX_ONLY_METRICS,
    BlackBoxOptions,
    blackbox_results,
    check_adapter,
    make_blackbox_metric,
    parse_evaluations,
    run_blackbox,
)
from metricopt.app.recipes.ranking import RANK_METHOD

__all__ = ["blackbox_config", "resolve_family", "run_blackbox_command"]

#: MetricOpt's options: (option, attribute of the parsed arguments).
_BLACKBOX_OPTIONS = (
    ("--adapter", "adapter"), ("--phi-size", "phi_size"), ("--meta-tasks", "meta_tasks"),
    ("--finetune-steps", "finetune_steps"), ("--evaluations", "evaluations"), ("--value-weight", "value_weight"),
    ("--optimizer", "optimizer"), ("--finetune-lr", "finetune_lr"), ("--checkpoint", "checkpoint"),
    ("--guidance", "guidance"), ("--start", "start"), ("--value-fit", "value_fit"),
    ("--no-trust-check", "no_trust_check"),
    ("--higher-is-better", "higher_is_better"), ("--lower-is-better", "lower_is_better"),
)


def _is_blackbox_only(metric: str) -> bool:
    """``MODULE:FUNCTION`` and the built-ins no other method trains for (``mcr``, ``aucpr``, ``cost``)."""
    return ":" in metric or metric_name(metric) in BLACKBOX_ONLY_METRICS


def resolve_family(args: argparse.Namespace) -> str | None:
    """``--loss``/``--method``, with ``blackbox`` implied by a black-box-only ``--metric``; reject mixtures."""
    if args.higher_is_better and args.lower_is_better:
        raise ValueError("--higher-is-better and --lower-is-better contradict each other; give one of them")
    if _is_blackbox_only(args.metric):
        if args.loss not in (None, BLACKBOX_METHOD):
            raise ValueError(
                f"--metric {metric_name(args.metric)!r} is a black-box metric: only --method {BLACKBOX_METHOD} "
                f"trains for it; got --method {args.loss}"
            )
        return BLACKBOX_METHOD
    if args.loss != BLACKBOX_METHOD:
        given = [option for option, name in _BLACKBOX_OPTIONS if getattr(args, name) not in (None, False)]
        if given:
            raise ValueError(
                f"{given[0]} applies to --method {BLACKBOX_METHOD} (black-box metrics) only; got "
                f"{'no --method' if args.loss is None else '--method ' + args.loss} with --metric {args.metric}"
            )
    return args.loss


def blackbox_config(args: argparse.Namespace) -> TrainConfig:
    """:func:`config_from_args` for ``--method blackbox``; the metric is resolved (imported) here, before any
    output, so a bad ``MODULE:FUNCTION`` fails first."""
    spec = metric_name(args.metric)
    for option, name in (("--interpolation", "interpolation"), ("--margin", "margin"),
                         ("--memory-size", "memory_size"), ("--embedding-dim", "embedding_dim")):
        if getattr(args, name) is not None:
            raise ValueError(f"{option} applies to the rank losses (--loss {RANK_METHOD}), not to --method "
                             f"{BLACKBOX_METHOD}; got --metric {spec}")
    if args.amplification is not None:
        raise ValueError(f"--amplification applies to the AnyLoss confusion loss, not to --method {BLACKBOX_METHOD}; "
                         f"got --metric {spec}")
    if args.nproc != 1:
        raise ValueError(f"--nproc applies to the confusion-matrix and rank losses; --method {BLACKBOX_METHOD} "
                         f"runs in one process, got --nproc {args.nproc}")
    direction = True if args.higher_is_better else False if args.lower_is_better else None
    metric = make_blackbox_metric(spec, higher_is_better=direction)
    defaults = BlackBoxOptions()
    options = BlackBoxOptions(
        adapter=args.adapter or defaults.adapter,
        phi_size=defaults.phi_size if args.phi_size is None else args.phi_size,
        meta_tasks=defaults.meta_tasks if args.meta_tasks is None else args.meta_tasks,
        finetune_steps=defaults.finetune_steps if args.finetune_steps is None else args.finetune_steps,
        evaluations=defaults.evaluations if args.evaluations is None else parse_evaluations(args.evaluations),
        value_weight=defaults.value_weight if args.value_weight is None else args.value_weight,
        optimizer=args.optimizer or defaults.optimizer,
        finetune_learning_rate=defaults.finetune_learning_rate if args.finetune_lr is None else args.finetune_lr,
        checkpoint=args.checkpoint,
        guidance=args.guidance or defaults.guidance,
        start=args.start or defaults.start,
        value_fit=args.value_fit or defaults.value_fit,
        trust_check=not args.no_trust_check,
    )
    hidden_sizes = parse_hidden(args.hidden)
    check_adapter(options.adapter, hidden_sizes)
    check_data_options(args)
    return TrainConfig(**shared_fields(args), metric=spec, loss=BLACKBOX_METHOD, hidden_sizes=hidden_sizes,
                       higher_is_better=metric.higher_is_better, blackbox=options)


def run_blackbox_command(config: TrainConfig, *, show_progress: bool,
                  log: Callable[[str], None] | None) -> dict[str, Any]:
    """:func:`run_train` for ``--method blackbox``: pre-trained, loss-only fine-tuning and MetricOpt."""
    if config.blackbox is None:
        raise ValueError(f"--method {BLACKBOX_METHOD} needs its options (TrainConfig.blackbox), got None")
    data, split = load_data(config)
    n_classes = data.n_classes
    # Bind the class count (the built-in 'cost' is binary only) before any output or training.
    metric = make_blackbox_metric(config.metric, higher_is_better=config.higher_is_better, num_classes=n_classes)
    info = dataset_info(data)
    options = config.blackbox
    if log is not None:
        rate = positive_text(data)
        better = "higher" if metric.higher_is_better else "lower"
        log(f"{info['dataset']}: {info['task']}, {n_classes} classes, {info['n_features']} features{rate}; "
            f"train {len(split.y_train)} / val {len(split.y_val)} / test {len(split.y_test)}; MetricOpt for "
            f"{metric.name} ({better} is better): pre-train {config.epochs} epochs, meta-train {options.meta_tasks} "
            f"tasks, fine-tune {options.finetune_steps} steps observing the metric {options.evaluation_count} times")
    run = run_blackbox(split, metric, num_classes=n_classes, options=options, hidden_sizes=config.hidden_sizes,
                       epochs=config.epochs, batch_size=config.batch_size, learning_rate=config.learning_rate,
                       seed=config.seed, show_progress=show_progress, log=log)
    method = blackbox_results(run)
    head = {key: method.pop(key) for key in ("metric", "method", "test_score", "baseline", "baseline_method",
                                             "pretrained_score", "higher_is_better", "delta")}
    return {
        **head,
        **info,
        **split_sizes(split),
        **method,
        **provenance(config),
    }
