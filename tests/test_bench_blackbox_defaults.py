"""The ``blackbox_defaults`` suite: MetricOpt's value weight and task distribution chosen on validation seeds.

Spec validation, the variants, the selection criterion and rule on hand-made runs, a smoke run end to
end, and the committed black-box results still rendering with the generalised variant plumbing.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest

from benchmarks import main
from benchmarks.harness.specs import (
    SUITES,
    TASK_DISTRIBUTION_PRESETS,
    BlackBoxDefaultsSpec,
    BlackBoxSpec,
    BlackBoxVariant,
    get_suite,
    spec_to_dict,
)
from benchmarks.suites import blackbox as B
from benchmarks.suites.blackbox_selection import Z, selection_summary
from metricopt.blackbox import TaskDistribution

pytestmark = pytest.mark.usefixtures("one_thread")

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"


# ---------------------------------------------------------------------------
# spec


def test_defaults_suite_validates_on_seeds_disjoint_from_the_reported_ones() -> None:
    spec = get_suite("blackbox_defaults")
    assert isinstance(spec, BlackBoxDefaultsSpec) and spec.kind == "blackbox_defaults"
    assert not set(spec.seeds) & set(get_suite("blackbox").seeds) and spec.reporting_seeds == BlackBoxSpec().seeds
    assert {s[0] for s in spec.settings} == {"page_blocks0", "yeast4", "caravan"}
    assert set(spec.methods) == {"sgd", "metricopt_sgd"} and spec.selection_pair == ("metricopt_sgd", "sgd")
    # everything but the swept fields is the reporting suite's protocol
    for field in ("steps", "evaluations", "sgd_learning_rate", "batch_size", "meta_tasks", "warmup_tasks",
                  "phi_size", "pretrain_epochs", "value_weight", "task_distribution"):
        assert getattr(spec, field) == getattr(get_suite("blackbox"), field), field
    # the "medium" preset is the library's default distribution, written out
    assert TaskDistribution(**dict(dict(TASK_DISTRIBUTION_PRESETS)["medium"])) == TaskDistribution()
    for name in ("blackbox_defaults", "blackbox_defaults_smoke"):
        json.dumps(spec_to_dict(SUITES[name]))
        assert not set(SUITES[name].seeds) & set(SUITES[name].reporting_seeds)


def test_variants_sweep_each_default_once_around_the_shared_point() -> None:
    spec = get_suite("blackbox_defaults")
    variants = spec.variants()
    labels = [v.label for v in variants]
    assert len(labels) == len(set(labels))
    runs = {v.label: v.apply(spec) for v in variants}
    assert all(type(r) is BlackBoxSpec for r in runs.values())  # a variant runs a plain spec
    reference = spec.reference_variant()
    assert reference.label == "lambda_v=1, tasks=medium"
    own = runs[reference.label]
    # value weight sweep at the spec's distribution, distribution sweep at the spec's value weight
    at_own_distribution = sorted(r.value_weight for r in runs.values()
                                 if r.meta_distribution() == own.meta_distribution())
    assert at_own_distribution == sorted(spec.value_weight_grid)
    at_own_weight = [r.meta_distribution() for r in runs.values() if r.value_weight == spec.value_weight]
    assert len(at_own_weight) == len(spec.distribution_grid)
    assert len(variants) == len(spec.value_weight_grid) + len(spec.distribution_grid) - 1
    # only the swept fields change
    for r in runs.values():
        assert (r.settings, r.seeds, r.steps, r.evaluations, r.phi_size) == (
            spec.settings, spec.seeds, spec.steps, spec.evaluations, spec.phi_size)
    wide = runs["lambda_v=1, tasks=wide"].meta_distribution()
    assert wide.class_balance == 16.0 and wide.subset == (0.15, 1.0) and wide.learning_rate == (0.1, 10.0)
    assert wide.value_weight == TaskDistribution().value_weight


_BAD_GRIDS: list[tuple[dict[str, Any], str]] = [
    ({"value_weight_grid": ()}, "value_weight_grid"),
    ({"value_weight_grid": (0.3, 0.3)}, "value_weight_grid"),
    ({"value_weight_grid": (0.0, 1.0)}, "value_weight_grid"),
    ({"value_weight_grid": (-1.0,)}, "value_weight_grid"),
    ({"value_weight_grid": (float("inf"),)}, "value_weight_grid"),
    ({"value_weight_grid": (True,)}, "value_weight_grid"),
    ({"distribution_grid": ()}, "distribution_grid"),
    ({"distribution_grid": (("medium", ()), ("medium", (("class_balance", 2.0),)))}, "distribution_grid"),
    ({"distribution_grid": (("", ()),)}, "distribution_grid"),
    ({"distribution_grid": (("medium", ()), ("narrow", (("class_balance", 0.5),)))}, "distribution_grid"),
    ({"distribution_grid": (("medium", ()), ("typo", (("balance", 2.0),)))}, "distribution_grid"),
    ({"distribution_grid": (("medium", ()), ("same", (("class_balance", 8.0),)))}, "distribution_grid"),
    ({"distribution_grid": (("narrow", (("class_balance", 2.0),)),)}, "distribution_grid"),  # no reference
    ({"seeds": (3, 10)}, "seeds"),
    ({"selection_pair": ("sgd", "metricopt_sgd")}, "selection_pair"),
    ({"selection_pair": ("metricopt_adam", "sgd")}, "selection_pair"),  # not in methods
    ({"selection_pair": ("metricopt_sgd",)}, "selection_pair"),
    ({"task_distribution": (("subset", (0.0, 1.0)),)}, "task_distribution"),
]


@pytest.mark.parametrize(("changes", "field"), _BAD_GRIDS)
def test_bad_defaults_specs_raise_naming_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=f"`{field}`"):
        dataclasses.replace(get_suite("blackbox_defaults"), **changes)


def test_bad_variants_raise() -> None:
    with pytest.raises(ValueError, match="`overrides`"):
        BlackBoxVariant("x", (("seeds", (1,)),))
    with pytest.raises(ValueError, match="`label`"):
        BlackBoxVariant("")
    with pytest.raises(ValueError, match="`value_weight`"):
        BlackBoxVariant("x", (("value_weight", -1.0),)).apply(get_suite("blackbox"))


def test_cli_runs_the_suite_by_name_and_keeps_its_overrides() -> None:
    from benchmarks.cli import _override, _parser

    args = _parser().parse_args(["blackbox_defaults", "--datasets", "yeast4", "--seeds", "20,21"])
    spec = _override(get_suite("blackbox_defaults"), args)
    assert isinstance(spec, BlackBoxDefaultsSpec) and spec.seeds == (20, 21)
    assert [s[0] for s in spec.settings] == ["yeast4"]
    with pytest.raises(ValueError, match="`seeds`"):  # seeds 0..2 are the reporting suite's
        _override(get_suite("blackbox_defaults"), _parser().parse_args(["blackbox_defaults", "--seeds", "3"]))


# ---------------------------------------------------------------------------
# selection


def _selection_payload(metricopt: dict[str, list[list[float]]], sgd: list[list[float]]) -> dict[str, Any]:
    """Runs on one (setting, metric): ``metricopt[label][seed][task]`` and the shared ``sgd[seed][task]``."""
    spec = dataclasses.replace(get_suite("blackbox_defaults"), seeds=tuple(range(10, 10 + len(sgd))))
    variants = [v.record(spec) for v in spec.variants()]
    runs = []
    for label, costs in metricopt.items():
        for s, (ours, theirs) in enumerate(zip(costs, sgd)):
            for t, (a, b) in enumerate(zip(ours, theirs)):
                base = {"setting": "d/input_bias", "metric": "cost", "variant": label, "seed": 10 + s, "task": t}
                runs += [{**base, "method": "metricopt_sgd", "test_cost": a}, {**base, "method": "sgd", "test_cost": b}]
    return {"spec": spec_to_dict(spec), "variants": variants, "reference_variant": spec.reference_variant().label,
            "runs": runs}


def test_selection_keeps_the_default_unless_a_variant_is_clearly_better() -> None:
    sgd = [[0.5, 0.5], [0.6, 0.6], [0.4, 0.4], [0.5, 0.5]]
    reference = "lambda_v=1, tasks=medium"
    costs = {
        reference: [[0.45, 0.45], [0.55, 0.55], [0.35, 0.35], [0.45, 0.45]],  # -0.05 every run
        "lambda_v=3, tasks=medium": [[0.35, 0.35], [0.45, 0.45], [0.25, 0.25], [0.35, 0.35]],  # -0.15: clear
        "lambda_v=10, tasks=medium": [[0.30, 0.60], [0.40, 0.70], [0.20, 0.50], [0.30, 0.60]],  # mean -0.05
        "lambda_v=1, tasks=wide": [[0.0, 0.8], [0.55, 0.55], [0.35, 0.35], [0.45, 0.45]],  # lower mean, noisy
    }
    sel = selection_summary(_selection_payload(costs, sgd))
    assert sel["reference"] == reference and sel["baseline_shared"] and sel["pair"] == "metricopt_sgd vs sgd"
    rows = {e["label"]: e for e in sel["variants"]}
    ref = rows[reference]["criterion"]
    assert math.isclose(ref["mean_diff"], -0.05) and ref["std_over_seeds"] == pytest.approx(0.0, abs=1e-12)
    assert (ref["wins"], ref["ties"], ref["losses"], ref["n"]) == (8, 0, 0, 8)
    assert rows[reference]["sweeps"] == ["value_weight", "task_distribution"]
    three = rows["lambda_v=3, tasks=medium"]
    assert math.isclose(three["vs_reference"]["mean"], -0.1) and three["clearly_better"]
    assert three["vs_reference"]["runs"]["wins"] == 8 and three["sweeps"] == ["value_weight"]
    ten = rows["lambda_v=10, tasks=medium"]
    assert math.isclose(ten["criterion"]["mean_diff"], -0.05) and not ten["clearly_better"]
    assert (ten["criterion"]["wins"], ten["criterion"]["losses"]) == (4, 4)
    wide = rows["lambda_v=1, tasks=wide"]
    versus = wide["vs_reference"]
    assert versus["mean"] < 0 and -versus["mean"] <= Z * versus["se"] and not wide["clearly_better"]
    assert sel["chosen"] == {"value_weight": {"label": "lambda_v=3, tasks=medium", "changed": True},
                             "task_distribution": {"label": reference, "changed": False}}


def test_selection_needs_no_worse_wins_minus_losses_and_more_than_one_seed() -> None:
    reference = "lambda_v=1, tasks=medium"
    sgd = [[0.5, 0.5, 0.5]] * 3
    costs = {reference: [[0.49, 0.49, 0.49]] * 3,
             # much lower mean, but from one big win per seed and two losses
             "lambda_v=3, tasks=medium": [[0.1, 0.51, 0.51]] * 3}
    sel = selection_summary(_selection_payload(costs, sgd))
    assert not next(e for e in sel["variants"] if e["label"] != reference)["clearly_better"]
    assert not sel["chosen"]["value_weight"]["changed"]
    one_seed = selection_summary(_selection_payload({reference: [[0.49]], "lambda_v=3, tasks=medium": [[0.1]]},
                                                    [[0.5]]))
    versus = next(e for e in one_seed["variants"] if e["label"] != reference)
    assert math.isnan(versus["vs_reference"]["se"]) and not versus["clearly_better"]


# ---------------------------------------------------------------------------
# runs


def test_blackbox_defaults_smoke_writes_every_variant_and_the_choice(tmp_path: Path) -> None:
    assert main(["blackbox_defaults", "--smoke", "--output-dir", str(tmp_path), "--quiet"]) == 0
    spec = get_suite("blackbox_defaults", smoke=True)
    payload = json.loads((tmp_path / "blackbox_defaults_smoke.json").read_text())
    assert payload["kind"] == "blackbox_defaults" and payload["reference_variant"] == spec.reference_variant().label
    assert [v["label"] for v in payload["variants"]] == [v.label for v in spec.variants()]
    assert sorted({v["value_weight"] for v in payload["variants"]}) == sorted(spec.value_weight_grid)
    runs = payload["runs"]
    assert len(runs) == len(spec.variants()) * len(spec.seeds) * spec.held_out_tasks * len(spec.methods)
    assert all(math.isfinite(r["test_cost"]) and r["test_cost"] >= 0 for r in runs)
    meta = payload["meta_training"]
    assert len(meta) == len(spec.variants()) * len(spec.seeds) and all(m["value_seconds"] > 0 for m in meta)
    # every variant runs the same held-out tasks: the loss-only runs are identical
    selection = payload["summary"]["selection"]
    assert selection["baseline_shared"] and len(selection["variants"]) == len(spec.variants())
    assert set(selection["chosen"]) == {"value_weight", "task_distribution"}
    text = (tmp_path / "blackbox_defaults_smoke.md").read_text()
    assert "Choice of defaults" in text and "Rule (fixed before the run)" in text
    assert all(f"`{v.label}`" in text for v in spec.variants())
    assert (tmp_path / "blackbox_defaults_smoke.png").stat().st_size > 1000
    assert main(["render", str(tmp_path / "blackbox_defaults_smoke.json"),
                 "--output-dir", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "blackbox_defaults_smoke.md").read_text() == text


@pytest.mark.parametrize("name", ["blackbox", "blackbox_ablation", "blackbox_defaults"])
def test_committed_results_still_render(name: str, tmp_path: Path) -> None:
    source = RESULTS / f"{name}.json"
    if not source.exists():
        pytest.skip(f"{source} is not committed")
    paths = B.write_reports(B.refresh_summary(json.loads(source.read_text())), tmp_path, plots=False)
    assert paths["md"].read_text() == (RESULTS / f"{name}.md").read_text()
