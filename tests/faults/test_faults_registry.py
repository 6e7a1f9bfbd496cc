"""Registry faults against the real ``mlflow server`` fixture: a proxy in front of it that answers
503 (or holds a request while its client is killed), and a closed port. The gate must never promote
on a registry error, a promotion cut short at any request must be finished by a re-run and never
undo a person's rollback, and a person must get one line that names the server (its password
redacted), not a traceback or a wait of minutes."""

import os
import signal
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


def _cli(args: list[str], uri: str, home: Path, *, store: Path | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    # one quick retry: enough for MLflow to log a "Retrying" warning, which must not reach the person;
    # a gain threshold of -1 lets the weak model pass the gate against itself
    env.update(MLFLOW_TRACKING_URI=uri, ATTNLOOP_HOME=str(home), MLFLOW_HTTP_REQUEST_MAX_RETRIES="1",
               MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="0", ATTNLOOP_GATE_MIN_GAIN="-1", ATTNLOOP_THREADS="1", OMP_NUM_THREADS="1")
    if store is not None:
        env["ATTNLOOP_STORE"] = str(store)
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


# --- a promotion cut short: at every request, by a registry failure or kill -9 -----------------

ALIAS_SET, ALIAS_DELETE = "POST /api/2.0/mlflow/registered-models/alias", "DELETE /api/2.0/mlflow/registered-models/alias"
PASSING = Policy(min_gain=-1.0)  # the same weak model against itself: a gain of 0 passes this threshold


def _promotion_requests(mlflow_server_url, proxy, logged) -> list[str]:
    """What one promotion sends, counted through the proxy on a chain of its own."""
    direct = registry.connect(mlflow_server_url)
    _, _, third = _chain(direct, "faults-cut-count", logged)
    before = len(proxy.seen)
    registry.promote(registry.connect(proxy.url), "faults-cut-count", third)
    return proxy.seen[before:]


def _assert_consistent(direct, name: str, version: str, previous: str) -> str:
    """What must hold after any interruption: ``promoted_at`` only on a champion, a champion that
    knows where rollback goes, and the champion either the old or the new one. Returns the champion."""
    champion = registry.alias_version(direct, name, registry.CHAMPION)
    tags = registry.version_tags(direct, name, version)
    assert champion in (previous, version)
    assert ("promoted_at" in tags) <= (champion == version), (champion, tags)
    if champion == version:
        assert tags["previous_champion"] == previous
    return champion


def _assert_promoted(direct, name: str, version: str, previous: str) -> None:
    assert _aliases(direct, name) == {"champion": version}
    tags = registry.version_tags(direct, name, version)
    assert tags["previous_champion"] == previous and "promoted_at" in tags


def test_promotion_cut_at_each_request_is_finished_by_a_rerun_and_never_undoes_a_rollback(mlflow_server_url, proxy, weak, logged):
    """The registry fails for good from the k-th request of a promotion on, for every k. Whatever
    that left, a re-run of the gate finishes the promotion; and where the new champion was already in
    place, a person's rollback holds: the next gate refuses that version, saying why, and only
    ``approve`` reinstates it. (Before: the re-run ended "already the champion" and the gate after a
    rollback promoted the rolled-back version again.) One model name; each cut promotes a new version."""
    data, _ = weak
    holdout = load_holdout(data)
    steps = _promotion_requests(mlflow_server_url, proxy, logged)
    assert any(ALIAS_SET in s for s in steps) and any(ALIAS_DELETE in s for s in steps), steps
    direct, client, name = registry.connect(mlflow_server_url), registry.connect(proxy.url), "faults-cut"
    registry.promote(direct, name, _version(direct, name, logged))

    def cut(k: int) -> tuple[str, str, str]:
        previous, version = registry.alias_version(direct, name, registry.CHAMPION), _version(direct, name, logged)
        proxy.fail(times=None, after=k)
        with pytest.raises(registry.RegistryError, match="re-running is safe"):
            registry.promote(client, name, version)
        proxy.heal()
        return previous, version, _assert_consistent(direct, name, version, previous)

    cut_after_move = 0
    for k, step in enumerate(steps):
        previous, version, champion = cut(k)
        if champion == version or k == 0:  # the re-run a person makes; before the move it scores again (k = 0 shows it once)
            decision, gated, text = registry.gate(client, name=name, holdout=holdout, policy=PASSING)
            assert (decision.action, gated) == (PROMOTE, version), (k, step, text)
        else:  # the rest of the gate's re-run, whose decision was recorded: its promotion
            registry.promote(client, name, version)
        _assert_promoted(direct, name, version, previous)
        if champion != version:
            continue
        cut_after_move += 1  # the champion had moved: challenger and champion on one version
        if cut_after_move > 1 and k < len(steps) - 1:
            continue  # the first and the last such cut again, then a person rolls back
        previous, version, champion = cut(k)
        assert champion == version and registry.rollback(client, name, by="ana") == (version, previous)
        decision, gated, text = registry.gate(client, name=name, holdout=holdout, policy=PASSING)
        assert (decision.action, gated) == (REFUSE, version), (k, step, text)
        assert "rolled back by ana" in text and f"attnloop registry approve {name} {version}" in text, text
        assert registry.alias_version(direct, name, registry.CHAMPION) == previous
        assert registry.version_tags(direct, name, version)["gate"] == REFUSE
        registry.approve(client, name, version, by="ana")  # a person may reinstate it
        _assert_promoted(direct, name, version, previous)
    assert cut_after_move >= 2, steps  # promoted_at and the challenger removal come after the move


def test_promoted_at_only_once_the_alias_moved(mlflow_server_url, proxy, logged):
    """The champion alias move fails for good: the version records no ``promoted_at`` (before, it
    claimed a promotion that never happened)."""
    direct, client = registry.connect(mlflow_server_url), registry.connect(proxy.url)
    name = "faults-promoted-at"
    _, second, third = _chain(direct, name, logged)
    proxy.fail(times=None, match=ALIAS_SET)
    with pytest.raises(registry.RegistryError, match="the champion alias was not moved"):
        registry.promote(client, name, third)
    proxy.heal()
    assert registry.alias_version(direct, name, registry.CHAMPION) == second
    assert "promoted_at" not in registry.version_tags(direct, name, third)
    registry.promote(client, name, third)
    assert "promoted_at" in registry.version_tags(direct, name, third)


def _run(args: list[str], uri: str, home: Path, store: Path, timeout: float = 180) -> tuple[int, str]:
    process = _cli(args, uri, home, store=store)
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    return process.returncode, out


def _killed_gate(proxy, name: str, holdout: Path, home: Path, store: Path, *, at: str) -> None:
    """``attnloop registry gate`` in its own process, SIGKILLed while the proxy holds its first request containing ``at``."""
    held = proxy.hold(match=at)
    process = _cli(["gate", "--name", name, "--holdout", str(holdout)], proxy.url, home, store=store)
    try:
        assert held.reached.wait(timeout=180), f"the gate never sent {at}: {process.poll()}"
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
        held.release()
        process.communicate()


@pytest.mark.parametrize("at", [ALIAS_SET, ALIAS_DELETE], ids=["before-the-champion-moves", "before-the-challenger-alias-goes"])
def test_gate_killed_mid_promotion_then_rerun_finishes_it(mlflow_server_url, proxy, weak, logged, tmp_path, at):
    """kill -9 of a real ``attnloop registry gate`` while its promotion waits on one request; the
    re-run finishes the promotion, writes the new champion's drift reference and says what comes next."""
    data, _ = weak
    name = f"faults-kill-{'set' if at == ALIAS_SET else 'delete'}"
    direct = registry.connect(mlflow_server_url)
    _, second, third = _chain(direct, name, logged)
    store = tmp_path / "store"
    _killed_gate(proxy, name, data, tmp_path / "home", store, at=at)
    expected = second if at == ALIAS_SET else third  # the held request never reached the server
    assert _assert_consistent(direct, name, third, second) == expected
    assert registry.alias_version(direct, name, registry.CHALLENGER) == third

    rc, out = _run(["gate", "--name", name, "--holdout", str(data)], mlflow_server_url, tmp_path / "home", store)
    assert rc == 0, out[-3000:]
    _assert_promoted(direct, name, third, second)
    assert (store / "references" / third / "reference.json").is_file(), out[-2000:]
    lines = out.strip().splitlines()
    assert f"drift reference of version {third} written to" in out
    assert lines[-1].startswith("next: serving follows") and f"version {third}" in lines[-1], lines[-3:]
    if at == ALIAS_DELETE:
        assert "already is the champion" in out and "scored nothing again" in out, out[-2000:]


def test_gate_killed_after_the_move_then_rollback_holds_until_a_person_approves(mlflow_server_url, proxy, weak, logged, tmp_path):
    """The worst interruption (champion moved, challenger alias still on it), then a person's
    ``registry rollback``: the next ``registry gate`` refuses the rolled-back version and says why;
    ``registry approve`` reinstates it and writes its drift reference from the holdout the gate recorded."""
    data, _ = weak
    name = "faults-kill-rollback"
    direct = registry.connect(mlflow_server_url)
    _, second, third = _chain(direct, name, logged)
    home, store = tmp_path / "home", tmp_path / "store"
    _killed_gate(proxy, name, data, home, store, at=ALIAS_DELETE)
    assert _aliases(direct, name) == {"champion": third, "challenger": third}

    rc, out = _run(["rollback", name], mlflow_server_url, home, store)
    assert rc == 0 and registry.alias_version(direct, name, registry.CHAMPION) == second, out[-2000:]
    assert out.strip().splitlines()[-1].startswith(f"next: serving follows models:/{name}@champion back to version {second}"), out

    rc, out = _run(["gate", "--name", name, "--holdout", str(data)], mlflow_server_url, home, store)
    assert rc == 3, out[-3000:]
    assert registry.alias_version(direct, name, registry.CHAMPION) == second
    assert f"version {third} was rolled back" in out and "Traceback" not in out, out[-2000:]
    assert out.strip().splitlines()[-1] == (
        f"next: the champion stays where it is; to reinstate version {third} anyway, a person runs `attnloop registry approve {name} {third}`"
    )
    assert not (store / "references" / third).exists()

    rc, out = _run(["approve", name, third, "--by", "ana"], mlflow_server_url, home, store)
    assert rc == 0, out[-3000:]
    _assert_promoted(direct, name, third, second)
    assert "recorded by the gate" in out and (store / "references" / third / "reference.json").is_file(), out[-2000:]


def test_score_with_the_registry_down_prints_one_line_without_retry_warnings(tmp_path):
    """``attnloop score`` in its own process, MLflow's retries on: MLflow logs a "Retrying" warning per
    retry, which ``registry.connect`` keeps quiet for every command, so stderr is the one error line."""
    (tmp_path / "store").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(ATTNLOOP_HOME=str(tmp_path / "home"), MLFLOW_HTTP_REQUEST_MAX_RETRIES="2", MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="0",
               ATTNLOOP_THREADS="1", OMP_NUM_THREADS="1")
    with closed_port() as port:
        env["MLFLOW_TRACKING_URI"] = f"http://ana:s3cret@127.0.0.1:{port}"
        out = subprocess.run([sys.executable, "-m", "attnloop", "score", "--store", str(tmp_path / "store"), "--model",
                              "models:/attnloop-abn@champion"], env=env, capture_output=True, text=True, timeout=180)
    err = out.stderr.strip()
    assert out.returncode != 0 and len(err.splitlines()) == 1, (out.returncode, err[-3000:])
    assert err.startswith("attnloop: error: ") and "Traceback" not in err and "Retrying" not in err, err
    assert f"ana:***@127.0.0.1:{port} could not be reached (the connection was refused; 3 tries" in err and "s3cret" not in err, err
    assert not list((tmp_path / "store").rglob("*.parquet"))


def test_serving_model_page_hides_the_registry_password_once_the_registry_fails(mlflow_server_url, proxy, logged, tmp_path):
    """A served champion, then the registry (behind ``http://user:password@``) fails: ``/model`` and
    ``/admin/reload`` keep the model and say why it could not move, without the password."""
    from fastapi.testclient import TestClient

    from attnloop.config import Settings
    from serving.app import create_app

    name = "faults-serving-secret"
    client = registry.connect(mlflow_server_url)
    version = _version(client, name, logged)
    registry.promote(client, name, version)
    uri = proxy.url.replace("http://", "http://ana:s3cret@")
    settings = Settings(home=tmp_path, threads=1, mlflow_tracking_uri=uri, model_name=name, serving_token="t" * 32)
    with TestClient(create_app(settings=settings, reload_interval=3600, device="cpu"), headers={"authorization": "Bearer " + "t" * 32}) as http:
        assert http.get("/model").json()["version"] == version
        proxy.fail(times=None, match=CHAMPION_GET)
        reload = http.post("/admin/reload").json()
        model = http.get("/model")
    proxy.heal()
    assert reload["changed"] is False and model.status_code == 200 and model.json()["version"] == version
    for text in (model.text, str(reload)):
        assert "s3cret" not in text and "ana:***@127.0.0.1" in text and "503" in text, text


def test_mlflow_run_links_print_no_password(mlflow_server_url, monkeypatch, capfd):
    """MLflow prints "View run … at: <tracking URI>/#/…" when a run ends (``train``, ``registry
    register``); with ``http://user:password@`` that line would carry the password, so it stays quiet."""
    monkeypatch.setenv(registry.QUIET_LINKS, "false")
    monkeypatch.delenv(registry.QUIET_LINKS)  # unset here, and after the test as it was before
    client = registry.connect(mlflow_server_url.replace("http://", "http://ana:s3cret@"))
    run = client.create_run(registry.experiment_id(client, "faults-secret-links"))
    client.set_terminated(run.info.run_id)
    captured = capfd.readouterr()
    assert "s3cret" not in captured.out + captured.err, captured.out
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
