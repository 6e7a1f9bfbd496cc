"""A local Label Studio server: start it, wait until it answers, stop it by its process id.

Label Studio lives in its own virtual environment (``.venv-ls`` at the repository root, installed
by ``make setup``; ``ATTNLOOP_LABEL_STUDIO_BIN`` names another ``label-studio`` executable), so
its pinned Django stack never meets attnloop's. A server keeps everything in one folder: its data
(SQLite, uploads), its log and ``credentials.json`` (admin login and legacy API token, created
once, so a restart on the same folder keeps working with the same token). It answers
``GET /health`` after about 40 s, longer on busy cores; a server that does not start raises with
the tail of its log.

Its data holds the API token in plain text (the SQLite file), so at every start the folder is
made its owner's alone, whether new or left by an older run: the folder and every folder under
``data/`` 0700, its files 0600, and the server runs under umask 077, so what it creates later is
private too.

Local-files serving (``/data/local-files/``) is on only for a server given ``local_files_root``,
a local store's folder, and that folder is its document root: any logged-in user may add a
local-files storage anywhere under the root and read what lies there, so a root of ``/`` (Label
Studio's own default) would hand out the host's files. Without a root (an S3 store) it is off.

The tests, ``attnloop demo`` and scripts that start the local stack share this module;
``python -m attnloop.apps.labelstudio_server FOLDER`` runs one in the foreground until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[3]  # the repository root (platform/attnloop/apps/labelstudio_server.py)
BIN_ENV = "ATTNLOOP_LABEL_STUDIO_BIN"
START_TIMEOUT = 180.0
STOP_TIMEOUT = 30.0
UMASK = 0o077  # the server's: its files are its owner's alone
DEFAULT_USER = "attnloop@example.com"
CREDENTIALS = "credentials.json"


def label_studio_bin(env: dict[str, str] | None = None) -> Path:
    """The ``label-studio`` executable: ``ATTNLOOP_LABEL_STUDIO_BIN``, else ``.venv-ls`` at the repository root."""
    env = os.environ if env is None else env
    return Path(env[BIN_ENV]) if env.get(BIN_ENV) else ROOT / ".venv-ls" / "bin" / "label-studio"


def free_port(preferred: int | None = None) -> int:
    """``preferred`` if nothing listens on it on loopback, else a free port the system picks."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port on 127.0.0.1")


@dataclass
class LabelStudioServer:
    """A server on loopback, with enough to stop it and start it again on the same data and port."""

    workdir: Path
    port: int
    token: str
    user: str = DEFAULT_USER
    password: str = ""
    local_files_root: Path | None = None  # the local store Label Studio serves at /data/local-files/?d=<key>; None: serving off
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data(self) -> Path:
        return self.workdir / "data"

    @property
    def log(self) -> Path:
        return self.workdir / "label-studio.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def command(self) -> list[str]:
        # --internal-host is where it listens (loopback only); --host is the address it writes into URLs
        return [
            str(label_studio_bin()), "start", "--no-browser", "--internal-host", "127.0.0.1", "--host", self.url, "--port", str(self.port)
        ]

    def environment(self) -> dict[str, str]:
        env = {
            **os.environ,
            "LABEL_STUDIO_USERNAME": self.user,
            "LABEL_STUDIO_PASSWORD": self.password,
            "LABEL_STUDIO_USER_TOKEN": self.token,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_BASE_DATA_DIR": str(self.data),
            "DJANGO_DB": "sqlite",
            "COLLECT_ANALYTICS": "false",
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
        }
        for setting in ("LOCAL_FILES_SERVING_ENABLED", "LOCAL_FILES_DOCUMENT_ROOT"):  # Label Studio reads all three spellings
            for prefix in ("LABEL_STUDIO_", "HEARTEX_", ""):
                env.pop(prefix + setting, None)
        if self.local_files_root is not None:
            env["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] = "true"
            env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] = str(Path(self.local_files_root).resolve())
        else:  # set, so Label Studio's Community edition does not switch it on for a folder it finds
            env["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] = "false"
        for name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):  # attnloop's environment must not leak in
            env.pop(name, None)
        return env

    def launch(self) -> None:
        """Start the process and return at once; :meth:`wait_healthy` waits for it (start meanwhile other work)."""
        if self.running():
            return
        executable = label_studio_bin()
        if not executable.exists():
            raise FileNotFoundError(
                f"{executable} is missing: install Label Studio into .venv-ls (make setup), set {BIN_ENV} to a "
                "label-studio executable, or point attnloop at a running server with ATTNLOOP_LABEL_STUDIO_URL and _TOKEN"
            )
        self.data.mkdir(mode=0o700, parents=True, exist_ok=True)
        make_private(self.workdir, self.data)
        with open(os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600), "a") as out:
            self.process = subprocess.Popen(
                self.command(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.environment(),
                cwd=self.workdir, start_new_session=True,  # its own process group: stop() ends it and its children
                umask=UMASK,
            )

    def wait_healthy(self, *, timeout: float = START_TIMEOUT) -> None:
        """Wait for ``/health``; a server that exits or does not answer in time is stopped and raises."""
        if self.process is None:
            raise RuntimeError("the Label Studio server was not launched")
        try:
            wait_healthy(self.url, self.process, self.log, timeout=timeout)
        except BaseException:
            self.stop()
            raise

    def start(self, *, timeout: float = START_TIMEOUT) -> None:
        self.launch()
        self.wait_healthy(timeout=timeout)

    def stop(self, *, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM to the server's process group (its id is the server's pid), SIGKILL if it lingers."""
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


def make_private(workdir: Path, data: Path) -> None:
    """The server's folder 0700 with its own files (credentials, log) 0600, and everything under
    ``data`` (Label Studio's alone): folders 0700, files 0600. Links are left alone (chmod would
    follow them out of the folder)."""
    os.chmod(workdir, 0o700)
    for name in (CREDENTIALS, "label-studio.log"):
        path = workdir / name
        if path.is_file() and not path.is_symlink():
            os.chmod(path, 0o600)
    for top, folders, files in os.walk(data, followlinks=False):
        os.chmod(top, 0o700)
        for name in files:
            path = os.path.join(top, name)
            if not os.path.islink(path):
                os.chmod(path, 0o600)


def wait_healthy(url: str, process: subprocess.Popen, log: Path, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"label-studio exited with {process.returncode} before {url}/health answered; log tail:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=3) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1.0)
    raise RuntimeError(f"Label Studio at {url} did not answer /health within {timeout:.0f} s; log tail:\n{_tail(log)}")


def _tail(log: Path, size: int = 4000) -> str:
    return log.read_text(errors="replace")[-size:] if log.exists() else ""


def credentials(workdir: Path) -> dict[str, str]:
    """The folder's admin login and API token, created on first use (Label Studio applies them only
    when it creates its database, so they must stay the same for the folder's lifetime)."""
    path = workdir / CREDENTIALS
    if path.exists():
        return json.loads(path.read_text())
    found = {"user": DEFAULT_USER, "password": secrets.token_urlsafe(12), "token": secrets.token_hex(20)}
    workdir.mkdir(mode=0o700, parents=True, exist_ok=True)  # its database keeps the API token in plain text
    path.touch(mode=0o600)
    path.write_text(json.dumps(found, indent=2) + "\n")
    return found


def new_server(workdir: str | Path, *, port: int | None = None, local_files_root: str | Path | None = None) -> LabelStudioServer:
    """A server (not started) for ``workdir``, on ``port`` or a free one."""
    workdir = Path(workdir).resolve()
    found = credentials(workdir)
    return LabelStudioServer(
        workdir, port or free_port(), found["token"], found["user"], found["password"],
        local_files_root=Path(local_files_root).resolve() if local_files_root else None,
    )


@contextmanager
def label_studio_server(
    workdir: str | Path, *, env: dict[str, str] | None = None, local_files_root: str | Path | None = None
) -> Iterator[tuple[str, str]]:
    """Yield ``(url, token)`` of a Label Studio server: the one named by ``ATTNLOOP_LABEL_STUDIO_URL``
    and ``ATTNLOOP_LABEL_STUDIO_TOKEN``, else a fresh one started here (serving ``local_files_root``,
    if given) and stopped on exit."""
    env = os.environ if env is None else env
    url, token = env.get("ATTNLOOP_LABEL_STUDIO_URL"), env.get("ATTNLOOP_LABEL_STUDIO_TOKEN")
    if url:
        if not token:
            raise RuntimeError("ATTNLOOP_LABEL_STUDIO_URL is set but ATTNLOOP_LABEL_STUDIO_TOKEN is not; set both or neither")
        yield url.rstrip("/"), token
        return
    server = new_server(workdir, local_files_root=local_files_root)
    server.start()
    try:
        yield server.url, server.token
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attnloop.apps.labelstudio_server", description="Run a local Label Studio until Ctrl-C.")
    parser.add_argument("workdir", type=Path, help="its folder: data, log, credentials (kept between runs)")
    parser.add_argument("--port", type=int, default=8080, help="default 8080, or a free port if 8080 is taken")
    parser.add_argument(
        "--local-files", type=Path, default=None,
        help="the local store it serves to annotators (its document root; without it, local-files serving is off)",
    )
    args = parser.parse_args(argv)
    server = new_server(args.workdir, port=free_port(args.port), local_files_root=args.local_files)
    print(f"starting Label Studio at {server.url} (log: {server.log}) ...", flush=True)
    try:
        server.start()
        print(f"Label Studio at {server.url} (pid {server.pid}); login {server.user} / {server.password}")
        print(f"ATTNLOOP_LABEL_STUDIO_URL={server.url} ATTNLOOP_LABEL_STUDIO_TOKEN={server.token}")
        print("Ctrl-C stops it.", flush=True)
        while server.running():
            time.sleep(1.0)
        print(f"label-studio exited with {server.process.returncode if server.process else '?'}; log tail:\n{_tail(server.log)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
