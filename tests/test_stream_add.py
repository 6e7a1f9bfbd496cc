"""A user's own image files into the store (``attnloop stream add``), where scoring finds them."""

import uuid

import numpy as np
import pytest

from attnloop.apps.cli import main
from attnloop.imaging import encode_png
from attnloop.layout import parse_frame_key
from attnloop.storage import open_store
from services import S3_KEY, S3_SECRET


def _camera_folder(root, *, size=32):
    """A camera export: two days in subfolders, two files of the same name, a note and a broken JPEG."""
    rng = np.random.default_rng(0)
    for rel in ("day1/0001.png", "day2/0001.png", "day2/0002.PNG", "top.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(encode_png(rng.integers(0, 255, size=(size, size, 1), dtype=np.uint8)))
    (root / "README.txt").write_text("line 1 export")
    (root / "day2" / "cut.jpg").write_bytes(b"\xff\xd8\xff")
    return root


def test_added_files_are_frames_scoring_finds_once(tiny_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ATTNLOOP_HOME", str(tmp_path / "home"))
    folder = _camera_folder(tmp_path / "export")
    assert main(["stream", "add", str(folder), "--source", "line-1", "--day", "2026-11-30"]) == 0
    captured = capsys.readouterr()
    assert "added 4 frames to file://" in captured.out and "frames/line-1/2026-11-30/" in captured.out
    assert "(0 already there, 2 left out)" in captured.out and "next: `attnloop score`" in captured.out
    assert "README.txt: not an image file" in captured.err and "cut.jpg: not a PNG, JPEG" in captured.err
    store = open_store((tmp_path / "home" / "store").as_uri())
    keys = [o.key for o in store.list("frames/")]
    assert len(keys) == 4 and all(parse_frame_key(k) is not None for k in keys)
    assert len({k.rsplit("/", 1)[1].split("-")[0] for k in keys}) == 3  # both 0001.png kept: same name, other content

    assert main(["stream", "add", str(folder), "--source", "line-1", "--day", "2026-11-30"]) == 0
    assert "added 0 frames" in capsys.readouterr().out and len(list(store.list("frames/"))) == 4

    assert main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "run"), "--epochs", "1", "--no-track"]) == 0
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "m.onnx")]) == 0
    capsys.readouterr()
    assert main(["score", "--model", str(tmp_path / "m.onnx")]) == 0
    out = capsys.readouterr().out
    assert "frames scored: 4" in out and "quarantined: 0" in out


def test_a_bad_source_or_nothing_to_add_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ATTNLOOP_HOME", str(tmp_path / "home"))
    assert main(["stream", "add", str(tmp_path), "--source", "line 1"]) == 2
    assert "letters, digits" in capsys.readouterr().err
    assert not (tmp_path / "home" / "store").exists()  # nothing created for a refused command
    (tmp_path / "notes.txt").write_text("x")
    assert main(["stream", "add", str(tmp_path / "notes.txt"), "--source", "l1"]) == 2
    assert "added 0 frames" in capsys.readouterr().out


@pytest.mark.services
def test_added_to_an_s3_store(s3_endpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ATTNLOOP_S3_ENDPOINT", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    uri = f"s3://add-{uuid.uuid4().hex[:8]}/site"
    folder = _camera_folder(tmp_path / "export")
    assert main(["stream", "add", str(folder / "day2"), "--source", "line-2", "--to", uri]) == 0
    assert "added 2 frames to s3://" in capsys.readouterr().out
    store = open_store(uri, endpoint=s3_endpoint, access_key=S3_KEY, secret_key=S3_SECRET)
    assert sorted(parse_frame_key(o.key).ext for o in store.list("frames/line-2/")) == ["png", "png"]
    capsys.readouterr()
    assert main(["score", "--store", f"s3://typo-{uuid.uuid4().hex[:8]}/site"]) == 2  # a bucket that is not there
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no store at s3://typo-" in err and "has no bucket" in err
