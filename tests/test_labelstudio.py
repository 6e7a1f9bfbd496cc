"""attnloop ↔ a real Label Studio server: bootstrap, push, simulated annotation, harvest.

One Label Studio process serves the module (started here, ~40-90 s; or the server named by
ATTNLOOP_LABEL_STUDIO_URL/_TOKEN); the store is moto's S3 server. A server that does not start
fails these tests, it never skips them.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from labelstudio_server import LabelStudioProcess, new_server
from services import S3_KEY, S3_SECRET

from attnloop import annotation_set
from attnloop.datasets.annotations import read_annotations
from attnloop.datasets.manifest import Record
from attnloop.imaging import decode, encode_png
from attnloop.labelstudio import (
    PushInterrupted,
    bootstrap,
    harvest,
    project_classes,
    push,
    simulate_annotator,
)
from attnloop.labelstudio.push import NotServed, local_files_urls
from attnloop.labelstudio.project import iter_tasks
from attnloop.labelstudio.results import NO_OBJECT, choices_result, rectangle_result
from attnloop.layout import annotation_meta_key, overlay_key
from attnloop.proposals import attention_box
from attnloop.scoring import content_hash
from attnloop.storage import open_store

pytestmark = pytest.mark.services

CLASSES = ["fine", "scratch", "dent"]
MODEL = "abn-test-1"
H, W = 48, 64  # frame size
AH, AW = 6, 8  # attention map size


@dataclass
class Server:
    url: str
    token: str
    process: LabelStudioProcess | None  # None: an outside server we must not stop

    def client(self):
        from label_studio_sdk import LabelStudio

        return LabelStudio(base_url=self.url, api_key=self.token)


@pytest.fixture(scope="module")
def ls_server(label_studio):
    return Server(*label_studio, None)


@pytest.fixture(scope="module")
def ls(ls_server):
    return ls_server.client()


@pytest.fixture(scope="module")
def store(s3_endpoint):
    return open_store("s3://labelstudio-test/run", endpoint=s3_endpoint, access_key=S3_KEY, secret_key=S3_SECRET, create=True)


def make_frames(store, name: str, count: int, *, seed: int = 0, overlay_every: int = 10) -> tuple[list[dict], dict[str, Record]]:
    """Small gray frames with one bright defect each, put into the store; returns scoring-like rows
    (synthetic attention around the defect, seeded signals) and the ground truth by key."""
    rng = np.random.default_rng(seed)
    rows, truth = [], {}
    for i in range(count):
        label = CLASSES[i % len(CLASSES)]
        image = rng.integers(0, 60, size=(H, W), dtype=np.uint8)
        bw, bh = int(rng.integers(6, 20)), int(rng.integers(6, 16))
        x0, y0 = int(rng.integers(0, W - bw)), int(rng.integers(0, H - bh))
        image[y0 : y0 + bh, x0 : x0 + bw] = 230
        data = encode_png(image)
        key = f"frames/cam-{name}/2024-05-01/{i:05d}.png"
        store.put(key, data, content_type="image/png")
        attention = np.zeros((AH, AW), np.float32)
        attention[y0 * AH // H : -(-(y0 + bh) * AH // H), x0 * AW // W : -(-(x0 + bw) * AW // W)] = 1.0
        attention += rng.uniform(0, 0.1, size=attention.shape).astype(np.float32)
        if overlay_every and i % overlay_every == 0:
            store.put(overlay_key(MODEL, key), encode_png(image), content_type="image/png")
        lc, bd, bg = (float(v) for v in rng.uniform(0, 1, size=3))
        rows.append(
            {
                "key": key, "hash": content_hash(data), "width": W, "height": H, "class": label, "confidence": 1 - lc / 2,
                "least_confidence": lc, "margin": float(rng.uniform()), "entropy": float(rng.uniform()),
                "background_attention": bg, "branch_disagreement": bd,
                "attention": attention.ravel().tolist(), "attention_h": AH, "attention_w": AW, "model_version": MODEL,
            }
        )
        truth[key] = Record(key, "stream", label, [[x0, y0, x0 + bw, y0 + bh]])
    return rows, truth


def all_tasks(ls, project_id: int, **params) -> list:
    return list(iter_tasks(ls, project_id, **params))


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


# --- bootstrap -------------------------------------------------------------------------------


def test_both_templates_create_projects_and_bootstrap_is_idempotent(ls):
    plain = bootstrap(ls, title="t plain", classes=CLASSES)
    overlay = bootstrap(ls, title="t overlay", classes=CLASSES, template="box_correction_overlay")
    assert plain.id != overlay.id
    assert bootstrap(ls, title="t plain", classes=CLASSES).id == plain.id
    assert bootstrap(ls, title="t overlay", classes=CLASSES, template="box_correction_overlay").id == overlay.id
    assert project_classes(ls.projects.get(id=plain.id)) == CLASSES
    for project in (plain, overlay):  # both show where the model looked, and the task's question above the image
        config = ls.projects.get(id=project.id).label_config
        assert "$overlay" in config and config.index("$question") < config.index("$image")
    assert len([p for p in ls.projects.list(title="t plain") if p.title == "t plain"]) == 1
    # a new class reaches the reused project
    grown = bootstrap(ls, title="t plain", classes=[*CLASSES, "crack"])
    assert grown.id == plain.id and project_classes(ls.projects.get(id=plain.id)) == [*CLASSES, "crack"]
    views = [v.data.get("title") for v in ls.views.list(project=plain.id)]
    assert views.count("by priority") == 1


# --- push ------------------------------------------------------------------------------------


def test_push_500_tasks_in_bulk_with_predictions_and_never_twice(ls, store):
    from attnloop.priority import priority

    project = bootstrap(ls, title="push 500", classes=CLASSES, template="box_correction_overlay")
    rows, _ = make_frames(store, "push", 500, seed=1)
    result = push(ls, project, rows, store=store, model_version=MODEL, batch_size=100)
    assert (result.created, result.skipped_existing, result.skipped_backpressure) == (500, 0, 0)

    tasks = all_tasks(ls, project.id, fields="all", page_size=200)
    assert len(tasks) == 500
    assert len({t.data["key"] for t in tasks}) == 500
    by_key = {r["key"]: r for r in rows}
    # highest priority first: task ids follow priority
    priorities = [t.data["priority"] for t in sorted(tasks, key=lambda t: t.id)]
    assert priorities == sorted(priorities, reverse=True)
    for task in sorted(tasks, key=lambda t: t.id)[::50]:
        row, data = by_key[task.data["key"]], task.data
        assert data["hash"] == row["hash"] and data["model_version"] == MODEL and data["predicted"] == row["class"]
        assert data["priority"] == pytest.approx(priority(row), abs=1e-6)
        assert fetch(data["image"]) == store.get(row["key"])  # presigned URL works
        # every task shows the attention overlay: the one stored by scoring (every 10th frame here), else one push drew
        assert data["has_overlay"] and fetch(data["overlay"]) == store.get(overlay_key(MODEL, row["key"]))
        if int(row["key"][-9:-4]) % 10:
            assert decode(store.get(overlay_key(MODEL, row["key"]))).shape == (H, W, 3)
        (prediction,) = task.predictions
        prediction = prediction if isinstance(prediction, dict) else prediction.dict()
        assert prediction["score"] == pytest.approx(priority(row), abs=1e-6)
        assert prediction["model_version"] == MODEL
        regions = {r["type"]: r for r in prediction["result"]}
        assert regions["choices"]["value"]["choices"] == [row["class"]]
        box = attention_box(np.asarray(row["attention"]).reshape(AH, AW), (H, W))
        value = regions["rectanglelabels"]["value"]
        assert value["rectanglelabels"] == [row["class"]] and value["rotation"] == 0
        assert [value["x"] * W / 100, value["y"] * H / 100] == pytest.approx(box[:2], abs=1e-6)
        assert [(value["x"] + value["width"]) * W / 100, (value["y"] + value["height"]) * H / 100] == pytest.approx(box[2:], abs=1e-6)
        assert regions["rectanglelabels"]["original_width"] == W and regions["rectanglelabels"]["original_height"] == H

    again = push(ls, project, rows, store=store, model_version=MODEL, batch_size=100)
    assert (again.created, again.skipped_existing) == (0, 500)
    assert len(all_tasks(ls, project.id, page_size=1000)) == 500

    # backpressure: 500 open tasks already, a cap of 505 lets exactly 5 of 20 new ones in
    more, _ = make_frames(store, "push-more", 20, seed=2)
    capped = push(ls, project, more, store=store, model_version=MODEL, max_open=505)
    assert (capped.created, capped.skipped_existing, capped.skipped_backpressure) == (5, 0, 15)
    created_keys = {t.data["key"] for t in all_tasks(ls, project.id, page_size=1000)} - set(by_key)
    top5 = sorted(more, key=lambda r: -priority(r))[:5]
    assert created_keys == {r["key"] for r in top5}


# --- annotate and harvest --------------------------------------------------------------------


def test_a_local_store_is_served_to_annotators_by_label_studio(ls, ls_server, tmp_path, tmp_path_factory):
    """A local store's frames reach a browser through Label Studio's local-files serving, not as file:// URLs."""
    local = open_store(str(tmp_path / "store"), create=True)
    root = tmp_path_factory.getbasetemp()  # the session's server serves every store under pytest's base folder
    project = bootstrap(ls, title="push local", classes=CLASSES, template="box_correction_overlay")
    rows, _ = make_frames(local, "local", 12, seed=4, overlay_every=4)
    assert push(ls, project, rows, store=local, model_version=MODEL, document_root=root).created == 12
    more, _ = make_frames(local, "local-more", 3, seed=5)
    assert push(ls, project, more, store=local, model_version=MODEL, document_root=root).created == 3
    storages = ls.import_storage.local.list(project=project.id)
    # one per top folder of the store, created once, and nothing imported from them
    assert sorted(Path(s.path) for s in storages) == [local.root / "frames", local.root / "overlays"]
    tasks = all_tasks(ls, project.id, fields="all")
    assert len(tasks) == 15
    for task in tasks:
        data = task.data
        assert data["image"].startswith("/data/local-files/?d=")
        request = urllib.request.Request(ls_server.url + data["image"], headers={"Authorization": f"Token {ls_server.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.read() == local.get(data["key"])
        assert data["has_overlay"] and data["overlay"].startswith("/data/local-files/?d=")
        request = urllib.request.Request(ls_server.url + data["overlay"], headers={"Authorization": f"Token {ls_server.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200 and response.read()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_local_store_outside_label_studio_document_root_is_refused(tmp_path):
    local = open_store(str(tmp_path / "store"), create=True)
    with pytest.raises(NotServed, match="outside Label Studio's document root"):
        local_files_urls(None, 1, local, document_root=tmp_path / "elsewhere")


def test_simulated_annotator_boxes_come_back_within_one_pixel(ls, store, tmp_path):
    project = bootstrap(ls, title="round trip", classes=CLASSES)
    rows, truth = make_frames(store, "roundtrip", 60, seed=3)
    assert push(ls, project, rows, store=store, model_version=MODEL).created == 60
    counts = simulate_annotator(ls, project, truth)
    assert counts["annotated"] == 60 and counts["skipped"] == 0 and counts["boxes"] == 60

    prefix = "annotations/roundtrip/"
    result = harvest(ls, project, store=store, classes=CLASSES, prefix=prefix)
    assert (result.version, result.key, result.added, result.updated, result.problems) == (1, f"{prefix}v0001.jsonl", 60, 0, [])
    path = tmp_path / "set.jsonl"
    path.write_bytes(store.get(result.key))
    annotations = read_annotations(path)  # the reader training uses
    assert set(annotations) == set(truth)
    for key, record in truth.items():
        assert annotations[key].label == record.label
        assert len(annotations[key].boxes) == 1
        assert np.abs(np.subtract(annotations[key].boxes[0], record.boxes[0])).max() <= 1.0
    meta = json.loads(store.get(annotation_meta_key(1, prefix)))
    assert meta["count"] == 60 and meta["parent"] is None and len(meta["watermark"][str(project.id)]) == 60

    nothing = harvest(ls, project, store=store, classes=CLASSES, prefix=prefix)
    assert (nothing.written, nothing.version, nothing.added, nothing.updated) == (False, 1, 0, 0)
    assert [i.key for i in store.list(prefix)] == [f"{prefix}v0001.json", f"{prefix}v0001.jsonl"]


def test_noisy_annotator_is_seeded_and_honours_rates(ls, store):
    project = bootstrap(ls, title="noisy", classes=CLASSES)
    rows, truth = make_frames(store, "noisy", 40, seed=4)
    push(ls, project, rows, store=store, model_version=MODEL)
    counts = simulate_annotator(ls, project, truth, box_jitter=0.2, miss_rate=0.2, wrong_class_rate=0.3, skip_rate=0.25, seed=7)
    assert counts["annotated"] + counts["skipped"] == 40
    assert 3 <= counts["skipped"] <= 18 and counts["wrong_class"] >= 2 and counts["missed_boxes"] >= 1
    result = harvest(ls, project, store=store, classes=CLASSES, prefix="annotations/noisy/")
    entries = annotation_set.read(store, result.version, "annotations/noisy/").entries
    assert len(entries) == counts["annotated"] - counts["missed_boxes"]  # one box per frame: a missed box leaves no entry
    assert sum(1 for p in result.problems if p.reason == "no_box") == counts["missed_boxes"]
    wrong = sum(1 for key, e in entries.items() if e.label != truth[key].label)
    assert 1 <= wrong <= counts["wrong_class"]


def test_edits_replace_skips_stay_out_and_bad_regions_are_reported(ls, store):
    project = bootstrap(ls, title="edits", classes=CLASSES)
    rows, truth = make_frames(store, "edits", 8, seed=5)
    push(ls, project, rows, store=store, model_version=MODEL)
    tasks = {t.data["key"]: t.id for t in all_tasks(ls, project.id)}
    keys = sorted(tasks)
    good, skipped, zero, rotated, unknown, garbage, untouched, nothing = keys

    def box(key, delta=0.0, label=None):
        label = label or truth[key].label
        return rectangle_result(np.add(truth[key].boxes[0], delta).tolist(), label, W, H)

    def annotate(key, *regions, cancelled=False):
        return ls.annotations.create(id=tasks[key], result=list(regions), was_cancelled=cancelled)

    first = annotate(good, choices_result([truth[good].label]), box(good))
    annotate(skipped, cancelled=True)
    zero_box = box(zero)
    zero_box["value"]["width"] = 0.0
    annotate(zero, choices_result([truth[zero].label]), zero_box, box(zero))
    turned = box(rotated)
    turned["value"]["rotation"] = 30.0
    annotate(rotated, choices_result([truth[rotated].label]), turned)
    relabeled = annotate(unknown, choices_result(["scratch"]), box(unknown, label="zebra"), box(unknown, delta=1.0, label="scratch"))
    nonsense = box(garbage)
    nonsense["value"]["x"] = "left of the hole"
    annotate(garbage, choices_result(["dent"]), nonsense, box(garbage, label="dent"))
    annotate(nothing, choices_result(["fine"]), choices_result([NO_OBJECT], from_name="flag"))  # nothing to box: the class alone

    prefix = "annotations/edits/"
    v1 = harvest(ls, project, store=store, classes=CLASSES, prefix=prefix)
    assert (v1.version, v1.added, v1.updated) == (1, 5, 0)
    entries = annotation_set.read(store, 1, prefix).entries
    assert set(entries) == {good, zero, unknown, garbage, nothing}  # not the skipped, not the rotated-only, not the untouched
    assert (entries[nothing].boxes, entries[nothing].label) == ([], "fine")  # a class correction without evidence
    assert entries[zero].boxes == [pytest.approx(truth[zero].boxes[0], abs=1e-6)]
    assert entries[unknown].label == "scratch" and entries[garbage].label == "dent"  # class corrections kept
    reasons = sorted((p.task, p.reason) for p in v1.problems)
    assert reasons == sorted(
        [(tasks[zero], "zero_area"), (tasks[rotated], "rotated"), (tasks[rotated], "no_box"), (tasks[unknown], "unknown_label"), (tasks[garbage], "malformed")]
    )
    assert all(str(p.task) in p.detail for p in v1.problems)
    v1_body = store.get(v1.key)

    # the annotator edits the first annotation: the next version carries the new box only
    ls.annotations.update(id=first.id, result=[choices_result(["dent"]), box(good, delta=2.0, label="dent")])
    v2 = harvest(ls, project, store=store, classes=CLASSES, prefix=prefix)
    assert (v2.version, v2.added, v2.updated, v2.problems) == (2, 0, 1, [])
    v2_set = annotation_set.read(store, 2, prefix)
    entries2, meta2 = v2_set.entries, v2_set.meta
    assert set(entries2) == set(entries) and meta2["parent"] == 1
    assert entries2[good].label == "dent"
    assert entries2[good].boxes == [pytest.approx(np.add(truth[good].boxes[0], 2.0).tolist(), abs=1e-6)]
    assert {k: v for k, v in entries2.items() if k != good} == {k: v for k, v in entries.items() if k != good}
    assert store.get(v1.key) == v1_body  # versions are immutable

    # a second annotation on the skipped task stays out while it is only a skip; nothing new → no version
    annotate(skipped, cancelled=True)
    v3 = harvest(ls, project, store=store, classes=CLASSES, prefix=prefix)
    assert (v3.written, v3.version) == (False, 2)

    # an annotation deleted in Label Studio takes its image out; a task deleted outright keeps its entry
    ls.annotations.delete(id=relabeled.id)
    ls.tasks.delete(id=str(tasks[garbage]))
    v4 = harvest(ls, project, store=store, classes=CLASSES, prefix=prefix)
    assert (v4.written, v4.version, v4.added, v4.updated, v4.removed) == (True, 3, 0, 0, 1)
    entries4 = annotation_set.read(store, 3, prefix).entries
    assert entries4 == {k: v for k, v in entries2.items() if k != unknown}
    assert harvest(ls, project, store=store, classes=CLASSES, prefix=prefix).written is False


# --- Label Studio stopping mid-push (keep last: it restarts the server) ----------------------


@pytest.fixture(scope="module")
def own_server(tmp_path_factory):
    """A server this test may stop and restart (the session's is shared)."""
    process = new_server(tmp_path_factory.mktemp("label-studio-restart"))
    process.start()
    try:
        yield Server(process.url, process.token, process)
    finally:
        process.stop()


def test_stopped_mid_push_fails_clearly_and_the_rerun_completes_without_duplicates(own_server, store):
    ls = own_server.client()
    project = bootstrap(ls, title="interrupted", classes=CLASSES)
    rows, _ = make_frames(store, "interrupt", 150, seed=6, overlay_every=0)
    original = ls.projects.import_tasks
    calls = []

    def stop_before_third_batch(**kwargs):
        calls.append(len(kwargs["request"]))
        if len(calls) == 3:
            own_server.process.stop()  # Label Studio goes away with 2 of 6 batches in
        return original(**kwargs)

    ls.projects.import_tasks = stop_before_third_batch
    with pytest.raises(PushInterrupted) as caught:
        push(ls, project, rows, store=store, model_version=MODEL, batch_size=25)
    message = str(caught.value)
    assert "after 50 of 150 new tasks were created" in message and "Re-running the push is safe" in message
    assert (caught.value.created, caught.value.remaining) == (50, 100)

    own_server.process.start()  # same data folder, same port
    ls = own_server.client()
    assert len(all_tasks(ls, project.id)) == 50
    rerun = push(ls, project, rows, store=store, model_version=MODEL, batch_size=25)
    assert (rerun.created, rerun.skipped_existing) == (100, 50)
    keys = [t.data["key"] for t in all_tasks(ls, project.id, page_size=1000)]
    assert len(keys) == 150 and set(keys) == {r["key"] for r in rows}


def test_label_studios_folder_is_made_private_again_at_a_restart(own_server):
    """Its database holds the API token: a folder an older run left readable (0755 folders, a 0644
    database) is its owner's alone once the server is started on it again, and stays so while it runs."""
    import os
    import stat

    process = own_server.process
    process.stop()
    folder = process.workdir
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert stat.S_IMODE((process.data / "label_studio.sqlite3").stat().st_mode) == 0o644
    previous = os.umask(0o022)
    try:
        process.start()
    finally:
        os.umask(previous)
    ls = own_server.client()
    bootstrap(ls, title="private", classes=CLASSES)  # the server writes to its database after the start
    readable = {str(p.relative_to(folder)): oct(stat.S_IMODE(p.stat().st_mode)) for p in [folder, *folder.rglob("*")] if not p.is_symlink() and p.stat().st_mode & 0o077}
    assert not readable, readable
