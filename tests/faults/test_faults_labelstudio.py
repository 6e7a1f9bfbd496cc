"""The annotators' path through a real Label Studio, under faults and bad inputs: two pushes at
once, a local store Label Studio cannot serve, a harvested set given to ``attnloop train``, a set
that matches nothing, the push summary, the Data Manager's rank, a flat attention map, and what
Label Studio's local-files serving may read.

One Label Studio serves the session (the ``label_studio`` fixture); each test makes its own
project. The frames are scored by a real ONNX model trained here for a second.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from faultkit import FaultyProxy, closed_port
from services import browser

from attnloop.apps import cli
from attnloop.datasets import Record
from attnloop.imaging import encode_png
from attnloop.labelstudio import bootstrap, harvest, simulate_annotator
from attnloop.labelstudio.project import iter_tasks
from attnloop.labelstudio.push import push
from attnloop.apps.labelstudio_server import new_server
from attnloop.proposals import attention_box
from attnloop.storage import LocalStore
from attnloop.layout import frame_key

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["square", "bar"]
FRAMES = 20


def tiny_frames(store, source: str, count: int) -> dict[str, Record]:
    """Frames of the tiny classes (a bright square or bar on a dark ground) and their truth by key."""
    rng = np.random.default_rng(len(source))
    truth = {}
    for i in range(count):
        label = CLASSES[i % 2]
        w, h = (10, 10) if label == "square" else (12, 4)
        x0, y0 = (int(v) for v in rng.integers(2, 32 - 14, size=2))
        image = rng.integers(0, 60, size=(32, 32, 1), dtype=np.uint8)
        image[y0 : y0 + h, x0 : x0 + w] = 220
        key = frame_key(source, "2026-12-01", f"{i:03d}")
        store.put(key, encode_png(image), content_type="image/png")
        truth[key] = Record(key, "stream", label, [[x0, y0, x0 + w, y0 + h]], [])
    return truth


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny ONNX model (one epoch on the tiny classes) and its training data."""
    from conftest import write_tiny_manifest

    from attnloop.export import export_onnx
    from attnloop.training import TrainConfig, train

    root = tmp_path_factory.mktemp("faults-ls-model")
    data = write_tiny_manifest(root / "data")
    result = train(data, TrainConfig(epochs=1, guidance="none", seed=0), progress=False)
    return export_onnx(result.model, result.card, root / "tiny.onnx"), data


def scored_store(folder: Path, model_path: Path, *, source: str = "cam", count: int = FRAMES) -> tuple[LocalStore, str, dict]:
    """A local store with ``count`` frames scored by the model; the store, the model version and the truth."""
    from attnloop.runtime import OnnxModel
    from attnloop.scoring import score_store

    store = LocalStore(folder)
    truth = tiny_frames(store, source, count)
    version = "tiny-1"
    summary = score_store(store, OnnxModel(model_path), model_version=version, overlays=4, progress=False)
    assert summary.scored == count
    return store, version, truth


@pytest.fixture
def ls_env(label_studio, tmp_path_factory, monkeypatch):
    """The environment of a push to the session's Label Studio, whose document root is pytest's base folder."""
    url, token = label_studio
    env = {
        "ATTNLOOP_LABEL_STUDIO_URL": url,
        "ATTNLOOP_LABEL_STUDIO_TOKEN": token,
        "ATTNLOOP_LABEL_STUDIO_DOCUMENT_ROOT": str(tmp_path_factory.getbasetemp().resolve()),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def client(label_studio):
    from label_studio_sdk import LabelStudio

    return LabelStudio(base_url=label_studio[0], api_key=label_studio[1])


def task_keys(ls, project_id: int) -> list[str]:
    return [t.data["key"] for t in iter_tasks(ls, project_id, page_size=1000, fields="all")]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``attnloop ARGV`` in this process; the root logger's handlers are put back after it (its
    ``basicConfig`` would otherwise leave one writing to this test's captured, later closed, stderr)."""
    import logging

    handlers = logging.root.handlers[:]
    capsys.readouterr()
    try:
        code = cli.main(list(argv))
    finally:
        logging.root.handlers[:] = handlers
    out, err = capsys.readouterr()
    return code, out, err


# --- two pushes at once ----------------------------------------------------------------------


class HoldingProxy(FaultyProxy):
    """Holds each task import until a second one arrives (or ``hold`` seconds pass), then forwards
    both: two pushes that listed the project before either created a task both get to create."""

    def __init__(self, upstream: str, *, hold: float) -> None:
        super().__init__(upstream)
        self.hold, self.imports, self._arrived = hold, 0, threading.Condition()

    def _fault_for(self, target: str) -> int | None:
        if target.startswith("POST ") and "/import" in target:
            with self._arrived:
                self.imports += 1
                self._arrived.notify_all()
                self._arrived.wait_for(lambda: self.imports >= 2, timeout=self.hold)
        return super()._fault_for(target)


def test_two_pushes_at_once_create_one_task_per_key(model, ls_env, label_studio, tmp_path):
    store, version, _ = scored_store(tmp_path / "store", model[0])
    title = f"two at once {tmp_path.name}"
    ls = client(label_studio)
    project = bootstrap(ls, title=title, classes=CLASSES)
    with HoldingProxy(label_studio[0], hold=5.0) as proxy:
        env = {**os.environ, **ls_env, "ATTNLOOP_LABEL_STUDIO_URL": proxy.url}
        command = [sys.executable, "-m", "attnloop", "ls", "push", "--store", store.uri, "--title", title, "--model-version", version]
        pushes = [subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outputs = [p.communicate(timeout=120) for p in pushes]
    assert [p.returncode for p in pushes] == [0, 0], outputs
    keys = task_keys(ls, project.id)
    assert len(keys) == FRAMES and len(set(keys)) == FRAMES, outputs
    summaries = sorted(out for out, _ in outputs)
    assert f"{FRAMES} tasks created" in summaries[1] and "0 tasks created" in summaries[0], summaries


# --- a local store Label Studio does not serve -----------------------------------------------


@pytest.mark.parametrize("document_root", [None, "elsewhere"], ids=["unset", "wrong-folder"])
def test_a_local_store_label_studio_cannot_serve_is_reported_not_created(model, ls_env, label_studio, tmp_path, monkeypatch, capsys, document_root):
    store, version, _ = scored_store(tmp_path / "store", model[0], count=3)
    if document_root is None:
        monkeypatch.delenv("ATTNLOOP_LABEL_STUDIO_DOCUMENT_ROOT")  # attnloop assumes the store folder, the server serves pytest's base folder
    else:
        monkeypatch.setenv("ATTNLOOP_LABEL_STUDIO_DOCUMENT_ROOT", str(tmp_path))
    title = f"not served {tmp_path.name}"
    project = bootstrap(client(label_studio), title=title, classes=CLASSES)
    code, out, err = run_cli(capsys, "ls", "push", "--store", store.uri, "--title", title, "--model-version", version)
    assert code != 0 and "created" not in out, out
    assert "404" in err and "ATTNLOOP_LABEL_STUDIO_DOCUMENT_ROOT" in err and "no task was created" in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert task_keys(client(label_studio), project.id) == []


# --- train --boxes with a harvested set ------------------------------------------------------


def test_train_boxes_with_a_harvested_set_trains_on_its_frames(model, ls_env, label_studio, tmp_path, capsys):
    data = model[1]
    store, version, truth = scored_store(tmp_path / "store", model[0], count=6)
    ls = client(label_studio)
    project = bootstrap(ls, title=f"harvested {tmp_path.name}", classes=CLASSES)
    push(ls, project, _rows(store, version), store=store, model_version=version, document_root=ls_env["ATTNLOOP_LABEL_STUDIO_DOCUMENT_ROOT"])
    assert simulate_annotator(ls, project, truth)["annotated"] == 6
    harvested = harvest(ls, project, store=store, classes=CLASSES)
    set_path = store.root / harvested.key  # store/annotations/v0001.jsonl: its keys are store keys
    assert json.loads(set_path.read_text().splitlines()[0])["image"].startswith("frames/")
    code, out, err = run_cli(
        capsys, "train", "--data", str(data), "--out", str(tmp_path / "run"), "--boxes", str(set_path), "--epochs", "1", "--no-track"
    )
    assert code == 0, err
    assert "(6 guided images)" in out, out
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["guided_images"] == 6


def test_a_set_that_matches_no_image_is_an_error(model, tmp_path, capsys):
    data = model[1]
    bad = tmp_path / "elsewhere.jsonl"
    bad.write_text("".join(json.dumps({"image": f"frames/cam/2026-12-01/{i:03d}.png", "boxes": [[1, 1, 9, 9]], "label": "bar"}) + "\n" for i in range(3)))
    code, out, err = run_cli(capsys, "train", "--data", str(data), "--out", str(tmp_path / "run"), "--boxes", str(bad), "--epochs", "1", "--no-track")
    assert code != 0 and "guided images" not in out, out
    assert str(bad) in err and "3 entries" in err, err
    assert "frames/cam/2026-12-01/000.png" in err and "train/0.png" in err, err  # what the keys look like, and what the data has
    assert not (tmp_path / "run" / "model.pt").exists()


# --- the push summary, the model version, the rank -------------------------------------------


def test_the_push_summary_counts_frames_already_queued(model, ls_env, label_studio, tmp_path, capsys):
    store, version, _ = scored_store(tmp_path / "store", model[0], count=8)
    title = f"summary {tmp_path.name}"
    bootstrap(client(label_studio), title=title, classes=CLASSES)
    push_cmd = ("ls", "push", "--store", store.uri, "--title", title, "--limit", "5")
    code, first, err = run_cli(capsys, *push_cmd, "--model-version", version)
    assert code == 0, err
    assert "5 tasks created, 0 already queued" in first, first
    code, second, err = run_cli(capsys, *push_cmd)  # no --model-version: the store's latest scored version
    assert code == 0, err
    assert "3 tasks created, 5 already queued" in second and version in second, second


def test_the_data_manager_gets_a_rank_a_person_can_read(model, ls_env, label_studio, tmp_path):
    store, version, _ = scored_store(tmp_path / "store", model[0], count=12)
    ls = client(label_studio)
    project = bootstrap(ls, title=f"rank {tmp_path.name}", classes=CLASSES)
    rows = _rows(store, version)
    push(ls, project, rows, store=store, model_version=version, document_root=ls_env["ATTNLOOP_LABEL_STUDIO_DOCUMENT_ROOT"])
    tasks = list(iter_tasks(ls, project.id, fields="all"))
    ranks = sorted(t.data["rank"] for t in tasks)
    assert ranks == list(range(1, 13))
    by_rank = sorted(tasks, key=lambda t: t.data["rank"])
    assert [t.data["priority"] for t in by_rank] == sorted((t.data["priority"] for t in tasks), reverse=True)
    assert by_rank[0].data["percentile"] == 100.0 and by_rank[-1].data["percentile"] == 0.0
    assert "rank 1 of 12" in by_rank[0].data["summary"]
    # the Data Manager sorts by it as a number (rank 10 after rank 9, not after rank 1)
    ordered = ls.tasks.list(project=project.id, query=json.dumps({"ordering": ["tasks:data.rank"]}), fields="all", page_size=100)
    assert [t.data["rank"] for t in ordered.items] == list(range(1, 13))


def _rows(store, version):
    from attnloop.scores import read_scores

    return read_scores(store, model_version=version).to_pylist()


# --- a flat attention map --------------------------------------------------------------------


def test_a_flat_attention_map_gives_no_whole_frame_box():
    rng = np.random.default_rng(0)
    flat = 0.5 + 0.01 * rng.standard_normal((8, 8))  # what a weak model's attention looks like: noise around one level
    box = attention_box(flat, (64, 64))
    assert box is None or (box[2] - box[0]) * (box[3] - box[1]) <= 0.5 * 64 * 64, box
    wide = np.fromfunction(lambda y, x: np.exp(-((y - 5.0) ** 2 + (x - 2.0) ** 2) / 60.0), (8, 8))  # a broad bump off-centre
    x0, y0, x1, y1 = attention_box(wide, (64, 64))
    assert (x1 - x0) * (y1 - y0) <= 0.5 * 64 * 64 and x0 <= 2 * 8 < x1 and y0 <= 5 * 8 < y1  # tighter, and still on the peak


# --- what Label Studio's local-files serving may read ----------------------------------------


def test_label_studio_serves_local_files_from_the_store_folder_only(label_studio, tmp_path):
    secret_dir = Path(tempfile.mkdtemp(prefix="attnloop-host-"))  # a host folder outside every store
    try:
        (secret_dir / "secret.txt").write_text("host secret\n")
        ls = client(label_studio)
        project = bootstrap(ls, title=f"host files {tmp_path.name}", classes=CLASSES)
        from label_studio_sdk.core.api_error import ApiError

        with pytest.raises(ApiError) as refused:
            ls.import_storage.local.create(project=project.id, path=str(secret_dir), title="host", use_blob_urls=False)
        assert refused.value.status_code == 400
        answer = httpx.get(
            f"{label_studio[0]}/data/local-files/", params={"d": str(secret_dir / "secret.txt").lstrip("/")},
            headers={"Authorization": f"Token {label_studio[1]}"}, timeout=10,
        )
        assert answer.status_code != 200 and b"host secret" not in answer.content
    finally:
        (secret_dir / "secret.txt").unlink()
        secret_dir.rmdir()


def test_local_files_serving_is_on_only_for_a_local_store_and_rooted_at_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCAL_FILES_SERVING_ENABLED", "true")  # a developer's shell must not turn it on
    monkeypatch.setenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", "/")
    s3_stack = new_server(tmp_path / "ls-s3").environment()
    assert s3_stack["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] == "false"
    assert "LOCAL_FILES_SERVING_ENABLED" not in s3_stack and s3_stack.get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT") != "/"
    local = new_server(tmp_path / "ls-local", local_files_root=tmp_path / "store").environment()
    assert local["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] == "true"
    assert local["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] == str((tmp_path / "store").resolve())


# --- Label Studio down, or a wrong token: one line, exit 2 ------------------------------------


def one_line(code: int, out: str, err: str) -> str:
    assert code == 2 and "next:" not in out, (code, out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_label_studio_down_is_one_line_naming_the_url(tmp_path, monkeypatch, capsys):
    store = LocalStore(tmp_path / "store")
    store.put("frames/cam/2026-12-01/000.png", b"not scored")
    truth = tmp_path / "truth.jsonl"
    truth.write_text(Record("frames/cam/2026-12-01/000.png", "stream", "bar", [[1, 1, 5, 5]], []).to_json() + "\n")
    with closed_port() as port:
        url = f"http://127.0.0.1:{port}"
        monkeypatch.setenv("ATTNLOOP_LABEL_STUDIO_URL", url)
        monkeypatch.setenv("ATTNLOOP_LABEL_STUDIO_TOKEN", "0" * 40)
        for command in (
            ("ls", "bootstrap", "--classes", "square,bar"),
            ("ls", "push", "--store", store.uri, "--model-version", "tiny-1"),
            ("ls", "harvest", "--store", store.uri),
            ("ls", "simulate", "--truth", str(truth)),
        ):
            err = one_line(*run_cli(capsys, *command))
            assert f"Label Studio at {url} does not answer" in err and "ATTNLOOP_LABEL_STUDIO_URL" in err, (command, err)
    assert not store.exists("annotations/v0001.json")


def test_a_wrong_token_is_one_line_naming_the_setting(label_studio, tmp_path, monkeypatch, capsys):
    wrong = "f" * 40
    monkeypatch.setenv("ATTNLOOP_LABEL_STUDIO_URL", label_studio[0])
    monkeypatch.setenv("ATTNLOOP_LABEL_STUDIO_TOKEN", wrong)
    store = LocalStore(tmp_path / "store")
    store.put("frames/cam/2026-12-01/000.png", b"x")
    for command in (("ls", "bootstrap", "--classes", "square,bar"), ("ls", "harvest", "--store", store.uri)):
        err = one_line(*run_cli(capsys, *command))
        assert f"Label Studio at {label_studio[0]} answered 401" in err and "ATTNLOOP_LABEL_STUDIO_TOKEN" in err, err
        assert "Legacy Token" in err and "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true" in err and wrong not in err, err


# --- two harvests at once; a version another writer took --------------------------------------


class SlowListing:
    """A Label Studio client whose first task listing answers ``delay`` seconds late (with the tasks
    as they were when it asked), as a slow server or a long page would: ``listed`` is set meanwhile."""

    def __init__(self, ls, delay: float) -> None:
        self._ls, self.delay, self.listed = ls, delay, threading.Event()

    def __getattr__(self, name: str):
        return getattr(self._ls, name)

    @property
    def tasks(self):
        outer = self

        class Tasks:
            def __getattr__(self, name: str):
                return getattr(outer._ls.tasks, name)

            def list(self, **params):
                page = outer._ls.tasks.list(**params)
                if not outer.listed.is_set():
                    outer.listed.set()
                    time.sleep(outer.delay)
                return page

        return Tasks()


class VersionWatch:
    """Reads every published version's JSONL again and again while it runs: the sha256s each had."""

    def __init__(self, store) -> None:
        self.store, self.seen, self._stop = store, {}, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        import hashlib

        while not self._stop.wait(0.02):
            for info in list(self.store.list("annotations/")):
                if info.key.endswith(".jsonl"):
                    try:
                        self.seen.setdefault(info.key, set()).add(hashlib.sha256(self.store.get(info.key)).hexdigest())
                    except KeyError:
                        pass

    def __enter__(self) -> "VersionWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._watch_once()

    def _watch_once(self) -> None:
        import hashlib

        for info in self.store.list("annotations/"):
            if info.key.endswith(".jsonl"):
                self.seen.setdefault(info.key, set()).add(hashlib.sha256(self.store.get(info.key)).hexdigest())


def annotated_project(model, ls_env, label_studio, tmp_path, *, title: str, count: int, annotate: int):
    store, version, truth = scored_store(tmp_path / "store", model[0], count=count)
    ls = client(label_studio)
    project = bootstrap(ls, title=f"{title} {tmp_path.name}", classes=CLASSES)
    push(ls, project, _rows(store, version), store=store, model_version=version, document_root=ls_env["ATTNLOOP_LABEL_STUDIO_DOCUMENT_ROOT"])
    assert simulate_annotator(ls, project, truth, limit=annotate)["annotated"] == annotate
    return store, ls, project, truth


def test_two_harvests_at_once_publish_distinct_versions_never_rewritten(model, ls_env, label_studio, tmp_path):
    """The issue's race: one harvest's listing is slow; meanwhile more annotations come and a second
    harvest runs. Each version is published once and keeps its content."""
    from attnloop import annotation_set

    store, ls, project, truth = annotated_project(model, ls_env, label_studio, tmp_path, title="two harvests", count=8, annotate=6)
    slow = SlowListing(ls, delay=3.0)
    results = {}
    with VersionWatch(store) as watch:
        first = threading.Thread(target=lambda: results.setdefault("slow", harvest(slow, project, store=store, classes=CLASSES)))
        first.start()
        assert slow.listed.wait(timeout=60)
        assert simulate_annotator(ls, project, truth)["annotated"] == 2  # two more come in while the slow one lists
        results["second"] = harvest(client(label_studio), project, store=store, classes=CLASSES)
        first.join(timeout=120)
    assert sorted(r.version for r in results.values()) == [1, 2], results
    assert {key: len(shas) for key, shas in watch.seen.items()} == {"annotations/v0001.jsonl": 1, "annotations/v0002.jsonl": 1}, watch.seen
    v1, v2 = annotation_set.read(store, 1), annotation_set.read(store, 2)  # both still match their recorded hash
    assert (len(v1.entries), len(v2.entries), v2.meta["parent"]) == (6, 8, 1)
    assert set(v1.entries) < set(v2.entries)


def test_a_version_another_writer_took_first_is_left_and_harvest_publishes_the_next(model, ls_env, label_studio, tmp_path):
    """A writer outside this project's lease (another project's harvest into the same set) publishes
    v1 while this harvest lists: it stays as written, and the harvest publishes v2 on top of it."""
    import hashlib

    from attnloop import annotation_set
    from attnloop.annotation_set import Entry

    store, ls, project, _ = annotated_project(model, ls_env, label_studio, tmp_path, title="taken", count=4, annotate=4)
    slow = SlowListing(ls, delay=1.0)
    results = {}
    first = threading.Thread(target=lambda: results.setdefault("harvest", harvest(slow, project, store=store, classes=CLASSES)))
    first.start()
    assert slow.listed.wait(timeout=60)
    other = Entry("frames/other/2026-12-01/000.png", [[1, 1, 9, 9]], "bar", project=999_999)
    annotation_set.write(store, {other.image: other}, version=1, parent=None, watermark={"999999": {"1": [1, "x"]}})
    theirs = hashlib.sha256(store.get("annotations/v0001.jsonl")).hexdigest()
    first.join(timeout=120)
    result = results["harvest"]
    assert (result.version, result.added, result.written) == (2, 4, True)
    assert hashlib.sha256(store.get("annotations/v0001.jsonl")).hexdigest() == theirs
    v2 = annotation_set.read(store, 2)
    assert other.image in v2.entries and len(v2.entries) == 5 and v2.meta["parent"] == 1
    assert set(v2.meta["watermark"]) == {"999999", str(project.id)}


# --- a tampered set: the way back --------------------------------------------------------------


def test_a_tampered_set_names_the_way_back_and_harvest_rebuild_takes_it(model, ls_env, label_studio, tmp_path, capsys):
    from attnloop import annotation_set

    store, ls, project, _ = annotated_project(model, ls_env, label_studio, tmp_path, title="tampered", count=4, annotate=4)
    title = project.title
    code, out, err = run_cli(capsys, "ls", "harvest", "--store", store.uri, "--title", title)
    assert code == 0 and "annotation set v1" in out, (out, err)
    jsonl = store.root / "annotations" / "v0001.jsonl"
    jsonl.write_text(jsonl.read_text().replace('"square"', '"bar"'))  # someone edits the published set by hand

    code, out, err = run_cli(capsys, "ls", "harvest", "--store", store.uri, "--title", title)
    err = one_line(code, out, err)
    assert "annotations/v0001.jsonl" in err and "refuse" in err and "from a backup" in err and "attnloop ls harvest --rebuild" in err, err

    code, out, err = run_cli(capsys, "ls", "harvest", "--store", store.uri, "--title", title, "--rebuild")
    assert code == 0, err
    assert "annotation set v2" in out and "4 added" in out and "altered version v1 passed over" in out, out
    v2 = annotation_set.latest(store)
    assert v2.version == 2 and v2.meta["parent"] == 1 and v2.meta["rebuilt"] == {"from": None, "altered": [1]}
    assert len(v2.entries) == 4 and {e.project for e in v2.entries.values()} == {project.id}
    code, out, err = run_cli(capsys, "ls", "harvest", "--store", store.uri, "--title", title)
    assert code == 0 and "nothing new; the latest annotation set is v2" in out, (out, err)


# --- where the model looked, in every task; what comes next ------------------------------------


def served(label_studio, url: str) -> httpx.Response:
    return httpx.get(label_studio[0] + url, headers={"Authorization": f"Token {label_studio[1]}"}, timeout=30)


def test_every_task_shows_where_the_model_looked_and_each_command_says_what_comes_next(model, ls_env, label_studio, tmp_path, capsys):
    """Through the command line, as a user runs it: every pushed task (confirmation tasks too) carries
    an attention overlay that Label Studio serves; the question is a header above the image; the
    labeling configs validate; each ``ls`` command ends with the next step."""
    from dataclasses import replace

    import cv2

    from attnloop.labelstudio import template_config
    from attnloop.labelstudio.push import Candidate
    from attnloop.layout import overlay_key

    store, version, truth = scored_store(tmp_path / "store", model[0], count=6)  # scoring stored 4 overlays, not 6
    assert len(list(store.list(f"overlays/{version}/"))) == 4
    title = f"overlay {tmp_path.name}"
    code, out, err = run_cli(capsys, "ls", "bootstrap", "--classes", ",".join(CLASSES), "--title", title)
    assert code == 0 and out.splitlines()[-1].startswith("next: ") and f"attnloop ls push --title '{title}'" in out, (out, err)
    code, out, err = run_cli(capsys, "ls", "push", "--store", store.uri, "--title", title, "--model-version", version)
    assert code == 0, err
    assert "6 tasks created, 0 already queued" in out and "max open" not in out and "None" not in out, out
    ls = client(label_studio)
    project = next(p for p in ls.projects.list(title=title, page_size=100).items if p.title == title)
    assert out.splitlines()[-1] == (
        f"next: annotate at {label_studio[0]}/projects/{project.id}, then bring the boxes back with "
        f"`attnloop ls harvest --title '{title}' --store {store.uri}`"
    ), out

    # a confirmation task: a propagated mark to keep or delete
    row = _rows(store, version)[0]
    confirm = replace(Candidate.from_row(row), confirms="frames/cam/2026-12-01/999.png", shortcut_boxes=([2, 2, 9, 9],))
    other_title = f"overlay confirm {tmp_path.name}"
    confirm_project = bootstrap(ls, title=other_title, classes=CLASSES, template="box_correction_overlay")
    push(ls, confirm_project, [confirm], store=store, model_version=version, document_root=ls_env["ATTNLOOP_LABEL_STUDIO_DOCUMENT_ROOT"])

    tasks = list(iter_tasks(ls, project.id, fields="all")) + list(iter_tasks(ls, confirm_project.id, fields="all"))
    assert len(tasks) == 7
    for task in tasks:
        data = task.data
        assert data["has_overlay"] is True and data["overlay"] != data["image"], data
        assert store.exists(overlay_key(version, data["key"]))
        answer = served(label_studio, data["overlay"])
        assert answer.status_code == 200 and answer.content == store.get(overlay_key(version, data["key"])), data["overlay"]
        picture = cv2.imdecode(np.frombuffer(answer.content, np.uint8), cv2.IMREAD_COLOR)
        assert picture is not None and picture.shape[:2] == (data["height"], data["width"])
    confirmation = next(t.data for t in tasks if t.data.get("confirms"))
    assert confirmation["question"].startswith("Same mistake as frames/cam/2026-12-01/999.png? Keep the red mark")
    assert all(t.data["question"].startswith("The model says ") for t in tasks if not t.data.get("confirms"))

    for template in ("box_correction", "box_correction_overlay"):
        config = template_config(template, CLASSES)
        ls.projects.validate_label_config(id=project.id, label_config=config)  # Label Studio accepts it (raises if not)
        assert config.index('value="$question"') < config.index('name="image"') < config.index('name="overlay" value="$overlay"')

    code, out, err = run_cli(capsys, "ls", "simulate", "--truth", str(write_truth_file(tmp_path, truth)), "--title", title)
    assert code == 0 and out.splitlines()[-1] == f"next: bring the annotations back with `attnloop ls harvest --title '{title}'`", (out, err)
    code, out, err = run_cli(capsys, "ls", "harvest", "--store", store.uri, "--title", title)
    assert code == 0 and "annotation set v1" in out, (out, err)
    assert out.splitlines()[-1].startswith("next: retrain on it with `attnloop train --data BASE_DATA --boxes annotations/v0001.jsonl --store "), out
    code, out, err = run_cli(capsys, "ls", "harvest", "--store", store.uri, "--title", title)
    assert code == 0 and "nothing new" in out and out.splitlines()[-1].startswith("next: retrain on it"), out


def write_truth_file(folder: Path, truth: dict[str, Record]) -> Path:
    from attnloop.labelstudio import write_truth

    path = folder / "truth.jsonl"
    return write_truth(path, truth)


def session_login(tmp_path_factory, label_studio) -> dict:
    """The admin login of the session's Label Studio (kept in its folder's credentials.json)."""
    for path in tmp_path_factory.getbasetemp().glob("label-studio*/credentials.json"):
        found = json.loads(path.read_text())
        if found.get("token") == label_studio[1]:
            return found
    raise AssertionError("no credentials.json of the session's Label Studio under pytest's base folder (an outside server?)")


def test_an_annotator_sees_the_question_above_the_frame_and_the_attention_beside_it(model, ls_env, label_studio, tmp_path, tmp_path_factory):
    """In a browser, logged in as an annotator: the task page shows the question as a header above
    the frame, and the attention overlay, loaded, beside the frame."""
    from selenium.webdriver.common.by import By

    store, version, _ = scored_store(tmp_path / "store", model[0], count=2)
    ls = client(label_studio)
    project = bootstrap(ls, title=f"browser {tmp_path.name}", classes=CLASSES)
    push(ls, project, _rows(store, version), store=store, model_version=version, document_root=ls_env["ATTNLOOP_LABEL_STUDIO_DOCUMENT_ROOT"])
    task = next(iter(iter_tasks(ls, project.id, fields="all")))
    login = session_login(tmp_path_factory, label_studio)
    driver = browser(size="1400,1000")
    try:
        driver.get(f"{label_studio[0]}/user/login/")
        driver.find_element(By.NAME, "email").send_keys(login["user"])
        driver.find_element(By.NAME, "password").send_keys(login["password"])
        driver.find_element(By.CSS_SELECTOR, "form button, form input[type=submit]").click()
        deadline = time.monotonic() + 30
        while "/user/login" in driver.current_url and time.monotonic() < deadline:
            time.sleep(0.2)
        driver.get(f"{label_studio[0]}/projects/{project.id}/data?task={task.id}")
        layout = settled = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            layout = driver.execute_script(
                """const shown = (el) => { const r = el.getBoundingClientRect(); return {x: r.x, y: r.y, w: r.width, h: r.height}; };
                const colour = (img) => {  // mean channel spread: 0 for a gray frame, large for the heat map
                    const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
                    const g = c.getContext('2d'); g.drawImage(img, 0, 0); const d = g.getImageData(0, 0, c.width, c.height).data;
                    let s = 0; for (let i = 0; i < d.length; i += 4) s += Math.abs(d[i] - d[i + 1]) + Math.abs(d[i + 1] - d[i + 2]);
                    return s / (d.length / 4); };
                // the labeling view loads the task's pictures as blobs (the Data Manager's thumbnails are plain URLs)
                const shownImages = Array.from(document.images).filter(i => i.src.startsWith('blob:') && i.naturalWidth > 0 && i.getBoundingClientRect().width > 50);
                const heading = Array.from(document.querySelectorAll('h1,h2,h3,h4,h5,h6')).find(h => h.textContent.startsWith(arguments[0]));
                if (shownImages.length < 2 || !heading) return null;
                const measured = shownImages.map(i => ({...shown(i), colour: colour(i)})).sort((a, b) => a.colour - b.colour);
                return {frame: measured[0], overlay: measured[measured.length - 1], question: shown(heading), images: measured.length};""",
                "The model says",
            )
            if layout and layout == settled:  # the same twice a second apart: images loaded and laid out
                break
            settled = layout
            time.sleep(1.0)
        shot = os.environ.get("ATTNLOOP_LS_SCREENSHOT")  # a picture of the task page, for the docs
        driver.save_screenshot(shot or str(tmp_path / "task.png"))
        assert layout, "the task page did not show the question, the frame and the overlay within 90 s"
        frame, overlay, question = layout["frame"], layout["overlay"], layout["question"]
        assert layout["images"] == 2 and frame["colour"] < 1.0 and overlay["colour"] > 20.0, layout  # the gray frame and the heat map
        assert question["y"] + question["h"] <= frame["y"], layout  # the question above the frame
        assert overlay["x"] >= frame["x"] + frame["w"] - 1 and abs(overlay["y"] - frame["y"]) < frame["h"], layout  # the map beside it
    finally:
        driver.quit()
