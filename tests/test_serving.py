"""The serving app in-process (FastAPI's TestClient): answers equal ONNX Runtime run alone on the same
bytes, batched or not; bad input gets the right status and a message; the alias is followed;
the Label Studio ML-backend protocol; and the service never imports torch."""

import contextlib
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from attnloop.config import Settings
from attnloop.imaging import Limits, encode_png
from attnloop.runtime import OnnxModel
from conftest import write_tiny_manifest
from attnloop.imaging import header_size
from serving.app import create_app

ROOT = Path(__file__).resolve().parents[1]
PNG = {"content-type": "image/png"}
TOKEN = "serving-test-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two tiny models (different seeds) as training runs, the first also exported to ONNX."""
    from attnloop.export import export_onnx
    from attnloop.training import TrainConfig, save_run, train

    root = tmp_path_factory.mktemp("serving")
    data = write_tiny_manifest(root / "data")
    runs = []
    with one_torch_thread():
        for seed in (0, 1):
            config = TrainConfig(epochs=2, guidance="none", seed=seed, threads=1)
            result = train(data, config, progress=False)
            runs.append(save_run(root / f"run{seed}", result, config, data="tiny"))
            if seed == 0:
                onnx_path = export_onnx(result.model, result.card, root / "model.onnx")
    return {"root": root, "data": data, "runs": runs, "onnx": onnx_path}


@contextlib.contextmanager
def one_torch_thread():
    """Tiny models train 50× faster on one thread than on a busy machine's every core; restore after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def images(trained):
    """The tiny test split plus an RGB image of another size and a JPEG: all must be answered alike."""
    data = trained["data"]
    out = [p.read_bytes() for p in sorted((data / "test").glob("*.png"))[:6]]
    rgb = np.random.default_rng(1).integers(0, 80, size=(48, 64, 3), dtype=np.uint8)
    rgb[10:30, 20:34] = (230, 200, 210)
    out.append(encode_png(rgb))
    out.append(cv2.imencode(".jpg", rgb[..., ::-1])[1].tobytes())
    return out


@pytest.fixture(scope="module")
def reference(trained, images):
    model = OnnxModel(trained["onnx"], device="cpu")
    return [model.predict_bytes([data]) for data in images]


def settings_for(root: Path, **kwargs) -> Settings:
    return Settings(home=root, threads=None, **kwargs)


def assert_matches(answer: dict, expected: dict, class_names) -> None:
    probabilities = np.array([answer["probabilities"][c] for c in class_names])
    np.testing.assert_allclose(probabilities, expected["probabilities"][0], atol=1e-5)
    np.testing.assert_allclose(np.array(answer["attention"]), expected["attention"][0, 0], atol=1e-5)
    assert answer["class"] == class_names[int(expected["probabilities"][0].argmax())]
    assert answer["confidence"] == pytest.approx(float(expected["probabilities"][0].max()), abs=1e-5)


@pytest.mark.parametrize("micro_batching", [True, False], ids=["batched", "alone"])
def test_predict_equals_onnx_runtime_alone(trained, images, reference, micro_batching):
    app = create_app(model_source=str(trained["onnx"]), settings=settings_for(trained["root"]), micro_batching=micro_batching, max_wait_ms=200)
    with TestClient(app) as client:
        card = client.get("/model").json()["card"]
        names = card["class_names"]
        for data, expected in zip(images, reference):
            response = client.post("/predict", content=data, headers=PNG)
            assert response.status_code == 200, response.text
            answer = response.json()
            assert_matches(answer, expected, names)
            height, width = answer["image_size"]
            x0, y0, x1, y1 = answer["attention_box"]
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
            assert set(answer["signals"]) == {"least_confidence", "margin", "entropy", "branch_disagreement"}
            assert all(0.0 <= v <= 1.0 for v in answer["signals"].values())

        start = threading.Barrier(8)

        def post(data: bytes):
            start.wait()
            return client.post("/predict", content=data, headers=PNG)

        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(post, images))
        for response, expected in zip(responses, reference):
            assert response.status_code == 200, response.text
            assert_matches(response.json(), expected, names)
        stats = client.get("/model").json()["batching"]
    assert stats["images"] == 2 * len(images)
    if micro_batching:
        assert stats["largest"] >= 2, stats  # the burst shared session runs
    else:
        assert stats["largest"] == 1


def test_bad_requests_get_a_status_and_a_reason(trained, images, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    (store / "frames").mkdir()
    (store / "frames" / "a.png").write_bytes(images[0])
    settings = settings_for(tmp_path, store_uri=store.as_uri())
    app = create_app(model_source=str(trained["onnx"]), settings=settings, limits=Limits(max_bytes=4096, max_pixels=40 * 40))
    flat = encode_png(np.full((64, 64), 90, np.uint8))  # a few hundred bytes, 4096 pixels
    assert len(flat) < 4096
    huge = bytearray(encode_png(np.zeros((8, 8), np.uint8)))
    huge[16:24] = (20000).to_bytes(4, "big") * 2  # the IHDR now claims 20000×20000 px
    with TestClient(app) as client:
        def post(body, content_type="image/png"):
            return client.post("/predict", content=body, headers={"content-type": content_type})

        too_many = post(b"\x89PNG" + b"\0" * 5000)
        assert too_many.status_code == 413 and "limit is 4096 bytes" in too_many.json()["detail"]
        streamed = post(iter([b"\x89PNG" + b"\0" * 3000, b"\0" * 3000]))  # chunked: no Content-Length to trust
        assert streamed.status_code == 413 and "4096 bytes" in streamed.json()["detail"]
        big = post(flat)
        assert big.status_code == 413 and "64×64 px" in big.json()["detail"]
        giant = post(bytes(huge))
        assert giant.status_code == 413 and "20000×20000" in giant.json()["detail"]
        text = post(b"hello", "text/plain")
        assert text.status_code == 415 and "image/png" in text.json()["detail"]
        corrupt = post(b"this is not an image at all")
        assert corrupt.status_code == 422 and "could not be decoded" in corrupt.json()["detail"]
        truncated = post(images[0][: len(images[0]) // 2])
        assert truncated.status_code == 422 and "truncated" in truncated.json()["detail"]
        assert post(b"").status_code == 422
        missing = client.post("/predict", json={"key": "frames/nope.png"})
        assert missing.status_code == 404 and "frames/nope.png" in missing.json()["detail"]
        assert client.post("/predict", json={"name": "frames/a.png"}).status_code == 422
        by_key = client.post("/predict", json={"key": "frames/a.png"})
        by_bytes = post(images[0])
        assert by_key.status_code == by_bytes.status_code == 200, by_key.text
        assert by_key.json()["probabilities"] == by_bytes.json()["probabilities"]


def test_header_size_reads_headers_without_decoding():
    image = np.random.default_rng(0).integers(0, 255, size=(23, 37, 3), dtype=np.uint8)
    for ext in (".png", ".jpg", ".bmp", ".webp", ".tiff"):
        ok, buf = cv2.imencode(ext, image)
        assert ok and header_size(buf.tobytes()) == (37, 23), ext
    assert header_size(b"not an image") is None
    assert header_size(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR") is None  # cut short: left to the decoder


def test_alias_moves_and_the_served_version_follows(trained, images, tmp_path, monkeypatch):
    from attnloop import registry
    from attnloop.publish import register_run

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = registry.connect(uri)
    with one_torch_thread():
        versions = [register_run(client, name="abn", run_dir=run, artifact_root=tmp_path / "artifacts") for run in trained["runs"]]
    assert versions == ["1", "2"]
    expected = {v: OnnxModel(run / "model.onnx", device="cpu").predict_bytes([images[0]]) for v, run in zip(versions, trained["runs"])}
    assert not np.allclose(expected["1"]["probabilities"], expected["2"]["probabilities"], atol=1e-4)

    app = create_app(settings=settings_for(tmp_path, mlflow_tracking_uri=uri, model_name="abn", serving_token=TOKEN), reload_interval=3600)
    with TestClient(app) as http:
        waiting = http.get("/health")  # no champion yet: unavailable, and says why
        assert waiting.status_code == 503 and "champion" in waiting.json()["detail"]
        assert http.get("/live").json() == {"status": "alive"}  # but alive: a liveness probe must not restart it
        assert http.post("/predict", content=images[0], headers=PNG).status_code == 503

        client.set_registered_model_alias("abn", "champion", "1")
        assert http.post("/admin/reload").status_code == 401  # the admin route needs the token
        assert http.post("/admin/reload", headers=AUTH).json() == {"changed": True, "model_version": "1", "last_error": None}
        assert http.get("/health").json() == {"status": "ok", "model_version": "1"}
        first = http.post("/predict", content=images[0], headers=PNG).json()
        assert first["model_version"] == "1"
        np.testing.assert_allclose(list(first["probabilities"].values()), expected["1"]["probabilities"][0], atol=1e-5)
        assert http.get("/model").json()["source"] == "models:/abn@champion"

        client.set_registered_model_alias("abn", "champion", "2")
        stop = threading.Event()

        def hammer() -> list[int]:  # requests keep coming while the model is swapped
            codes = []
            while not stop.is_set() or not codes:
                codes.append(http.post("/predict", content=images[1], headers=PNG).status_code)
            return codes

        with ThreadPoolExecutor(3) as pool:
            running = [pool.submit(hammer) for _ in range(3)]
            assert app.state.reloader.check_now() is True
            stop.set()
            codes = [c for f in running for c in f.result()]
        assert set(codes) == {200}
        second = http.post("/predict", content=images[0], headers=PNG).json()
        assert second["model_version"] == "2"
        np.testing.assert_allclose(list(second["probabilities"].values()), expected["2"]["probabilities"][0], atol=1e-5)
        assert app.state.reloader.check_now() is False  # nothing moved since


LABEL_CONFIG = """<View>
  <Image name="photo" value="$picture"/>
  <Choices name="verdict" toName="photo"><Choice value="square"/><Choice value="bar"/></Choices>
  <RectangleLabels name="why" toName="photo"><Label value="square"/><Label value="bar"/></RectangleLabels>
</View>"""


def test_label_studio_backend_protocol(trained, images, tmp_path):
    store = tmp_path / "store"
    (store / "frames").mkdir(parents=True)
    (store / "frames" / "a.png").write_bytes(images[6])
    loose = store / "loose.png"  # a task URL is read only when it names a file of the store
    loose.write_bytes(images[6])
    settings = settings_for(tmp_path, store_uri=store.as_uri(), serving_token=TOKEN)
    app = create_app(model_source=str(trained["onnx"]), settings=settings)
    with TestClient(app, headers=AUTH) as client:
        assert client.get("/ls/health").json() == {"status": "UP", "model_class": "attnloop"}
        assert client.post("/ls/health").json()["status"] == "UP"
        version = client.get("/health").json()["model_version"]
        assert client.post("/ls/setup", json={"project": "1.1700000000", "schema": LABEL_CONFIG}).json() == {"model_version": version}

        direct = client.post("/predict", content=images[6], headers=PNG).json()
        tasks = [
            {"id": 1, "data": {"image": "http://unused.invalid/a.png", "key": "frames/a.png"}},
            {"id": 2, "data": {"image": loose.as_uri()}},
            {"id": 3, "data": {"image": (store / "gone.png").as_uri()}},
        ]
        body = client.post("/ls/predict", json={"tasks": tasks, "label_config": None}).json()
        assert len(body["results"]) == 3
        for prediction in body["results"][:2]:
            assert prediction["model_version"] == version
            assert prediction["score"] == pytest.approx(direct["confidence"])
            choice, box = prediction["result"]
            assert (choice["from_name"], choice["to_name"], choice["type"]) == ("class", "image", "choices")
            assert choice["value"] == {"choices": [direct["class"]]}
            assert (box["from_name"], box["to_name"], box["type"]) == ("evidence", "image", "rectanglelabels")
            assert (box["original_height"], box["original_width"]) == (48, 64)
            x0, y0, x1, y1 = direct["attention_box"]
            expected = {"x": 100 * x0 / 64, "y": 100 * y0 / 48, "width": 100 * (x1 - x0) / 64, "height": 100 * (y1 - y0) / 48}
            assert {k: box["value"][k] for k in expected} == pytest.approx(expected)
            assert box["value"]["rotation"] == 0 and box["value"]["rectanglelabels"] == [direct["class"]]
        failed = body["results"][2]
        assert failed["result"] == [] and "gone.png" in failed["error"]

        named = client.post(
            "/ls/predict", json={"tasks": [{"id": 4, "data": {"picture": loose.as_uri()}}], "label_config": LABEL_CONFIG}
        ).json()["results"][0]["result"]
        assert [(r["from_name"], r["to_name"]) for r in named] == [("verdict", "photo"), ("why", "photo")]
        overlay_template = (ROOT / "labelstudio_templates" / "box_correction_overlay.xml").read_text()  # two images, two Choices
        ours = client.post(
            "/ls/predict", json={"tasks": [{"id": 5, "data": {"image": loose.as_uri(), "overlay": "x"}}], "label_config": overlay_template}
        ).json()["results"][0]["result"]
        assert [(r["from_name"], r["to_name"], r["type"]) for r in ours] == [
            ("class", "image", "choices"),
            ("evidence", "image", "rectanglelabels"),
        ]
        wrong = client.post("/ls/predict", json={"tasks": tasks[:1], "label_config": '<View><Image name="i" value="$image"/></View>'})
        assert wrong.status_code == 422 and "<Choices" in wrong.json()["detail"]


def test_the_service_never_imports_torch(trained, images, tmp_path):
    sample = tmp_path / "sample.png"
    sample.write_bytes(images[0])
    code = f"""
import sys
from fastapi.testclient import TestClient
from serving.app import create_app
with TestClient(create_app(model_source={str(trained['onnx'])!r})) as client:
    response = client.post("/predict", content=open({str(sample)!r}, "rb").read(), headers={{"content-type": "image/png"}})
    assert response.status_code == 200, response.text
    print(response.json()["class"])
assert "torch" not in sys.modules, [m for m in sys.modules if m.startswith("torch")]
"""
    env = {**os.environ, "ATTNLOOP_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() in ("square", "bar")
    assert not (tmp_path / "home").exists()  # building the app wrote nothing


def test_a_wrong_model_source_is_refused_at_start(tmp_path):
    with pytest.raises(ValueError, match="models:/NAME@ALIAS"):
        create_app(model_source="models:/abn@", settings=settings_for(tmp_path))
    app = create_app(model_source=str(tmp_path / "missing.onnx"), settings=settings_for(tmp_path))
    with pytest.raises(FileNotFoundError, match="missing.onnx does not exist"):
        with TestClient(app):
            pass
