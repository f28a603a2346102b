"""Command line of the benchmark harness: ``python -m benchmarks SUITE [options]``.

Examples::

    python -m benchmarks quality --jobs 2
    python -m benchmarks ablation --jobs 2
    python -m benchmarks speed
    python -m benchmarks ap_quality --jobs 2          # AP: RaMBO APLoss against BCE and LibAUC
    python -m benchmarks ap_validation --jobs 2       # the AP suite's choices, on the validation tables
    python -m benchmarks retrieval --jobs 2           # retrieval: RaMBO RecallLoss against PML & co.
    python -m benchmarks rank_speed                   # rank losses: time and memory against peers
    python -m benchmarks blackbox --jobs 2            # black-box metrics: MetricOpt against loss-only
    python -m benchmarks blackbox_ablation --jobs 2   # MetricOpt: K and |phi| ablation
    python -m benchmarks blackbox_defaults --jobs 2   # MetricOpt: value_weight and task distribution
    python -m benchmarks blackbox_guidance --jobs 2   # MetricOpt: guidance rows and start (resumable)
    python -m benchmarks tabular --jobs 2             # 107 report tables, every method (resumable; hours)
    python -m benchmarks tabular --datasets validation --seeds 2 --jobs 2   # the validation tables
    python -m benchmarks constrained --jobs 2         # constrained metrics as losses, report tables (resumable)
    python -m benchmarks constrained_selection --jobs 2   # the constrained loss's defaults, validation tables
    python -m benchmarks constrained_recipe --jobs 2      # MetricClassifier for constrained metrics, report tables
    python -m benchmarks all --smoke --output-dir /tmp/bench
    python -m benchmarks render benchmarks/results/quality.json   # redraw .md/.png
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_OUTPUT_DIR", "main", "render", "run_named", "write_reports"]

#: Where results go unless ``--output-dir`` says otherwise, relative to the current directory
#: (not ``benchmarks/results``: a run from the clone's root would overwrite the committed results).
DEFAULT_OUTPUT_DIR = Path("benchmark-results")

_KINDS = ("quality", "ablation", "speed")
#: Further suites run by name only (not by ``all``).
_NAMED_ONLY_KINDS = ("ap_quality", "ap_validation", "retrieval", "rank_speed", "blackbox", "blackbox_tabular",
                     "blackbox_retrieval", "blackbox_ablation", "blackbox_defaults", "blackbox_guidance",
                     "blackbox_value_fit", "tabular", "tabular_selection", "tabular_multiclass",
                     "tabular_selection_multiclass", "constrained", "constrained_selection", "constrained_recipe",
                     "constrained_hybrid")
_BLACKBOX_KINDS = ("blackbox", "blackbox_ablation", "blackbox_defaults", "blackbox_guidance")


def _seeds(text: str) -> tuple[int, ...]:
    """``"5"`` -> seeds 0..4; ``"0,3,7"`` -> those seeds."""
    try:
        if "," in text:
            seeds = tuple(int(s) for s in text.split(",") if s.strip())
        else:
            count = int(text)
            if count < 1:
                raise ValueError
            seeds = tuple(range(count))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--seeds must be a count (e.g. 5) or a comma list (e.g. 0,1,2); got {text!r}") from None
    return seeds


def _names(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run a benchmark suite (or `render JSON...` to redraw reports from saved results).",
    )
    p.add_argument("suite", choices=(*_KINDS, *_NAMED_ONLY_KINDS, "all"),
                   help="which suite to run ('all': quality, ablation, speed)")
    p.add_argument("--smoke", action="store_true", help="the tiny CI version of each suite (seconds)")
    p.add_argument("--seeds", type=_seeds, help="seed count N (seeds 0..N-1) or comma list")
    p.add_argument("--datasets", type=_names,
                   help="comma list of dataset names (quality/ablation/retrieval/blackbox); tabular: 'report' "
                        "(default), 'validation' or a comma list of collection tables (constrained likewise)")
    p.add_argument("--epochs", type=int, help="training epochs (quality/ablation/retrieval; blackbox: pre-training)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--threads", type=int, help="torch threads per process (default: the spec's)")
    p.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR,
                   help=f"where result files go (default: ./{DEFAULT_OUTPUT_DIR}; "
                        "the committed ones: benchmarks/results)")
    p.add_argument("--name", help="result file stem (default: the suite's name)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _epochs(args: argparse.Namespace) -> int:
    """``--epochs``, checked."""
    if args.epochs < 1:
        raise SystemExit(f"--epochs must be >= 1; got {args.epochs}")
    return args.epochs


def _retrieval_changes(spec: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Command-line changes to a retrieval spec (``--epochs`` sets every dataset's epochs)."""
    changes: dict[str, Any] = {}
    if args.seeds is not None:
        changes["seeds"] = args.seeds
    if args.datasets is not None:
        from benchmarks.harness.specs import RETRIEVAL_SUITE_DATASETS as known

        unknown = [d for d in args.datasets if d not in known]
        if unknown:
            raise SystemExit(f"--datasets: unknown retrieval dataset(s) {unknown}; known: {list(known)}")
        changes["datasets"] = args.datasets
    datasets = changes.get("datasets", spec.datasets)
    if args.epochs is not None:
        changes["epochs"] = tuple((d, _epochs(args)) for d in datasets)
    elif "datasets" in changes:
        missing = [d for d in datasets if d not in dict(spec.epochs)]
        if missing:
            raise SystemExit(f"--datasets: suite {spec.name!r} has no epochs for {missing}; give --epochs")
    return changes


def _blackbox_changes(spec: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Command-line changes to a black-box spec (``--datasets`` keeps the settings of those datasets,
    ``--epochs`` sets every model's pre-training epochs)."""
    changes: dict[str, Any] = {}
    if args.seeds is not None:
        changes["seeds"] = args.seeds
    if args.datasets is not None:
        unknown = [d for d in args.datasets if d not in spec.datasets]
        if unknown:
            raise SystemExit(f"--datasets: suite {spec.name!r} has no setting for {unknown}; "
                             f"its datasets: {list(spec.datasets)}")
        changes["settings"] = tuple(s for s in spec.settings if s[0] in args.datasets)
    if args.epochs is not None:
        changes["pretrain_epochs"] = tuple((m, _epochs(args)) for m, _ in spec.pretrain_epochs)
    return changes


def _tabular_changes(spec: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Command-line changes to a tabular or constrained spec (``--datasets report|validation|NAME,NAME``)."""
    changes: dict[str, Any] = {}
    if args.seeds is not None:
        changes["seeds"] = args.seeds
    if args.epochs is not None:
        changes["epochs"] = _epochs(args)
    if args.datasets is not None:
        from benchmarks.harness.specs import CONSTRAINED_TABLE_SETS, TABLE_SETS

        sets = CONSTRAINED_TABLE_SETS if spec.kind == "constrained" else TABLE_SETS
        if len(args.datasets) == 1 and args.datasets[0] in TABLE_SETS:
            if args.datasets[0] not in sets:
                raise SystemExit(f"--datasets: suite {spec.name!r} takes {', '.join(sets)} or table names; got "
                                 f"{args.datasets[0]!r}")
            changes["tables"] = args.datasets[0]
        else:
            from benchmarks.suites.tabular import resolve_tables

            try:
                changes["tables"] = resolve_tables(args.datasets)
            except ValueError as exc:
                raise SystemExit(f"--datasets: {exc}") from None
    return changes


def _override(spec: Any, args: argparse.Namespace) -> Any:
    """``spec`` with the command line's overrides (``--threads`` and ``--name`` for every kind)."""
    if spec.kind in ("tabular", "constrained"):
        changes = _tabular_changes(spec, args)
    elif spec.kind == "retrieval":
        changes = _retrieval_changes(spec, args)
    elif spec.kind in _BLACKBOX_KINDS:
        changes = _blackbox_changes(spec, args)
    else:
        changes = _suite_changes(spec, args)
    if args.threads is not None:
        changes["threads"] = args.threads
    if args.name:
        changes["name"] = args.name if args.suite != "all" else f"{args.name}_{spec.kind}"
    return dataclasses.replace(spec, **changes) if changes else spec


def _suite_changes(spec: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Command-line changes to a quality, ablation or speed spec (speed suites take no data options)."""
    from metricopt.app.data import DATASETS

    changes: dict[str, Any] = {}
    if spec.kind not in ("speed", "rank_speed"):
        if args.seeds is not None:
            changes["seeds"] = args.seeds
        if args.epochs is not None:
            changes["epochs"] = _epochs(args)
        if args.datasets is not None:
            unknown = [d for d in args.datasets if d not in DATASETS]
            if unknown:
                raise SystemExit(f"--datasets: unknown dataset(s) {unknown}; known: {sorted(DATASETS)}")
            binary = tuple(d for d in args.datasets if DATASETS[d].task == "binary")
            changes["binary_datasets"] = binary
            if spec.kind == "quality":
                changes["multiclass_datasets"] = tuple(d for d in args.datasets if DATASETS[d].task != "binary")
            elif not binary:
                raise SystemExit("--datasets: the ablation needs at least one binary dataset")
    return changes


def write_reports(payload: dict[str, Any], output_dir: Path, *, plots: bool = True) -> dict[str, Path]:
    """Write the Markdown report and PNG plots of a payload (not its JSON); returns the paths."""
    from benchmarks.harness import plots as _plots
    from benchmarks.harness.results import quality_markdown, speed_markdown

    if payload["kind"] == "retrieval":
        from benchmarks.suites.retrieval import write_reports as _retrieval_reports

        return _retrieval_reports(payload, output_dir, plots=plots)
    if payload["kind"] == "tabular":
        from benchmarks.suites.tabular import write_reports as _tabular_reports

        return _tabular_reports(payload, output_dir, plots=plots)
    if payload["kind"] == "constrained":
        from benchmarks.suites.constrained import write_reports as _constrained_reports

        return _constrained_reports(payload, output_dir, plots=plots)
    if payload["kind"] == "rank_speed":
        from benchmarks.suites.rank_speed import write_reports as _rank_speed_reports

        return _rank_speed_reports(payload, output_dir, plots=plots)
    if payload["kind"] in _BLACKBOX_KINDS:
        from benchmarks.suites.blackbox import write_reports as _blackbox_reports

        return _blackbox_reports(payload, output_dir, plots=plots)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    name = payload["suite"]
    paths: dict[str, Path] = {}
    if payload["kind"] == "speed":
        markdown = speed_markdown(payload)
        if plots:
            paths["png"] = _plots.plot_speed(payload, output_dir / f"{name}.png")
    else:
        markdown = quality_markdown(payload)
        if plots:
            paths["png"] = _plots.plot_quality(payload, output_dir / f"{name}.png")
            paths["png_per_dataset"] = _plots.plot_quality_per_dataset(payload, output_dir / f"{name}_per_dataset.png")
    paths["md"] = output_dir / f"{name}.md"
    paths["md"].write_text(markdown)
    return paths


def render(json_path: Path, output_dir: Path | None = None, *, plots: bool = True) -> dict[str, Path]:
    """Re-create the Markdown and PNG files of a saved result JSON (no re-run).

    The summary of a quality or ablation payload is derived data: it is
    recomputed from the records with the current code and, when writing next
    to the JSON, saved back into it so that JSON and Markdown agree.
    """
    import json

    from benchmarks.harness.results import write_json
    from benchmarks.suites.quality import refresh_summary

    json_path = Path(json_path)
    payload = json.loads(json_path.read_text())
    if "kind" not in payload:  # written by one of the sweep scripts beside the suites
        return _render_sweep(payload, json_path, output_dir)
    if payload["kind"] != "speed":
        if payload["kind"] == "retrieval":
            from benchmarks.suites.retrieval import refresh_summary as _refresh_retrieval

            _refresh_retrieval(payload)
        elif payload["kind"] == "tabular":
            from benchmarks.suites import tabular

            tabular.refresh_summary(payload)
        elif payload["kind"] == "constrained":
            from benchmarks.suites import constrained

            constrained.refresh_summary(payload)
        elif payload["kind"] == "rank_speed":
            from benchmarks.suites import rank_speed

            rank_speed.refresh_summary(payload)
        elif payload["kind"] in _BLACKBOX_KINDS:
            from benchmarks.suites.blackbox import refresh_summary as _refresh_blackbox

            _refresh_blackbox(payload)
        else:
            refresh_summary(payload)
        if output_dir is None or Path(output_dir).resolve() == json_path.parent.resolve():
            write_json(payload, json_path)
    return write_reports(payload, json_path.parent if output_dir is None else output_dir, plots=plots)


#: The scripts beside the suites whose results ``render`` re-creates: the module that wrote each.
SWEEP_SCRIPTS = ("ddp_scaling", "gpu_rank_speed", "learned_sweep", "rank_design_sweep", "sharpness_sweep",
                 "threshold_guard", "value_fit")


def _render_sweep(payload: dict[str, Any], json_path: Path, output_dir: Path | None) -> dict[str, Path]:
    """A sweep script's Markdown from its JSON: the script is named in the recorded command."""
    import importlib

    command = " ".join([str(payload.get("metadata", {}).get("command", "")),
                        *map(str, payload.get("metadata", {}).get("argv", []))])
    found = [name for name in SWEEP_SCRIPTS if re.search(rf"\b{name}\b", command)]
    if len(found) != 1:
        raise ValueError(f"{json_path} is neither a suite's result (no 'kind') nor one of a sweep script "
                         f"({', '.join(SWEEP_SCRIPTS)}) named in its metadata's command {command.strip()!r}")
    script = importlib.import_module(f"benchmarks.{found[0]}")
    target = Path(json_path.parent if output_dir is None else output_dir) / f"{json_path.stem}.md"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(script.report(payload))
    return {"md": target}


def run_named(spec: Any, *, output_dir: Path, jobs: int = 1, progress: bool = True, plots: bool = True,
              command: Sequence[str] | None = None) -> dict[str, Path]:
    """Run one spec and write ``<name>.json``, ``<name>.md`` and PNGs to ``output_dir``; returns the paths."""
    from benchmarks.harness.results import write_json

    partial = None
    if spec.kind == "tabular":
        from benchmarks.suites.tabular import run_suite as run_tabular

        # finished tasks are appended here and skipped by a restarted run; removed once the JSON is written
        partial = Path(output_dir) / f"{spec.name}.partial.jsonl"
        payload = run_tabular(spec, jobs=jobs, progress=progress, command=command, partial_path=partial)
    elif spec.kind == "constrained":
        from benchmarks.suites.constrained import run_suite as run_constrained

        # finished (table, seed, method) tasks are appended here and skipped by a restarted run; removed once written
        partial = Path(output_dir) / f"{spec.name}.partial.jsonl"
        payload = run_constrained(spec, jobs=jobs, progress=progress, command=command, partial_path=partial)
    elif spec.kind == "speed":
        from benchmarks.suites.speed import run_speed

        payload = run_speed(spec, progress=progress, command=command)
    elif spec.kind == "retrieval":
        from benchmarks.suites.retrieval import run_suite as run_retrieval

        payload = run_retrieval(spec, jobs=jobs, progress=progress, command=command)
    elif spec.kind == "rank_speed":
        from benchmarks.suites.rank_speed import run_rank_speed

        payload = run_rank_speed(spec, progress=progress, command=command)
    elif spec.kind in _BLACKBOX_KINDS:
        from benchmarks.suites.blackbox import run_suite as run_blackbox

        # finished (dataset, seed) jobs are appended here and skipped by a restarted run; removed once written
        partial = Path(output_dir) / f"{spec.name}.partial.jsonl"
        payload = run_blackbox(spec, jobs=jobs, progress=progress, command=command, partial_path=partial)
    else:
        from benchmarks.suites.quality import run_suite

        payload = run_suite(spec, jobs=jobs, progress=progress, command=command)
    json_path = write_json(payload, Path(output_dir) / f"{spec.name}.json")
    if partial is not None:
        partial.unlink(missing_ok=True)
    paths = write_reports(payload, output_dir, plots=plots)
    paths["json"] = json_path
    return paths


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    from benchmarks.harness.specs import get_suite
    from benchmarks.harness.threads import torch_threads

    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["render"]:
        render_parser = argparse.ArgumentParser(
            prog="python -m benchmarks render", description="re-create .md and .png files from result JSON")
        render_parser.add_argument("json", nargs="+", type=Path, help="result JSON files")
        render_parser.add_argument("--output-dir", type=Path, help="default: next to each JSON")
        render_args = render_parser.parse_args(argv[1:])
        for path in render_args.json:
            paths = render(path, render_args.output_dir)
            print(f"{path}: " + ", ".join(str(p) for p in paths.values()))
        return 0
    args = _parser().parse_args(argv)
    if args.jobs < 1:
        raise SystemExit(f"--jobs must be >= 1; got {args.jobs}")
    command = list(argv)
    kinds = _KINDS if args.suite == "all" else (args.suite,)
    for kind in kinds:
        spec = _override(get_suite(kind, smoke=args.smoke), args)
        with torch_threads(spec.threads):
            paths = run_named(spec, output_dir=args.output_dir, jobs=args.jobs, progress=not args.quiet,
                              plots=not args.no_plots, command=command)
        print(f"{spec.name}: " + ", ".join(str(p) for p in paths.values()))
    return 0
