"""The threshold-guard sweep (benchmarks.threshold_guard): its decisions match the library's, its rule, its report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import threshold_guard as G

pytestmark = pytest.mark.usefixtures("one_thread")


def test_each_candidate_keeps_what_the_library_would_keep() -> None:
    import torch

    from benchmarks.suites.blackbox_tasks import load_data, pretrain
    from metricopt.blackbox import make_metric
    from metricopt.blackbox.threshold import ShiftedLogit, tune_threshold

    rows = G.run_job("wdbc", 10, epochs=3, resamples=20)
    assert [r["metric"] for r in rows] == list(G.METRICS)
    split, _ = load_data("collection:wdbc", 10)
    torch.manual_seed(0)
    backbone = pretrain(split, 2, "mlp", epochs=3, seed=10)
    for row in rows:
        metric = make_metric(row["metric"], num_classes=2)
        for q in G.CANDIDATES:
            result = tune_threshold(backbone, metric, split.X_val, split.y_val, min_confidence=q, resamples=20)
            test = metric.cost(metric.evaluate(ShiftedLogit(backbone, result.shift), split.X_test, split.y_test))
            assert row["test"][str(q)] == pytest.approx(test), (row["metric"], q)


def _row(table: str, metric: str, untuned: float, by_q: dict[float, float]) -> dict:
    return {"table": table, "seed": 10, "metric": metric, "untuned_test": untuned, "best_shift": -1.0,
            "confidence": 0.8, "test_rows": 100, "test": {str(q): by_q.get(q, untuned) for q in G.CANDIDATES}}


def test_the_rule_prefers_fewer_losses_among_the_near_best_means() -> None:
    # q = 0 has the lowest mean, but q = 0.9 is within 0.01 of it and worse than untuned in fewer cells
    rows = [_row("a", "mcr", 1.0, {0.0: 0.50, 0.7: 0.50, 0.8: 0.50, 0.9: 0.50, 0.95: 0.9}),
            _row("b", "mcr", 1.0, {0.0: 1.05, 0.7: 1.05, 0.8: 1.05, 0.9: 1.0, 0.95: 1.0}),
            _row("c", "mcr", 1.0, {0.0: 0.90, 0.7: 0.90, 0.8: 0.95, 0.9: 0.97, 0.95: 1.0})]
    summary = G.summarise(rows)
    assert summary["per_q"]["0.0"]["worse"] == 1 and summary["per_q"]["0.9"]["worse"] == 0
    assert summary["near_lowest"] == [0.0, 0.7, 0.9] and summary["chosen"] == 0.9  # 0.8: mean 0.833 > 0.817 + 0.01
    # a far better mean wins even with a loss
    rows[0]["test"]["0.0"] = rows[0]["test"]["0.7"] = 0.2
    assert G.summarise(rows)["chosen"] == 0.0


def test_main_writes_json_and_markdown_that_render_again(tmp_path: Path, monkeypatch) -> None:
    from benchmarks import main

    monkeypatch.setattr(G, "EPOCHS", 2)
    monkeypatch.setattr(G, "RESAMPLES", 10)
    assert G.main(["--tables", "wdbc", "--seeds", "10", "--output-dir", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "threshold_guard.json").read_text())
    text = (tmp_path / "threshold_guard.md").read_text()
    assert "Rule, fixed before the run" in text and "(chosen)" in text and len(payload["rows"]) == 2
    assert main(["render", str(tmp_path / "threshold_guard.json"), "--output-dir", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "threshold_guard.md").read_text() == text
    with pytest.raises(SystemExit):
        G.main(["--seeds", "0", "--output-dir", str(tmp_path)])
