"""The learned-optimizer sweep (``benchmarks.learned_sweep``): one tiny cell end to end, statistics, report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks import learned_sweep as S
from benchmarks.cli import SWEEP_SCRIPTS, render
from benchmarks.harness.results import _clean, write_json
from benchmarks.suites.blackbox_tasks import pretrain
from metricopt.app.data.splits import Split

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = S.Budget(meta_tasks=3, warmup_tasks=2, steps=20, held_out=2, diagnostic_steps=3)
VARIANTS = ("default", "lr1e-2")


def _split(seed: int = 10) -> Split:
    rng = np.random.default_rng(seed)

    def rows(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = (rng.random(n) < 0.2).astype(np.int64)
        X = (rng.normal(size=(n, 6)) + 0.8 * y[:, None]).astype(np.float32)
        return X, y

    return Split(*rows(240), *rows(80), *rows(80))


@pytest.fixture(scope="module")
def cell() -> dict:
    split = _split()
    backbone = pretrain(split, 2, "mlp", epochs=2, seed=10)
    out = S.run_cell(split, 2, backbone, "synthetic", "cost", 10, variants=VARIANTS, budget=TINY, log=lambda _: None)
    return json.loads(json.dumps(_clean(out)))


def test_cell_runs_every_method_on_every_held_out_task(cell: dict) -> None:
    methods = [*S.BASE_METHODS, *(f"learned:{v}" for v in VARIANTS)]
    assert cell["key"] == "synthetic/cost/10"
    assert sorted((r["task"], r["method"]) for r in cell["runs"]) == sorted(
        (j, m) for j in range(TINY.held_out) for m in methods)
    for r in cell["runs"]:
        assert math.isfinite(r["test_cost"]) and math.isfinite(r["final_test_cost"])
        assert 0 <= r["best_step"] <= TINY.steps
    variants = cell["meta"]["variants"]
    assert set(variants) == set(VARIANTS)
    # Algorithm 1 updates the rule from the last warm-up task on: (tasks - warm-up + 1) x optimizer_updates
    assert all(v["rule_updates"] == TINY.meta_tasks - TINY.warmup_tasks + 1 for v in variants.values())
    assert all(v["seconds"] > 0 and v["max_weight_change"] > 0 for v in variants.values())
    # the untrained rule compared with itself: no deviation, step ratio 1
    assert cell["meta"]["untrained_steps"]["relative_deviation"] == 0.0
    assert cell["meta"]["untrained_steps"]["step_ratio_untrained"] == pytest.approx(1.0)
    # a ten times larger learning rate moves the weights further in the same number of updates
    assert variants["lr1e-2"]["max_weight_change"] > variants["default"]["max_weight_change"]
    assert set(cell["meta"]["gradient_agreement"]) == {"cosine", "pathwise_snr", "evolution_snr"}


def test_payload_and_report_render_from_json(cell: dict, tmp_path: Path) -> None:
    payload = S.build_payload([cell], {"command": "python -m benchmarks.learned_sweep --tiny"}, variants=VARIANTS,
                              budget=TINY, wall=cell["seconds"])
    pooled = payload["summary"]["groups"]["pooled"]
    assert pooled["sgd"]["vs_sgd"]["ties"] == TINY.held_out and pooled["sgd"]["vs_sgd"]["mean"] == 0
    assert pooled["learned:default"]["meta_seconds"] > 0 and pooled["untrained_rule"]["meta_seconds"] == 0
    assert set(payload["decision"]["checks"]) == {"lr1e-2"}
    path = write_json(payload, tmp_path / "learned_sweep.json")
    text = S.report(json.loads(path.read_text()))
    assert text.startswith("# Learned optimizer sweep")
    for needle in ("## cost", "## all runs", "learned `lr1e-2`", "## What meta-training did", "## Decision rule"):
        assert needle in text
    assert "learned_sweep" in SWEEP_SCRIPTS
    assert render(path)["md"].read_text() == text


def test_paired_statistics_by_hand() -> None:
    def runs(sgd: list[float], other: list[float]) -> list[dict]:
        return [{"task": j, "method": m, "test_cost": c} for j, (a, b) in enumerate(zip(sgd, other))
                for m, c in (("sgd", a), ("x", b))]

    cells = [{"runs": runs([0.5, 0.5, 0.5], [0.4, 0.5, 0.7])}, {"runs": runs([1.0, 1.0], [0.9, 0.9])}]
    p = S._paired(cells, "x", "sgd", "test_cost")
    diffs = [-0.1, 0.0, 0.2, -0.1, -0.1]
    assert (p["wins"], p["ties"], p["losses"], p["n"], p["cells"]) == (3, 1, 1, 5, 2)
    assert p["mean"] == pytest.approx(np.mean(diffs))
    cell_means = [np.mean(diffs[:3]), np.mean(diffs[3:])]
    assert p["se"] == pytest.approx(np.std(cell_means, ddof=1) / np.sqrt(2))


def test_reported_seeds_are_refused() -> None:
    with pytest.raises(ValueError, match="reported seeds"):
        S.run_cell(_split(), 2, None, "synthetic", "cost", 3, variants=VARIANTS, budget=TINY)
    with pytest.raises(SystemExit):
        S.main(["--seeds", "0", "--no-write"])
