"""The AP suite of the benchmark harness: rank metrics, the RaMBO and LibAUC AP methods, ``ap_quality``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score as sk_average_precision
from sklearn.metrics import roc_auc_score as sk_roc_auc

from benchmarks import main
from benchmarks.cli import run_named
from benchmarks.harness.methods import METHODS, resolve_methods
from benchmarks.harness.specs import QualitySpec, get_suite
from benchmarks.peers import classification as peers
from benchmarks.suites.quality import run_task
from metricopt.app.data import load_dataset, train_val_test_split
from metricopt.evaluation import THRESHOLD_FREE_METRICS, rank_score, report, tune_threshold


def _need_libauc() -> None:
    if peers.load_peer("libauc") is None:
        pytest.skip(peers.peer_status("libauc"))


# ---------------------------------------------------------------------------
# rank metrics in evaluation.report


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_report_of_rank_metrics_equals_scikit_learn_ties_included(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = (rng.random(200) < 0.1).astype(int)
    y[:2] = [0, 1]
    probs = np.round(np.clip(0.3 * y + rng.random(200) * 0.7, 0, 1), 1)  # rounding makes many ties
    got = report(y, probs, num_classes=2, metrics=("ap", "auroc", "f1"))
    assert got["ap"] == pytest.approx(sk_average_precision(y, probs), abs=1e-12)
    assert got["auroc"] == pytest.approx(sk_roc_auc(y, probs), abs=1e-12)
    assert got["f1"] == report(y, probs, num_classes=2, metrics=("f1",))["f1"]


def test_rank_metrics_ignore_the_threshold_and_cannot_be_tuned() -> None:
    y, probs = np.array([0, 1, 1, 0, 1]), np.array([0.2, 0.7, 0.4, 0.6, 0.9])
    assert report(y, probs, num_classes=2, metrics=THRESHOLD_FREE_METRICS, threshold=0.05) == report(
        y, probs, num_classes=2, metrics=THRESHOLD_FREE_METRICS, threshold=0.95)
    for metric in THRESHOLD_FREE_METRICS:
        with pytest.raises(ValueError, match="rank metric"):
            tune_threshold(y, probs, metric)
    with pytest.raises(ValueError, match="metric"):
        rank_score(y, probs, "f1")


def test_multiclass_rank_metrics_are_macro_one_vs_rest() -> None:
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    probs = rng.dirichlet(np.ones(3), size=60)
    onehot = np.eye(3)[y]
    got = report(y, probs, num_classes=3, metrics=("ap", "auroc"))
    assert got["ap"] == pytest.approx(sk_average_precision(onehot, probs, average="macro"))
    assert got["auroc"] == pytest.approx(sk_roc_auc(y, probs, multi_class="ovr", average="macro"))


# ---------------------------------------------------------------------------
# methods and specs


def test_ap_suite_is_named_and_reachable_from_the_cli(tmp_path: Path) -> None:
    full, smoke = get_suite("ap_quality"), get_suite("ap_quality", smoke=True)
    from metricopt.app.data.collection import report_tables

    assert full.binary_datasets == tuple(f"collection:{t.name}" for t in report_tables())
    assert full.multiclass_datasets == ()
    assert len(full.binary_datasets) >= 100
    assert full.metrics == ("ap", "auroc") and full.reference == "rambo_ap_oversampled"
    assert {"rambo_ap", "rambo_ap_oversampled", "bce", "bce_oversampled", "libauc_ap", "libauc_ap_own"} <= set(
        full.methods)
    assert smoke.binary_datasets == ("breast_cancer",) and smoke.seeds == (0,) and smoke.epochs == 3
    assert smoke.methods == full.methods and smoke.metrics == full.metrics
    for name in ("rambo_ap", "rambo_auroc", "libauc_ap", "libauc_ap_own", "rambo_ap_oversampled"):
        assert METHODS[name].tasks == ("binary",) and METHODS[name].tune
    assert METHODS["libauc_ap"].indexed_targets and not METHODS["rambo_ap"].indexed_targets
    assert METHODS["libauc_ap_own"].libauc_protocol and METHODS["rambo_ap_oversampled"].batching == "oversampled"
    assert METHODS["rambo_ap"].label == "APLoss (RaMBO)"
    argv = ["ap_quality", "--smoke", "--epochs", "1", "--quiet", "--no-plots", "--output-dir", str(tmp_path)]
    assert main(argv) == 0
    payload = json.loads((tmp_path / "ap_quality_smoke.json").read_text())
    assert payload["spec"]["epochs"] == 1 and payload["reference"] == "rambo_ap_oversampled"


# ---------------------------------------------------------------------------
# the harness


def test_ap_quality_smoke_writes_json_markdown_and_plots(tmp_path: Path) -> None:
    spec = get_suite("ap_quality", smoke=True)
    paths = run_named(spec, output_dir=tmp_path, progress=False, command=["ap_quality", "--smoke"])
    for key in ("json", "md", "png", "png_per_dataset"):
        assert paths[key].exists()
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    payload = json.loads(paths["json"].read_text())
    records = payload["records"]
    ran = set(spec.methods) - set(payload["unavailable"])
    assert {"rambo_ap", "bce", "rambo_ap_oversampled", "bce_oversampled"} <= ran  # LibAUC's: where installed
    assert {r["method"] for r in records} == ran
    assert {r["metric"] for r in records} == {"ap", "auroc"}
    for r in records:
        assert r["threshold"] is None  # tuned methods too: a rank metric has no threshold
        assert 0.0 <= r["test"] <= 1.0 and 0.0 <= r["val"] <= 1.0 and 1 <= r["epoch"] <= spec.epochs
    text = paths["md"].read_text()
    assert "| AP |" in text and "| AUROC |" in text and "APLoss (RaMBO)" in text
    assert "wins / ties / losses" in text and "LibAUC 2.0.1's `APLoss`" in text and "DualSampler" in text


def test_decision_and_rank_metrics_mix_in_one_suite() -> None:
    spec = QualitySpec(name="mix", binary_datasets=("breast_cancer",), multiclass_datasets=(),
                       methods=("bce", "bce_tuned", "rambo_ap"), metrics=("f1", "ap"), seeds=(0,), epochs=2,
                       reference="rambo_ap")
    out = run_task(spec, "breast_cancer", 0, resolve_methods(spec.methods))
    by_key = {(r["method"], r["metric"]): r for r in out["records"]}
    assert set(by_key) == {(m, k) for m in spec.methods for k in spec.metrics}
    assert by_key[("bce", "f1")]["threshold"] == 0.5
    assert isinstance(by_key[("bce_tuned", "f1")]["threshold"], float)
    assert isinstance(by_key[("rambo_ap", "f1")]["threshold"], float)
    assert all(by_key[(m, "ap")]["threshold"] is None for m in spec.methods)
    # BCE and BCE tuned are one network: the same scores, hence the same AP
    assert by_key[("bce", "ap")]["test"] == by_key[("bce_tuned", "ap")]["test"]


# ---------------------------------------------------------------------------
# LibAUC's SOAP APLoss: per-sample indices


def test_soap_criterion_passes_row_indices_to_libauc() -> None:
    _need_libauc()
    criterion = peers.make_soap(10)
    logits = torch.tensor([0.5, -0.2, 1.0, 0.1], requires_grad=True)
    target = torch.tensor([[1, 5], [0, 7], [1, 9], [0, 2]])
    loss = criterion(logits, target)
    loss.backward()
    assert logits.grad is not None and bool(torch.isfinite(logits.grad).all())
    # LibAUC's moving averages are kept for the positive samples only, at their row indices
    u_all = criterion.loss.u_all.reshape(-1)
    assert set(torch.nonzero(u_all).flatten().tolist()) == {5, 9}
    # a batch without a positive (LibAUC asserts) is a zero loss with zero gradient
    logits = torch.tensor([0.5, -0.2], requires_grad=True)
    loss = criterion(logits, torch.tensor([[0, 1], [0, 3]]))
    loss.backward()
    assert float(loss.detach()) == 0.0 and float(logits.grad.abs().sum()) == 0.0
    with pytest.raises(ValueError, match="target"):
        criterion(logits, torch.tensor([0, 1]))


def test_libauc_ap_method_gets_the_training_row_index_of_every_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    _need_libauc()
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    sizes: list[int] = []
    real_make = peers.make_soap

    def spying_make(data_len: int, **kwargs):
        criterion = real_make(data_len, **kwargs)
        inner = criterion.loss
        sizes.append(data_len)

        class Spy(torch.nn.Module):
            def forward(self, y_pred, y_true, index):
                calls.append((y_true.reshape(-1).clone(), index.clone()))
                return inner(y_pred, y_true, index)

        criterion.loss = Spy()
        return criterion

    monkeypatch.setattr(peers, "make_soap", spying_make)
    spec = QualitySpec(name="spy", binary_datasets=("breast_cancer",), multiclass_datasets=(),
                       methods=("libauc_ap",), metrics=("ap",), seeds=(0,), epochs=2, batch_size=64)
    out = run_task(spec, "breast_cancer", 0, resolve_methods(spec.methods))
    ds = load_dataset("breast_cancer")
    split = train_val_test_split(ds.X, ds.y, test_size=spec.test_size, val_size=spec.val_size, random_state=0)
    n = len(split.y_train)
    assert sizes == [n]
    per_epoch = math.ceil(n / spec.batch_size)
    assert len(calls) == spec.epochs * per_epoch  # every batch of breast_cancer holds a positive
    for labels, index in calls:
        assert index.dtype == torch.long and np.array_equal(labels.numpy(), split.y_train[index.numpy()])
    for epoch in range(spec.epochs):
        seen = torch.cat([index for _, index in calls[epoch * per_epoch:(epoch + 1) * per_epoch]])
        assert sorted(seen.tolist()) == list(range(n))  # each training row once per epoch, by its own index
    assert [r["threshold"] for r in out["records"]] == [None]
