"""The object-store interface against a real S3 server over HTTP (moto's, on loopback) and a folder."""

import urllib.request
import uuid
from datetime import timedelta

import pytest

from attnloop.storage import LocalStore, open_store
from services import S3_KEY, S3_SECRET


@pytest.fixture(params=["s3", "folder"])
def store(request, tmp_path):
    if request.param == "folder":
        return open_store((tmp_path / "store").as_uri(), create=True)
    endpoint = request.getfixturevalue("s3_endpoint")
    return open_store(f"s3://bucket-{uuid.uuid4().hex[:8]}/site-a", endpoint=endpoint, access_key=S3_KEY, secret_key=S3_SECRET, create=True)


@pytest.mark.services
def test_put_get_list_exists_delete(store):
    store.put("frames/l1/2026-11-26/b.png", b"bee", content_type="image/png")
    store.put("frames/l1/2026-11-26/a.png", b"a")
    store.put("other/x.txt", b"x")
    assert store.get("frames/l1/2026-11-26/b.png") == b"bee"
    listed = [(o.key, o.size) for o in store.list("frames/")]
    assert listed == [("frames/l1/2026-11-26/a.png", 1), ("frames/l1/2026-11-26/b.png", 3)]
    assert [o.key for o in store.list("frames/", start_after="frames/l1/2026-11-26/a.png")] == ["frames/l1/2026-11-26/b.png"]
    assert store.exists("other/x.txt") and not store.exists("other/y.txt")
    with pytest.raises(KeyError, match="does not exist"):
        store.get("other/y.txt")
    store.put("other/x.txt", b"replaced")  # whole-object overwrite
    assert store.get("other/x.txt") == b"replaced"
    store.delete("other/x.txt")
    assert not store.exists("other/x.txt")
    with pytest.raises(ValueError, match="relative path"):
        store.put("../escape", b"")


@pytest.mark.services
def test_presigned_url_serves_the_object_over_http(s3_endpoint):
    store = open_store("s3://presign-test", endpoint=s3_endpoint, access_key=S3_KEY, secret_key=S3_SECRET, create=True)
    store.put("frames/cam/2026-11-26/1.png", b"\x89PNG-bytes")
    url = store.presign("frames/cam/2026-11-26/1.png", expires=timedelta(minutes=5))
    assert url.startswith(s3_endpoint) and "X-Amz-Signature" in url
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"\x89PNG-bytes"


def test_folder_store_writes_whole_objects_only(tmp_path):
    store = LocalStore(tmp_path)
    store.put("a/b.bin", b"1" * 1000)
    (tmp_path / "a" / ".partial-xyz").write_bytes(b"half")  # what a crash mid-write leaves
    assert [o.key for o in store.list()] == ["a/b.bin"]
    assert store.presign("a/b.bin").startswith("file://")


def test_bad_uris_say_what_is_expected(tmp_path):
    with pytest.raises(ValueError, match="expected s3://bucket/prefix or file:///path"):
        open_store("ftp://x/y")
    with pytest.raises(ValueError, match="needs an S3 endpoint"):
        open_store("s3://bucket/prefix")
    with pytest.raises(ValueError, match="no store at .* does not exist"):
        open_store((tmp_path / "missing").as_uri())
