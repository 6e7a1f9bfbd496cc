"""Registry faults against the real ``mlflow server`` fixture: a proxy in front of it that answers
503, and a closed port. The gate must never promote on a registry error, and a person must get one
line that names the server, not a traceback or a wait of minutes."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attnloop import registry
from attnloop.gate import AWAIT, PROMOTE, REFUSE, Policy
from attnloop.holdout import load_holdout
from attnloop.publish import register_run
from attnloop.training import TrainConfig, save_run, train
from conftest import write_tiny_manifest
from faultkit import FaultyProxy, closed_port

pytestmark = pytest.mark.services

CHAMPION_GET = "alias=champion"  # the champion lookup: GET /api/2.0/mlflow/registered-models/alias?name=..&alias=champion


@pytest.fixture(scope="module")
def weak(tmp_path_factory):
    """A barely trained model (it answers one class) and its data: every version below is this one."""
    root = tmp_path_factory.mktemp("faults-registry")
    data = write_tiny_manifest(root / "data")
    config = TrainConfig(epochs=1, lr=1e-6, guidance="none")
    return data, save_run(root / "weak", train(data, config, progress=False), config, data="tiny")


@pytest.fixture(scope="module")
def logged(mlflow_server_url, weak):
    """The weak model logged and registered once; further versions reuse its files (no upload each)."""
    client = registry.connect(mlflow_server_url)
    seed = register_run(client, name="faults-seed", run_dir=weak[1])
    found = client.get_model_version("faults-seed", seed)
    return found.source, found.run_id, found.source.removeprefix("models:/")  # models:/m-<logged model id>


@pytest.fixture
def proxy(mlflow_server_url, monkeypatch):
    # few, fast retries, so that a lookup the proxy fails for good gives up in well under a second
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    with FaultyProxy(mlflow_server_url) as running:
        yield running


def _version(client, name: str, logged: tuple[str, str, str]) -> str:
    """A new version of ``name`` holding the logged model, made the challenger (as registering does)."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException:
        pass  # it exists
    source, _, model_id = logged
    version = str(client.create_model_version(name, source, model_id=model_id).version)
    client.set_registered_model_alias(name, registry.CHALLENGER, version)
    return version


def _chain(client, name: str, logged) -> tuple[str, str, str]:
    """v1 champion, v2 promoted over it (so rollback has somewhere to go), v3 the challenger."""
    first = _version(client, name, logged)
    registry.promote(client, name, first)
    second = _version(client, name, logged)
    registry.promote(client, name, second)
    return first, second, _version(client, name, logged)


def test_faultkit_proxy_fails_as_told_then_forwards(tmp_path):
    """The proxy itself, in front of a plain http.server: 503 once, 503 for one path, then the real answers."""
    import functools
    import threading
    import urllib.error
    import urllib.request
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "b.txt").write_text("beta")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()

    def get(proxy, name):
        try:
            with urllib.request.urlopen(f"{proxy.url}/{name}", timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, None

    try:
        with FaultyProxy(f"http://127.0.0.1:{upstream.server_address[1]}") as proxy:
            proxy.fail(times=1)
            assert [get(proxy, "a.txt"), get(proxy, "a.txt")] == [(503, None), (200, "alpha")]
            proxy.fail(times=None, match="b.txt")
            assert [get(proxy, "b.txt"), get(proxy, "a.txt"), get(proxy, "b.txt")] == [(503, None), (200, "alpha"), (503, None)]
            proxy.heal()
            assert get(proxy, "b.txt") == (200, "beta")
            assert proxy.faults == ["GET /a.txt", "GET /b.txt", "GET /b.txt"] and len(proxy.seen) == 6
    finally:
        upstream.shutdown()
        upstream.server_close()


def _aliases(client, name: str) -> dict[str, str]:
    return {alias: str(version) for alias, version in client.get_registered_model(name).aliases.items()}


@pytest.mark.parametrize("times, retries", [(None, "1"), (1, "0")], ids=["503-every-time", "503-once-no-retries"])
def test_champion_lookup_503_refuses_and_moves_no_alias(mlflow_server_url, proxy, weak, logged, monkeypatch, times, retries):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", retries)
    data, _ = weak
    name = f"faults-gate-{times}"
    direct = registry.connect(mlflow_server_url)
    first, second, third = _chain(direct, name, logged)
    before = _aliases(direct, name)
    assert before == {"champion": second, "challenger": third}

    client = registry.connect(proxy.url)
    proxy.fail(times=times, match=CHAMPION_GET)
    # min_accuracy 0: were the failed lookup read as "no champion", this challenger would be promoted
    decision, gated, text = registry.gate(client, name=name, holdout=load_holdout(data), policy=Policy(min_accuracy=0.0))
    proxy.heal()

    assert proxy.faults and all(CHAMPION_GET in f for f in proxy.faults)
    assert gated == third and decision.action == REFUSE, text
    assert any("registry" in r and "503" in r for r in decision.reasons), decision.reasons
    assert _aliases(direct, name) == before  # champion and challenger exactly where they were
    tags = registry.version_tags(direct, name, third)
    assert tags["gate"] == REFUSE and "registry" in tags["gate.reasons"]
    assert "previous_champion" not in tags
    assert registry.version_tags(direct, name, second)["previous_champion"] == first  # rollback info intact
    assert registry.rollback(direct, name) == (second, first)


def test_approve_and_rollback_refuse_when_the_champion_lookup_fails(mlflow_server_url, proxy, logged):
    name = "faults-approve"
    direct = registry.connect(mlflow_server_url)
    first, second, third = _chain(direct, name, logged)
    direct.set_model_version_tag(name, third, registry.TAG + "gate", AWAIT)
    before = _aliases(direct, name)

    client = registry.connect(proxy.url)
    proxy.fail(times=None, match=CHAMPION_GET)
    with pytest.raises(registry.RegistryError, match=r"127\.0\.0\.1.*503"):
        registry.approve(client, name, third, by="ana")
    with pytest.raises(registry.RegistryError, match=r"127\.0\.0\.1.*503"):
        registry.rollback(client, name)
    with pytest.raises(registry.RegistryError):
        registry.promote(client, name, third)
    proxy.heal()

    assert _aliases(direct, name) == before
    tags = registry.version_tags(direct, name, third)
    assert tags["gate"] == AWAIT and "previous_champion" not in tags and "approved_by" not in tags
    # once the registry answers, the same approval goes through and remembers the right champion
    registry.approve(client, name, third, by="ana")
    assert registry.alias_version(direct, name, registry.CHAMPION) == third
    assert registry.version_tags(direct, name, third)["previous_champion"] == second


def test_missing_alias_and_missing_model_still_mean_none(mlflow_server_url, weak, logged):
    data, _ = weak
    client = registry.connect(mlflow_server_url)
    assert registry.alias_version(client, "faults-no-such-model", registry.CHAMPION) is None
    name = "faults-first"
    version = _version(client, name, logged)
    assert registry.alias_version(client, name, registry.CHAMPION) is None
    decision, gated, _ = registry.gate(client, name=name, holdout=load_holdout(data), policy=Policy(min_accuracy=0.0))
    assert (decision.action, gated) == (PROMOTE, version)  # a real first champion is still promoted


def test_serving_keeps_its_model_and_says_the_registry_failed(mlflow_server_url, proxy, logged):
    from serving.app import Reloader

    name = "faults-serving"
    client = registry.connect(mlflow_server_url)
    version = _version(client, name, logged)
    registry.promote(client, name, version)
    reloader = Reloader(f"models:/{name}@champion", registry_uri=proxy.url, device="cpu")
    assert reloader.check_now() and reloader.current.version == version
    proxy.fail(times=None, match=CHAMPION_GET)
    assert reloader.check_now() is False
    assert reloader.current.version == version
    assert "503" in reloader.last_error and "no version with the alias" not in reloader.last_error


def _cli(args: list[str], uri: str, home: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    # one quick retry: enough for MLflow to log a "Retrying" warning, which must not reach the person
    env.update(MLFLOW_TRACKING_URI=uri, ATTNLOOP_HOME=str(home), MLFLOW_HTTP_REQUEST_MAX_RETRIES="1",
               MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="0")
    return subprocess.Popen([sys.executable, "-m", "attnloop", "registry", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_unreachable_registry_gate_prints_one_line(tmp_path):
    """The real command in its own process: MLflow's retry warnings and tracebacks must not reach the person."""
    data = write_tiny_manifest(tmp_path / "data", per_class=1)
    with closed_port() as port:
        process = _cli(["gate", "--holdout", str(data)], f"http://127.0.0.1:{port}", tmp_path / "home")
        try:
            out, _ = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            out, _ = process.communicate()
    out = out.strip()
    assert process.returncode == 2, (process.returncode, out[-2000:])
    assert "Traceback" not in out and "Retrying" not in out and len(out.splitlines()) == 1, out[-2000:]
    assert f"127.0.0.1:{port} could not be reached" in out and "re-running is safe" in out, out
    assert "no challenger" not in out


@pytest.mark.parametrize("command", [["show"], ["approve", "attnloop-abn", "1"], ["rollback", "attnloop-abn"]], ids=lambda c: c[0])
def test_unreachable_registry_show_approve_rollback_one_line(command, monkeypatch, capfd):
    from attnloop.apps.cli import main

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with closed_port() as port:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
        rc = main(["registry", *command])
    captured = capfd.readouterr()
    err = captured.err.strip()
    assert rc == 2 and not captured.out.strip(), (rc, captured.out[-2000:])
    assert err.startswith("attnloop: error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"http://127.0.0.1:{port} could not be reached" in err and "re-running is safe" in err, err
    assert ("nothing was changed" if command[0] == "show" else "the champion alias was not moved") in err, err
    assert "no champion" not in err


def test_unreachable_registry_gives_up_within_seconds(tmp_path, monkeypatch, capfd):
    from attnloop.apps.cli import main

    for key in registry.HTTP_DEFAULTS:
        monkeypatch.delenv(key, raising=False)  # attnloop's own defaults (MLflow's alone retry for minutes)
    data = write_tiny_manifest(tmp_path / "data", per_class=1)
    with closed_port() as port:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
        started = time.monotonic()
        rc = main(["registry", "gate", "--holdout", str(data)])
        elapsed = time.monotonic() - started
    err = capfd.readouterr().err.strip()
    assert rc == 2 and elapsed < 30, (rc, elapsed, err)
    assert err.startswith("attnloop: error: gating attnloop-abn") and len(err.splitlines()) == 1, err
    assert f"http://127.0.0.1:{port} could not be reached (the connection was refused; 4 tries" in err
    assert "no alias was moved" in err


def test_unreachable_registry_score_prints_one_line(tmp_path, monkeypatch, capfd):
    """``attnloop score`` from the registry's champion with MLflow down: one line, exit 2, nothing scored."""
    from attnloop.apps.cli import main

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    (tmp_path / "store").mkdir()
    with closed_port() as port:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
        rc = main(["score", "--store", str(tmp_path / "store"), "--model", "models:/attnloop-abn@champion"])
    err = capfd.readouterr().err.strip()
    assert rc == 2, err[-2000:]
    assert err.startswith("attnloop: error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"127.0.0.1:{port} could not be reached" in err, err
    assert not list((tmp_path / "store").rglob("*.parquet"))
