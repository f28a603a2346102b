"""The black-box suites of the benchmark harness: specs, tasks, aggregation, smoke runs end to end."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from benchmarks import main
from benchmarks.harness.specs import (
    BLACKBOX_METHODS,
    SUITES,
    BlackBoxAblationSpec,
    BlackBoxSpec,
    BlackBoxVariant,
    get_suite,
    spec_to_dict,
)
from benchmarks.suites import blackbox as B
from benchmarks.suites import blackbox_tasks as T
from metricopt.blackbox import TaskDistribution

pytestmark = pytest.mark.usefixtures("one_thread")


def _fashion_installed() -> bool:
    try:
        from metricopt.app.data import load_fashion_mnist

        load_fashion_mnist("test")
    except (FileNotFoundError, ImportError):
        return False
    return True


def _learned_available() -> bool:
    return B._learned_api()[0] is not None


# ---------------------------------------------------------------------------
# specs


def test_blackbox_suites_are_named_frozen_and_follow_the_brief() -> None:
    full, smoke = get_suite("blackbox"), get_suite("blackbox", smoke=True)
    assert isinstance(full, BlackBoxSpec) and full.kind == smoke.kind == "blackbox"
    with pytest.raises(dataclasses.FrozenInstanceError):
        full.name = "x"  # type: ignore[misc]
    assert full.settings[0] == ("fashion_mnist", "cnn", "film", ("mcr", "aucpr"))
    tabular = full.settings[1:]
    assert {s[0] for s in tabular} == {"page_blocks0", "yeast4", "caravan", "abalone19"}
    # input bias on every tabular dataset (the adapter); FiLM where input bias cannot move the model
    assert {(s[0], s[2]) for s in tabular} == ({(d, "input_bias") for d in full.datasets[1:]}
                                               | {("page_blocks0", "film"), ("yeast4", "film")})
    assert all(s[1] == "mlp" and s[3] == ("mcr", "aucpr", "cost") for s in tabular)
    assert full.seeds == (0, 1, 2, 3, 4) and full.steps == 200 and full.evaluations == 0.05
    assert ((full.sgd_learning_rate, full.adam_learning_rate, full.batch_size, full.value_weight)
            == (0.05, 0.01, 128, 1.0))
    assert (full.meta_tasks, full.held_out_tasks, full.phi_size) == (24, 2, 128)
    assert full.fashion_sizes == (3000, 1000)
    assert full.methods == BLACKBOX_METHODS and full.epochs_for("mlp") == 30 and full.epochs_for("cnn") == 3
    assert full.variants() == (BlackBoxVariant("default"),) and full.reference_variant().label == "default"
    assert full.task_distribution == () and full.meta_distribution() == TaskDistribution()
    # smoke: one tabular dataset, 1 seed, T = 20, K = 4, 3 meta tasks, phi 8 (Fashion-MNIST skipped if missing)
    assert smoke.seeds == (0,) and (smoke.steps, smoke.evaluations, smoke.meta_tasks, smoke.phi_size) == (20, 4, 3, 8)
    assert [d for d in smoke.datasets if "fashion" not in d] in (["breast_cancer"], ["yeast4"])
    assert smoke.methods == BLACKBOX_METHODS
    for name in ("blackbox", "blackbox_smoke", "blackbox_ablation", "blackbox_ablation_smoke"):
        json.dumps(spec_to_dict(SUITES[name]))


def test_retrieval_suite_runs_embedders_with_film_on_the_class_disjoint_sets() -> None:
    spec = get_suite("blackbox_retrieval")
    assert spec.settings == (("letter_retrieval", "mlp_embedder", "film", ("recall@1",)),
                             ("fashion_retrieval", "cnn_embedder", "film", ("recall@1",)))
    assert "tuned_threshold" not in spec.methods and "direct_loss" in spec.methods
    assert spec.seeds == (0, 1, 2, 3, 4) and spec.retrieval_sizes == (10000, 5000)
    assert (spec.epochs_for("mlp_embedder"), spec.epochs_for("cnn_embedder")) == (10, 4)  # the retrieval suite's
    assert T.training_loss("mlp_embedder") is T.contrastive_loss is T.training_loss("cnn_embedder")
    assert T.training_loss("mlp") is not T.contrastive_loss
    assert type(T.direct_loss("recall@1", 13)).__name__ == "RecallLoss"


def test_contrastive_loss_matches_a_loop_over_pairs() -> None:
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(12, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 3, (12,), generator=generator)
    z = torch.nn.functional.normalize(embeddings.detach(), dim=1)
    positive, negative = [], []
    for i in range(12):
        for j in range(12):
            d = float((z[i] - z[j]).norm())
            if i != j and labels[i] == labels[j]:
                positive.append(d)
            elif labels[i] != labels[j] and T.CONTRASTIVE_MARGIN - d > 0:
                negative.append(T.CONTRASTIVE_MARGIN - d)
    loss = T.contrastive_loss(embeddings, labels)
    assert float(loss.detach()) == pytest.approx(np.mean(positive) + np.mean(negative), abs=1e-6)
    loss.backward()
    assert embeddings.grad is not None and torch.isfinite(embeddings.grad).all()
    # a batch of one class has no negative pairs; one item per class no positive pairs: still finite, graph kept
    for y in (torch.zeros(4, dtype=torch.long), torch.arange(4)):
        single = T.contrastive_loss(embeddings[:4], y)
        assert torch.isfinite(single) and single.requires_grad


def test_embedders_pretrain_on_the_contrastive_loss() -> None:
    from metricopt.app.data import Split

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 6)) * 3
    y = rng.integers(0, 4, 200)
    X = (centers[y] + rng.normal(size=(200, 6))).astype(np.float32)
    split = Split(X[:120], y[:120], X[120:160], y[120:160], X[160:], y[160:])
    network = T.pretrain(split, 4, "mlp_embedder", epochs=3, seed=0)
    with torch.no_grad():
        out = network(torch.as_tensor(X[:5]))
    assert out.shape == (5, 64) and not network.training


def test_ablation_sweeps_k_and_phi_size_without_running_a_point_twice() -> None:
    spec = get_suite("blackbox_ablation")
    assert isinstance(spec, BlackBoxAblationSpec) and spec.kind == "blackbox_ablation"
    assert spec.settings == (("page_blocks0", "mlp", "input_bias", ("cost", "mcr")),) and len(spec.seeds) == 5
    assert set(spec.methods) == {"sgd", "metricopt_sgd"}
    points = [(v.label, v.apply(spec).evaluations, v.apply(spec).phi_size) for v in spec.variants()]
    assert points == [
        ("K=2.5%, phi=128", 0.025, 128), ("K=5%, phi=128", 0.05, 128), ("K=100%, phi=128", 1.0, 128),
        ("K=5%, phi=32", 0.05, 32), ("K=5%, phi=512", 0.05, 512),
    ]
    assert spec.reference_variant().label == "K=5%, phi=128"
    smoke = get_suite("blackbox_ablation", smoke=True)
    labels = [v.label for v in smoke.variants()]
    assert len(labels) == len(set(labels)) and smoke.seeds == (0,)


_BAD_SPECS: list[tuple[dict[str, Any], str]] = [
    ({"settings": ()}, "settings"),
    ({"settings": (("mnist", "cnn", "film", ("mcr",)),)}, "settings"),
    ({"settings": (("yeast4", "cnn", "film", ("mcr",)),)}, "settings"),
    ({"settings": (("yeast4", "mlp", "lora", ("mcr",)),)}, "settings"),
    ({"settings": (("yeast4", "mlp", "film", ("f1",)),)}, "settings"),
    ({"settings": (("yeast4", "mlp", "film", ()),)}, "settings"),
    ({"settings": (("fashion_mnist", "cnn", "film", ("cost",)),)}, "settings"),
    ({"settings": (("yeast4", "mlp", "film", ("mcr",)),) * 2}, "settings"),
    ({"settings": (("letter_retrieval", "mlp_embedder", "film", ("mcr",)),)}, "settings"),
    ({"settings": (("letter_retrieval", "mlp", "film", ("recall@1",)),)}, "settings"),
    ({"settings": (("yeast4", "mlp", "film", ("recall@1",)),)}, "settings"),
    ({"settings": (("fashion_retrieval", "cnn_embedder", "film", ("recall@1", "mcr")),)}, "settings"),
    ({"retrieval_sizes": (5, 100)}, "retrieval_sizes"),
    ({"seeds": ()}, "seeds"),
    ({"seeds": (0, 0)}, "seeds"),
    ({"seeds": (-1,)}, "seeds"),
    ({"pretrain_epochs": (("cnn", 3),)}, "pretrain_epochs"),
    ({"pretrain_epochs": (("cnn", 3), ("mlp", 0))}, "pretrain_epochs"),
    ({"steps": 0}, "steps"),
    ({"evaluations": 1}, "evaluations"),
    ({"evaluations": 1.5}, "evaluations"),
    ({"sgd_learning_rate": 0.0}, "sgd_learning_rate"),
    ({"adam_learning_rate": -1e-3}, "adam_learning_rate"),
    ({"batch_size": 0}, "batch_size"),
    ({"value_weight": -1.0}, "value_weight"),
    ({"meta_tasks": 3, "warmup_tasks": 4}, "warmup_tasks"),
    ({"held_out_tasks": 0}, "held_out_tasks"),
    ({"phi_size": 0}, "phi_size"),
    ({"methods": ()}, "methods"),
    ({"methods": ("sgd", "lbfgs")}, "methods"),
    ({"tie_tolerance": -0.1}, "tie_tolerance"),
    ({"fashion_sizes": (5, 5)}, "fashion_sizes"),
    ({"task_distribution": (("class_balance", 0.5),)}, "task_distribution"),
    ({"task_distribution": (("balance", 2.0),)}, "task_distribution"),
    ({"task_distribution": (("class_balance", 2.0), ("class_balance", 4.0))}, "task_distribution"),
]


@pytest.mark.parametrize(("changes", "field"), _BAD_SPECS)
def test_bad_specs_raise_naming_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=f"`{field}`"):
        dataclasses.replace(get_suite("blackbox"), **changes)


@pytest.mark.parametrize(("changes", "field"), [
    ({"evaluations_grid": ()}, "evaluations_grid"), ({"evaluations_grid": (0.05, 0.05)}, "evaluations_grid"),
    ({"evaluations_grid": (1,)}, "evaluations_grid"), ({"phi_size_grid": ()}, "phi_size_grid"),
    ({"phi_size_grid": (0, 8)}, "phi_size_grid"),
])
def test_bad_ablation_grids_raise(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=f"`{field}`"):
        dataclasses.replace(get_suite("blackbox_ablation"), **changes)


def test_run_suite_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="jobs"):
        B.run_suite(get_suite("blackbox", smoke=True), jobs=0)
    with pytest.raises(TypeError, match="BlackBoxSpec"):
        B.run_suite(get_suite("retrieval", smoke=True))  # type: ignore[arg-type]


def test_cli_datasets_option_keeps_those_settings_and_rejects_others(tmp_path: Path) -> None:
    from benchmarks.cli import _override, _parser

    args = _parser().parse_args(["blackbox", "--datasets", "yeast4,caravan", "--seeds", "2", "--epochs", "7"])
    spec = _override(get_suite("blackbox"), args)
    assert [s[0] for s in spec.settings] == ["yeast4", "caravan", "yeast4"]
    assert spec.seeds == (0, 1) and set(dict(spec.pretrain_epochs).values()) == {7}
    with pytest.raises(SystemExit, match="no setting"):
        _override(get_suite("blackbox"), _parser().parse_args(["blackbox", "--datasets", "letter"]))


# ---------------------------------------------------------------------------
# data, models, direct losses


def test_cnn_has_the_specified_layers_and_a_seeded_initialisation() -> None:
    cnn = T.SmallCNN(10, seed=3)
    assert [m.out_channels for m in cnn.modules() if isinstance(m, torch.nn.Conv2d)] == [16, 32]
    assert [m.out_features for m in cnn.modules() if isinstance(m, torch.nn.Linear)] == [64, 10]
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in cnn.modules()) == 2
    assert cnn(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    torch.manual_seed(0)  # the global RNG must not matter
    again, other = T.SmallCNN(10, seed=3), T.SmallCNN(10, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(cnn.state_dict().values(), again.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(cnn.state_dict().values(), other.state_dict().values()))
    film = T.make_adapter("film", cnn, phi_size=4, seed=0)
    assert film.film_layers == ("0", "3", "7")  # both convs and the hidden Linear, not the output layer
    with pytest.raises(ValueError, match="adapter"):
        T.make_adapter("lora", cnn, phi_size=4, seed=0)


def test_tabular_split_is_60_20_20_and_seeded() -> None:
    data, num_classes = T.load_data("breast_cancer", 1)
    n = len(data.y_train) + len(data.y_val) + len(data.y_test)
    assert n == 569 and abs(len(data.y_train) / n - 0.6) < 0.01 and abs(len(data.y_test) / n - 0.2) < 0.01
    assert num_classes == 2 and data.X_train.dtype == np.float32
    assert np.array_equal(T.load_data("breast_cancer", 1)[0].X_test, data.X_test)
    assert not np.array_equal(T.load_data("breast_cancer", 2)[0].X_test, data.X_test)


def test_fashion_subset_sizes_and_standardisation() -> None:
    if not _fashion_installed():
        pytest.skip("Fashion-MNIST is not installed")
    data, num_classes = T.load_data("fashion_mnist", 0, fashion_sizes=(500, 200))
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (400, 100, 200)
    assert data.X_train.shape[1:] == (1, 28, 28) and num_classes == 10
    assert abs(float(data.X_train.mean())) < 1e-4 and abs(float(data.X_train.std()) - 1) < 1e-3
    assert np.bincount(data.y_train, minlength=10).min() == 40  # stratified


def test_cost_score_is_the_cost_metric_over_fn_cost() -> None:
    from metricopt.blackbox import cost_weighted_error

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    p = rng.random(50)
    pred = (p > 0.5).astype(int)
    counts = [torch.tensor(float(v)) for v in (((pred == 1) & (y == 1)).sum(), ((pred == 1) & (y == 0)).sum(),
                                               ((pred == 0) & (y == 1)).sum(), ((pred == 0) & (y == 0)).sum())]
    expected = cost_weighted_error(y, p)
    assert math.isclose(1 - float(T.cost_score(*counts)), expected / T.FN_COST, rel_tol=1e-6)
    # the direct loss at (nearly) hard logits is the cost / FN_COST
    logits = torch.tensor(np.where(pred == 1, 30.0, -30.0), dtype=torch.float32)
    loss = T.direct_loss("cost", 2)(logits, torch.tensor(y, dtype=torch.float32))
    assert math.isclose(float(loss), expected / T.FN_COST, rel_tol=1e-4)


def test_direct_losses_match_their_metrics() -> None:
    from metricopt.losses import APLoss, ConfusionLoss

    assert isinstance(T.direct_loss("mcr", 10), ConfusionLoss) and T.direct_loss("mcr", 10).metric == "accuracy"
    assert isinstance(T.direct_loss("aucpr", 2), APLoss)
    assert T.direct_loss("aucpr", 10).cross_class_weight == 0.0  # macro one-vs-rest AP, as the metric
    assert T.direct_loss("cost", 10) is None
    # with the library's margin set to 0, the multi-class direct loss is exactly 1 - the reported macro AP
    from metricopt.blackbox import aucpr

    probs = torch.softmax(torch.randn(40, 4, generator=torch.Generator().manual_seed(0)), 1)
    target = torch.arange(40) % 4
    exact = APLoss(margin=0.0, cross_class_weight=T.direct_loss("aucpr", 4).cross_class_weight)
    assert math.isclose(float(exact(probs, target)), 1 - aucpr(target.numpy(), probs.numpy()), rel_tol=1e-5)


# ---------------------------------------------------------------------------
# aggregation


def _payload(runs: list[dict[str, Any]], meta: list[dict[str, Any]], tie: float = 0.0) -> dict[str, Any]:
    return {"spec": {"tie_tolerance": tie}, "methods": {m: m for m in ("pretrained", "sgd", "metricopt_sgd")},
            "runs": runs, "meta_training": meta}


def test_summary_means_spreads_and_paired_counts() -> None:
    base = {"setting": "d/input_bias", "metric": "mcr", "variant": "default", "val_cost": 0.1, "seconds": 1.0,
            "best_step": 0}
    costs = {  # (seed, task) -> (sgd, metricopt_sgd)
        (0, 0): (0.30, 0.20), (0, 1): (0.10, 0.10), (1, 0): (0.50, 0.60), (1, 1): (0.30, 0.20),
    }
    runs = [{**base, "seed": s, "task": t, "method": m, "test_cost": c, "best_step": 4 if m != "sgd" else 0}
            for (s, t), pair in costs.items() for m, c in zip(("sgd", "metricopt_sgd"), pair)]
    meta = [{"setting": "d/input_bias", "metric": "mcr", "variant": "default", "seed": s, "value_seconds": v,
             "learned_seconds": learned} for s, v, learned in ((0, 10.0, 30.0), (1, 20.0, 40.0))]
    (group,) = B.refresh_summary(_payload(runs, meta))["summary"]["groups"]
    sgd, mo = group["methods"]["sgd"], group["methods"]["metricopt_sgd"]
    assert math.isclose(sgd["mean"], 0.3) and math.isclose(mo["mean"], 0.275)
    assert sgd["by_seed"] == pytest.approx({0: 0.2, 1: 0.4})
    assert math.isclose(sgd["std"], float(np.std([0.2, 0.4], ddof=1)))  # over seeds of the per-seed means
    assert sgd["kept_start"] == 1.0 and mo["kept_start"] == 0.0 and mo["best_step_mean"] == 4.0
    assert group["best"] == ["metricopt_sgd"]
    wtl = group["wtl"]["metricopt_sgd vs sgd"]
    assert (wtl["wins"], wtl["ties"], wtl["losses"], wtl["n"]) == (2, 1, 1, 4)
    assert math.isclose(wtl["mean_diff"], -0.025)
    assert group["meta"]["value_seconds_median"] == 15.0 and group["meta"]["learned_ratio_median"] == 2.5
    # a tolerance turns small differences into ties
    (group,) = B.refresh_summary(_payload(runs, meta, tie=0.15))["summary"]["groups"]
    assert group["wtl"]["metricopt_sgd vs sgd"]["ties"] == 4


# ---------------------------------------------------------------------------
# runs


def _tiny(**changes: Any) -> BlackBoxSpec:
    spec = dataclasses.replace(
        get_suite("blackbox", smoke=True), name="tiny", settings=(("breast_cancer", "mlp", "input_bias", ("mcr",)),),
        methods=("pretrained", "sgd", "metricopt_sgd"), steps=6, evaluations=3, meta_tasks=2, warmup_tasks=1,
        held_out_tasks=1)
    return dataclasses.replace(spec, **changes)


def test_a_job_is_deterministic_and_every_method_shares_the_start() -> None:
    spec = _tiny()
    first, second = B.run_job(spec, "breast_cancer", 0), B.run_job(spec, "breast_cancer", 0)
    strip = lambda out: [{k: v for k, v in r.items() if k != "seconds"} for r in out["runs"]]
    assert strip(first) == strip(second)
    assert {r["method"] for r in first["runs"]} == {"pretrained", "sgd", "metricopt_sgd"}
    pre = next(r for r in first["runs"] if r["method"] == "pretrained")
    for r in first["runs"]:  # every method observed phi = 0 first: its kept validation cost is never worse
        assert r["val_cost"] <= pre["val_cost"] + 1e-12 and 0 <= r["best_step"] <= spec.steps


def test_a_missing_dataset_is_recorded_and_skipped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("METRICOPT_FASHION_MNIST_DIR", str(tmp_path / "nothing-here"))
    spec = _tiny(settings=(("fashion_mnist", "cnn", "film", ("mcr",)),))
    out = B.run_job(spec, "fashion_mnist", 0)
    assert out["runs"] == [] and "FileNotFoundError" in out["unavailable_dataset"]
    payload = B.run_suite(spec, progress=False)
    assert "dataset fashion_mnist" in payload["unavailable"] and payload["summary"]["groups"] == []


def _check_payload(payload: dict[str, Any], spec: BlackBoxSpec) -> None:
    assert {"suite", "kind", "title", "protocol", "spec", "metadata", "methods", "variants", "unavailable",
            "datasets", "meta_training", "summary", "runs"} <= set(payload)
    assert payload["kind"] == spec.kind and "lower is better" in payload["title"]
    expected = [m for m in spec.methods if m not in payload["unavailable"]]
    ran = [s for s in spec.settings if f"dataset {s[0]}" not in payload["unavailable"]]
    variants = [v.label for v in spec.variants()]
    for setting in ran:
        for metric in setting[3]:
            for variant in variants:
                rows = [r for r in payload["runs"] if (r["setting"], r["metric"], r["variant"])
                        == (B.setting_key(setting), metric, variant)]
                # the tuned threshold is binary only: N/A on the 10-class Fashion-MNIST and the retrieval sets
                here = [m for m in expected if not (m == "tuned_threshold" and "fashion" in setting[0])]
                assert sorted({r["method"] for r in rows}) == sorted(here)
                assert len(rows) == len(here) * spec.held_out_tasks * len(spec.seeds)
                for r in rows:
                    assert math.isfinite(r["test_cost"]) and r["test_cost"] >= 0
                    assert r["val_cost"] is not None and math.isfinite(r["val_cost"])
                    assert 0 <= r["best_step"] <= spec.steps and r["seconds"] >= 0
    assert len(payload["summary"]["groups"]) == sum(len(s[3]) for s in ran) * len(variants)
    assert len(payload["meta_training"]) == len(payload["summary"]["groups"]) * len(spec.seeds)
    for row in payload["meta_training"]:
        assert row["value_seconds"] > 0 and row["threads"] == spec.threads


@pytest.mark.slow
def test_blackbox_smoke_writes_json_markdown_and_png(tmp_path: Path) -> None:
    argv = ["blackbox", "--smoke", "--output-dir", str(tmp_path), "--quiet"]
    assert main(argv) == 0
    spec = get_suite("blackbox", smoke=True)
    payload = json.loads((tmp_path / "blackbox_smoke.json").read_text())
    assert payload["metadata"]["argv"] == argv
    if _learned_available():
        assert "metricopt_learned" not in payload["unavailable"]
        assert all(r["learned_seconds"] > 0 for r in payload["meta_training"])
    else:
        assert "metricopt_learned" in payload["unavailable"]
    for dataset in ("fashion_mnist", "fashion_retrieval"):
        if _fashion_installed():
            assert dataset in payload["datasets"]
        else:
            assert f"dataset {dataset}" in payload["unavailable"]
    _check_payload(payload, spec)
    pre = [r for r in payload["runs"] if r["method"] == "pretrained" and r["metric"] == "mcr"]
    assert len({r["test_cost"] for r in pre}) == 1  # phi = 0 is the same model on every held-out task
    text = (tmp_path / "blackbox_smoke.md").read_text()
    assert "lower is better" in text and "wins / ties / losses" in text and "Meta-training time" in text
    for label in (B.METHOD_LABELS[m] for m in spec.methods if m not in payload["unavailable"]):
        assert label in text
    assert (tmp_path / "blackbox_smoke.png").stat().st_size > 1000
    # render re-creates the same Markdown from the JSON
    assert main(["render", str(tmp_path / "blackbox_smoke.json"), "--output-dir", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "blackbox_smoke.md").read_text() == text


def test_blackbox_ablation_smoke_writes_every_variant(tmp_path: Path) -> None:
    assert main(["blackbox_ablation", "--smoke", "--output-dir", str(tmp_path), "--quiet"]) == 0
    spec = get_suite("blackbox_ablation", smoke=True)
    payload = json.loads((tmp_path / "blackbox_ablation_smoke.json").read_text())
    _check_payload(payload, spec)
    assert [v["label"] for v in payload["variants"]] == [v.label for v in spec.variants()]
    assert [(v["evaluations"], v["phi_size"]) for v in payload["variants"]] == [
        (v.apply(spec).evaluations, v.apply(spec).phi_size) for v in spec.variants()]
    text = (tmp_path / "blackbox_ablation_smoke.md").read_text()
    assert all(v.label in text for v in spec.variants()) and "MetricOpt (SGD) vs loss-only SGD" in text
    assert (tmp_path / "blackbox_ablation_smoke.png").stat().st_size > 1000
