"""Faults and bad input for the serving service and the object store, by real means: real files, a
FIFO, symbolic links, a real HTTP server on loopback, moto's S3 server over HTTP and a closed port.

Each test names the fault it injects; docs/reliability.md lists them with the command that runs it.
"""

import base64
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from fastapi.testclient import TestClient

from attnloop.config import LabelStudioSettings, Settings
from attnloop.imaging import Limits, encode_png
from attnloop.storage import KeyRefused, LocalStore, ObjectTooLarge, StoreUnavailable, open_store
from conftest import write_tiny_manifest
from serving.app import create_app
from services import S3_KEY, S3_SECRET

TOKEN = "s3cret-serving-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


# --- helpers --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """A tiny ABN exported to ONNX (one epoch on one torch thread: a few seconds)."""
    import torch

    from attnloop.export import export_onnx
    from attnloop.training import TrainConfig, train

    root = tmp_path_factory.mktemp("faults-serving")
    data = write_tiny_manifest(root / "data", per_class=3)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(data, TrainConfig(epochs=1, guidance="none", seed=0, threads=1), progress=False)
        return export_onnx(result.model, result.card, root / "model.onnx")
    finally:
        torch.set_num_threads(before)


def png(seed: int = 0) -> bytes:
    image = np.random.default_rng(seed).integers(0, 60, size=(32, 32), dtype=np.uint8)
    image[8:18, 8:18] = 220
    return encode_png(image)


class Recorder(ThreadingHTTPServer):
    """A real HTTP server on loopback that answers every GET with one image and records the requests."""

    daemon_threads = True

    def __init__(self, body: bytes) -> None:
        self.body, self.seen = body, []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(handler) -> None:  # noqa: N805
                self.seen.append((handler.path, handler.headers.get("authorization")))
                handler.send_response(200)
                handler.send_header("content-type", "image/png")
                handler.send_header("content-length", str(len(self.body)))
                handler.end_headers()
                handler.wfile.write(self.body)

            def log_message(handler, *args) -> None:  # noqa: N805
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> "Recorder":
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()


@contextlib.contextmanager
def closed_port():
    """A loopback port bound but not listening: connecting is refused at once."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def serving(model_file: Path, store: Path | str, *, token: str | None = TOKEN, label_studio: LabelStudioSettings | None = None, **kwargs):
    uri = store.as_uri() if isinstance(store, Path) else store
    ls = label_studio or LabelStudioSettings(url=None, token=None)
    settings = Settings(home=Path(model_file).parent, threads=1, store_uri=uri, serving_token=token, label_studio=ls, **kwargs)
    return TestClient(create_app(model_source=str(model_file), settings=settings, reload_interval=3600))


@pytest.fixture
def store_dir(tmp_path) -> Path:
    root = tmp_path / "store"
    (root / "frames").mkdir(parents=True)
    (root / "frames" / "a.png").write_bytes(png(0))
    return root


def ls_predict(client: TestClient, *urls: str, headers=AUTH):
    tasks = [{"id": i, "data": {"image": url}} for i, url in enumerate(urls, start=1)]
    return client.post("/ls/predict", json={"tasks": tasks}, headers=headers)


# --- /ls/predict reads only the store and Label Studio ------------------------------------------------


def test_ls_predict_refuses_file_and_loopback_urls(model_file, store_dir, tmp_path):
    """Fault: task URLs naming host files (existing or not), an image outside the store, a loopback service."""
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(png(1))
    ls = LabelStudioSettings(url="http://127.0.0.1:9", token=None, document_root="/")
    with Recorder(png(2)) as loopback, serving(model_file, store_dir, label_studio=ls) as client:
        answers = {
            url: ls_predict(client, url)
            for url in (
                "file:///etc/passwd",
                "file:///no/such/file",
                outside.as_uri(),
                f"{loopback.url}/image.png",
                "http://localhost:9/x.png",  # the Label Studio port, but another host name
                f"file://{store_dir}/../elsewhere.png",
                "/data/local-files/?d=" + quote(str(outside).lstrip("/")),  # Label Studio's local files, outside the store
                "http://127.0.0.1:9/data/local-files/?d=" + quote(str(store_dir).lstrip("/") + "/../elsewhere.png"),
                "ftp://example.com/x.png",
            )
        }
        assert loopback.seen == []  # nothing was fetched
    for url, answer in answers.items():
        assert answer.status_code == 422, (url, answer.text)
        detail = answer.json()["detail"]
        assert "is refused" in detail and "reads only" in detail and "http://127.0.0.1:9" in detail, detail
    # existing and missing host files get the same answer: no existence or size oracle
    same = {answers[u].json()["detail"].replace("file:///etc/passwd", "U").replace("file:///no/such/file", "U") for u in ("file:///etc/passwd", "file:///no/such/file")}
    assert len(same) == 1


def test_ls_predict_reads_store_urls_and_the_label_studio_host(model_file, store_dir, tmp_path):
    """The URLs that stay allowed: the store's file:// URLs, Label Studio local-files URLs inside the store,
    and URLs on the configured Label Studio host (fetched with its token)."""
    with Recorder(png(0)) as label_studio:
        ls = LabelStudioSettings(url=label_studio.url, token="ls-token", document_root=str(tmp_path))
        with serving(model_file, store_dir, label_studio=ls) as client:
            direct = client.post("/predict", json={"key": "frames/a.png"}).json()
            urls = [
                (store_dir / "frames" / "a.png").as_uri(),
                "/data/local-files/?d=" + quote("store/frames/a.png"),
                f"{label_studio.url}/data/local-files/?d=" + quote("store/frames/a.png"),
                f"{label_studio.url}/data/upload/1/a.png",
                "/data/upload/1/b.png",
            ]
            answer = ls_predict(client, *urls)
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    for url, result in zip(urls, results):
        assert "error" not in result, (url, result)
        assert result["score"] == pytest.approx(direct["confidence"]), url
    # the local-files URLs were read from the store; only the uploads went to Label Studio, with its token
    assert sorted(label_studio.seen) == [("/data/upload/1/a.png", "Token ls-token"), ("/data/upload/1/b.png", "Token ls-token")]


@pytest.mark.services
def test_ls_predict_reads_s3_and_presigned_urls_of_the_store_only(model_file, s3_endpoint, tmp_path):
    """s3:// and presigned URLs of the configured bucket and prefix are read from the store; others are refused."""
    bucket = f"serving-{uuid.uuid4().hex[:8]}"
    store = open_store(f"s3://{bucket}/site", endpoint=s3_endpoint, access_key=S3_KEY, secret_key=S3_SECRET, create=True)
    store.put("frames/a.png", png(0))
    other = open_store(f"s3://{bucket}-other", endpoint=s3_endpoint, access_key=S3_KEY, secret_key=S3_SECRET, create=True)
    other.put("frames/a.png", png(0))
    with serving(
        model_file, f"s3://{bucket}/site", s3_endpoint=s3_endpoint, s3_access_key=S3_KEY, s3_secret_key=S3_SECRET
    ) as client:
        ok = ls_predict(client, f"s3://{bucket}/site/frames/a.png", store.presign("frames/a.png"))
        assert ok.status_code == 200, ok.text
        assert all("error" not in r and r["result"] for r in ok.json()["results"]), ok.text
        for url in (f"s3://{bucket}-other/frames/a.png", other.presign("frames/a.png"), f"s3://{bucket}/frames/a.png"):
            refused = ls_predict(client, url)
            assert refused.status_code == 422 and "is refused" in refused.json()["detail"], (url, refused.text)


# --- a token on /ls and /admin ----------------------------------------------------------------------------


def test_ls_and_admin_need_the_serving_token(model_file, store_dir):
    """Fault: calls to /ls and /admin without a token, with a wrong one, and a service with none configured."""
    with serving(model_file, store_dir, token=None) as off:
        for method, path in (("GET", "/ls/health"), ("POST", "/ls/predict"), ("POST", "/ls/setup"), ("POST", "/admin/reload")):
            answer = off.request(method, path, headers=AUTH)
            assert answer.status_code == 503 and "ATTNLOOP_SERVING_TOKEN" in answer.json()["detail"], (path, answer.text)
        assert off.post("/predict", json={"key": "frames/a.png"}).status_code == 200  # the open routes stay open
    with serving(model_file, store_dir) as client:
        basic = base64.b64encode(f"labelstudio:{TOKEN}".encode()).decode()
        wrong = base64.b64encode(b"labelstudio:guess").decode()
        for path in ("/ls/health", "/admin/reload"):
            method = client.get if path == "/ls/health" else client.post
            for headers in ({}, {"authorization": "Bearer guess"}, {"authorization": f"Basic {wrong}"}, {"authorization": "Basic !!"}):
                answer = method(path, headers=headers)
                assert answer.status_code == 401, (path, headers, answer.text)
                assert "token" in answer.json()["detail"] and answer.headers["www-authenticate"].startswith("Basic")
            for headers in (AUTH, {"authorization": f"Basic {basic}"}):  # Label Studio sends basic auth
                assert method(path, headers=headers).status_code == 200, (path, headers)
        assert client.get("/health").status_code == 200 and client.get("/live").status_code == 200


# --- keys that are not regular files in the store -----------------------------------------------------


def test_bad_keys_answer_4xx_with_a_message(model_file, store_dir, tmp_path):
    """Fault: keys naming a folder, a path below a file, a 5000-character key, a NUL byte, a link out of
    the store, a too large object, and a 100 000-level nested JSON body."""
    (tmp_path / "secret.png").write_bytes(png(3))
    (store_dir / "frames" / "link.png").symlink_to(tmp_path / "secret.png")
    (store_dir / "big.png").write_bytes(png(0) + b"\0" * 5000)
    limits = Limits(max_bytes=4096)
    settings = Settings(home=tmp_path, threads=1, store_uri=store_dir.as_uri(), serving_token=TOKEN)
    app = create_app(model_source=str(model_file), settings=settings, limits=limits)
    with TestClient(app) as client:
        cases = {
            "frames": (404, "is a folder"),
            "frames/a.png/x.png": (404, "not a folder"),
            "k" * 5000: (422, "too long"),
            "frames/" + "d" * 300 + ".png": (422, "too long"),
            "frames/a\0.png": (422, "NUL"),
            "frames/link.png": (422, "symbolic link"),
            "big.png": (413, "4096 bytes"),
        }
        for key, (status, words) in cases.items():
            answer = client.post("/predict", json={"key": key})
            assert answer.status_code == status and words in answer.json()["detail"], (key[:40], answer.text)
        nested = client.post("/predict", content=b"[" * 100_000, headers={"content-type": "application/json"})
        assert nested.status_code == 422 and "nested" in nested.json()["detail"], nested.text
        ls_nested = client.post("/ls/predict", content=b'{"tasks": ' + b"[" * 100_000, headers={"content-type": "application/json", **AUTH})
        assert ls_nested.status_code == 422, ls_nested.text
        assert client.post("/predict", json={"key": "frames/a.png"}).status_code == 200  # still serving


@pytest.mark.timeout(30, func_only=True)
def test_a_fifo_key_answers_at_once_and_the_service_goes_on(model_file, store_dir):
    """Fault: a key that names a FIFO (reading it would wait for a writer forever)."""
    os.mkfifo(store_dir / "frames" / "pipe.png")
    with serving(model_file, store_dir) as client:
        started = time.monotonic()
        answer = client.post("/predict", json={"key": "frames/pipe.png"})
        assert time.monotonic() - started < 5
        assert answer.status_code == 422 and "not a regular file" in answer.json()["detail"], answer.text
        task = ls_predict(client, (store_dir / "frames" / "pipe.png").as_uri())
        assert task.status_code == 200 and "not a regular file" in task.json()["results"][0]["error"]
        assert client.post("/predict", json={"key": "frames/a.png"}).status_code == 200


# --- the folder store never leaves its root ----------------------------------------------------------


@pytest.mark.timeout(30, func_only=True)
def test_local_store_reads_only_regular_files_inside_its_root(tmp_path, caplog):
    """Fault: links out of the root (a frame, a folder), a link inside it, a FIFO, a folder, a path below
    a file, over-long keys and a byte limit, on the store itself (scoring reads through it too)."""
    root, outside = tmp_path / "store", tmp_path / "outside"
    (root / "frames").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"secret")
    store = LocalStore(root)
    store.put("frames/a.png", b"0123456789")
    (root / "frames" / "escape.png").symlink_to(outside / "secret.png")
    (root / "frames" / "inside.png").symlink_to(root / "frames" / "a.png")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    os.mkfifo(root / "frames" / "pipe.png")

    for key in ("frames/escape.png", "frames/inside.png", "linked/secret.png"):
        with pytest.raises(KeyRefused, match="symbolic link"):
            store.get(key)
        assert not store.exists(key)
    with pytest.raises(KeyRefused, match="not a regular file"):
        store.get("frames/pipe.png")
    with pytest.raises(KeyError, match="is a folder"):
        store.get("frames")
    with pytest.raises(KeyError, match="not a folder"):
        store.get("frames/a.png/b.png")
    with pytest.raises(KeyRefused, match="too long"):
        store.get("x" * 5000)
    with pytest.raises(ObjectTooLarge, match="limit is 4 bytes"):
        store.get("frames/a.png", max_bytes=4)
    assert store.get("frames/a.png", max_bytes=10) == b"0123456789"

    with caplog.at_level(logging.WARNING, logger="attnloop.storage"):
        assert [o.key for o in store.list()] == ["frames/a.png"]
        assert [o.key for o in store.list("linked/")] == []
    assert "symbolic link" in caplog.text and "frames/escape.png" in caplog.text
    assert [o.key for o in store.list("fra")] == ["frames/a.png"]  # a prefix, as on S3
    with pytest.raises(ValueError, match="relative path"):
        list(store.list("../"))

    with pytest.raises(KeyRefused, match="symbolic link"):
        store.presign("frames/escape.png")
    with pytest.raises(KeyRefused, match="symbolic link"):
        store.delete("linked/secret.png")
    assert (outside / "secret.png").read_bytes() == b"secret"


def test_local_store_refuses_to_write_through_a_link(tmp_path):
    """Fault: a store whose reports/ is a link to a folder outside it."""
    root, outside = tmp_path / "store", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "reports").symlink_to(outside, target_is_directory=True)
    store = LocalStore(root)
    with pytest.raises(KeyRefused, match="reports is a symbolic link"):
        store.put("reports/v1/run.md", b"# report")
    with pytest.raises(KeyRefused, match="symbolic link"):
        store.put("reports", b"x")  # nor replace the link by an object
    assert list(outside.iterdir()) == []
    store.put("frames/a.png", b"a")  # everything else writes as before
    (root / "frames" / "sub").mkdir()
    with pytest.raises(KeyRefused, match="is a folder"):
        store.put("frames/sub", b"x")
    with pytest.raises(KeyRefused, match="not a folder"):
        store.put("frames/a.png/b.png", b"x")
    assert store.get("frames/a.png") == b"a"
    assert sorted(p.name for p in (root / "frames").iterdir()) == ["a.png", "sub"]  # no temporary file left


# --- a closed S3 endpoint fails fast, in one line -----------------------------------------------------


def test_a_closed_s3_endpoint_fails_fast_with_one_line(tmp_path, monkeypatch, capsys):
    """Fault: ATTNLOOP_S3_ENDPOINT names a port nobody listens on."""
    from attnloop.apps import cli

    with closed_port() as port:
        endpoint = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as caught:
            open_store("s3://frames/site", endpoint=endpoint, access_key=S3_KEY, secret_key=S3_SECRET, create=True)
        assert time.monotonic() - started < 5
        message = str(caught.value)
        assert endpoint in message and "connection refused" in message and "ATTNLOOP_S3_ENDPOINT" in message
        assert "\n" not in message
        store = open_store("s3://frames/site", endpoint=endpoint, access_key=S3_KEY, secret_key=S3_SECRET)
        for call in (lambda: store.get("frames/a.png"), lambda: store.put("frames/a.png", b"x"), lambda: list(store.list("frames/"))):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match=endpoint):
                call()
            assert time.monotonic() - started < 5

        monkeypatch.setenv("ATTNLOOP_S3_ENDPOINT", endpoint)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEY)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
        capsys.readouterr()
        started = time.monotonic()
        rc = cli.main(["score", "--store", "s3://frames/site", "--model", str(tmp_path / "model.onnx")])
        elapsed = time.monotonic() - started
    err = capsys.readouterr().err.strip()
    assert rc != 0 and elapsed < 5
    assert len(err.splitlines()) == 1 and endpoint in err and "Traceback" not in err, err


@pytest.mark.services
def test_s3_reads_are_bounded_and_keys_checked(s3_endpoint):
    """Bad input on S3: an object over the byte limit, an over-long key."""
    store = open_store(f"s3://bounded-{uuid.uuid4().hex[:8]}", endpoint=s3_endpoint, access_key=S3_KEY, secret_key=S3_SECRET, create=True)
    store.put("big.bin", b"x" * 10_000)
    with pytest.raises(ObjectTooLarge, match="limit is 100 bytes"):
        store.get("big.bin", max_bytes=100)
    assert store.get("big.bin", max_bytes=10_000) == b"x" * 10_000
    with pytest.raises(KeyRefused, match="too long"):
        store.get("k" * 5000)


# --- what Label Studio 1.23 itself sends ---------------------------------------------------------------


@contextlib.contextmanager
def uvicorn_serving(app):
    """The app on a real uvicorn server on loopback (a thread); yields its URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.mark.services
@pytest.mark.slow
@pytest.mark.timeout(600, func_only=True)
def test_label_studio_connects_with_basic_auth_and_gets_predictions(model_file, store_dir, tmp_path, monkeypatch):
    """A real Label Studio 1.23 connects to /ls with the token as its basic-auth password (a wrong one is
    refused with Label Studio's own message) and retrieves a prediction for a task naming a store key."""
    from label_studio_sdk import LabelStudio
    from label_studio_sdk.core.api_error import ApiError

    from attnloop.labelstudio.project import template_config
    from labelstudio_server import new_server

    monkeypatch.setenv("ML_BLOCK_LOCAL_IP", "false")  # this server only: it may call a backend on loopback
    monkeypatch.setenv("SSRF_PROTECTION_ENABLED", "false")  # and create the backend's webhook there
    server = new_server(tmp_path / "label-studio")
    server.launch()
    try:
        ls_settings = LabelStudioSettings(url=server.url, token=server.token)
        settings = Settings(home=tmp_path, threads=1, store_uri=store_dir.as_uri(), serving_token=TOKEN, label_studio=ls_settings)
        app = create_app(model_source=str(model_file), settings=settings)
        with uvicorn_serving(app) as url:
            server.wait_healthy()
            ls = LabelStudio(base_url=server.url, api_key=server.token)
            project = ls.projects.create(title="serving auth", label_config=template_config("box_correction", ["square", "bar"]))
            with pytest.raises(ApiError) as refused:
                ls.ml.create(project=project.id, url=f"{url}/ls", auth_method="BASIC_AUTH", basic_auth_user="labelstudio", basic_auth_pass="guess")
            assert "authentication" in str(refused.value.body)
            with pytest.raises(ApiError):
                ls.ml.create(project=project.id, url=f"{url}/ls")  # no auth at all
            backend = ls.ml.create(project=project.id, url=f"{url}/ls", auth_method="BASIC_AUTH", basic_auth_user="labelstudio", basic_auth_pass=TOKEN)
            assert backend.id
            ls.projects.import_tasks(id=project.id, request=[{"image": "/data/local-files/?d=frames/a.png", "overlay": "/data/local-files/?d=frames/a.png", "key": "frames/a.png", "summary": "a"}])
            task = next(iter(ls.tasks.list(project=project.id)))
            ls.actions.create(id="retrieve_tasks_predictions", project=project.id, selected_items={"all": True, "excluded": []})
            predictions = list(ls.predictions.list(task=task.id))
            assert predictions and predictions[0].result, predictions
            assert {r["type"] for r in predictions[0].result} == {"choices", "rectanglelabels"}
    finally:
        server.stop()


def test_a_large_decode_waiting_for_room_does_not_block_other_requests(model_file, store_dir):
    """A 30 KB PNG of zeros that decodes to 27 MB waits in imaging's decode gate while the gate is
    full; it must wait in a thread, so /live keeps answering at once on the event loop."""
    import httpx

    from attnloop import imaging

    bomb_ish = encode_png(np.zeros((3000, 3000, 3), np.uint8))
    assert len(bomb_ish) <= 64 << 10 and imaging.read_header(bomb_ish).decoded_bytes > imaging.LARGE_BYTES
    app = create_app(model_source=str(model_file), settings=Settings.from_env({"ATTNLOOP_HOME": str(store_dir.parent), "ATTNLOOP_STORE": store_dir.as_uri()}), reload_interval=3600)
    full, release = threading.Event(), threading.Event()

    def occupy() -> None:
        with imaging.GATE.hold(imaging.GATE.budget_bytes):
            full.set()
            release.wait(30)

    holder = threading.Thread(target=occupy)
    holder.start()
    assert full.wait(10)
    try:
        with uvicorn_serving(app) as url:
            answers: dict[str, object] = {}
            upload = threading.Thread(
                target=lambda: answers.update(predict=httpx.post(f"{url}/predict", content=bomb_ish, headers={"content-type": "image/png"}, timeout=60))
            )
            upload.start()
            deadline = time.monotonic() + 10
            while imaging.GATE.waited == 0 and time.monotonic() < deadline:  # the upload is queued in the gate now
                time.sleep(0.02)
            assert imaging.GATE.waited > 0, "the upload never reached the decode gate"
            started = time.monotonic()
            live = httpx.get(f"{url}/live", timeout=5)
            assert live.status_code == 200 and time.monotonic() - started < 1.0
            assert upload.is_alive(), "the upload should still be waiting for room in the gate"
            release.set()
            upload.join(30)
            assert answers["predict"].status_code == 200, answers["predict"].text
    finally:
        release.set()
        holder.join()
