import json
from pathlib import Path

import numpy as np
import pytest

from attnloop.imaging import encode_png


def write_tiny_manifest(root: Path, *, per_class: int = 6, size: int = 32, channels: int = 1, seed: int = 0) -> Path:
    """A tiny two-class manifest: a bright square (class 'square') or a bright bar (class 'bar')."""
    rng = np.random.default_rng(seed)
    lines = []
    for split in ("train", "test"):
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(per_class * 2):
            label = ("square", "bar")[i % 2]
            image = rng.integers(0, 60, size=(size, size, channels), dtype=np.uint8)
            x0, y0 = (int(v) for v in rng.integers(2, size - 14, size=2))
            w, h = (10, 10) if label == "square" else (12, 4)
            image[y0 : y0 + h, x0 : x0 + w] = 220
            rel = f"{split}/{i}.png"
            (root / rel).write_bytes(encode_png(image))
            lines.append(
                {"image": rel, "split": split, "label": label, "boxes": [[x0, y0, x0 + w, y0 + h]], "confounder_boxes": []}
            )
    (root / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root


def register_weak_champion(data: Path, workdir: Path) -> str:
    """A barely trained model on ``data`` registered and made champion in the configured MLflow store;
    its version. It answers one class for everything, so a model trained on real corrections beats it."""
    from attnloop import registry
    from attnloop.config import Settings
    from attnloop.publish import register_run
    from attnloop.training import ORIGINAL_ABN, TrainConfig, save_run, train

    settings = Settings.from_env()
    client = registry.connect(settings.registry_uri)
    weak = train(data, TrainConfig(epochs=1, lr=1e-6, guidance="none", **ORIGINAL_ABN), progress=False)
    run_dir = save_run(workdir / "weak", weak, TrainConfig(), data="tiny")
    version = register_run(client, name=settings.model_name, run_dir=run_dir, artifact_root=settings.artifact_root)
    registry.promote(client, settings.model_name, version)
    return version


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    return write_tiny_manifest(tmp_path / "data")


@pytest.fixture(scope="session")
def s3_endpoint():
    from services import s3_server

    with s3_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def mlflow_server_url(tmp_path_factory, s3_endpoint):
    from services import mlflow_server

    with mlflow_server(tmp_path_factory.mktemp("mlflow-server"), s3_endpoint) as url:
        yield url


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path_factory, monkeypatch):
    """Every test gets its own ATTNLOOP_HOME and none of the developer's service settings."""
    monkeypatch.setenv("ATTNLOOP_HOME", str(tmp_path_factory.mktemp("home")))
    for name in ("MLFLOW_TRACKING_URI", "ATTNLOOP_STORE", "ATTNLOOP_MODEL_NAME", "ATTNLOOP_SERVING_MODEL", "ATTNLOOP_GATE_APPROVAL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """``(url, token)`` of a real Label Studio server for the whole session (see tests/labelstudio_server.py).
    It serves local stores under pytest's base folder: a test pushing from one sets
    ATTNLOOP_LABEL_STUDIO_DOCUMENT_ROOT to ``tmp_path_factory.getbasetemp()``."""
    from labelstudio_server import label_studio_server

    root = tmp_path_factory.getbasetemp().resolve()
    with label_studio_server(tmp_path_factory.mktemp("label-studio"), local_files_root=root) as server:
        yield server
