"""Benchmark harness: specs (data), runners, result files and plots.

Not part of the installed package: run from a clone's root,
``python -m benchmarks quality|ablation|speed|all [--smoke]``; results (JSON
with run metadata, a Markdown table, PNG plots) go to ``./benchmark-results/``
unless ``--output-dir`` says otherwise (the committed ones are in
``benchmarks/results/``).

* ``benchmarks/harness``: what every suite shares; ``benchmarks/suites``: the
  suites; ``benchmarks/peers``: the peer libraries' losses, imported lazily.

* :mod:`benchmarks.harness.specs`: frozen dataclasses and the named suites.
* :mod:`benchmarks.harness.methods`: the training recipes compared.
* :mod:`benchmarks.peers.classification`: optional peer losses (MONAI, LibAUC), lazily.
* :mod:`benchmarks.suites.quality`: quality and ablation runner.
* :mod:`benchmarks.suites.speed`: loss timing.
* :mod:`benchmarks.suites.retrieval`: retrieval (metric-learning) runner: RaMBO's
  recall losses against metric-learning peers on class-disjoint splits.
* :mod:`benchmarks.suites.blackbox`, :mod:`benchmarks.suites.blackbox_report`: the
  MetricOpt suites (``blackbox``, ``blackbox_ablation``, ``blackbox_defaults``);
  :mod:`benchmarks.suites.blackbox_selection` chooses MetricOpt's defaults from
  the ``blackbox_defaults`` sweep.
* :mod:`benchmarks.harness.results`: metadata, aggregation, wins/ties/losses, Markdown.
* :mod:`benchmarks.harness.plots`: PNG plots.
* :mod:`benchmarks.harness.threads`: the torch thread count of a run, set for
  the run and given back to the caller afterwards.
* :mod:`benchmarks.cli`: the command line (:func:`main`).

Importing this package imports no runner; :func:`main` is the entry point.
"""

from benchmarks.cli import main, run_named

__all__ = ["main", "run_named"]
