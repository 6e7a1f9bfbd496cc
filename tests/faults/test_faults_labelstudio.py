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
from pathlib import Path

import httpx
import numpy as np
import pytest
from faultkit import FaultyProxy

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
