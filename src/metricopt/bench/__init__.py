"""Benchmark harness: specs (data), runners, result files and plots.

Run ``python -m metricopt.bench quality|ablation|speed|all [--smoke]``; results
(JSON with run metadata, a Markdown table, PNG plots) go to
``benchmarks/results/`` unless ``--output-dir`` says otherwise.

* :mod:`metricopt.bench.specs`: frozen dataclasses and the named suites.
* :mod:`metricopt.bench.methods`: the training recipes compared.
* :mod:`metricopt.bench.peers`: optional peer losses (MONAI, LibAUC), lazily.
* :mod:`metricopt.bench.quality`: quality and ablation runner.
* :mod:`metricopt.bench.speed`: loss timing.
* :mod:`metricopt.bench.retrieval`: retrieval (metric-learning) runner: RaMBO's
  recall losses against metric-learning peers on class-disjoint splits.
* :mod:`metricopt.bench.blackbox`, :mod:`metricopt.bench.blackbox_report`: the
  MetricOpt suites (``blackbox``, ``blackbox_ablation``, ``blackbox_defaults``);
  :mod:`metricopt.bench.blackbox_selection` chooses MetricOpt's defaults from
  the ``blackbox_defaults`` sweep.
* :mod:`metricopt.bench.results`: metadata, aggregation, wins/ties/losses, Markdown.
* :mod:`metricopt.bench.plots`: PNG plots.
* :mod:`metricopt.bench.threads`: the torch thread count of a run, set for
  the run and given back to the caller afterwards.
* :mod:`metricopt.bench.cli`: the command line (:func:`main`).

Importing this package imports no runner; :func:`main` is the entry point
(``metricopt bench ...`` forwards to it).
"""

from metricopt.bench.cli import main, run_named

__all__ = ["main", "run_named"]
