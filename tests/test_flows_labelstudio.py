"""score → annotate → (simulated annotator) → harvest on Prefect's engine, against a real Label Studio."""

import numpy as np
import pytest
from prefect.testing.utilities import prefect_test_harness

from attnloop import annotation_set
from attnloop.config import Settings
from attnloop.datasets import Record
from attnloop.imaging import encode_png
from attnloop.labelstudio import find_project, simulate_annotator
from attnloop.layout import frame_key

pytestmark = pytest.mark.services


def put_labeled_frames(store, source: str, count: int) -> dict[str, Record]:
    """Frames of the tiny classes (a bright square or bar) in the store, with their truth by key."""
    truth = {}
    for i in range(count):
        label, box = ("square", [4, 4, 14, 14]) if i % 2 == 0 else ("bar", [6, 10, 18, 14])
        image = np.full((32, 32, 1), 20, np.uint8)
        image[box[1] : box[3], box[0] : box[2]] = 220
        key = frame_key(source, "2026-11-26", f"{i:03d}")
        store.put(key, encode_png(image))
        truth[key] = Record(key, "stream", label, [box], [])
    return truth


@pytest.fixture(scope="module", autouse=True)
def prefect_server():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_annotate_and_harvest_flows(label_studio, tiny_data, tmp_path, tmp_path_factory, monkeypatch):
    from attnloop.export import export_onnx
    from attnloop.training import ORIGINAL_ABN, TrainConfig, train
    from flows.annotate import annotate
    from flows.harvest import harvest
    from flows.score import score

    url, token = label_studio
    monkeypatch.setenv("ATTNLOOP_LABEL_STUDIO_URL", url)
    monkeypatch.setenv("ATTNLOOP_LABEL_STUDIO_TOKEN", token)
    monkeypatch.setenv("ATTNLOOP_LABEL_STUDIO_PROJECT", f"flows {tmp_path.name}")
    monkeypatch.setenv("ATTNLOOP_LABEL_STUDIO_DOCUMENT_ROOT", str(tmp_path_factory.getbasetemp()))  # the session server's root
    result = train(tiny_data, TrainConfig(epochs=1, guidance="none", **ORIGINAL_ABN), progress=False)
    model = str(export_onnx(result.model, result.card, tmp_path / "model.onnx"))
    store = Settings.from_env().store()
    truth = put_labeled_frames(store, "line-1", 8)
    assert score(model=model)["scored"] == 8
    pushed = annotate(model=model, top_k=5)
    rest = annotate(model=model, top_k=5, ranking="hybrid")  # the next best frames not queued yet: the 3 left
    assert (pushed["created"], rest["created"], annotate(model=model, top_k=5)["created"]) == (5, 3, 0)  # never twice
    ls_settings = Settings.from_env().label_studio
    ls = ls_settings.client()
    project = find_project(ls, ls_settings.project)
    images = [t.data["image"] for t in ls.tasks.list(project=project.id, fields="all")]
    assert len(images) == 8 and all(i.startswith("/data/local-files/?d=") for i in images)  # the local store, served by Label Studio
    assert simulate_annotator(ls, project, truth)["annotated"] == 8
    harvested = harvest()
    assert harvested["written"] and harvested["added"] == 8 and harvested["problems"] == 0
    entries = annotation_set.read(store, harvested["version"]).entries
    for key, entry in entries.items():
        assert entry.label == truth[key].label
        assert np.abs(np.subtract(entry.boxes[0], truth[key].boxes[0])).max() <= 1.0
    assert harvest()["written"] is False  # nothing new


def test_one_turn_of_the_loop_promotes_a_better_model(label_studio, tmp_path, tmp_path_factory, monkeypatch):
    """A weak champion; frames whose truth the simulated annotator knows; the loop scores, pushes,
    annotates, harvests, fine-tunes, and the gate promotes the new version."""
    from attnloop import registry
    from attnloop.gate import PROMOTE
    from attnloop.labelstudio import write_truth
    from conftest import register_weak_champion, write_tiny_manifest
    from flows.loop import loop

    url, token = label_studio
    monkeypatch.setenv("ATTNLOOP_LABEL_STUDIO_URL", url)
    monkeypatch.setenv("ATTNLOOP_LABEL_STUDIO_TOKEN", token)
    monkeypatch.setenv("ATTNLOOP_LABEL_STUDIO_PROJECT", f"loop {tmp_path.name}")
    monkeypatch.setenv("ATTNLOOP_LABEL_STUDIO_DOCUMENT_ROOT", str(tmp_path_factory.getbasetemp()))
    monkeypatch.setenv("ATTNLOOP_GATE_MIN_ACCURACY", "0")
    # the weak champion answers "square" to everything (square 1.00, bar 0.00); the gate's class rule
    # would refuse any model that gives up a little of that, which is not what this test is about
    monkeypatch.setenv("ATTNLOOP_GATE_MAX_CLASS_DROP", "1.0")
    data = write_tiny_manifest(tmp_path / "data", per_class=20)
    settings = Settings.from_env()
    client = registry.connect(settings.registry_uri)
    register_weak_champion(data, tmp_path)
    store = settings.store()
    truth = put_labeled_frames(store, "line-2", 6)
    out = loop(
        base_data=str(data), holdout=str(data), top_k=6, annotator="simulated", truth=str(write_truth(tmp_path / "truth.jsonl", truth)), epochs=6
    )
    assert (out["scored"], out["pushed"], out["annotated"]) == (6, 6, 6)
    reasons = registry.version_tags(client, settings.model_name, out["challenger"])["gate.reasons"]
    assert out["gate"] == PROMOTE, reasons
    assert registry.alias_version(client, settings.model_name, registry.CHAMPION) == out["challenger"]
    assert registry.version_tags(client, settings.model_name, out["challenger"])["annotation_set"] == out["annotation_set"]
