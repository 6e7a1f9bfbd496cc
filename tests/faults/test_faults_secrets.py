"""Secrets at rest and at start: the files that hold the S3 secret and the Label Studio token are
their owner's alone from the first byte, and the compose stack refuses to start on empty, example
or placeholder secrets (the check it runs first, ``infra/check-secrets.sh``, run here by ``sh``).
"""

from __future__ import annotations

import os
import re
import secrets
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from attnloop.apps.localstack import STATE, Stack, start, stop

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "infra" / "check-secrets.sh"
SECRET_NAMES = ("S3_SECRET_KEY", "POSTGRES_PASSWORD", "LABEL_STUDIO_PASSWORD", "LABEL_STUDIO_TOKEN", "SERVING_TOKEN", "GRAFANA_ADMIN_PASSWORD")
# what infra/.env.example shipped before: compose started the whole stack on these
SHIPPED_EXAMPLE = {
    "S3_ACCESS_KEY": "attnloop",
    "S3_SECRET_KEY": "change-me-s3-secret",
    "POSTGRES_PASSWORD": "change-me-postgres",
    "LABEL_STUDIO_USERNAME": "annotator@example.com",
    "LABEL_STUDIO_PASSWORD": "change-me-label-studio",
    "LABEL_STUDIO_TOKEN": "0123456789abcdef0123456789abcdef01234567",
}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class umask:
    def __init__(self, value: int) -> None:
        self.value = value

    def __enter__(self) -> None:
        self.previous = os.umask(self.value)

    def __exit__(self, *exc) -> None:
        os.umask(self.previous)


# --- files that hold secrets ------------------------------------------------------------------


@pytest.mark.services
def test_a_started_stack_keeps_its_secrets_to_its_owner(tmp_path):
    """``stack.json`` and ``env.sh`` hold the S3 secret and the Label Studio token: 0600 after ``start``
    with the usual umask 022, in a folder only the owner can enter."""
    with umask(0o022):
        stack = start(tmp_path / "stack", services=("s3",), progress=False)
    try:
        folder = tmp_path / "stack"
        assert stack.s3_secret in (folder / STATE).read_text() and stack.s3_secret in (folder / "env.sh").read_text()
        assert (mode(folder / STATE), mode(folder / "env.sh"), mode(folder)) == (0o600, 0o600, 0o700)
        assert not [p.name for p in folder.iterdir() if p.name.startswith(".")], "no temporary file is left behind"
    finally:
        stop(tmp_path / "stack", progress=False)


def test_an_older_stacks_world_readable_files_are_made_private_when_rewritten(tmp_path):
    for name in (STATE, "env.sh"):
        (tmp_path / name).write_text("# an older stack's\n")
        (tmp_path / name).chmod(0o644)
    with umask(0o022):
        Stack(tmp_path, s3_key="attnloop-local", s3_secret=secrets.token_hex(16)).save()
    assert (mode(tmp_path / STATE), mode(tmp_path / "env.sh")) == (0o600, 0o600)


def test_label_studios_data_and_the_demos_folder_are_the_owners_alone(tmp_path):
    """Label Studio keeps its API token in plain text in its SQLite file (and the login in
    ``credentials.json``): the folder it lives in is 0700, as is the demo's folder around it."""
    from attnloop.apps import demo
    from attnloop.apps.labelstudio_server import CREDENTIALS, new_server

    with umask(0o022):
        workdir = demo._fresh_workdir(tmp_path / "demo")
        server = new_server(workdir / "label-studio")
    assert (mode(workdir), mode(server.workdir), mode(server.workdir / CREDENTIALS)) == (0o700, 0o700, 0o600)


FAKE_LABEL_STUDIO = """#!/bin/sh
# stands in for label-studio: creates files in its data folder as its database and uploads do, then waits
mkdir -p "$LABEL_STUDIO_BASE_DATA_DIR/media/upload"
echo journal > "$LABEL_STUDIO_BASE_DATA_DIR/label_studio.sqlite3-journal"
echo image > "$LABEL_STUDIO_BASE_DATA_DIR/media/upload/a.png"
touch "$LABEL_STUDIO_BASE_DATA_DIR/ready"
exec sleep 60
"""


def test_an_existing_label_studio_folder_is_made_private_at_every_start(tmp_path, monkeypatch):
    """A folder an older attnloop left (0755 folders, the database 0644: any local user could read the
    API token) is its owner's alone after a start: folders 0700, files 0600, and what the server
    creates afterwards too (it runs under umask 077)."""
    from attnloop.apps.labelstudio_server import BIN_ENV, new_server

    workdir = tmp_path / "label-studio"
    (workdir / "data" / "export").mkdir(parents=True)
    database = workdir / "data" / "label_studio.sqlite3"
    database.write_text("authtoken_token ... 0123456789abcdef")
    (workdir / "label-studio.log").write_text("an older run\n")
    for path in (workdir, workdir / "data", workdir / "data" / "export"):
        path.chmod(0o755)
    for path in (database, workdir / "label-studio.log"):
        path.chmod(0o644)
    fake = tmp_path / "bin" / "label-studio"
    fake.parent.mkdir()
    fake.write_text(FAKE_LABEL_STUDIO)
    fake.chmod(0o755)
    monkeypatch.setenv(BIN_ENV, str(fake))
    with umask(0o022):
        server = new_server(workdir)
        server.launch()
    try:
        deadline = time.monotonic() + 30
        while not (workdir / "data" / "ready").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (workdir / "data" / "ready").exists(), (workdir / "label-studio.log").read_text()
        readable = {str(p.relative_to(tmp_path)): oct(mode(p)) for p in [workdir, *workdir.rglob("*")] if mode(p) & 0o077}
        assert not readable, readable
        assert (mode(workdir), mode(workdir / "data"), mode(database)) == (0o700, 0o700, 0o600)
    finally:
        server.stop()


def test_the_secret_files_are_never_readable_by_others_even_for_a_moment(tmp_path):
    """With umask 0 (the worst case), a watcher listing the folder while the stack saves its state
    again and again never sees a file that group or others could read."""
    stack = Stack(tmp_path, s3_key="attnloop-local", s3_secret=secrets.token_hex(16))
    stack.label_studio = {"url": "http://127.0.0.1:1", "token": secrets.token_hex(20), "user": "u", "password": "p"}
    seen: list[tuple[str, int]] = []
    started, done = threading.Event(), threading.Event()

    def watch() -> None:
        while not done.is_set():
            started.set()
            for entry in os.scandir(tmp_path):
                try:
                    bits = stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode)
                except FileNotFoundError:
                    continue
                if bits & 0o077:
                    seen.append((entry.name, bits))

    watcher = threading.Thread(target=watch)
    with umask(0):
        watcher.start()
        started.wait(timeout=10)
        try:
            for _ in range(100):
                stack.save()
        finally:
            done.set()
            watcher.join()
    assert not seen, f"readable by others: {sorted(set(seen))[:5]}"
    assert (mode(tmp_path / STATE), mode(tmp_path / "env.sh")) == (0o600, 0o600)
    assert Stack.load(tmp_path).label_studio["token"] == stack.label_studio["token"]


# --- the compose stack refuses example secrets ------------------------------------------------


def check(values: dict[str, str]) -> subprocess.CompletedProcess:
    """``infra/check-secrets.sh`` as compose's first service runs it: POSIX sh, the secrets in its environment."""
    return subprocess.run(["sh", str(CHECK)], env={"PATH": os.environ["PATH"], **values}, capture_output=True, text=True, timeout=30)


def good_values() -> dict[str, str]:
    return {
        "S3_ACCESS_KEY": "attnloop",
        "S3_SECRET_KEY": secrets.token_hex(20),
        "POSTGRES_PASSWORD": secrets.token_hex(24),
        "LABEL_STUDIO_USERNAME": "annotator@mill.example.org",
        "LABEL_STUDIO_PASSWORD": secrets.token_urlsafe(16),
        "LABEL_STUDIO_TOKEN": secrets.token_hex(20),
        "SERVING_TOKEN": secrets.token_hex(20),
        "GRAFANA_ADMIN_PASSWORD": secrets.token_urlsafe(16),
    }


def test_the_stack_refuses_the_example_values_it_once_shipped():
    out = check(SHIPPED_EXAMPLE)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    refused = {re.search(r"\b([A-Z0-9_]+) in infra/\.env", line)[1]: line for line in lines}
    assert set(refused) == set(SECRET_NAMES)  # SERVING_TOKEN and GRAFANA_ADMIN_PASSWORD came later: that file has none, so they are empty
    assert all("nothing was started" in line for line in lines), out.stderr
    assert all("example" in refused[name] for name in SECRET_NAMES if name in SHIPPED_EXAMPLE), out.stderr
    assert "is empty" in refused["SERVING_TOKEN"] and "is empty" in refused["GRAFANA_ADMIN_PASSWORD"]
    assert not any(SHIPPED_EXAMPLE[name] in out.stderr for name in SECRET_NAMES if name in SHIPPED_EXAMPLE), "the check never prints a secret"


def test_the_stack_refuses_the_example_file_as_shipped_now():
    """``infra/.env.example`` copied unchanged: compose's ``${VAR:?}`` refuses its empty secrets, and so does the check."""
    example = dict(line.split("=", 1) for line in (ROOT / "infra" / ".env.example").read_text().splitlines() if "=" in line and not line.startswith("#"))
    assert all(example[name] == "" for name in SECRET_NAMES), "the example ships no usable secret"
    compose = (ROOT / "infra" / "docker-compose.yml").read_text()
    guarded = set(re.findall(r"\$\{([A-Z0-9_]+):\?", compose))
    assert set(SECRET_NAMES) <= guarded, "compose refuses an empty secret before it starts anything"
    out = check(example)
    assert out.returncode != 0 and all(f"{name} in infra/.env is empty" in out.stderr for name in SECRET_NAMES), out.stderr


@pytest.mark.parametrize(
    "name, value, reason",
    [
        ("POSTGRES_PASSWORD", "Change-Me-Please-1234", "is an example value"),
        ("LABEL_STUDIO_PASSWORD", "REPLACE_ME_with_yours", "is an example value"),
        ("S3_SECRET_KEY", "q7w3z9", "is shorter than 12 characters"),
        ("POSTGRES_PASSWORD", "a1b2c3d4e5f6@host:5432", "has characters other than"),
        ("LABEL_STUDIO_TOKEN", "not-forty-hex-characters", "is not 40 hexadecimal characters"),
        ("LABEL_STUDIO_TOKEN", "0123456789abcdef0123456789abcdef01234567", "is an example value"),
    ],
)
def test_the_stack_refuses_one_bad_secret_and_names_it(name, value, reason):
    out = check(good_values() | {name: value})
    assert out.returncode != 0
    assert len(out.stderr.strip().splitlines()) == 1 and f"{name} in infra/.env {reason}" in out.stderr, out.stderr
    assert value not in out.stderr


def test_the_stack_starts_on_real_secrets():
    out = check(good_values())
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""


# --- the demo's first run on a fresh machine is clean --------------------------------------------

FIRST_RUN = '''
import sys
from pathlib import Path

from prefect import flow, task

from attnloop.apps.demo import _demo_settings
from attnloop.config import LabelStudioSettings, Settings


@task
def step(i: int) -> int:
    print(f"step {i}")
    return i


@flow(log_prints=True)
def inner() -> list[int]:
    return [step(i) for i in range(3)]


@flow(name="loop", log_prints=True)
def outer() -> int:
    return sum(inner()) + step(10)


home = Path(sys.argv[1])
with _demo_settings(Settings.from_env(), home, LabelStudioSettings("http://127.0.0.1:9", "t" * 40, "p", str(home / "store"))):
    print("result", outer())
'''


@pytest.mark.services
def test_the_demos_first_flow_run_on_a_fresh_machine_prints_no_traceback(tmp_path):
    """A flow in the demo's environment on Prefect's ephemeral server, with a fresh Prefect database
    (a new HOME): no traceback, no ``database is locked`` (Prefect's telemetry racing the first
    writes on a new SQLite file), no ERROR line (telemetry that cannot reach the internet), and the
    fresh database's migrations fit in the server's start-up wait."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ATTNLOOP_", "MLFLOW_"))}
    env["HOME"] = str(tmp_path / "home")
    (tmp_path / "home").mkdir()
    out = subprocess.run(
        [sys.executable, "-c", FIRST_RUN, str(tmp_path / "demo")], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    printed = out.stdout + out.stderr
    assert out.returncode == 0 and "result 13" in out.stdout, printed[-3000:]
    assert (tmp_path / "home" / ".prefect").is_dir(), "the run used the fresh Prefect home"
    for bad in ("Traceback", "database is locked", "| ERROR"):
        assert bad not in printed, f"{bad!r} in the first run's output:\n{printed[-3000:]}"


def test_the_demo_sets_prefect_only_for_the_ephemeral_server_it_starts(tmp_path, monkeypatch):
    """A configured Prefect server keeps its settings; a setting the caller gives wins; all is restored after."""
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    from attnloop.apps.demo import _demo_settings
    from attnloop.config import LabelStudioSettings, Settings

    def inside(**env) -> tuple[bool, bool, int]:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        with _demo_settings(Settings.from_env(), tmp_path, LabelStudioSettings("http://127.0.0.1:9", "t" * 40, "p", str(tmp_path))):
            server = get_current_settings().server
            return server.analytics_enabled, server.services.triggers.enabled, server.ephemeral.startup_timeout_seconds

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        before = get_current_settings().server.model_dump()
        assert inside() == (False, False, 120)
        assert get_current_settings().server.model_dump() == before
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        server = get_current_settings().server
        assert inside() == (server.analytics_enabled, server.services.triggers.enabled, server.ephemeral.startup_timeout_seconds)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert inside(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="300")[2] == 300  # the caller's
