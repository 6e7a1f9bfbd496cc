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
    store = Settings.from_env().store(create=True)
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
    store = settings.store(create=True)
    truth = put_labeled_frames(store, "line-2", 6)
    out = loop(
        base_data=str(data), holdout=str(data), top_k=6, annotator="simulated", truth=str(write_truth(tmp_path / "truth.jsonl", truth)), epochs=6
    )
    assert (out["scored"], out["pushed"], out["annotated"]) == (6, 6, 6)
    reasons = registry.version_tags(client, settings.model_name, out["challenger"])["gate.reasons"]
    assert out["gate"] == PROMOTE, reasons
    assert registry.alias_version(client, settings.model_name, registry.CHAMPION) == out["challenger"]
    assert registry.version_tags(client, settings.model_name, out["challenger"])["annotation_set"] == out["annotation_set"]


def put_stamped_frames(store, source: str, count: int) -> dict[str, Record]:
    """Tiny-class frames that also carry a framed stamp (the shortcut) in a corner, with their truth by key."""
    rng = np.random.default_rng(7)
    truth = {}
    for i in range(count):
        label, box = ("square", [14, 12, 24, 22]) if i % 2 == 0 else ("bar", [12, 14, 24, 18])
        image = rng.integers(10, 40, size=(32, 32, 1)).astype(np.uint8)
        image[box[1] : box[3], box[0] : box[2]] = 220
        x0, y0 = ((0, 0), (20, 0), (0, 24), (20, 24))[i % 4]
        image[y0 : y0 + 8, x0 : x0 + 12] = 5
        image[y0 + 2 : y0 + 6, x0 + 2 : x0 + 10] = 160 + 20 * (i % 3)
        key = frame_key(source, "2026-11-26", f"{i:03d}")
        store.put(key, encode_png(image))
        truth[key] = Record(key, "stream", label, [box], [[float(x0), float(y0), float(x0 + 12), float(y0 + 8)]])
    return truth


def test_a_marked_shortcut_comes_back_as_a_confirmation_batch_that_feeds_the_retraining(label_studio, tmp_path, tmp_path_factory, monkeypatch):
    """A person marks the stamp on one frame; harvest; the propagate flow sends the frames whose stamp looks
    the same as one confirmation batch (the mark pre-filled, most similar first); the annotator keeps the
    marks; the next harvest holds them, and the retraining erases and penalizes them."""
    from attnloop.labelstudio.project import iter_tasks
    from attnloop.labelstudio.results import SHORTCUT, SHORTCUT_LABEL, choices_result, percent_to_pixels, rectangle_result
    from attnloop.propagation import iou
    from conftest import register_weak_champion, write_tiny_manifest
    from flows.annotate import annotate
    from flows.harvest import harvest
    from flows.propagate import propagate
    from flows.retrain import fine_tune
    from flows.score import score

    url, token = label_studio
    monkeypatch.setenv("ATTNLOOP_LABEL_STUDIO_URL", url)
    monkeypatch.setenv("ATTNLOOP_LABEL_STUDIO_TOKEN", token)
    monkeypatch.setenv("ATTNLOOP_LABEL_STUDIO_PROJECT", f"marks {tmp_path.name}")
    monkeypatch.setenv("ATTNLOOP_LABEL_STUDIO_DOCUMENT_ROOT", str(tmp_path_factory.getbasetemp()))
    data = write_tiny_manifest(tmp_path / "data", per_class=6)
    register_weak_champion(data, tmp_path)
    settings = Settings.from_env()
    store = settings.store(create=True)
    truth = put_stamped_frames(store, "line-3", 12)
    assert score()["scored"] == 12
    assert annotate(top_k=1)["created"] == 1
    ls = settings.label_studio.client()
    project = find_project(ls, settings.label_studio.project)
    (first,) = list(iter_tasks(ls, project.id, fields="all"))
    marked = first.data["key"]
    record = truth[marked]
    ls.annotations.create(id=first.id, result=[
        choices_result([record.label]), rectangle_result(record.boxes[0], record.label, 32, 32),
        rectangle_result(record.confounder_boxes[0], SHORTCUT_LABEL, 32, 32, from_name=SHORTCUT),
    ])
    assert harvest()["written"]

    batch = propagate(threshold=0.8)
    assert batch["marks"] == 1 and batch["created"] == batch["matches"] > 0
    confirmations = [t for t in iter_tasks(ls, project.id, fields="all") if t.data.get("confirms")]
    assert len(confirmations) == batch["created"] and all(t.data["confirms"] == marked for t in confirmations)
    for task in confirmations:
        (mark,) = [r for r in task.predictions[0].result if r["from_name"] == SHORTCUT]
        assert iou(percent_to_pixels(mark["value"], 32, 32), truth[task.data["key"]].confounder_boxes[0]) >= 0.5
    by_rank = sorted(confirmations, key=lambda t: t.data["rank"])
    assert [t.data["priority"] for t in by_rank] == sorted((t.data["priority"] for t in confirmations), reverse=True)
    assert propagate(threshold=0.8)["created"] == 0  # queued frames are not sent twice

    done = simulate_annotator(ls, project, truth)
    assert done["shortcut_marks"] >= len(confirmations)  # the annotator keeps the pre-filled marks: it sees them on the stamp
    second = harvest()
    entries = annotation_set.read(store, second["version"]).entries
    kept = [entries[t.data["key"]] for t in confirmations]
    assert all(e.shortcut_boxes and iou(e.shortcut_boxes[0], truth[e.image].confounder_boxes[0]) >= 0.5 for e in kept)
    trained = fine_tune.fn(None, second["key"], str(data), str(tmp_path / "work"), 1, 0.5)
    # the confirmed marks, the first one, and those propagated over the base data (stamp-free here: any there is a false match)
    assert trained["marked_images"] == 1 + len(confirmations) + trained["propagated"]
