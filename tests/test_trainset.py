import json

import numpy as np
import pytest

from attnloop import annotation_set
from attnloop.annotation_set import Entry
from attnloop.datasets import read_manifest
from attnloop.imaging import encode_png
from attnloop.storage import LocalStore
from attnloop.training import TrainConfig, train
from attnloop.trainset import materialize


def annotated_store(tmp_path, entries):
    """A local store with the entries' frames and the entries as annotation set version 1."""
    store = LocalStore(tmp_path / "store")
    for i, entry in enumerate(entries):
        store.put(entry["image"], encode_png(np.full((32, 32, 1), 20 * i, np.uint8)))
    annotation_set.write(store, {e["image"]: Entry(**e) for e in entries}, version=1, parent=None)
    return store


def test_an_annotation_set_becomes_a_training_folder_with_the_base_replayed(tiny_data, tmp_path):
    entries = [
        {"image": "frames/l1/2026-11-26/a.png", "boxes": [[2, 2, 12, 12]], "label": "square"},
        {"image": "frames/l1/2026-11-26/b.png", "boxes": [[4, 4, 16, 8]], "label": "bar"},
        {"image": "frames/l1/2026-11-26/c.png", "boxes": [[1, 1, 5, 5]], "label": None},  # no class: left out
    ]
    store = annotated_store(tmp_path, entries)
    root, annotations = materialize(store, "annotations/v0001.jsonl", out=tmp_path / "set", base=tiny_data)
    records = read_manifest(root)
    assert len(records) == len(read_manifest(tiny_data)) + 2
    assert sorted(annotations) == ["annotated/frames/l1/2026-11-26/a.png", "annotated/frames/l1/2026-11-26/b.png"]
    assert (root / "annotated/frames/l1/2026-11-26/a.png").read_bytes() == store.get(entries[0]["image"])
    assert all((root / r.image).is_file() for r in records)
    result = train(root, TrainConfig(epochs=1, guidance="outside"), annotations=annotations, progress=False)
    assert result.metrics["guided_images"] == 2


def test_a_class_the_base_does_not_know_is_refused(tiny_data, tmp_path):
    store = annotated_store(tmp_path, [{"image": "frames/l1/2026-11-26/a.png", "boxes": [[2, 2, 9, 9]], "label": "cat"}])
    with pytest.raises(ValueError, match="class 'cat' is not one of"):
        materialize(store, "annotations/v0001.jsonl", out=tmp_path / "set", base=tiny_data)
    empty = annotated_store(tmp_path / "e", [{"image": "frames/l1/2026-11-26/a.png", "boxes": [[2, 2, 9, 9]]}])
    with pytest.raises(ValueError, match="nothing to retrain on"):
        materialize(empty, "annotations/v0001.jsonl", out=tmp_path / "set2", base=tiny_data)


def test_train_reads_a_harvested_set_from_its_store_and_refuses_one_that_names_nothing(tiny_data, tmp_path):
    from attnloop.trainset import training_set

    entries = [
        {"image": "frames/l1/2026-11-26/a.png", "boxes": [[2, 2, 12, 12]], "label": "square"},
        {"image": "frames/l1/2026-11-26/b.png", "boxes": [[4, 4, 16, 8]], "label": "bar"},
    ]
    store = annotated_store(tmp_path, entries)
    # by its key in a store (how an S3 store's set is named), and as the file inside a local store
    for boxes, kwargs in (("annotations/v0001.jsonl", {"store": store}), (str(store.root / "annotations/v0001.jsonl"), {})):
        root, annotations = training_set(tiny_data, boxes, out=tmp_path / "set", **kwargs)
        assert root == tmp_path / "set" and sorted(annotations) == [f"annotated/{e['image']}" for e in entries]
    # the data's own images pass through unchanged
    own = tmp_path / "own.jsonl"
    own.write_text(json.dumps({"image": "train/0.png", "boxes": [[1, 1, 5, 5]]}) + "\n")
    assert training_set(tiny_data, str(own), out=tmp_path / "unused")[0] == tiny_data
    # a copy of the set away from its frames names nothing the data or any store has
    away = tmp_path / "away.jsonl"
    away.write_bytes(store.get("annotations/v0001.jsonl"))
    with pytest.raises(ValueError, match=r"none of its 2 entries names a training image .*'frames/l1/2026-11-26/a.png'.*'train/0.png'"):
        training_set(tiny_data, str(away), out=tmp_path / "set2")
    with pytest.raises(FileNotFoundError, match="--store"):
        training_set(tiny_data, "annotations/v0009.jsonl", out=tmp_path / "set3", store=store)


def test_a_set_altered_after_it_was_written_is_refused(tiny_data, tmp_path):
    store = annotated_store(tmp_path, [{"image": "frames/l1/2026-11-26/a.png", "boxes": [[2, 2, 12, 12]], "label": "square"}])
    body = store.get("annotations/v0001.jsonl")
    store.put("annotations/v0001.jsonl", body.replace(b'"square"', b'"bar"'))
    with pytest.raises(ValueError, match="the set was altered"):
        materialize(store, "annotations/v0001.jsonl", out=tmp_path / "set", base=tiny_data)


def test_shortcut_marks_travel_from_the_set_into_training(tiny_data, tmp_path):
    """A harvested entry with a class and a shortcut mark but no evidence box trains: the mark is
    erased in its counterexamples and penalized; a set written before marks existed reads with none."""
    entries = [
        {"image": "frames/l1/2026-11-26/a.png", "boxes": [], "label": "square", "shortcut_boxes": [[0, 0, 8, 8]]},
        {"image": "frames/l1/2026-11-26/b.png", "boxes": [[4, 4, 16, 8]], "label": "bar"},
    ]
    store = annotated_store(tmp_path, entries)
    assert json.loads(store.get("annotations/v0001.jsonl").splitlines()[0])["shortcut_boxes"] == [[0.0, 0.0, 8.0, 8.0]]
    root, annotations = materialize(store, "annotations/v0001.jsonl", out=tmp_path / "set", base=tiny_data)
    assert annotations["annotated/frames/l1/2026-11-26/a.png"].shortcut_boxes == [[0.0, 0.0, 8.0, 8.0]]
    config = TrainConfig(epochs=2, guidance="outside", counterexamples="append", guided_share=0.5)
    result = train(root, config, annotations=annotations, progress=False)
    assert (result.metrics["guided_images"], result.metrics["marked_images"]) == (1, 1)
    assert all(record["marks"] > 0 for record in result.history)
    # the line format of a set from before shortcut marks
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps({"image": "train/0.png", "boxes": [[1, 1, 5, 5]], "label": "square", "hash": "h", "task": 3}) + "\n")
    from attnloop.datasets import read_annotations

    assert read_annotations(old)["train/0.png"].shortcut_boxes == []
