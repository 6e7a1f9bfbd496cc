"""The serving app's Prometheus metrics, scraped from ``/metrics`` of a real app on ONNX Runtime and read
with prometheus_client's own parser: requests by route, latency, the served version, the predicted
classes and their confidence, and refused images by reason."""

import dataclasses
from collections import Counter

import pytest
from conftest import write_tiny_manifest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from test_serving import AUTH, PNG, TOKEN, one_torch_thread, settings_for

from serving.app import create_app
from serving.metrics import CONFIDENCE_BUCKETS

Samples = dict[tuple[str, frozenset], float]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny model exported to ONNX, and test images of its data."""
    from attnloop.export import export_onnx
    from attnloop.training import TrainConfig, train

    root = tmp_path_factory.mktemp("serving-metrics")
    data = write_tiny_manifest(root / "data")
    with one_torch_thread():
        result = train(data, TrainConfig(epochs=2, guidance="none", seed=0, threads=1), progress=False)
        onnx = export_onnx(result.model, result.card, root / "model.onnx")
    return {"onnx": onnx, "images": [p.read_bytes() for p in sorted((data / "test").glob("*.png"))[:3]]}


def scrape(client: TestClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, labels: dict[str, str] | None = None) -> float | None:
    return samples.get((name, frozenset((labels or {}).items())))


def labelled(samples: Samples, name: str, label: str) -> dict[str, float]:
    """``{label value: sample value}`` of every sample called ``name``."""
    return {dict(labels)[label]: v for (n, labels), v in samples.items() if n == name}


def test_metrics_count_requests_predictions_and_refused_images(model, tmp_path):
    store = tmp_path / "store"
    (store / "frames").mkdir(parents=True)
    (store / "frames" / "a.png").write_bytes(model["images"][0])
    settings = settings_for(tmp_path, store_uri=store.as_uri(), serving_token=TOKEN)
    app = create_app(model_source=str(model["onnx"]), settings=settings)
    with TestClient(app) as client:
        answers = []
        for data in model["images"]:
            response = client.post("/predict", content=data, headers=PNG)
            assert response.status_code == 200, response.text
            answers.append(response.json())
        assert client.post("/predict", content=b"this is not an image", headers=PNG).status_code == 422
        assert client.post("/predict", content=b"hello", headers={"content-type": "text/plain"}).status_code == 415
        labelled_task = client.post("/ls/predict", json={"tasks": [{"id": 1, "data": {"key": "frames/a.png"}}]}, headers=AUTH)
        assert labelled_task.status_code == 200 and labelled_task.json()["results"][0]["score"] > 0
        assert client.get("/no/such/page").status_code == 404
        version = client.get("/health").json()["model_version"]
        scrape(client)
        samples = scrape(client)

        assert client.post("/admin/reload", headers=AUTH).json()["changed"] is False  # a file source stays put
        assert labelled(scrape(client), "attnloop_model_info", "version") == {version: 1.0}
        # what Reloader.check_now does when the alias moved: one assignment of the served reference
        app.state.reloader.current = dataclasses.replace(app.state.reloader.current, version="moved")
        assert labelled(scrape(client), "attnloop_model_info", "version") == {"moved": 1.0}

    requests = "attnloop_requests_total"
    assert value(samples, requests, {"endpoint": "/predict", "method": "POST", "status": "200"}) == 3
    assert value(samples, requests, {"endpoint": "/predict", "method": "POST", "status": "422"}) == 1
    assert value(samples, requests, {"endpoint": "/predict", "method": "POST", "status": "415"}) == 1
    assert value(samples, requests, {"endpoint": "/ls/predict", "method": "POST", "status": "200"}) == 1
    assert value(samples, requests, {"endpoint": "unmatched", "method": "GET", "status": "404"}) == 1  # not the raw path
    assert value(samples, requests, {"endpoint": "/health", "method": "GET", "status": "200"}) == 1
    endpoints = {dict(labels)["endpoint"] for (name, labels) in samples if name == requests}
    assert endpoints == {"/predict", "/ls/predict", "/health", "unmatched"}  # the scrapes themselves are not counted

    latency = "attnloop_request_duration_seconds"
    assert value(samples, f"{latency}_count", {"endpoint": "/predict"}) == 5
    assert value(samples, f"{latency}_bucket", {"endpoint": "/predict", "le": "+Inf"}) == 5
    assert value(samples, f"{latency}_count", {"endpoint": "/ls/predict"}) == 1
    assert 0 < value(samples, f"{latency}_sum", {"endpoint": "/predict"}) < 60

    assert labelled(samples, "attnloop_model_info", "version") == {version: 1.0}

    # the Label Studio task read the first image: its prediction is counted with the direct ones
    predicted = [a["class"] for a in answers] + [answers[0]["class"]]
    confidences = [a["confidence"] for a in answers] + [answers[0]["confidence"]]
    assert labelled(samples, "attnloop_predictions_total", "class") == {k: float(n) for k, n in Counter(predicted).items()}
    assert value(samples, "attnloop_prediction_confidence_count") == 4
    assert value(samples, "attnloop_prediction_confidence_sum") == pytest.approx(sum(confidences), abs=1e-6)
    for bound in (0.5, 0.9, 0.99, 1.0):
        assert bound in CONFIDENCE_BUCKETS
        expected = sum(c <= bound for c in confidences)
        assert value(samples, "attnloop_prediction_confidence_bucket", {"le": str(bound)}) == expected, bound

    rejected = labelled(samples, "attnloop_rejected_images_total", "reason")
    assert rejected == {"empty": 0, "corrupt": 1, "truncated": 0, "unsupported_mode": 0, "too_large": 0}


def test_each_app_counts_in_its_own_registry(model, tmp_path):
    first = create_app(model_source=str(model["onnx"]), settings=settings_for(tmp_path))
    second = create_app(model_source=str(model["onnx"]), settings=settings_for(tmp_path))
    with TestClient(first) as one, TestClient(second) as other:
        assert one.post("/predict", content=model["images"][0], headers=PNG).status_code == 200
        assert value(scrape(one), "attnloop_prediction_confidence_count") == 1
        assert value(scrape(other), "attnloop_prediction_confidence_count") == 0
