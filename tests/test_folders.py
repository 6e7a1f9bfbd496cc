import json

import cv2
import numpy as np
import pytest

from attnloop.apps.cli import main
from attnloop.datasets import read_manifest
from attnloop.datasets.folders import hash_split, import_folder, read_boxes
from attnloop.imaging import encode_png


def write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
def tree(tmp_path):
    """ROOT/<class>/…: gray, RGB, 16-bit PNG, a 3-page TIFF, a corrupt PNG and a text file."""
    root = tmp_path / "frames"
    write(root / "hole" / "gray.png", encode_png(np.full((40, 50), 90, np.uint8)))
    write(root / "hole" / "rgb.png", encode_png(np.zeros((40, 50, 3), np.uint8)))
    write(root / "ok" / "deep.png", encode_png(np.full((40, 50), 50000, np.uint16)))
    ok, buf = cv2.imencodemulti(".tiff", [np.full((40, 50), v, np.uint16) for v in (1, 2, 3)])
    write(root / "ok" / "stack.tiff", buf.tobytes())
    write(root / "ok" / "broken.png", b"garbage, not pixels")
    write(root / "ok" / "cut.png", encode_png(np.zeros((40, 50), np.uint8))[:-30])
    write(root / "ok" / "notes.txt", b"not an image")
    return root


def label_studio_export(name: str) -> list[dict]:
    result = lambda x, y, w, h, label, **extra: {  # noqa: E731
        "type": "rectanglelabels",
        "original_width": 50,
        "original_height": 40,
        "value": {"x": x, "y": y, "width": w, "height": h, "rectanglelabels": [label], **extra},
    }
    return [
        {
            "id": 1,
            "data": {"image": f"/data/upload/3/0a1b2c3d-{name}"},
            "annotations": [
                {"id": 1, "updated_at": "2026-01-01", "result": [result(0, 0, 10, 10, "evidence")]},
                {
                    "id": 2,
                    "updated_at": "2026-02-01",
                    "result": [
                        result(10, 25, 20, 50, "evidence"),
                        result(90, 90, 10, 10, "confounder"),
                        result(5, 5, 10, 10, "evidence", rotation=30),
                        result(50, 50, 0, 10, "evidence"),
                    ],
                },
                {"id": 3, "updated_at": "2026-03-01", "was_cancelled": True, "result": []},
            ],
        }
    ]


def test_class_tree_with_every_pixel_format_and_bad_files_reported(tree):
    result = import_folder(tree, val=0.0, test=0.5)
    assert sorted(r.image for r in result.records) == ["hole/gray.png", "hole/rgb.png", "ok/deep.png", "ok/stack.tiff"]
    assert {r.label for r in result.records} == {"hole", "ok"}
    assert {r.split for r in result.records} <= {"train", "test"}
    reasons = {p.path: p.reason for p in result.problems}
    assert reasons == {"ok/broken.png": "corrupt", "ok/cut.png": "truncated", "ok/notes.txt": "unsupported_type"}


def test_label_studio_export_boxes_take_the_latest_annotation(tree, tmp_path):
    export = tmp_path / "export.json"
    export.write_text(json.dumps(label_studio_export("gray.png")))
    boxes = read_boxes(export)
    assert boxes.boxes == {"gray.png": [[5.0, 10.0, 15.0, 30.0]]}
    assert boxes.confounders == {"gray.png": [[45.0, 36.0, 50.0, 40.0]]}
    assert sorted(p.reason for p in boxes.problems) == ["empty_box", "rotated_box"]
    record = next(r for r in import_folder(tree, boxes=export).records if r.image == "hole/gray.png")
    assert record.boxes == [[5.0, 10.0, 15.0, 30.0]] and record.confounder_boxes == [[45.0, 36.0, 50.0, 40.0]]


def test_coco_boxes(tree, tmp_path):
    coco = {
        "images": [{"id": 7, "file_name": "rgb.png", "width": 50, "height": 40}],
        "categories": [{"id": 1, "name": "hole"}, {"id": 2, "name": "confounder"}],
        "annotations": [
            {"id": 1, "image_id": 7, "bbox": [2, 3, 10, 5], "category_id": 1},
            {"id": 2, "image_id": 7, "bbox": [45, 35, 10, 10], "category_id": 2},
            {"id": 3, "image_id": 99, "bbox": [0, 0, 1, 1], "category_id": 1},
        ],
    }
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(coco))
    result = import_folder(tree, boxes=path)
    record = next(r for r in result.records if r.image == "hole/rgb.png")
    assert record.boxes == [[2.0, 3.0, 12.0, 8.0]]
    assert record.confounder_boxes == [[45.0, 35.0, 50.0, 40.0]]  # clipped to the image
    assert [p.reason for p in result.problems if p.path.startswith("annotation")] == ["malformed_box"]


def test_split_folders_are_used_as_splits(tmp_path):
    for split in ("train", "test"):
        write(tmp_path / split / "ok" / "a.png", encode_png(np.zeros((8, 8), np.uint8)))
    records = import_folder(tmp_path).records
    assert sorted((r.split, r.image) for r in records) == [("test", "test/ok/a.png"), ("train", "train/ok/a.png")]


def test_hash_split_is_stable_and_near_the_shares():
    names = [f"line{i % 3}/{i}.png" for i in range(2000)]
    splits = [hash_split(n, val=0.1, test=0.2, seed=0) for n in names]
    assert splits == [hash_split(n, val=0.1, test=0.2, seed=0) for n in names]
    assert abs(splits.count("test") / 2000 - 0.2) < 0.03 and abs(splits.count("val") / 2000 - 0.1) < 0.03


def test_cli_import_writes_a_manifest_and_lists_what_was_left_out(tree, capsys):
    assert main(["data", "import", str(tree)]) == 0
    out = capsys.readouterr().out
    assert "4 images" in out and "corrupt" in out and "notes.txt" in out
    assert len(read_manifest(tree)) == 4


def test_empty_or_missing_folders_are_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        import_folder(tmp_path / "nowhere")
    (tmp_path / "ok").mkdir()
    with pytest.raises(ValueError, match="no readable image"):
        import_folder(tmp_path)


def test_boxes_imported_with_the_data_guide_training_by_default(tmp_path, capsys):
    rng = np.random.default_rng(0)
    root, images = tmp_path / "photos", []
    for split in ("train", "test"):
        for i in range(8):
            label = ("square", "bar")[i % 2]
            image = rng.integers(0, 60, size=(32, 32), dtype=np.uint8)
            image[8:18, 8:18 if label == "square" else 26] = 220
            write(root / split / label / f"{split}{i}.png", encode_png(image))
            images.append((f"{split}{i}.png", label))
    coco = {
        "images": [{"id": k, "file_name": name, "width": 32, "height": 32} for k, (name, _) in enumerate(images[:3])],
        "categories": [{"id": 1, "name": "evidence"}],
        "annotations": [{"id": k, "image_id": k, "bbox": [8, 8, 10, 10], "category_id": 1} for k in range(3)],
    }
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    assert main(["data", "import", str(root), "--boxes", str(tmp_path / "coco.json")]) == 0
    assert "3 with boxes" in capsys.readouterr().out
    assert main(["train", "--data", str(root), "--out", str(tmp_path / "run"), "--epochs", "1", "--no-track"]) == 0
    assert "(3 guided images; the boxes imported with the data on 3 training images" in capsys.readouterr().out
    assert main(["train", "--data", str(root), "--out", str(tmp_path / "plain"), "--epochs", "1", "--no-track", "--boxes", "none"]) == 0
    assert "(0 guided images)" in capsys.readouterr().out

    assert main(["data", "make", "shortcut", "--out", str(tmp_path / "made"), "--size", "8"]) == 0
    assert main(["train", "--data", str(tmp_path / "made"), "--out", str(tmp_path / "made-run"), "--epochs", "1", "--no-track"]) == 0
    assert "(0 guided images; the family's true boxes of 8 training images left out; --boxes manifest trains with them)" in capsys.readouterr().out
