"""The ``blackbox_guidance`` suite and the new black-box protocol: guidance rows, start, tuned threshold, trust.

Spec validation, the rule that chooses ``guidance`` and ``start`` on a hand-made payload (H and R computed
by hand, a tie in H broken by R), one cell of the protocol (what meta-training and the held-out runs see),
resuming a killed run from its partial file, and a smoke run end to end.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import main
from benchmarks.harness.specs import (
    BLACKBOX_GUIDANCE,
    BLACKBOX_METHODS,
    BLACKBOX_STARTS,
    BLACKBOX_VALUE_FITS,
    SUITES,
    VARIANT_FIELDS,
    BlackBoxGuidanceSpec,
    BlackBoxSpec,
    BlackBoxVariant,
    get_suite,
    spec_to_dict,
)
from benchmarks.suites import blackbox as B
from benchmarks.suites.blackbox_selection import (
    GUIDANCE_RULE,
    choose_guidance,
    guidance_scores,
    guidance_summary,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------
# specs


def test_new_spec_fields_follow_the_library() -> None:
    from metricopt.app.recipes.blackbox import GUIDANCE, STARTS, BlackBoxOptions
    from metricopt.blackbox.meta import FITS

    assert BLACKBOX_GUIDANCE == GUIDANCE and BLACKBOX_STARTS == STARTS and BLACKBOX_VALUE_FITS == FITS
    spec, library = BlackBoxSpec(), BlackBoxOptions()
    assert (spec.guidance, spec.start, spec.value_fit, spec.trust_check) == (
        library.guidance, library.start, library.value_fit, library.trust_check)
    # The sweeps keep the settings they were run with.
    assert (BlackBoxGuidanceSpec().guidance, BlackBoxGuidanceSpec().start) == ("validation", "pretrained")
    assert "tuned_threshold" in BLACKBOX_METHODS and "tuned_threshold" in spec.methods
    assert B.METHOD_LABELS["tuned_threshold"] == "pre-trained, tuned threshold"
    assert {"guidance", "start"} <= set(VARIANT_FIELDS) and "trust_check" not in VARIANT_FIELDS
    variant = BlackBoxVariant("x", (("guidance", "train"), ("start", "tuned_threshold")))
    run = variant.apply(spec)
    assert (run.guidance, run.start) == ("train", "tuned_threshold")
    record = variant.record(spec)
    assert (record["guidance"], record["start"]) == ("train", "tuned_threshold")


@pytest.mark.parametrize(("changes", "field"), [
    ({"guidance": "test"}, "guidance"), ({"guidance": None}, "guidance"),
    ({"start": "finetuned"}, "start"), ({"trust_check": 1}, "trust_check"),
    ({"methods": ("pretrained", "threshold")}, "methods"),
])
def test_bad_protocol_fields_raise_naming_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=f"`{field}`"):
        dataclasses.replace(get_suite("blackbox"), **changes)
    if field in VARIANT_FIELDS:  # a variant's override is checked when it is applied
        with pytest.raises(ValueError, match=f"`{field}`"):
            BlackBoxVariant("x", tuple(changes.items())).apply(get_suite("blackbox"))


def test_guidance_suite_crosses_guidance_and_start_on_validation_seeds() -> None:
    spec = get_suite("blackbox_guidance")
    assert isinstance(spec, BlackBoxGuidanceSpec) and spec.kind == "blackbox_guidance"
    assert spec.seeds == (10, 11, 12, 13, 14) and not set(spec.seeds) & set(get_suite("blackbox").seeds)
    assert spec.settings == (("page_blocks0", "mlp", "input_bias", ("cost", "aucpr")),
                             ("yeast4", "mlp", "film", ("cost", "aucpr")),
                             ("caravan", "mlp", "input_bias", ("cost", "aucpr")))
    assert spec.methods == ("pretrained", "tuned_threshold", "sgd", "metricopt_sgd")
    assert (spec.held_out_tasks, spec.meta_tasks) == (2, get_suite("blackbox").meta_tasks)
    for field in ("steps", "evaluations", "sgd_learning_rate", "batch_size", "warmup_tasks", "phi_size",
                  "pretrain_epochs", "value_weight", "task_distribution", "trust_check"):
        assert getattr(spec, field) == getattr(get_suite("blackbox"), field), field
    variants = spec.variants()
    assert [v.label for v in variants] == [f"guidance={g}, start={s}" for g in ("validation", "split", "train")
                                           for s in ("pretrained", "tuned_threshold")]
    assert {(v.apply(spec).guidance, v.apply(spec).start) for v in variants} == {
        (g, s) for g in BLACKBOX_GUIDANCE for s in BLACKBOX_STARTS}
    assert spec.reference_variant().label == "guidance=validation, start=pretrained"
    for name in ("blackbox_guidance", "blackbox_guidance_smoke"):
        json.dumps(spec_to_dict(SUITES[name]))
        assert SUITES[name].kind == "blackbox_guidance"
    smoke = get_suite("blackbox_guidance", smoke=True)
    assert smoke.seeds == (10,) and smoke.meta_tasks == 2 and len(smoke.datasets) == 1


@pytest.mark.parametrize(("changes", "field"), [
    ({"seeds": (4, 10)}, "seeds"),
    ({"guidance_grid": ()}, "guidance_grid"),
    ({"guidance_grid": ("split", "split")}, "guidance_grid"),
    ({"guidance_grid": ("split", "test")}, "guidance_grid"),
    ({"guidance_grid": ("split", "train")}, "guidance_grid"),  # without the spec's own (the reference)
    ({"start_grid": ("tuned_threshold",)}, "start_grid"),
    ({"start_grid": ("pretrained", "finetuned")}, "start_grid"),
    ({"methods": ("pretrained", "tuned_threshold", "metricopt_sgd")}, "methods"),  # the rule needs loss-only
])
def test_bad_guidance_specs_raise_naming_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=f"`{field}`"):
        dataclasses.replace(get_suite("blackbox_guidance"), **changes)


def test_cli_runs_the_guidance_suite_by_name() -> None:
    from benchmarks.cli import _override, _parser

    spec = _override(get_suite("blackbox_guidance"),
                     _parser().parse_args(["blackbox_guidance", "--datasets", "yeast4", "--seeds", "20,21"]))
    assert isinstance(spec, BlackBoxGuidanceSpec) and spec.seeds == (20, 21)
    assert [s[0] for s in spec.settings] == ["yeast4"]


# ---------------------------------------------------------------------------
# the rule


def test_scores_count_harm_and_relative_excess() -> None:
    means = {
        "a": {("x", "cost"): {"M": 0.35, "L": 0.45, "P": 0.5, "T": 0.3},  # (0.35 - 0.3) / 0.5 = 0.1
              ("y", "aucpr"): {"M": 0.22, "L": 0.2, "P": 0.2, "T": 0.2}},  # harm; 0.02 / 0.2 = 0.1
        "b": {("x", "cost"): {"M": 0.5, "L": 0.45, "P": 0.5},  # no T: min over L and P; M = P is no harm
              ("y", "aucpr"): {"M": 0.1, "L": 0.2, "P": 0.0, "T": 0.2}},  # P = 0: left out of R
    }
    scores = guidance_scores(means)
    assert scores["a"]["harm"] == 1 and math.isclose(scores["a"]["excess"], 0.1)
    assert scores["a"]["groups"][("y", "aucpr")] == {"excess": pytest.approx(0.1), "harm": True}
    assert scores["b"]["harm"] == 1 and math.isclose(scores["b"]["excess"], 0.05 / 0.5)
    assert not scores["b"]["groups"][("x", "cost")]["harm"]
    assert math.isnan(scores["b"]["groups"][("y", "aucpr")]["excess"])


def test_choice_is_lexicographic_and_keeps_the_reference_on_exact_ties() -> None:
    scores = {"ref": {"harm": 1, "excess": -0.5}, "b": {"harm": 0, "excess": 0.2}, "c": {"harm": 0, "excess": 0.1}}
    assert choose_guidance(scores, "ref") == "c"  # fewer harmed groups first; R breaks the tie in H
    tied = {"b": {"harm": 0, "excess": 0.1}, "ref": {"harm": 0, "excess": 0.1}}
    assert choose_guidance(tied, "ref") == "ref"
    assert choose_guidance({"b": {"harm": 0, "excess": math.nan}, "c": {"harm": 0, "excess": 9.0}}, "b") == "c"
    assert "lexicographically" in GUIDANCE_RULE and "M_v(g) > P(g)" in GUIDANCE_RULE


REF, SPLIT, TRAIN = ("guidance=validation, start=pretrained", "guidance=split, start=pretrained",
                     "guidance=train, start=tuned_threshold")
G1, G2, G3 = ("a/input_bias", "cost"), ("b/film", "aucpr"), ("c/film", "mcr")  # G3: multi-class, no T


def _guidance_payload() -> dict[str, Any]:
    """Seeds 10 and 11 x tasks 0 and 1; every cost constant over tasks and seeds but P on G1 (0.4, then 0.6)."""
    spec = dataclasses.replace(get_suite("blackbox_guidance"), seeds=(10, 11))
    fixed = {"pretrained": {G1: {10: 0.4, 11: 0.6}, G2: 0.2, G3: 0.1}, "tuned_threshold": {G1: 0.3, G2: 0.2}}
    costs = {  # variant -> method -> group -> cost
        REF: {"metricopt_sgd": {G1: 0.35, G2: 0.22, G3: 0.1}, "sgd": {G1: 0.45, G2: 0.2, G3: 0.12}},
        SPLIT: {"metricopt_sgd": {G1: 0.25, G2: 0.2, G3: 0.09}, "sgd": {G1: 0.45, G2: 0.2, G3: 0.1}},
        TRAIN: {"metricopt_sgd": {G1: 0.3, G2: 0.19, G3: 0.1}, "sgd": {G1: 0.45, G2: 0.2, G3: 0.08}},
    }
    runs, meta = [], []
    for variant, methods in costs.items():
        for seed in (10, 11):
            for group in (G1, G2, G3):
                base = {"setting": group[0], "metric": group[1], "variant": variant, "seed": seed}
                meta.append({**base, "value_seconds": 10.0 + seed, "trusted": seed == 10,
                             "held_out_rank_correlation": 0.3 if seed == 10 else None,
                             "rank_correlation_within": 0.1})
                for task in (0, 1):
                    for method, table in {**fixed, **methods}.items():
                        if group in table:
                            value = table[group]
                            cost = value[seed] if isinstance(value, dict) else value
                            runs.append({**base, "task": task, "method": method, "test_cost": cost})
    return {"spec": spec_to_dict(spec), "reference_variant": REF, "runs": runs, "meta_training": meta,
            "variants": [v.record(spec) for v in spec.variants() if v.label in costs]}


def test_guidance_summary_by_hand() -> None:
    choice = guidance_summary(_guidance_payload())
    assert choice["reference"] == REF and choice["fixed_shared"] and choice["rule"] == GUIDANCE_RULE
    rows = {e["label"]: e for e in choice["variants"]}
    assert list(rows) == [REF, SPLIT, TRAIN]
    # REF: G2 harmed (0.22 > 0.2); R = mean(0.05 / 0.5, 0.02 / 0.2, 0 / 0.1)
    assert rows[REF]["harm"] == 1 and math.isclose(rows[REF]["excess"], 0.2 / 3)
    # SPLIT: no harm (M = P on G2 is none); R = mean(-0.05 / 0.5, 0, -0.01 / 0.1)
    assert rows[SPLIT]["harm"] == 0 and math.isclose(rows[SPLIT]["excess"], -0.2 / 3)
    # TRAIN: no harm; R = mean(0, -0.01 / 0.2, 0.02 / 0.1): ties SPLIT in H, loses on R
    assert rows[TRAIN]["harm"] == 0 and math.isclose(rows[TRAIN]["excess"], 0.15 / 3)
    assert choice["chosen"] == SPLIT
    # per seed: P on G1 is 0.4 then 0.6
    by_seed = rows[SPLIT]["excess_by_seed"]
    assert by_seed[10] == pytest.approx((-0.05 / 0.4 + 0 - 0.1) / 3)
    assert by_seed[11] == pytest.approx((-0.05 / 0.6 + 0 - 0.1) / 3)
    assert rows[SPLIT]["excess_std"] == pytest.approx(float(np.std([by_seed[10], by_seed[11]], ddof=1)))
    # per-group means, and paired runs: 4 per group (2 seeds x 2 tasks); no tuned threshold on G3
    g1 = next(g for g in rows[SPLIT]["groups"] if (g["setting"], g["metric"]) == G1)
    assert g1["pretrained"] == pytest.approx(0.5) and g1["tuned_threshold"] == 0.3 and g1["sgd"] == 0.45
    assert not any("tuned_threshold" in g for g in rows[SPLIT]["groups"] if (g["setting"], g["metric"]) == G3)
    wtl = lambda r: (r["wins"], r["ties"], r["losses"], r["n"])
    assert wtl(rows[SPLIT]["vs_loss_only"]) == (8, 4, 0, 12)
    assert wtl(rows[SPLIT]["vs_tuned_threshold"]) == (4, 4, 0, 8)
    assert wtl(rows[REF]["vs_tuned_threshold"]) == (0, 0, 8, 8)
    # diagnostics of the meta-trainings
    assert rows[SPLIT]["trusted"] == 0.5 and rows[SPLIT]["meta_trainings"] == 6
    assert rows[SPLIT]["held_out_rank_correlation"] == pytest.approx(0.3)
    assert rows[SPLIT]["meta_seconds_median"] == pytest.approx(20.5)


def test_guidance_report_states_the_choice_and_old_payloads_have_no_trust_section() -> None:
    from benchmarks.suites.blackbox_report import _guidance_lines, _trust_lines

    payload = _guidance_payload()
    payload["methods"] = {m: B.METHOD_LABELS[m] for m in payload["spec"]["methods"]}
    payload["summary"] = {"guidance": guidance_summary(payload)}
    text = "\n".join(_guidance_lines(payload))
    assert f"chosen: **`{SPLIT}`**" in text and "Rule (fixed before the run)" in text
    assert "1 of 3" in text and "(harm)" in text and "50% of 6" in text
    groups = [{"setting": G1[0], "metric": G1[1], "variant": REF}]
    assert "1 of 2" in "\n".join(_trust_lines(payload, groups))


# ---------------------------------------------------------------------------
# one cell of the protocol


def _tiny(**changes: Any) -> BlackBoxGuidanceSpec:
    spec = dataclasses.replace(get_suite("blackbox_guidance", smoke=True), name="tiny", steps=6, evaluations=3,
                               held_out_tasks=1)
    return dataclasses.replace(spec, **changes)


@pytest.fixture(scope="module")
def breast_cancer() -> tuple[Any, int, Any]:
    from benchmarks.suites.blackbox_tasks import load_data, pretrain

    split, num_classes = load_data("breast_cancer", 10)
    return split, num_classes, pretrain(split, num_classes, "mlp", epochs=5, seed=10)


def test_a_cell_meta_trains_on_the_guiding_rows_at_the_start_it_reports(
        breast_cancer: tuple[Any, int, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import metricopt.blackbox as library

    split, num_classes, backbone = breast_cancer
    seen: dict[str, Any] = {"finetune": []}
    meta_train, finetune = library.meta_train, library.finetune

    def spy_meta(adapter: Any, loss: Any, metric: Any, data: Any, **kwargs: Any) -> Any:
        seen["meta"] = (data, adapter.backbone.shift)
        return meta_train(adapter, loss, metric, data, **kwargs)

    def spy_finetune(adapter: Any, loss: Any, metric: Any, data: Any, **kwargs: Any) -> Any:
        seen["finetune"].append((data, adapter.backbone.shift, kwargs.get("value")))
        return finetune(adapter, loss, metric, data, **kwargs)

    monkeypatch.setattr(library, "meta_train", spy_meta)
    monkeypatch.setattr(library, "finetune", spy_finetune)
    spec = _tiny(trust_check=False)
    variant = BlackBoxVariant("v", (("guidance", "split"), ("start", "tuned_threshold")))
    runs, meta = B._cell(spec, split, num_classes, backbone, spec.settings[0], "cost", variant, 10)
    assert {"trusted", "guided", "held_out_rank_correlation", "rank_correlation_within", "threshold",
            "threshold_evaluations"} <= set(meta)
    shift = math.log(meta["threshold"] / (1 - meta["threshold"]))
    assert meta["start_shift"] == pytest.approx(shift) and meta["threshold_evaluations"] >= 2
    data, at = seen["meta"]
    assert data.X_select is None and at == pytest.approx(shift)  # guiding rows only, from the tuned threshold
    assert len(split.y_val) / 2 <= len(data.X_val) <= len(split.y_val) / 2 + 1  # half of them, per class
    assert all(d.X_select is not None and s == pytest.approx(shift) for d, s, _ in seen["finetune"])
    assert meta["guided"] and any(v is not None for _, _, v in seen["finetune"])  # no trust check: guided
    by_method = {r["method"]: r for r in runs}
    assert set(by_method) == set(spec.methods)
    pre, tuned = by_method["pretrained"], by_method["tuned_threshold"]
    assert tuned["val_cost"] <= pre["val_cost"]  # tuned on all validation rows: never worse there
    for r in runs:  # a fine-tuning run that kept phi = 0 is the tuned-threshold model
        if r["method"] in ("sgd", "metricopt_sgd") and r["best_step"] == 0:
            assert r["test_cost"] == tuned["test_cost"]


def test_the_trust_check_turns_metricopt_into_loss_only(breast_cancer: tuple[Any, int, Any]) -> None:
    split, num_classes, backbone = breast_cancer
    spec = _tiny()  # 2 meta-training tasks: far too few points for the check to pass
    runs, meta = B._cell(spec, split, num_classes, backbone, spec.settings[0], "cost", spec.reference_variant(), 10)
    assert meta["trusted"] is False and meta["guided"] is False and meta["start_shift"] == 0.0
    costs = {r["method"]: (r["test_cost"], r["best_step"]) for r in runs}
    assert costs["metricopt_sgd"] == costs["sgd"]  # the same seed and no value gradient: the same run
    assert costs["pretrained"][1] == costs["tuned_threshold"][1] == 0


# ---------------------------------------------------------------------------
# runs


def test_a_killed_run_resumes_from_its_partial_file(tmp_path: Path) -> None:
    spec = _tiny(guidance_grid=("validation",), start_grid=("pretrained",))
    partial = tmp_path / "tiny.partial.jsonl"
    first = B.run_suite(spec, progress=False, partial_path=partial)
    lines = partial.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["header"]["name"] == "tiny"
    partial.write_text(partial.read_text() + '{"dataset": "breast_c')  # a line cut short by the kill
    again = B.run_suite(spec, progress=False, partial_path=partial)
    assert again["resumed_jobs"] == 1 and "resumed_jobs" not in first
    strip = lambda p: [{k: v for k, v in r.items() if k != "seconds"} for r in p["runs"]]
    assert strip(again) == json.loads(json.dumps(strip(first)))
    with pytest.raises(ValueError, match="another spec"):
        B.run_suite(dataclasses.replace(spec, steps=7), progress=False, partial_path=partial)


def test_blackbox_guidance_smoke_writes_every_variant_and_the_choice(tmp_path: Path) -> None:
    assert main(["blackbox_guidance", "--smoke", "--output-dir", str(tmp_path), "--quiet"]) == 0
    spec = get_suite("blackbox_guidance", smoke=True)
    payload = json.loads((tmp_path / "blackbox_guidance_smoke.json").read_text())
    assert not (tmp_path / "blackbox_guidance_smoke.partial.jsonl").exists()  # removed once the JSON is written
    assert payload["kind"] == "blackbox_guidance" and payload["reference_variant"] == spec.reference_variant().label
    assert [(v["guidance"], v["start"]) for v in payload["variants"]] == [
        (v.apply(spec).guidance, v.apply(spec).start) for v in spec.variants()]
    runs = payload["runs"]
    assert len(runs) == len(spec.variants()) * len(spec.seeds) * spec.held_out_tasks * len(spec.methods)
    assert all(math.isfinite(r["test_cost"]) and r["test_cost"] >= 0 for r in runs)
    for method in ("pretrained", "tuned_threshold"):  # the same model in every variant and task
        assert len({r["test_cost"] for r in runs if r["method"] == method}) == 1
    meta = payload["meta_training"]
    assert len(meta) == len(spec.variants()) * len(spec.seeds)
    assert all(isinstance(m["trusted"], bool) and 0 < m["threshold"] < 1 for m in meta)
    choice = payload["summary"]["guidance"]
    assert choice["fixed_shared"] and choice["chosen"] in {v.label for v in spec.variants()}
    assert len(choice["variants"]) == 6
    text = (tmp_path / "blackbox_guidance_smoke.md").read_text()
    assert "Choice of guidance and start" in text and "Rule (fixed before the run)" in text
    assert f"chosen: **`{choice['chosen']}`**" in text and "Value function check" in text
    assert all(f"`{v.label}`" in text for v in spec.variants())
    assert (tmp_path / "blackbox_guidance_smoke.png").stat().st_size > 1000
    assert main(["render", str(tmp_path / "blackbox_guidance_smoke.json"),
                 "--output-dir", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "blackbox_guidance_smoke.md").read_text() == text
