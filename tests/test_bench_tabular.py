"""Tests of the tabular benchmark (benchmarks.suites.tabular): statistics, resuming, the smoke suite end to end."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import wilcoxon

from benchmarks import main
from benchmarks.cli import _override, render
from benchmarks.harness import partial as partial_file
from benchmarks.harness.results import aggregate
from benchmarks.harness.specs import TabularSpec, get_suite
from benchmarks.harness.stats import average_ranks, rank_row, wilcoxon_signed_rank, wilcoxon_vs
from benchmarks.suites import tabular as T

# ---------------------------------------------------------------------------
# statistics


def _records(scores: dict[str, dict[str, list[float]]], metric: str = "f1") -> list[dict[str, Any]]:
    """Records of ``scores[dataset][method] = [seed 0, seed 1, ...]``."""
    return [{"dataset": d, "task": "binary", "method": m, "metric": metric, "seed": s, "test": v}
            for d, by_method in scores.items() for m, values in by_method.items() for s, v in enumerate(values)]


def test_rank_row_best_is_one_and_ties_share_the_average_rank() -> None:
    assert rank_row([0.5, 0.9, 0.5, 0.1]) == [2.5, 1.0, 2.5, 4.0]
    assert rank_row([0.3, 0.2, 0.1]) == [1.0, 2.0, 3.0]
    assert rank_row([0.7, 0.7, 0.7]) == [2.0, 2.0, 2.0]
    # within the tolerance of the group's top: tied
    assert rank_row([0.800, 0.797, 0.5], tolerance=0.005) == [1.5, 1.5, 3.0]
    assert rank_row([0.800, 0.797, 0.5]) == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="tolerance"):
        rank_row([0.1], tolerance=-1)


def test_average_ranks_uses_only_the_tables_where_every_method_ran() -> None:
    table = aggregate(_records({
        "a": {"x": [0.9], "y": [0.5], "z": [0.1]},
        "b": {"x": [0.2], "y": [0.6], "z": [0.6]},
        "c": {"x": [0.9], "y": [0.1]},  # z missing: not ranked
    }))["binary"]
    result = average_ranks(table, "f1", ["x", "y", "z"])
    assert result["n"] == 2
    assert result["ranks"] == {"x": pytest.approx(2.0), "y": pytest.approx(1.75), "z": pytest.approx(2.25)}
    assert average_ranks({}, "f1", ["x"]) == {"ranks": {"x": None}, "n": 0}


def test_wilcoxon_wrapper_matches_scipy_and_handles_degenerate_inputs() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.uniform(size=12), rng.uniform(size=12)
    got = wilcoxon_signed_rank(a, b)
    want = wilcoxon(a, b)
    assert got["p_value"] == pytest.approx(want.pvalue) and got["statistic"] == pytest.approx(want.statistic)
    assert got["n"] == got["n_nonzero"] == 12
    assert got["median_diff"] == pytest.approx(float(np.median(a - b)))
    # the reference ahead on all 10 tables by distinct amounts: exact two-sided p = 2 / 2**10
    ahead = wilcoxon_signed_rank(np.arange(10) * 0.01 + 0.5, np.full(10, 0.49))
    assert ahead["p_value"] == pytest.approx(2 / 1024) and ahead["median_diff"] > 0
    # zero differences are dropped; all zero: nothing to test, p = 1
    same = wilcoxon_signed_rank([0.3, 0.4], [0.3, 0.4])
    assert same["p_value"] == 1.0 and same["statistic"] is None and same["n_nonzero"] == 0
    empty = wilcoxon_signed_rank([], [])
    assert empty["p_value"] is None and empty["n"] == 0
    with pytest.raises(ValueError, match="one length"):
        wilcoxon_signed_rank([0.1, 0.2], [0.1])


def test_compare_counts_wins_ties_losses_on_seed_means_with_the_tolerance() -> None:
    scores = {
        "win": {"ref": [0.8, 0.6], "base": [0.5, 0.5]},      # +0.2
        "tie": {"ref": [0.502, 0.5], "base": [0.5, 0.5]},    # +0.001 < 0.005
        "loss": {"ref": [0.3, 0.3], "base": [0.4, 0.4]},     # -0.1
        "loss2": {"ref": [0.1, 0.1], "base": [0.2, 0.3]},    # -0.15
    }
    table = aggregate(_records(scores))["binary"]
    part = T.compare(table, ["ref", "base"], ["f1"], "ref", 0.005)["per_metric"]["f1"]
    r = part["against"]["base"]
    assert (r["wins"], r["ties"], r["losses"], r["n"]) == (1, 1, 2, 4)
    assert r["worst_dataset"] == "loss2" and r["worst_diff"] == pytest.approx(-0.15)
    assert r["mean_diff"] == pytest.approx((0.2 + 0.001 - 0.1 - 0.15) / 4)
    assert r["wilcoxon"] == wilcoxon_vs(table, "ref", "base", "f1")
    assert r["wilcoxon"]["p_value"] == pytest.approx(wilcoxon([0.7, 0.501, 0.3, 0.1], [0.5, 0.5, 0.4, 0.25]).pvalue)
    assert part["average_rank"] == {"ref": pytest.approx(1.5), "base": pytest.approx(1.5)}
    assert part["mean"]["ref"] == pytest.approx(np.mean([0.7, 0.501, 0.3, 0.1]))
    assert "ref" not in part["against"]


def _payload(scores: dict[str, dict[str, list[float]]], groups: dict[str, str]) -> dict[str, Any]:
    return {
        "spec": {"metrics": ["f1"], "tie_tolerance": 0.005}, "reference": "ref", "unavailable": {},
        "methods": {"ref": {}, "base": {}}, "datasets": {d: {"ir_group": g} for d, g in groups.items()},
        "records": [dict(r, train_seconds=1.0) for r in _records(scores)],
    }


def test_refresh_summary_compares_within_each_imbalance_group() -> None:
    scores = {"a": {"ref": [0.9], "base": [0.5]}, "b": {"ref": [0.9], "base": [0.5]},
              "c": {"ref": [0.1], "base": [0.5]}}
    payload = T.refresh_summary(_payload(scores, {"a": "IR >=30", "b": "IR >=30", "c": "IR <3"}))
    summary = payload["summary"]
    assert list(summary["groups"]) == ["IR <3", "IR >=30"]  # report order, not insertion order
    low, high = (summary["groups"][g]["per_metric"]["f1"]["against"]["base"] for g in ("IR <3", "IR >=30"))
    assert (low["wins"], low["losses"], high["wins"], high["losses"]) == (0, 1, 2, 0)
    overall = summary["all"]["per_metric"]["f1"]["against"]["base"]
    assert (overall["wins"], overall["losses"]) == (2, 1)
    assert summary["seconds"]["ref"]["mean"] == 1.0
    assert list(payload)[-1] == "records"


# ---------------------------------------------------------------------------
# tasks, resuming, the command line


def test_units_group_the_mlp_methods_that_share_a_training_run() -> None:
    assert T.units_of(["recipe", "bce", "bce_tuned", "anyloss", "tuned_hgb"]) == [
        "recipe", "bce", "anyloss", "tuned_hgb"]
    with pytest.raises(ValueError, match="unknown tabular method"):
        T.units_of(["recipe", "xgboost"])


def test_spec_checks_its_tables_and_reference() -> None:
    smoke = get_suite("tabular", smoke=True)
    assert len(smoke.seeds) == 1 and len(smoke.tables) == 2 and smoke.epochs < get_suite("tabular").epochs
    assert get_suite("tabular").tables == "report" and len(get_suite("tabular").seeds) == 5
    with pytest.raises(ValueError, match="tables"):
        TabularSpec(tables="all")
    with pytest.raises(ValueError, match="reference"):
        TabularSpec(methods=("bce",))
    assert len(T.resolve_tables("report")) >= 100 and len(T.resolve_tables("validation")) >= 20
    with pytest.raises(ValueError, match="unknown collection table"):
        T.resolve_tables(["no_such_table"])


def _args(**kw: Any) -> argparse.Namespace:
    base = {"seeds": None, "epochs": None, "datasets": None, "threads": None, "name": None, "suite": "tabular"}
    return argparse.Namespace(**(base | kw))


def test_command_line_datasets_option() -> None:
    spec = get_suite("tabular")
    assert _override(spec, _args(datasets=("validation",))).tables == "validation"
    assert _override(spec, _args(datasets=("Yeast4", "vowel0"), seeds=(0, 1))).tables == ("yeast4", "vowel0")
    with pytest.raises(SystemExit, match="--datasets"):
        _override(spec, _args(datasets=("no_such_table",)))


class _FakeRunner:
    """Records the tasks it runs; raises after ``stop_after`` of them (a run killed part way)."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.calls: list[tuple[str, int, str]] = []
        self.stop_after = stop_after

    def __call__(self, spec: TabularSpec, table: str, seed: int, unit: str) -> dict[str, Any]:
        if self.stop_after is not None and len(self.calls) == self.stop_after:
            raise KeyboardInterrupt
        self.calls.append((table, seed, unit))
        names = ("bce", "bce_tuned") if unit == "bce" else (unit,)
        records = [{"dataset": table, "task": "binary", "method": m, "metric": k, "seed": seed,
                    "test": 0.5 + 0.01 * seed, "val": None, "epoch": None, "threshold": None, "train_seconds": 0.1}
                   for m in names for k in spec.metrics]
        return {"key": [table, seed, unit], "records": records, "skipped": {}, "failed": {}, "seconds": 0.1}


def test_a_restarted_run_skips_the_tasks_of_the_partial_file(tmp_path: Path) -> None:
    spec = TabularSpec(name="t", tables=("appendicitis", "new_thyroid1"), seeds=(0, 1),
                       methods=("recipe", "bce", "bce_tuned", "weighted_lr"))
    partial = tmp_path / "t.partial.jsonl"
    first = _FakeRunner(stop_after=5)
    with pytest.raises(KeyboardInterrupt):
        T.run_suite(spec, progress=False, partial_path=partial, runner=first)
    assert len(first.calls) == 5
    with partial.open("a") as handle:  # a line cut short by the kill is ignored
        handle.write('{"key": ["appendicitis", 0, "bc')
    second = _FakeRunner()
    payload = T.run_suite(spec, progress=False, partial_path=partial, runner=second)
    all_tasks = {(t, s, u) for t in spec.tables for s in spec.seeds for u in ("recipe", "bce", "weighted_lr")}
    assert not set(first.calls) & set(second.calls)
    assert set(first.calls) | set(second.calls) == all_tasks
    assert payload["tasks"] == 12 and payload["resumed_tasks"] == 5
    assert len(payload["records"]) == 2 * 2 * 4 * 2  # tables x seeds x methods x metrics
    assert payload["datasets"]["appendicitis"]["ir_group"] == "IR 3-9"
    # a third run finds everything done; another spec refuses the file
    third = _FakeRunner()
    T.run_suite(spec, progress=False, partial_path=partial, runner=third)
    assert third.calls == []
    with pytest.raises(ValueError, match="another spec"):
        T.run_suite(TabularSpec(name="t", tables=("appendicitis",), seeds=(0,), methods=("recipe",)),
                    progress=False, partial_path=partial, runner=_FakeRunner())


def test_markdown_of_a_fake_run_re_renders_identically(tmp_path: Path) -> None:
    spec = TabularSpec(name="t", tables=("appendicitis", "new_thyroid1"), seeds=(0,),
                       methods=("recipe", "bce", "bce_tuned", "tuned_hgb"))
    payload = T.run_suite(spec, progress=False, runner=_FakeRunner())
    from benchmarks.harness.results import write_json

    path = write_json(payload, tmp_path / "t.json")
    first = T.write_reports(payload, tmp_path, plots=False)["md"].read_text()
    again = render(path, tmp_path / "again", plots=False)["md"].read_text()
    assert first == again
    assert "Goal: MetricClassifier (recipe) minus tuned HGB" in first and "Wilcoxon" in first


# ---------------------------------------------------------------------------
# end to end


@pytest.mark.slow
def test_tabular_smoke_end_to_end(tmp_path: Path) -> None:
    assert main(["tabular", "--smoke", "--output-dir", str(tmp_path), "--quiet", "--no-plots"]) == 0
    payload = json.loads((tmp_path / "tabular_smoke.json").read_text())
    spec = get_suite("tabular", smoke=True)
    assert payload["failures"] == [] and payload["unavailable"] == {}
    assert not (tmp_path / "tabular_smoke.partial.jsonl").exists()
    got = {(r["dataset"], r["method"], r["metric"]) for r in payload["records"]}
    assert got == {(t, m, k) for t in spec.tables for m in spec.methods for k in spec.metrics}
    assert all(0 <= r["train_seconds"] < 60 and -1 <= r["test"] <= 1 for r in payload["records"])
    against = payload["summary"]["all"]["per_metric"]["mcc"]["against"]
    assert set(against) == set(spec.methods) - {"recipe"} and all(r["n"] == 2 for r in against.values())
    rendered = render(tmp_path / "tabular_smoke.json", tmp_path / "again", plots=False)["md"].read_text()
    assert rendered == (tmp_path / "tabular_smoke.md").read_text()


def test_a_failed_task_is_run_again_on_restart(tmp_path: Path) -> None:
    spec = TabularSpec(name="t", tables=("appendicitis",), seeds=(0,), methods=("recipe", "weighted_lr"))
    partial = tmp_path / "t.partial.jsonl"
    partial_file.start(partial, spec, {})
    with partial.open("a") as handle:  # one unit finished, one failed
        for unit, failed in (("recipe", {}), ("weighted_lr", {"weighted_lr": "RuntimeError: transient"})):
            handle.write(json.dumps({"key": ["appendicitis", 0, unit], "records": [], "skipped": {},
                                     "failed": failed}) + "\n")
    assert set(T.load_partial(partial, spec)) == {("appendicitis", 0, "recipe")}


def test_rank_row_refuses_scores_that_are_not_finite() -> None:
    with pytest.raises(ValueError, match="finite"):
        rank_row([0.5, float("nan"), 0.7])


# ---------------------------------------------------------------------------
# the recipe's candidates and the peer losses


def test_recipe_candidates_spell_out_the_same_valid_estimator_options() -> None:
    """A candidate must not lean on MetricClassifier's defaults (they change when the recipe is chosen)."""
    from benchmarks.peers.tabular import BINARY_CANDIDATES, MULTICLASS_CANDIDATES, RECIPE_CANDIDATES, TABULAR_PEERS
    from metricopt.app import MetricClassifier

    keys = {frozenset(options) for options in RECIPE_CANDIDATES.values()}
    assert len(keys) == 1
    assert set(next(iter(keys))) < set(MetricClassifier().get_params())
    for name, options in RECIPE_CANDIDATES.items():
        MetricClassifier(**options)._check_params()  # valid together
        assert f"candidate_{name}" in TABULAR_PEERS
    selection = get_suite("tabular_selection")
    assert selection.tables == "validation" and set(selection.methods) == {
        *(f"candidate_{n}" for n in BINARY_CANDIDATES), "tuned_hgb"}
    multiclass = get_suite("tabular_selection_multiclass")
    assert multiclass.tables == "multiclass_validation" and set(multiclass.methods) == {
        *(f"candidate_{n}" for n in MULTICLASS_CANDIDATES), "hgb"}
    assert set(BINARY_CANDIDATES) | set(MULTICLASS_CANDIDATES) == set(RECIPE_CANDIDATES)
    assert not any(RECIPE_CANDIDATES[n]["tune_threshold"] for n in MULTICLASS_CANDIDATES)  # argmax decisions
    from metricopt.app.data import collection

    assert T.resolve_tables("multiclass_validation") == collection.multiclass_split()[0]


def test_imbalanced_losses_focal_is_the_sigmoid_focal_loss_with_its_defaults() -> None:
    pytest.importorskip("imbalanced_losses")
    import torch

    from benchmarks.peers.classification import focal_loss_fn

    logits = torch.linspace(-3, 3, 11, dtype=torch.float64)
    target = (torch.arange(11) % 3 == 0).double()
    p = torch.sigmoid(logits)
    p_t = torch.where(target == 1, p, 1 - p)
    alpha_t = torch.where(target == 1, 0.25, 0.75)
    expected = (-alpha_t * (1 - p_t) ** 2 * torch.log(p_t)).mean()  # RetinaNet's focal loss, alpha 0.25, gamma 2
    torch.testing.assert_close(focal_loss_fn()(logits, target), expected)


def test_the_rule_picks_the_fastest_candidate_within_the_tolerance_of_the_best_score() -> None:
    def part(f1: dict[str, float], mcc: dict[str, float]) -> dict[str, Any]:
        return {"per_metric": {"f1": {"mean": f1}, "mcc": {"mean": mcc}}}

    names = ["candidate_a", "candidate_b", "candidate_c", "tuned_hgb"]
    payload = {
        "methods": {m: {} for m in names}, "unavailable": {}, "spec": {"metrics": ["f1", "mcc"]},
        "summary": {
            "all": part({"candidate_a": 0.72, "candidate_b": 0.715, "candidate_c": 0.80, "tuned_hgb": 0.7},
                        {"candidate_a": 0.68, "candidate_b": 0.681, "candidate_c": 0.50, "tuned_hgb": 0.7}),
            "seconds": {"candidate_a": {"median": 2.0}, "candidate_b": {"median": 1.0},
                        "candidate_c": {"median": 0.1}, "tuned_hgb": {"median": 1.0}},
        },
    }
    choice = T.recipe_choice(payload)
    assert choice["scores"] == pytest.approx({"candidate_a": 0.70, "candidate_b": 0.698, "candidate_c": 0.65})
    assert choice["within"] == ["candidate_a", "candidate_b"] and choice["chosen"] == "candidate_b"
    payload["summary"]["seconds"]["candidate_b"]["median"] = 3.0
    assert T.recipe_choice(payload)["chosen"] == "candidate_a"
    payload["methods"] = {"tuned_hgb": {}}
    assert T.recipe_choice(payload) is None  # no candidates: no choice


def test_multiclass_tables_are_the_multiclass_report_tables_up_to_the_row_cap() -> None:
    from metricopt.app.data import collection

    names = T.resolve_tables("multiclass")
    report = collection.multiclass_split()[1]
    assert set(names) <= set(report) and "fars" in report and "fars" not in names
    kept = {n for n in report if collection.table_info(n).n_samples <= T.MULTICLASS_MAX_ROWS
            and collection.table_info(n).n_positive >= T.MULTICLASS_MIN_CLASS_ROWS}  # n_positive: smallest class
    assert kept == set(names) and len(names) >= 15 and "abalone" not in names  # abalone: a class of one row
    data = collection.load_table(names[0])
    assert np.bincount(data.y).min() == collection.table_info(names[0]).n_positive >= 3
    assert get_suite("tabular_multiclass").tables == "multiclass"


def test_tabular_multiclass_smoke_end_to_end(tmp_path: Path) -> None:
    """Multi-class tables through the same suite: argmax decisions, records of task 'multiclass', one group."""
    assert main(["tabular_multiclass", "--smoke", "--output-dir", str(tmp_path), "--quiet", "--no-plots"]) == 0
    payload = json.loads((tmp_path / "tabular_multiclass_smoke.json").read_text())
    spec = get_suite("tabular_multiclass", smoke=True)
    assert payload["failures"] == [] and payload["unavailable"] == {}
    assert {r["task"] for r in payload["records"]} == {"multiclass"}
    got = {(r["dataset"], r["method"], r["metric"]) for r in payload["records"]}
    assert got == {(t, m, k) for t in spec.tables for m in spec.methods for k in spec.metrics}
    assert list(payload["summary"]["groups"]) == ["multi-class"]
    assert "Multi-class tables: every decision is the argmax" in payload["protocol"]
