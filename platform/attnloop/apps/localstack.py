"""attnloop's services as processes on loopback, for people without docker (``infra/local-stack``).

The same services as ``infra/docker-compose.yml``, each a process in its own process group:

- ``s3``: moto's S3 server (in memory: its objects go when it stops), buckets ``attnloop`` and ``mlflow``;
- ``mlflow``: ``mlflow server``, SQLite backend, artifacts in the S3 server;
- ``prefect``: ``prefect server start``, SQLite under the stack's folder;
- ``label-studio``: from ``.venv-ls`` (:mod:`attnloop.apps.labelstudio_server`);
- ``worker``: ``prefect worker start`` on the process pool the deployments use, with the stack's
  environment, so every flow run it starts reaches the services above;
- ``serving``: the serving service, following ``models:/NAME@champion``.

Everything lives in one folder (default ``.attnloop/stack``): ``stack.json`` (ports, process ids
and their start times, so ``stop`` ends only the processes this script started), one log per
service, ``env.sh`` to source (it and ``stack.json`` hold the secrets: mode 0600). ``start`` is
refused while a stack from the same folder runs.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from attnloop.apps.labelstudio_server import ROOT, free_port, new_server
from attnloop.apps.processes import end_group, running, start_time

SERVICES = ("s3", "mlflow", "prefect", "label-studio", "worker", "serving")
POOL = "attnloop-process"
STATE = "stack.json"
BUCKETS = ("attnloop", "mlflow")
START_TIMEOUT = 240.0
STOP_TIMEOUT = 20.0


@dataclass
class Process:
    name: str
    port: int
    pid: int
    started: float  # the kernel's start time of ``pid`` (clock ticks since boot): a reused pid is not ours
    log: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Stack:
    workdir: Path
    s3_key: str
    s3_secret: str
    model_name: str = "attnloop-abn"
    processes: dict[str, Process] = field(default_factory=dict)
    label_studio: dict[str, str] = field(default_factory=dict)  # url, token, user, password
    settings: dict[str, str] = field(default_factory=dict)  # more attnloop settings for every service (e.g. ATTNLOOP_GATE_*)

    def url(self, name: str) -> str | None:
        return self.processes[name].url if name in self.processes else None

    def env(self) -> dict[str, str]:
        """What a command (or a flow run) needs to use the stack."""
        env = {"ATTNLOOP_MODEL_NAME": self.model_name, "ATTNLOOP_HOME": str(self.workdir / "home")}
        if "s3" in self.processes:
            env |= {
                "ATTNLOOP_STORE": "s3://attnloop/",
                "ATTNLOOP_S3_ENDPOINT": self.url("s3"),
                "MLFLOW_S3_ENDPOINT_URL": self.url("s3"),
                "AWS_ACCESS_KEY_ID": self.s3_key,
                "AWS_SECRET_ACCESS_KEY": self.s3_secret,
                "AWS_DEFAULT_REGION": "us-east-1",
            }
        if "mlflow" in self.processes:
            env["MLFLOW_TRACKING_URI"] = self.url("mlflow")
        if "prefect" in self.processes:
            env["PREFECT_API_URL"] = f"{self.url('prefect')}/api"
        if self.label_studio:
            env |= {"ATTNLOOP_LABEL_STUDIO_URL": self.label_studio["url"], "ATTNLOOP_LABEL_STUDIO_TOKEN": self.label_studio["token"]}
        if "serving" in self.processes:
            env["ATTNLOOP_SERVING_URL"] = self.url("serving")
        return env | self.settings

    def save(self) -> None:
        """``stack.json`` and ``env.sh``: both hold the S3 secret and the Label Studio token, so the owner's alone."""
        state = asdict(self) | {"workdir": str(self.workdir)}
        write_private(self.workdir / STATE, json.dumps(state, indent=1) + "\n")
        exports = "".join(f"export {k}={_quote(v)}\n" for k, v in sorted(self.env().items()))
        write_private(self.workdir / "env.sh", "# source this file to use the local stack\n" + exports)

    @classmethod
    def load(cls, workdir: str | Path) -> Stack | None:
        path = Path(workdir) / STATE
        if not path.exists():
            return None
        state = json.loads(path.read_text())
        processes = {name: Process(**p) for name, p in state.pop("processes").items()}
        return cls(**(state | {"workdir": Path(state["workdir"]), "processes": processes}))


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, readable by its owner alone from the first byte.

    A temporary file beside it is created 0600 whatever the umask (``mkstemp``: ``os.open`` with
    ``O_EXCL`` and mode 0600) and renamed over the old file, so an earlier world-readable file goes
    with its mode, and a reader sees the old text or the new, never half of it.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def alive(process: Process) -> bool:
    return running(process.pid, process.started)


def _answers(url: str, *, any_status: bool = False) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status == 200
    except urllib.error.HTTPError:
        return any_status  # it answered (e.g. serving's 503 before a champion exists)
    except OSError:
        return False


HEALTH = {
    "s3": ("/moto-api/", False),
    "mlflow": ("/health", False),
    "prefect": ("/api/health", False),
    "label-studio": ("/health", False),
    "worker": ("/health", False),
    "serving": ("/health", True),
}


def _executable(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _commands(stack: Stack, ports: dict[str, int]) -> dict[str, tuple[list[str], dict[str, str], Path]]:
    """Each Python-side service's command line, environment and working folder."""
    home = stack.workdir
    base = {**os.environ, **stack.env(), "PYTHONUNBUFFERED": "1"}
    return {
        "s3": ([_executable("moto_server"), "-H", "127.0.0.1", "-p", str(ports["s3"])], base, home),
        "mlflow": (
            [
                _executable("mlflow"), "server", "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
                "--artifacts-destination", "s3://mlflow/artifacts", "--host", "127.0.0.1", "--port", str(ports["mlflow"]),
                "--workers", "1",
            ],
            base,
            home,
        ),
        "prefect": (
            [_executable("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(ports["prefect"])],
            {**base, "PREFECT_HOME": str(home / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"},
            home,
        ),
        "worker": (
            [_executable("prefect"), "worker", "start", "--pool", POOL, "--type", "process", "--with-healthcheck"],
            {
                **base,
                "PREFECT_HOME": str(home / "prefect-worker"),
                "PREFECT_WORKER_WEBSERVER_HOST": "127.0.0.1",
                "PREFECT_WORKER_WEBSERVER_PORT": str(ports["worker"]),
                "ATTNLOOP_CODE_DIR": str(ROOT),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            },
            ROOT,
        ),
        "serving": (
            [sys.executable, "-m", "uvicorn", "serving.app:create_app", "--factory", "--host", "127.0.0.1", "--port", str(ports["serving"])],
            base,
            ROOT,
        ),
    }


def _launch(name: str, command: list[str], env: dict[str, str], cwd: Path, log: Path, port: int) -> Process:
    with log.open("a") as out:
        popen = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=cwd, start_new_session=True
        )
    return Process(name, port, popen.pid, start_time(popen.pid) or 0.0, str(log))


def _wait(stack: Stack, names: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    waiting = list(names)
    while waiting:
        for name in list(waiting):
            process = stack.processes[name]
            if not alive(process):
                raise RuntimeError(f"{name} exited before it answered; log tail ({process.log}):\n{_tail(process.log)}")
            path, any_status = HEALTH[name]
            if _answers(process.url + path, any_status=any_status):
                waiting.remove(name)
        if waiting and time.monotonic() > deadline:
            raise RuntimeError(f"{', '.join(waiting)} did not answer within {timeout:.0f} s; logs in {stack.workdir}")
        if waiting:
            time.sleep(1.0)


def _tail(log: str, size: int = 3000) -> str:
    path = Path(log)
    return path.read_text(errors="replace")[-size:] if path.exists() else ""


def _make_buckets(stack: Stack) -> None:
    from minio import Minio

    client = Minio(endpoint=stack.url("s3").split("://", 1)[1], access_key=stack.s3_key, secret_key=stack.s3_secret, secure=False)
    for bucket in BUCKETS:
        if not client.bucket_exists(bucket_name=bucket):
            client.make_bucket(bucket_name=bucket)


def start(
    workdir: str | Path,
    *,
    services: tuple[str, ...] = SERVICES,
    label_studio: tuple[str, str] | None = None,
    model_name: str = "attnloop-abn",
    settings: dict[str, str] | None = None,
    timeout: float = START_TIMEOUT,
    progress: bool = True,
) -> Stack:
    """Start ``services`` (in dependency order) and wait until each answers; on failure, stop what started.

    ``label_studio=(url, token)`` uses a running Label Studio instead of starting one; ``settings``
    (environment variables) go to every service and into ``env.sh``.
    """
    unknown = set(services) - set(SERVICES)
    if unknown:
        raise ValueError(f"unknown services {sorted(unknown)}; valid: {', '.join(SERVICES)}")
    workdir = Path(workdir).resolve()
    workdir.mkdir(mode=0o700, parents=True, exist_ok=True)  # the services' data and logs: the owner's alone where it is new
    previous = Stack.load(workdir)
    if previous is not None and any(alive(p) for p in previous.processes.values()):
        raise RuntimeError(f"a stack from {workdir} is running ({', '.join(previous.processes)}); `stop` it first")
    stack = Stack(workdir, s3_key="attnloop-local", s3_secret=secrets.token_hex(16), model_name=model_name, settings=dict(settings or {}))
    say = print if progress else (lambda *a, **k: None)
    ports = {name: free_port() for name in SERVICES}
    ls_server = None
    try:
        if label_studio is not None:
            stack.label_studio = {"url": label_studio[0].rstrip("/"), "token": label_studio[1]}
        elif "label-studio" in services:  # the slowest: launched first, waited for last
            ls_server = new_server(workdir / "label-studio", port=ports["label-studio"])
            ls_server.launch()
            stack.processes["label-studio"] = Process(
                "label-studio", ls_server.port, ls_server.pid, start_time(ls_server.pid) or 0.0, str(ls_server.log)
            )
            stack.label_studio = {"url": ls_server.url, "token": ls_server.token, "user": ls_server.user, "password": ls_server.password}
        # each step needs the ones before it answering: buckets before MLflow's artifacts, the API before the worker
        for group in (("s3",), ("mlflow", "prefect"), ("worker", "serving")):
            names = [n for n in group if n in services]
            commands = _commands(stack, ports)
            for name in names:
                say(f"starting {name} on 127.0.0.1:{ports[name]} ...", flush=True)
                command, env, cwd = commands[name]
                stack.processes[name] = _launch(name, command, env, cwd, workdir / f"{name}.log", ports[name])
            stack.save()
            _wait(stack, names, timeout)
            if "s3" in names:
                _make_buckets(stack)
        if ls_server is not None:
            say("waiting for Label Studio (about a minute) ...", flush=True)
            _wait(stack, ["label-studio"], timeout)
    except BaseException:
        stack.save()
        stop(workdir, progress=False)
        raise
    stack.save()
    return stack


def stop(workdir: str | Path, *, progress: bool = True) -> list[str]:
    """End the stack's processes (only those whose pid and start time match what ``start`` recorded)."""
    stack = Stack.load(workdir)
    if stack is None:
        return []
    stopped = []
    for name, process in reversed(list(stack.processes.items())):
        if not end_group(process.pid, process.started, timeout=STOP_TIMEOUT):
            continue
        stopped.append(name)
        if progress:
            print(f"stopped {name} (pid {process.pid})")
    (Path(workdir) / STATE).unlink(missing_ok=True)
    return stopped


def status(workdir: str | Path) -> list[dict]:
    """One row per service: pid, URL, whether the process runs and whether it answers."""
    stack = Stack.load(workdir)
    if stack is None:
        return []
    rows = []
    for name, process in stack.processes.items():
        path, any_status = HEALTH[name]
        running = alive(process)
        rows.append({"service": name, "pid": process.pid, "url": process.url, "running": running,
                     "answers": running and _answers(process.url + path, any_status=any_status), "log": process.log})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="infra/local-stack", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("start", "stop", "status", "env"))
    parser.add_argument("--dir", type=Path, default=Path(os.environ.get("ATTNLOOP_STACK_DIR", ".attnloop/stack")))
    parser.add_argument("--services", default=",".join(SERVICES), help=f"comma-separated subset of {','.join(SERVICES)}")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a setting for every service, e.g. ATTNLOOP_GATE_MIN_GAIN=0.02")
    args = parser.parse_args(argv)
    if args.command == "start":
        if bad := [item for item in args.set if "=" not in item]:
            parser.error(f"--set takes NAME=VALUE, got {bad}")
        settings = dict(item.split("=", 1) for item in args.set)
        stack = start(args.dir, services=tuple(s for s in args.services.split(",") if s), settings=settings)
        for row in status(args.dir):
            print(f"{row['service']:13} {row['url']:24} pid {row['pid']}")
        if stack.label_studio.get("password"):
            print(f"Label Studio login: {stack.label_studio['user']} / {stack.label_studio['password']}")
        print(f"\nto use it:  source {args.dir / 'env.sh'}\nto end it:  infra/local-stack stop")
    elif args.command == "stop":
        if not stop(args.dir):
            print(f"nothing of {args.dir} was running")
    elif args.command == "status":
        rows = status(args.dir)
        if not rows:
            print(f"no stack in {args.dir}")
            return 1
        for row in rows:
            state = "answers" if row["answers"] else ("running, not answering" if row["running"] else "stopped")
            print(f"{row['service']:13} {row['url']:24} pid {row['pid']:<8} {state}")
        return 0 if all(r["answers"] for r in rows) else 1
    else:
        stack = Stack.load(args.dir)
        if stack is None:
            print(f"no stack in {args.dir}", file=sys.stderr)
            return 1
        print((args.dir / "env.sh").read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
