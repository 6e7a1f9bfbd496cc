"""What harvest publishes, without Label Studio: annotation-set versions are created once and never
rewritten (folder and S3 stores), an altered set is refused with the way back, and the folder
store's temporary files left by a killed writer are removed by a later write.

The harvests themselves, against a real Label Studio, are in tests/faults/test_faults_labelstudio.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from services import S3_KEY, S3_SECRET

from attnloop import annotation_set
from attnloop.annotation_set import Entry, SetAltered, VersionTaken
from attnloop.layout import annotation_meta_key, annotation_set_key
from attnloop.storage import PARTIAL_MAX_AGE, LocalStore, open_store

ROOT = Path(__file__).resolve().parents[1]


def entries(*labels: str) -> dict[str, Entry]:
    return {f"frames/cam/2026-12-01/{i:03d}.png": Entry(f"frames/cam/2026-12-01/{i:03d}.png", [[1, 1, 9, 9]], label) for i, label in enumerate(labels)}


def sha(store, key: str) -> str:
    return hashlib.sha256(store.get(key)).hexdigest()


@pytest.fixture(params=["folder", "s3"])
def store(request, tmp_path):
    if request.param == "folder":
        return LocalStore(tmp_path / "store")
    endpoint = request.getfixturevalue("s3_endpoint")
    return open_store(f"s3://sets-test/{tmp_path.name}", endpoint=endpoint, access_key=S3_KEY, secret_key=S3_SECRET, create=True)


# --- a published version is never rewritten ---------------------------------------------------


def test_a_published_version_is_never_rewritten(store):
    first = annotation_set.write(store, entries("square"), version=1, parent=None)
    published = {key: sha(store, key) for key in (annotation_set_key(1), annotation_meta_key(1))}
    with pytest.raises(VersionTaken, match=r"v1 already exists .* never rewritten") as taken:
        annotation_set.write(store, entries("bar", "square"), version=1, parent=None)
    assert taken.value.version == 1
    assert {key: sha(store, key) for key in published} == published
    assert annotation_set.read(store, 1).entries == first.entries
    # the same bytes again (a retried request that had landed) are not a conflict for the JSONL alone,
    # but a version whose metadata exists is taken whatever the content
    with pytest.raises(VersionTaken):
        annotation_set.write(store, entries("square"), version=1, parent=None)
    assert annotation_set.write(store, entries("bar", "square"), version=2, parent=1).version == 2
    assert annotation_set.latest(store).meta["count"] == 2


def test_a_version_published_meanwhile_fails_the_write_instead_of_being_left_out(store):
    """A writer that built on v1 targets v2; another published v2 meanwhile: the write refuses, so
    the next version is built on v2 rather than leaving its entries out."""
    annotation_set.write(store, entries("square"), version=1, parent=None)
    assert annotation_set.next_version(store, after=1) == 2
    annotation_set.write(store, entries("square", "bar"), version=2, parent=1)  # the other writer
    target = annotation_set.next_version(store, after=1)
    assert target == 2
    with pytest.raises(VersionTaken):
        annotation_set.write(store, entries("bar"), version=target, parent=1)
    assert annotation_set.read(store, 2).meta["count"] == 2


def test_a_jsonl_whose_writer_was_killed_keeps_its_number(store, monkeypatch):
    annotation_set.write(store, entries("square"), version=1, parent=None)
    store.put(annotation_set_key(2), b'{"image": "frames/cam/2026-12-01/x.png", "boxes": [], "label": "bar"}\n')  # no metadata: never published
    assert annotation_set.latest_version(store) == 1
    assert annotation_set.next_version(store, after=1) == 2  # a fresh one may be a writer in flight
    with pytest.raises(VersionTaken):
        annotation_set.write(store, entries("bar"), version=2, parent=1)
    monkeypatch.setattr(annotation_set, "ORPHAN_AGE", timedelta(0))  # as if it had lain there for ORPHAN_AGE
    assert annotation_set.next_version(store, after=1) == 3
    assert annotation_set.write(store, entries("bar"), version=3, parent=1).version == 3
    assert annotation_set.latest(store).version == 3


# --- an altered set ----------------------------------------------------------------------------


def test_an_altered_set_is_refused_with_the_file_and_the_way_back(tmp_path):
    store = LocalStore(tmp_path / "store")
    annotation_set.write(store, entries("square"), version=1, parent=None)
    body = store.get(annotation_set_key(1))
    (store.root / annotation_set_key(1)).write_bytes(body.replace(b'"square"', b'"bar"'))
    with pytest.raises(SetAltered) as altered:
        annotation_set.latest(store)
    message = str(altered.value)
    assert str(store.uri) in message and "annotations/v0001.jsonl" in message and "annotations/v0001.json" in message
    assert "training and harvest refuse it" in message and "from a backup" in message and "attnloop ls harvest --rebuild" in message
    assert (altered.value.version, altered.value.key) == (1, "annotations/v0001.jsonl")
    (store.root / annotation_meta_key(1)).write_text("{not json")
    with pytest.raises(SetAltered, match="metadata annotations/v0001.json is unreadable.*--rebuild"):
        annotation_set.read(store, 1)


# --- temporary files a killed writer leaves ----------------------------------------------------


def partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".partial-"))


def test_stale_temporary_files_are_removed_by_the_next_write_into_their_folder(tmp_path):
    store = LocalStore(tmp_path / "store")
    store.put("annotations/v0001.jsonl", b"{}\n")
    folder = store.root / "annotations"
    old, fresh = folder / ".partial-0123456789abcdef", folder / ".partial-fedcba9876543210"
    old.write_bytes(b"half a set")
    fresh.write_bytes(b"a writer in flight")
    stale = time.time() - PARTIAL_MAX_AGE - 60
    os.utime(old, (stale, stale))
    other = store.root / "frames" / ".partial-00000000000000aa"  # another folder: not this write's
    other.parent.mkdir()
    other.write_bytes(b"x")
    os.utime(other, (stale, stale))
    assert LocalStore(store.root).create("annotations/v0001.json", b"{}") is True
    assert partials(folder) == [fresh.name] and other.exists()
    later = LocalStore(store.root)
    later.put("frames/a.png", b"png")
    assert partials(other.parent) == []


WRITER = """
import sys
from attnloop.storage import LocalStore
store, big = LocalStore(sys.argv[1]), bytes(16 * 1024 * 1024)
print("writing", flush=True)
while True:
    store.put("annotations/v0001.jsonl", big)
"""


def kill_mid_write(root: Path) -> list[str]:
    """Start a process that writes into the store again and again, SIGKILL it while a temporary file
    is there; the temporary files left (tries again if the kill fell between two writes)."""
    folder = root / "annotations"
    for _ in range(5):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(root)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        try:
            assert writer.stdout.readline().strip() == "writing"
            deadline = time.monotonic() + 60
            while not (folder.is_dir() and partials(folder)) and time.monotonic() < deadline:
                time.sleep(0.001)
        finally:
            writer.kill()  # SIGKILL: no cleanup runs
            writer.wait(timeout=30)
            writer.stdout.close()
        if partials(folder):
            return partials(folder)
    return []


def test_a_writer_killed_mid_write_leaves_a_partial_file_the_next_write_removes(tmp_path):
    """kill -9 of a process writing into a folder store leaves its ``.partial-*`` file (invisible to
    listings); once it is older than PARTIAL_MAX_AGE, the next write into the folder removes it."""
    root = tmp_path / "store"
    folder = root / "annotations"
    left = kill_mid_write(root)
    assert len(left) == 1, left  # what the issue saw: the killed writer's temporary file stays
    store = LocalStore(root)
    assert [info.key for info in store.list("annotations/") if ".partial-" in info.key] == []
    store.put("annotations/v0002.jsonl", b"{}\n")
    assert partials(folder) == left  # a fresh one may be a writer in flight: kept
    stale = time.time() - PARTIAL_MAX_AGE - 1
    os.utime(folder / left[0], (stale, stale))
    LocalStore(root).put("annotations/v0002.json", json.dumps({"sha256": "x"}).encode())
    assert partials(folder) == []
