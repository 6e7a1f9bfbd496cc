"""A real Label Studio server for integration tests and benchmarks, on loopback.

Label Studio lives in its own virtual environment (``.venv-ls``, installed by the setup), so
its pinned Django stack never meets the project's. The server gets a fresh data folder, an
admin user and a legacy API token from the environment, and answers ``GET /health`` after
about 40 s (longer on busy cores). A server that does not start raises with the tail of its
log: a test using it errors, it is never skipped.

``ATTNLOOP_LABEL_STUDIO_URL`` and ``ATTNLOOP_LABEL_STUDIO_TOKEN`` point the fixtures at a
running server instead.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
LABEL_STUDIO = ROOT / ".venv-ls" / "bin" / "label-studio"
START_TIMEOUT = 180.0
STOP_TIMEOUT = 30.0
USER, PASSWORD = "attnloop@example.com", "attnloop-test-password"


@dataclass
class LabelStudioProcess:
    """A started server: enough to stop it and start it again on the same data and port."""

    workdir: Path
    port: int
    token: str
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.workdir / "label-studio.log"

    def start(self, *, timeout: float = START_TIMEOUT) -> None:
        if not LABEL_STUDIO.exists():
            raise RuntimeError(f"{LABEL_STUDIO} is missing: install Label Studio into .venv-ls (make setup) first")
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "LABEL_STUDIO_USERNAME": USER,
            "LABEL_STUDIO_PASSWORD": PASSWORD,
            "LABEL_STUDIO_USER_TOKEN": self.token,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_BASE_DATA_DIR": str(data),
            "LOCAL_FILES_SERVING_ENABLED": "true",
            "DJANGO_DB": "sqlite",
            "COLLECT_ANALYTICS": "false",
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
        }
        for name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):  # the project's venv must not leak in
            env.pop(name, None)
        command = [str(LABEL_STUDIO), "start", "--no-browser", "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log.open("a") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=self.workdir, start_new_session=True
            )
        try:
            wait_healthy(self.url, self.process, self.log, timeout=timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self, *, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM to the server's process group, SIGKILL if it lingers."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def restart(self, *, timeout: float = START_TIMEOUT) -> None:
        """Stop (if running) and start again on the same data folder and port."""
        self.stop()
        self.start(timeout=timeout)


def wait_healthy(url: str, process: subprocess.Popen, log: Path, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
            raise RuntimeError(f"label-studio exited with {process.returncode} before {url}/health answered; log tail:\n{tail}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=3) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1.0)
    tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
    raise RuntimeError(f"Label Studio at {url} did not answer /health within {timeout:.0f} s; log tail:\n{tail}")


def new_server(workdir: Path, *, port: int | None = None) -> LabelStudioProcess:
    from services import free_port

    workdir.mkdir(parents=True, exist_ok=True)
    return LabelStudioProcess(workdir, port or free_port(), secrets.token_hex(20))


@contextmanager
def label_studio_server(workdir: Path) -> Iterator[tuple[str, str]]:
    """Yield ``(url, token)`` of a Label Studio server: the one named by ``ATTNLOOP_LABEL_STUDIO_URL``
    and ``ATTNLOOP_LABEL_STUDIO_TOKEN``, else a fresh one started here and stopped on exit."""
    url, token = os.environ.get("ATTNLOOP_LABEL_STUDIO_URL"), os.environ.get("ATTNLOOP_LABEL_STUDIO_TOKEN")
    if url:
        if not token:
            raise RuntimeError("ATTNLOOP_LABEL_STUDIO_URL is set but ATTNLOOP_LABEL_STUDIO_TOKEN is not; set both or neither")
        yield url.rstrip("/"), token
        return
    server = new_server(workdir)
    server.start()
    try:
        yield server.url, server.token
    finally:
        server.stop()
