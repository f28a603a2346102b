"""Tests for the rank-loss speed and memory benchmark (benchmarks.suites.rank_speed)."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest
import torch

from benchmarks import main
from benchmarks.cli import render
from benchmarks.harness.specs import RankSpeedSpec, get_suite
from benchmarks.harness.timing import interleaved_times
from benchmarks.suites import rank_speed
from benchmarks.suites.rank_speed import (
    RankLossEntry,
    goal_checks,
    loglog_slope,
    measure_peak_memory,
    run_rank_speed,
)

MIB = 2**20


# ---------------------------------------------------------------------------
# the memory probe


def _ones(mib: int):
    def call() -> float:
        return float(torch.ones(mib * MIB // 4)[-1])

    return call


def test_memory_probe_reads_a_known_allocation() -> None:
    result = measure_peak_memory(_ones(200))
    assert result["ok"], result
    assert 195 <= result["extra_bytes"] / MIB <= 210
    small = measure_peak_memory(_ones(1))
    assert small["extra_bytes"] / MIB < 2  # the warm-up call removes the 2-8 MiB floor of a first call


def test_memory_probe_does_not_count_untouched_memory_and_sees_the_harness_objects() -> None:
    block = torch.ones(50 * MIB // 4)  # made before the probe: shared with the child, not counted
    result = measure_peak_memory(lambda: (block.sum(), torch.empty(100 * MIB // 4)))
    assert result["ok"], result
    assert result["extra_bytes"] / MIB < 10


def test_memory_probe_caps_the_child_and_times_it_out() -> None:
    capped = measure_peak_memory(_ones(400), limit_bytes=64 * MIB)
    assert not capped["ok"] and capped["memory"], capped
    slow = measure_peak_memory(lambda: time.sleep(30), timeout_s=0.5)
    assert not slow["ok"] and slow["timeout"]
    failing = measure_peak_memory(lambda: 1 / 0)
    assert not failing["ok"] and not failing["memory"] and "ZeroDivisionError" in failing["error"]


# ---------------------------------------------------------------------------
# timing helper and summaries


def _counting_timers(calls: dict[str, int]):
    """``timer(name, seconds)``: a fake timed call that counts its calls in ``calls[name]`` and reports ``seconds``."""

    def timer(name: str, seconds: float):
        def run() -> float:
            calls[name] += 1
            return seconds

        return run

    return timer


def test_interleaved_times_drops_a_slow_timer_after_its_budget() -> None:
    calls = {"fast": 0, "slow": 0}
    timer = _counting_timers(calls)
    times = interleaved_times({"fast": timer("fast", 0.001), "slow": timer("slow", 1.0)},
                              repeats=10, warmup=3, max_seconds=2.0, min_repeats=2)
    assert len(times["fast"]) == 10
    assert len(times["slow"]) == 2  # two repeats reach the 2 s budget
    assert calls["slow"] == 2 + 1  # warm-up stops after the first call (over a quarter of the budget)
    plain = interleaved_times({"a": timer("fast", 0.5)}, repeats=4, warmup=2)
    assert len(plain["a"]) == 4


def test_interleaved_times_settles_fast_timers_with_an_untimed_call() -> None:
    calls = {"fast": 0, "slow": 0}
    timer = _counting_timers(calls)
    times = interleaved_times({"fast": timer("fast", 0.01), "slow": timer("slow", 2.0)},
                              repeats=5, warmup=1, settle_below_s=1.0)
    assert len(times["fast"]) == len(times["slow"]) == 5
    assert calls["fast"] == 1 + 2 * 5  # an untimed call before each timed one
    assert calls["slow"] == 1 + 5


def test_loglog_slope() -> None:
    assert loglog_slope({1: 1.0, 10: 10.0, 100: 100.0}) == pytest.approx(1.0)
    assert loglog_slope({1: 1.0, 4: 16.0}) == pytest.approx(2.0)
    assert loglog_slope({1: 1.0}) is None


def _payload(libauc: float | None, torchsort: float, ours: float, slope_points: dict[int, float],
             recall: float | None = 1.2, row_sort: float = 1.0) -> dict:
    spec = {"goal_size": 4096, "goal_speedup": 30.0, "goal_torchsort_ratio": 2.0, "slope_range": [65536, 1048576],
            "linear_slope_max": 1.15, "retrieval_goal_size": 4096, "goal_sort_ratio": 1.5}

    def row(medians: dict[int, float | None]) -> dict:
        return {"median_ms": {str(n): v for n, v in medians.items() if v is not None},
                "peak_mib": {str(n): v for n, v in medians.items() if v is not None},
                "status": {str(n): "ok" if v is not None else "skipped: too slow at N=4096 (x)"
                           for n, v in medians.items()}}

    losses = {"rambo_ap": row({4096: ours, **slope_points}), "torchsort_ap": row({4096: torchsort}),
              "libauc_ap": row({4096: libauc})}
    retrieval = {"rambo_recall": row({4096: recall}), "row_sort": row({4096: row_sort})}
    return {"spec": spec, "parts": {"ranking": {"losses": losses, "unavailable": {}},
                                    "retrieval": {"losses": retrieval, "unavailable": {}}}}


def test_goal_checks_met_missed_and_not_measured() -> None:
    linear = {65536: 10.0, 262144: 40.0, 1048576: 160.0}
    goals = goal_checks(_payload(libauc=100.0, torchsort=1.0, ours=1.5, slope_points=linear))
    assert [g["verdict"] for g in goals] == ["met"] * 5
    assert goals[0]["measured"] == pytest.approx(100 / 1.5)
    assert goals[2]["measured"] == pytest.approx(1.2) and "row-wise sort" in goals[2]["goal"]
    quadratic = {65536: 10.0, 262144: 160.0, 1048576: 2560.0}
    goals = goal_checks(_payload(libauc=20.0, torchsort=0.5, ours=1.5, slope_points=quadratic, recall=1.6))
    assert [g["verdict"] for g in goals] == ["missed"] * 5
    goals = goal_checks(_payload(libauc=None, torchsort=1.0, ours=1.5, slope_points={65536: 1.0}, recall=None))
    assert goals[0]["verdict"] == "not measured" and "too slow" in goals[0]["detail"]
    assert goals[2]["verdict"] == "not measured" and "rambo_recall" in goals[2]["detail"]
    assert goals[3]["verdict"] == "not measured"


# ---------------------------------------------------------------------------
# skip logic


def _sleeper(per_item: float, jump_at: int | None = None):
    def factory(n: int):
        delay = per_item * n if jump_at is None else (0.001 if n < jump_at else 0.08)

        def loss(x, y):
            time.sleep(delay)
            return x.sum()

        return loss

    return factory


def _allocator(bytes_per_item: int | None = None, fixed_mib: int | None = None):
    def factory(n: int):
        count = (fixed_mib * MIB if fixed_mib else bytes_per_item * n) // 4

        def loss(x, y):
            return x.sum() + torch.ones(count)[-1]

        return loss

    return factory


def _failing(n: int):
    def loss(x, y):
        raise ValueError("broken loss")

    return loss


@pytest.fixture
def fake_losses(monkeypatch: pytest.MonkeyPatch) -> None:
    fakes = {
        "fake_slow": RankLossEntry("slow", _sleeper(1e-4), 1.0, 1.0),
        "fake_jump": RankLossEntry("jump", _sleeper(0, jump_at=1024), 1.0, 1.0),
        "fake_memory": RankLossEntry("memory", _allocator(bytes_per_item=16 * 1024), 1.0, 2.0),
        "fake_cap": RankLossEntry("cap", _allocator(fixed_mib=200), 1.0, 0.0),
        "fake_error": RankLossEntry("error", _failing, 1.0, 1.0),
    }
    monkeypatch.setattr(rank_speed, "RANKING_LOSSES", {**rank_speed.RANKING_LOSSES, **fakes})


@pytest.mark.slow  # its time slopes need a quiet machine: the serial slow run
def test_losses_over_a_budget_are_skipped_at_larger_sizes(fake_losses: None) -> None:
    spec = RankSpeedSpec(
        name="skips", ranking_sizes=(64, 256, 1024, 4096),
        ranking_losses=("rambo_ap", "fake_slow", "fake_jump", "fake_memory", "fake_cap", "fake_error"),
        retrieval_sizes=(16,), retrieval_losses=("rambo_recall",), repeats=3, warmup=1, min_repeats=1,
        max_cell_seconds=1.0, ranking_call_budget_s=0.05, memory_budget_gib=0.05, memory_check_mib=16,
        goal_size=256, slope_range=(64, 4096), retrieval_slope_range=(16, 16),
    )
    payload = run_rank_speed(spec, progress=False)
    rows = payload["parts"]["ranking"]["losses"]
    status = {name: row["status"] for name, row in rows.items()}
    # Our loss runs everywhere.
    assert all(status["rambo_ap"][str(n)] == "ok" for n in spec.ranking_sizes)
    # Estimated too slow at 1024 (about 0.1 s per call from 25 ms at 256), never called there.
    assert status["fake_slow"]["256"] == "ok"
    assert status["fake_slow"]["1024"].startswith("skipped: too slow at N=1024 (estimated")
    assert status["fake_slow"]["4096"] == status["fake_slow"]["1024"]
    assert "1024" not in rows["fake_slow"]["median_ms"]
    # Measured over the budget at 1024 (the estimate said 4 ms): kept there, skipped above.
    assert status["fake_jump"]["1024"] == "ok" and rows["fake_jump"]["median_ms"]["1024"] > 50
    assert status["fake_jump"]["4096"].startswith("skipped: too slow at N=1024 (median")
    # Memory grows as N^2 by its declaration: estimated over 0.05 GiB at 1024.
    assert rows["fake_memory"]["peak_mib"]["256"] == pytest.approx(4, abs=2)
    assert status["fake_memory"]["1024"].startswith("skipped: too much memory at N=1024 (estimated")
    # An allocation over the cap fails in the probe's child, not in the harness.
    assert status["fake_cap"]["64"].startswith("skipped: too much memory at N=64")
    assert status["fake_cap"]["4096"] == status["fake_cap"]["64"]
    assert status["fake_error"]["64"].startswith("error at N=64: ValueError: broken loss")
    markdown = rank_speed.rank_speed_markdown(payload)
    assert "skipped (time)" in markdown and "skipped (memory)" in markdown
    slopes = payload["slopes"]["ranking"]
    assert slopes["fake_slow"]["time"] == pytest.approx(1.0, abs=0.3)


# ---------------------------------------------------------------------------
# the suite end to end


@pytest.mark.slow
def test_rank_speed_smoke_suite_end_to_end(tmp_path) -> None:
    smoke = get_suite("rank_speed", smoke=True)
    full = get_suite("rank_speed")
    assert smoke.kind == full.kind == "rank_speed"
    assert max(full.ranking_sizes) == 1048576 and max(full.retrieval_sizes) == 4096
    assert max(smoke.ranking_sizes) < max(full.ranking_sizes) and smoke.repeats < full.repeats
    with pytest.raises(dataclasses.FrozenInstanceError):
        full.name = "x"  # type: ignore[misc]
    assert main(["rank_speed", "--smoke", "--output-dir", str(tmp_path), "--quiet"]) == 0
    payload = json.loads((tmp_path / "rank_speed_smoke.json").read_text())
    assert (tmp_path / "rank_speed_smoke.png").stat().st_size > 0
    markdown = (tmp_path / "rank_speed_smoke.md").read_text()
    assert payload["kind"] == "rank_speed" and set(payload["parts"]) == {"ranking", "retrieval"}
    assert "load_average_at_start" in payload["metadata"] and "load_average_at_end" in payload["metadata"]
    assert set(payload["peers"]) == {"torchsort", "pytorch-metric-learning", "libauc", "imbalanced-losses",
                                     "blackbox-backprop"}
    validation = payload["memory_probe"]["validation"]
    assert validation["measured_mib"] == pytest.approx(validation["expected_mib"], rel=0.15)
    for part, ours in (("ranking", "rambo_ap"), ("retrieval", "rambo_recall")):
        data = payload["parts"][part]
        row = data["losses"][ours]
        for n in data["sizes"]:
            assert row["status"][str(n)] == "ok"
            assert row["p25_ms"][str(n)] <= row["median_ms"][str(n)] <= row["p75_ms"][str(n)]
            assert row["peak_mib"][str(n)] >= 0
        for name, row in data["losses"].items():
            if name not in data["unavailable"]:
                assert set(row["status"]) == {str(n) for n in data["sizes"]}, name
    assert len(payload["goals"]) == 5
    assert all(g["verdict"] in ("met", "missed", "not measured") for g in payload["goals"])
    sort_goal = next(g for g in payload["goals"] if "row-wise sort" in g["goal"])
    assert sort_goal["verdict"] in ("met", "missed") and sort_goal["measured"] > 0  # both rows ran at N=64
    assert "## Goals" in markdown and "extra peak memory" in markdown and "N=1024" in markdown
    # render re-creates the report from the JSON alone
    (tmp_path / "rank_speed_smoke.md").unlink()
    paths = render(tmp_path / "rank_speed_smoke.json", plots=False)
    assert paths["md"].read_text() == markdown
