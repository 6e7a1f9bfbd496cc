"""Credentials in the MLflow URI (``http://user:password@host``) never reach what people see: the
registry commands' lines, serving's unauthenticated ``/health`` and ``/model``, the service log."""

import os
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from attnloop.config import Settings
from attnloop.redact import redact
from conftest import write_tiny_manifest
from faultkit import closed_port
from serving.app import create_app

SECRET = "s3cret"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("the MLflow registry at http://ana:s3cret@10.0.0.5:5000 could not be reached",
         "the MLflow registry at http://ana:***@10.0.0.5:5000 could not be reached"),
        ("API request to https://ana:p@ss:w0rd@mlflow.example/api/2.0/x failed", "API request to https://ana:***@mlflow.example/api/2.0/x failed"),
        ("postgresql://mlflow:s3cret@db/mlflow", "postgresql://mlflow:***@db/mlflow"),
        ("http://h/x?token=s3cret&name=m&X-Amz-Signature=abc#top", "http://h/x?token=***&name=m&X-Amz-Signature=***#top"),
        ("https://h/?password=s3cret", "https://h/?password=***"),
        ("http://127.0.0.1:5000/api?name=m&alias=champion", "http://127.0.0.1:5000/api?name=m&alias=champion"),
        ("sqlite:////home/ana/.attnloop/mlflow.db; ana@example.com wrote it", "sqlite:////home/ana/.attnloop/mlflow.db; ana@example.com wrote it"),
    ],
    ids=["userinfo", "at-in-password", "database-uri", "query-parameters", "password-parameter", "no-secret", "no-url"],
)
def test_redact_hides_url_passwords_and_secret_parameters(text, expected):
    assert redact(text) == expected
    assert redact(redact(text)) == expected  # safe on its own output


def _registry_cli(args: list[str], uri: str, tmp_path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=uri, ATTNLOOP_HOME=str(tmp_path / "home"), MLFLOW_HTTP_REQUEST_MAX_RETRIES="1",
               MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="0", ATTNLOOP_THREADS="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "attnloop", "registry", *args], env=env, capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("command", [["show"], ["gate", "--holdout", "DATA"]], ids=lambda c: c[0])
def test_registry_commands_print_no_password(command, tmp_path):
    """The real command against an unreachable ``http://user:s3cret@…``: one line naming the server,
    its password replaced (before: the password was printed in full)."""
    data = write_tiny_manifest(tmp_path / "data", per_class=1)
    with closed_port() as port:
        out = _registry_cli([str(data) if a == "DATA" else a for a in command], f"http://ana:{SECRET}@127.0.0.1:{port}", tmp_path)
    assert out.returncode == 2, (out.stdout[-2000:], out.stderr[-2000:])
    assert SECRET not in out.stdout + out.stderr, out.stderr
    assert f"http://ana:***@127.0.0.1:{port} could not be reached" in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_serving_health_and_model_carry_no_password(tmp_path, monkeypatch, caplog):
    """Serving whose registry URI holds a password, while that registry is down: ``/health`` and
    ``/model`` say why no model is loaded, and neither they nor the log show the password."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with closed_port() as port:
        uri = f"http://ana:{SECRET}@127.0.0.1:{port}"
        app = create_app(settings=Settings(home=tmp_path, threads=1, mlflow_tracking_uri=uri), reload_interval=3600, device="cpu")
        with caplog.at_level("WARNING"), TestClient(app) as client:
            health, model = client.get("/health"), client.get("/model")
    assert health.status_code == 503 and model.status_code == 503
    for answer in (health.text, model.text, caplog.text):
        assert SECRET not in answer
    assert f"http://ana:***@127.0.0.1:{port} could not be reached" in health.json()["detail"], health.text
    assert f"ana:***@127.0.0.1:{port}" in model.json()["detail"] and "ana:***@" in caplog.text
