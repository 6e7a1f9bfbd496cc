"""Real services for integration tests, on loopback: moto's S3 server and an ``mlflow server`` process.

A service that does not start is an error that fails the tests using it, never a skip.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

S3_KEY, S3_SECRET = "attnloop-test", "attnloop-test-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, *, timeout: float, process: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode} before {url} answered:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


@contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 server on a free loopback port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        wait_for(f"{endpoint}/moto-api/", timeout=30)
        yield endpoint
    finally:
        server.stop()


def make_bucket(endpoint: str, bucket: str) -> None:
    from minio import Minio

    client = Minio(endpoint=endpoint.split("://", 1)[1], access_key=S3_KEY, secret_key=S3_SECRET, secure=False)
    if not client.bucket_exists(bucket_name=bucket):
        client.make_bucket(bucket_name=bucket)


@contextmanager
def mlflow_server(workdir: Path, s3_endpoint: str, *, bucket: str = "mlflow") -> Iterator[str]:
    """``mlflow server`` with a SQLite backend and artifacts in the S3 server; yields its URL."""
    make_bucket(s3_endpoint, bucket)
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "mlflow-server.log"
    env = {
        **os.environ,
        "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": S3_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    command = [
        str(Path(sys.executable).with_name("mlflow")), "server",
        "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
        "--artifacts-destination", f"s3://{bucket}/artifacts",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(f"{url}/health", timeout=120, process=process, log=log)
        yield url
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    """End a server we started, with the workers it started (its own process group)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def browser(*, size: str = "1400,1900"):
    """A headless Chromium driven by Selenium (Debian's ``chromium`` and ``chromium-driver``, which
    ``make test`` installs)."""
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={size}"):
        options.add_argument(argument)
    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    assert binary and driver, "a headless browser is needed: apt-get install chromium chromium-driver (make test does)"
    options.binary_location = binary
    return webdriver.Chrome(options=options, service=Service(driver))
