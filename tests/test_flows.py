"""The flows on Prefect's real engine (a temporary server from ``prefect_test_harness``)."""

import numpy as np
import pytest
from prefect.testing.utilities import prefect_test_harness

from attnloop import annotation_set, registry
from attnloop.annotation_set import Entry
from attnloop.config import Settings
from attnloop.gate import PROMOTE
from attnloop.imaging import encode_png
from attnloop.layout import frame_key
from conftest import write_tiny_manifest


@pytest.fixture(scope="module", autouse=True)
def prefect_server():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_score_flow_scores_each_frame_once(tiny_data, tmp_path):
    from attnloop.export import export_onnx
    from attnloop.training import ORIGINAL_ABN, TrainConfig, train
    from flows.score import score

    result = train(tiny_data, TrainConfig(epochs=1, guidance="none", **ORIGINAL_ABN), progress=False)
    model = export_onnx(result.model, result.card, tmp_path / "m.onnx")
    store = Settings.from_env().store(create=True)
    for i in range(6):
        store.put(frame_key("line-1", "2026-11-26", f"{i:03d}"), encode_png(np.full((32, 32, 1), 30 * i, np.uint8)))
    first = score(model=str(model))
    again = score(model=str(model))
    assert (first["scored"], again["scored"], again["already_done"]) == (6, 0, 6)


def test_one_scoring_run_at_a_time(tiny_data, tmp_path):
    """While another run (a backlog, say) holds the scoring slot, a scheduled score skips its turn and
    a loop's score waits for the slot; nothing is scored twice."""
    import threading

    from prefect.concurrency.sync import concurrency

    from attnloop.export import export_onnx
    from attnloop.training import ORIGINAL_ABN, TrainConfig, train
    from flows import scoring_slot
    from flows.score import score

    result = train(tiny_data, TrainConfig(epochs=1, guidance="none", **ORIGINAL_ABN), progress=False)
    model = str(export_onnx(result.model, result.card, tmp_path / "m.onnx"))
    store = Settings.from_env().store(create=True)
    for i in range(4):
        store.put(frame_key("line-9", "2026-11-26", f"{i:03d}"), encode_png(np.full((32, 32, 1), 40 * i, np.uint8)))
    scoring_slot.ensure_limit()
    scoring_slot.ensure_limit()  # idempotent
    held, released = threading.Event(), threading.Event()

    def other_run():
        with concurrency(scoring_slot.LIMIT, occupy=1, strict=True):
            held.set()
            threading.Event().wait(3)
            released.set()

    other = threading.Thread(target=other_run)
    other.start()
    assert held.wait(30)
    skipped = score(model=model, source="line-9", wait_for_slot=0.5)
    assert skipped["skipped"] is True and skipped["scored"] == 0
    waited = score(model=model, source="line-9", wait_for_slot=None)
    assert released.is_set() and waited["scored"] == 4
    other.join()
    assert score(model=model, source="line-9")["already_done"] == 4


def test_retrain_then_promote(tmp_path, monkeypatch):
    """A weak champion; the retrain flow fine-tunes it on an annotation set plus the base data and
    registers a challenger; the promote flow's gate promotes it, and the version records why."""
    from attnloop.publish import register_run
    from attnloop.training import ORIGINAL_ABN, TrainConfig, save_run, train
    from flows.promote import promote
    from flows.retrain import retrain

    monkeypatch.setenv("ATTNLOOP_GATE_MIN_ACCURACY", "0")
    data = write_tiny_manifest(tmp_path / "data", per_class=20)
    settings = Settings.from_env()
    client = registry.connect(settings.registry_uri)
    weak = train(data, TrainConfig(epochs=1, lr=1e-6, guidance="none", **ORIGINAL_ABN), progress=False)
    first = register_run(client, name=settings.model_name, run_dir=save_run(tmp_path / "weak", weak, TrainConfig(), data="tiny"), artifact_root=settings.artifact_root)
    assert promote(holdout=str(data))["action"] == PROMOTE
    store = settings.store(create=True)
    entries = {}
    for i, label in enumerate(["square", "bar"] * 3):
        key = frame_key("line-1", "2026-11-26", f"{i:03d}")
        image = np.zeros((32, 32, 1), np.uint8)
        box = [4, 4, 14, 14] if label == "square" else [4, 4, 16, 8]
        image[box[1] : box[3], box[0] : box[2]] = 220
        store.put(key, encode_png(image))
        entries[key] = Entry(key, [box], label)
    annotation_set.write(store, entries, version=1, parent=None)  # what `attnloop ls harvest` writes
    version = retrain(base_data=str(data), holdout=str(data), epochs=6)
    tags = registry.version_tags(client, settings.model_name, version)
    assert tags["parent_version"] == first and tags["annotation_set"] == "annotations/v0001.jsonl"
    # the challenger's MLflow run names the data and the set it was trained on, and shows its attention on that data
    run = client.get_run(client.get_model_version(settings.model_name, version).run_id)
    assert run.data.params["data.boxes"] == "annotations/v0001.jsonl" and run.data.params["data.data"]
    assert {a.path for a in client.list_artifacts(run.info.run_id, "figures")} >= {"figures/attention_test.png", "figures/confusion_test.png"}
    assert registry.alias_version(client, settings.model_name, registry.CHALLENGER) == version
    outcome = promote(holdout=str(data))
    assert outcome == {"action": PROMOTE, "version": version, "reasons": []}
    assert registry.alias_version(client, settings.model_name, registry.CHAMPION) == version
    # the new champion's drift reference: its holdout scored once, stored with its version
    from attnloop.holdout import load_holdout
    from attnloop.monitoring import reference

    ref = reference.read(store, version)
    assert ref is not None and ref.meta["holdout"] == load_holdout(data).digest and len(ref.classes) == len(load_holdout(data).records)
    assert reference.read(store, first) is not None and ref.embeddings.shape[0] == len(ref.classes)
