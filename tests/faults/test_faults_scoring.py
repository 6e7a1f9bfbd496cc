"""Scoring never stalls, never skips, never repeats — faults injected by real means on a folder store
and on moto's S3 server over HTTP: object keys with ``..`` written by another S3 client, a model file
replaced under the same name, frames replaced under the same key, two real ``attnloop score``
processes started at once, and a lease holder killed with SIGKILL.

Each test names the fault it injects; docs/reliability.md lists them with the command that runs it.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from attnloop import layout, lease, scores, scoring
from attnloop.apps.cli import main
from attnloop.imaging import encode_png
from attnloop.registry import file_version
from attnloop.runtime import OnnxModel
from attnloop.storage import S3Store, open_store
from attnloop.layout import frame_key
from conftest import write_tiny_manifest
from services import S3_KEY, S3_SECRET

pytestmark = pytest.mark.services

DAY = "2026-11-26"


# --- helpers --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    """A tiny ABN exported to ONNX (one epoch on one torch thread: a few seconds)."""
    import torch

    from attnloop.export import export_onnx
    from attnloop.training import TrainConfig, train

    root = tmp_path_factory.mktemp("faults-scoring")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(write_tiny_manifest(root / "data", per_class=3), TrainConfig(epochs=1, guidance="none"), progress=False)
    finally:
        torch.set_num_threads(before)
    return export_onnx(result.model, result.card, root / "tiny.onnx")


@pytest.fixture(scope="module")
def model(model_path) -> OnnxModel:
    return OnnxModel(model_path, device="cpu", threads=1)


@pytest.fixture(params=["folder", "s3"])
def store(request, tmp_path):
    if request.param == "folder":
        return open_store(str(tmp_path / "store"), create=True)
    endpoint = request.getfixturevalue("s3_endpoint")
    return open_store(f"s3://faults-{uuid.uuid4().hex[:8]}", endpoint=endpoint, access_key=S3_KEY, secret_key=S3_SECRET, create=True)


def frame(seed: int) -> bytes:
    return encode_png(np.random.default_rng(seed).integers(0, 256, size=(24, 24, 1), dtype=np.uint8))


def put_frames(store, count: int, *, source: str = "line-1", start: int = 0) -> list[str]:
    keys = [frame_key(source, DAY, f"{i:05d}") for i in range(start, start + count)]
    for key in keys:
        store.put(key, frame(int(key[-9:-4])), content_type="image/png")
    return keys


def rows_per_key(store, version: str) -> dict[str, int]:
    table = scores.read_scores(store, model_version=version, columns=["key"])
    keys = table["key"].to_pylist() if table is not None else []
    return {k: keys.count(k) for k in set(keys)}


def quarantined(store, version: str) -> list[dict]:
    return [
        json.loads(line)
        for info in store.list(layout.quarantine_prefix(version))
        for line in store.get(info.key).decode().splitlines()
    ]


def env_for(store, tmp_path: Path, s3_endpoint: str | None) -> dict[str, str]:
    env = {**os.environ, "ATTNLOOP_HOME": str(tmp_path / "home"), "ATTNLOOP_STORE": store.uri}
    if s3_endpoint:
        env.update(ATTNLOOP_S3_ENDPOINT=s3_endpoint, AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET)
    return env


def s3_endpoint_of(store, request) -> str | None:
    return request.getfixturevalue("s3_endpoint") if store.uri.startswith("s3://") else None


def score_command(model_path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "attnloop", "score", "--model", str(model_path), "--overlays", "0", *extra]


class CountingStore:
    """The real store; counts the frames read."""

    def __init__(self, store):
        self.store, self.reads = store, []

    def get(self, key):
        if key.startswith("frames/"):
            self.reads.append(key)
        return self.store.get(key)

    def __getattr__(self, name):
        return getattr(self.store, name)


# --- a key no frame may have, written by another client -------------------------------------------


def test_keys_with_dot_segments_from_another_s3_client_are_quarantined_and_the_rest_scored(s3_endpoint, model_path, tmp_path, monkeypatch, capsys):
    """The minio client refuses '.' and '..' segments itself, so the other client is boto3."""
    import boto3

    bucket = f"dots-{uuid.uuid4().hex[:8]}"
    store = open_store(f"s3://{bucket}", endpoint=s3_endpoint, access_key=S3_KEY, secret_key=S3_SECRET, create=True)
    good = put_frames(store, 4)
    other = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET, region_name="us-east-1")
    bad = [f"frames/../{DAY}/up.png", f"frames/line-1/{DAY}/../up.png", f"frames/./{DAY}/here.png", f"frames/line-1/{DAY}/a//b.png"]
    for key in bad:
        other.put_object(Bucket=bucket, Key=key, Body=frame(99))
    assert {info.key for info in store.list("frames/")} >= set(bad)  # the listing returns them as they are

    for name, value in env_for(store, tmp_path, s3_endpoint).items():
        monkeypatch.setenv(name, value)
    assert main(["score", "--model", str(model_path), "--overlays", "0"]) == 0
    out = capsys.readouterr().out
    assert "frames scored: 4" in out and "bad_key 4" in out
    version = file_version(model_path)
    assert sorted(rows_per_key(store, version)) == good
    records = quarantined(store, version)
    assert sorted((r["key"], r["reason"]) for r in records) == sorted((k, "bad_key") for k in bad)
    assert all("frames/<source>/<yyyy-mm-dd>/<id>.<ext>" in r["message"] for r in records)

    assert main(["score", "--model", str(model_path), "--overlays", "0"]) == 0  # the next run repeats nothing
    assert "frames scored: 0; already scored before: 8; quarantined: 0" in capsys.readouterr().out


def test_a_store_that_fails_every_read_stops_the_run_and_quarantines_nothing(s3_endpoint, model):
    """The store's fault, not the frames': the run stops, nothing is recorded, the rerun scores all."""
    from faultkit import FaultyProxy

    bucket = f"down-{uuid.uuid4().hex[:8]}"
    direct = open_store(f"s3://{bucket}", endpoint=s3_endpoint, access_key=S3_KEY, secret_key=S3_SECRET, create=True)
    keys = put_frames(direct, 3)
    with FaultyProxy(s3_endpoint) as proxy:
        store = S3Store(bucket, endpoint=proxy.url, access_key=S3_KEY, secret_key=S3_SECRET, retries=0)  # the HTTP layer's retries stay
        proxy.fail(times=None, status=503, match=f"GET /{bucket}/frames/")
        with pytest.raises(Exception, match="503") as stopped:  # urllib3's MaxRetryError: too many 503 error responses
            scoring.score_store(store, model, model_version="v", overlays=0, progress=False)
        assert not isinstance(stopped.value, (lease.Busy, AssertionError)), stopped.value
        assert proxy.faults and scores.read_scores(direct) is None and quarantined(direct, "v") == []
        proxy.heal()
        again = scoring.score_store(store, model, model_version="v", overlays=0, progress=False)
    assert (again.scored, sum(again.quarantined.values())) == (3, 0)
    assert rows_per_key(direct, "v") == {key: 1 for key in keys}


# --- versions, and frames replaced under the same key ---------------------------------------------


def test_a_different_model_file_under_the_same_name_scores_every_frame_again(model_path, tmp_path, monkeypatch, capsys):
    import onnx

    store = open_store(str(tmp_path / "store"), create=True)
    keys = put_frames(store, 5)
    champion = tmp_path / "models" / "champion.onnx"
    champion.parent.mkdir()
    champion.write_bytes(model_path.read_bytes())
    monkeypatch.setenv("ATTNLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ATTNLOOP_STORE", store.uri)
    assert main(["score", "--model", str(champion), "--overlays", "0"]) == 0
    assert "frames scored: 5" in capsys.readouterr().out
    first = file_version(champion)

    retrained = onnx.load(str(champion))  # another model saved under the same file name
    retrained.doc_string = "retrained"
    onnx.save(retrained, str(champion))
    second = file_version(champion)
    assert first != second and first.startswith("champion.onnx@") and second.startswith("champion.onnx@")
    assert main(["score", "--model", str(champion), "--overlays", "0"]) == 0
    assert "frames scored: 5; already scored before: 0" in capsys.readouterr().out
    assert sorted(rows_per_key(store, first)) == sorted(rows_per_key(store, second)) == keys
    assert main(["score", "--model", str(champion), "--overlays", "0"]) == 0
    assert "frames scored: 0; already scored before: 5" in capsys.readouterr().out


def test_a_quarantined_frame_replaced_by_a_good_one_is_scored_on_the_next_run(store, model):
    good = put_frames(store, 3)
    late = frame_key("line-1", DAY, "late")
    store.put(late, frame(7)[:-30])  # the camera's upload was cut short
    first = scoring.score_store(store, model, model_version="v", overlays=0, progress=False)
    assert (first.scored, dict(first.quarantined)) == (3, {"truncated": 1})

    store.put(late, frame(7))  # the camera uploads it again, whole
    second = scoring.score_store(store, model, model_version="v", overlays=0, progress=False)
    assert (second.scored, sum(second.quarantined.values()), second.already_done, second.changed) == (1, 0, 3, 1)
    assert rows_per_key(store, "v") == {key: 1 for key in good + [late]}
    third = scoring.score_store(store, model, model_version="v", overlays=0, progress=False)
    assert (third.scored, sum(third.quarantined.values()), third.already_done) == (0, 0, 4)


def test_an_unchanged_frame_is_never_scored_twice_and_an_unchanged_listing_is_not_read(store, model):
    keys = put_frames(store, 4)
    assert scoring.score_store(store, model, model_version="v", overlays=0, progress=False).scored == 4
    store.put(keys[0], frame(0))  # the same bytes written again (a re-sync): same content
    store.put(keys[1], frame(1001))  # new content under an old key
    counting = CountingStore(store)
    second = scoring.score_store(counting, model, model_version="v", overlays=0, progress=False)
    assert (second.scored, second.changed, second.already_done) == (1, 1, 3)
    folder = store.uri.startswith("file://")
    # S3's ETag is the content's MD5: the same bytes are not even read; a folder's signature is its
    # mtime and size, so the rewritten file is read and hashed once, then its new signature recorded.
    assert sorted(counting.reads) == sorted([keys[0], keys[1]] if folder else [keys[1]])
    counts = rows_per_key(store, "v")
    assert counts == {keys[0]: 1, keys[1]: 2, keys[2]: 1, keys[3]: 1}  # one row per content
    latest = scores.read_scores(store, model_version="v", latest=True).to_pylist()
    assert len(latest) == 4 and {r["hash"] for r in latest if r["key"] == keys[1]} == {scoring.content_hash(frame(1001))}

    counting.reads.clear()
    third = scoring.score_store(counting, model, model_version="v", overlays=0, progress=False)
    assert (third.scored, third.already_done, counting.reads) == (0, 4, [])


def test_a_ledger_written_before_content_signatures_still_reads(tmp_path, model):
    """Ledger items were [key, hash, status]; a store scored then must not be scored again."""
    store = open_store(str(tmp_path / "store"), create=True)
    keys = put_frames(store, 3)
    scoring.score_store(store, model, model_version="v", overlays=0, progress=False)
    for info in store.list("ledger/v/"):
        entry = json.loads(store.get(info.key))
        entry["items"] = [item[:3] for item in entry["items"]]
        store.put(info.key, json.dumps(entry).encode())
    counting = CountingStore(store)
    again = scoring.score_store(counting, model, model_version="v", overlays=0, progress=False)
    assert (again.scored, again.already_done, sorted(counting.reads)) == (0, 3, keys)  # read and hashed once
    counting.reads.clear()
    assert scoring.score_store(counting, model, model_version="v", overlays=0, progress=False).already_done == 3
    assert counting.reads == []  # the signatures recorded then make later runs cheap
    assert rows_per_key(store, "v") == {key: 1 for key in keys}


# --- two scorers at once, and a holder killed -----------------------------------------------------


def test_two_score_processes_started_at_once_write_each_row_once(store, model_path, tmp_path, request):
    keys = put_frames(store, 150)
    env = env_for(store, tmp_path, s3_endpoint_of(store, request))
    runs = [subprocess.Popen(score_command(model_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outcomes
    counts = rows_per_key(store, file_version(model_path))
    assert sorted(counts) == keys and set(counts.values()) == {1}, f"{sum(counts.values())} rows for {len(counts)} keys"
    scored = sorted(out.count("frames scored: 150") for out, _ in outcomes)
    assert scored == [0, 1], outcomes  # one run scored them; the other found them scored, or the lease held


HOLDER = """
import sys, time
from attnloop import lease
from attnloop.config import Settings
store = Settings.from_env().store(sys.argv[1])
with lease.hold(store, sys.argv[2], ttl=float(sys.argv[3])):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_lease_holder_killed_with_sigkill_expires_and_the_next_run_proceeds(store, model_path, tmp_path, request, monkeypatch, capsys):
    keys = put_frames(store, 4)
    env = env_for(store, tmp_path, s3_endpoint_of(store, request))
    version = file_version(model_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, store.uri, scoring.lease_name(version), "2"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(lease.Busy, match="is held by .* pid"):
            scoring.score_store(store, OnnxModel(model_path, device="cpu"), model_version=version, lease_wait=0, progress=False)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert scores.read_scores(store) is None
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    start = time.monotonic()
    assert main(["score", "--model", str(model_path), "--overlays", "0", "--wait", "30"]) == 0  # waits out the dead holder's 2 s
    assert "frames scored: 4" in capsys.readouterr().out
    assert 0 < time.monotonic() - start < 30
    assert sorted(rows_per_key(store, version)) == keys


STALLER = """
import sys, time
from attnloop import lease
from attnloop.config import Settings
store = Settings.from_env().store(sys.argv[1])
with lease.hold(store, "stalled", ttl=1.0) as held:
    print("held", flush=True)
    while not held.lost:
        time.sleep(0.1)
    try:
        held.check()
    except lease.Lost as err:
        print("lost:", err, flush=True)
"""


def test_a_holder_paused_past_its_ttl_is_taken_over_and_finds_out(store, tmp_path, request):
    """SIGSTOP stands in for a paused VM or a long GC pause."""
    env = env_for(store, tmp_path, s3_endpoint_of(store, request))
    holder = subprocess.Popen([sys.executable, "-c", STALLER, store.uri], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        os.kill(holder.pid, signal.SIGSTOP)
        with lease.hold(store, "stalled", owner="the next run", ttl=30, wait=10):
            os.kill(holder.pid, signal.SIGCONT)
            line = holder.stdout.readline()  # its next renewal sees the newer generation
        assert line.startswith("lost: lease 'stalled'") and "taken over by another process" in line
        assert holder.wait(10) == 0
    finally:
        if holder.poll() is None:
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait()


def test_the_command_line_leaves_the_frames_to_the_run_holding_the_lease(model_path, tmp_path, monkeypatch, capsys):
    store = open_store(str(tmp_path / "store"), create=True)
    put_frames(store, 3)
    monkeypatch.setenv("ATTNLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ATTNLOOP_STORE", store.uri)
    with lease.hold(store, scoring.lease_name(file_version(model_path)), owner="the nightly backlog", ttl=10):
        assert main(["score", "--model", str(model_path), "--wait", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "another scoring run holds the lease" in out and "held by the nightly backlog" in out and "nothing was scored twice" in out
    assert len(out.strip().splitlines()) == 1 and scores.read_scores(store) is None


# --- the lease itself -----------------------------------------------------------------------------


def test_of_many_takers_at_once_exactly_one_holds_the_lease(store):
    takers = 8
    barrier, done = threading.Barrier(takers), threading.Barrier(takers)
    outcomes: list = [None] * takers

    def take(i: int) -> None:
        barrier.wait()
        try:
            with lease.hold(store, "push-project-7", owner=f"taker {i}", ttl=10, wait=0):
                outcomes[i] = "held"
                done.wait(30)
        except lease.Busy as err:
            outcomes[i] = err
            done.wait(30)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(takers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert outcomes.count("held") == 1, outcomes
    winner = outcomes.index("held")
    assert all(f"held by taker {winner}" in str(o) for o in outcomes if o != "held")
    with lease.hold(store, "push-project-7", ttl=10, wait=0):  # released on exit: the next taker needs no wait
        pass


class ConditionBlindProxy:
    """An S3 endpoint in front of moto's that drops If-None-Match, as a server without conditional writes would."""

    def __init__(self, upstream: str):
        import http.client
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        host, port = urlsplit(upstream).hostname, urlsplit(upstream).port

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("if-none-match", "connection")}
                upstream = http.client.HTTPConnection(host, port, timeout=30)
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                self.send_response(response.status)
                for k, v in response.getheaders():
                    if k.lower() not in ("content-length", "connection", "transfer-encoding"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_a_lease_is_refused_on_an_s3_server_that_ignores_conditional_writes(s3_endpoint):
    bucket = f"blind-{uuid.uuid4().hex[:8]}"
    open_store(f"s3://{bucket}", endpoint=s3_endpoint, access_key=S3_KEY, secret_key=S3_SECRET, create=True)
    proxy = ConditionBlindProxy(s3_endpoint)
    try:
        store = open_store(f"s3://{bucket}", endpoint=proxy.url, access_key=S3_KEY, secret_key=S3_SECRET)
        with pytest.raises(RuntimeError, match="does not honour 'If-None-Match: \\*'"):
            with lease.hold(store, "push-project-9"):
                pass
        assert not list(store.list("leases/"))  # nothing left behind
    finally:
        proxy.close()


def test_a_held_lease_is_renewed_past_its_ttl_and_a_busy_wait_is_bounded(store):
    with lease.hold(store, "renewed", ttl=1.0, wait=0) as held:
        time.sleep(1.6)  # longer than the ttl: only the renewal keeps it
        start = time.monotonic()
        with pytest.raises(lease.Busy, match=r"lease 'renewed' .* is held by .* waited 0\.5 s"):
            with lease.hold(store, "renewed", ttl=1.0, wait=0.5):
                pass
        assert 0.5 <= time.monotonic() - start < 3
        held.check()  # still ours
    with pytest.raises(ValueError, match="lease name"):
        with lease.hold(store, "../elsewhere"):
            pass


def test_a_lease_on_a_folder_store_never_writes_through_a_link(tmp_path):
    """A store whose ``leases/`` is a link to a folder elsewhere: taking a lease is refused and
    nothing is written outside the store's root."""
    from attnloop import lease
    from attnloop.storage import KeyRefused, LocalStore

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "leases").symlink_to(outside, target_is_directory=True)
    with pytest.raises(KeyRefused, match="link"):
        with lease.hold(LocalStore(tmp_path / "store"), "score-v1", ttl=5):
            pass
    assert list(outside.iterdir()) == []


def test_a_full_disk_while_scoring_is_one_line_and_the_rerun_completes(model_path, tmp_path):
    """A store on a small tmpfs (its own mount namespace, so no root is needed where user namespaces
    are allowed): the frames fit, the results do not. One line, exit 3, nothing half-written;
    once there is room the same command scores every frame once."""
    import shutil

    if shutil.which("unshare") is None:
        pytest.fail("util-linux's unshare is needed to mount a small file system for this test")
    frames = open_store(str(tmp_path / "frames"), create=True)
    keys = put_frames(frames, 16)
    store = tmp_path / "store"
    store.mkdir()
    count = f"{sys.executable} -c \"import sys; from attnloop import scores; from attnloop.storage import open_store; " \
            f"t = scores.read_scores(open_store('{store}'), columns=['key']); print('ROWS', 0 if t is None else t.num_rows)\""
    script = (
        f"set -u; mount -t tmpfs -o size=100k tmpfs {store} && cp -r {tmp_path / 'frames'}/. {store}/ || exit 99; "
        f"{' '.join(score_command(model_path, '--store', str(store)))} 2>err.txt; echo RC $?; cat err.txt; "
        f"ls -a {store}/*/ | grep -c partial- ; mount -o remount,size=16m {store}; "
        f"{' '.join(score_command(model_path, '--store', str(store)))} >/dev/null 2>&1; echo RC2 $?; {count}"
    )
    namespace = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-Urm"]
    env = {**os.environ, "ATTNLOOP_HOME": str(tmp_path / "home"), "ATTNLOOP_THREADS": "1"}
    out = subprocess.run([*namespace, "sh", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    lines = out.stdout.splitlines()
    assert "RC 3" in lines, out.stdout + out.stderr
    errors = [line.partition("attnloop: error: ")[2] for line in lines if "attnloop: error: " in line]
    assert len(errors) == 1 and errors[0].startswith("the disk is full writing ") and "run the command again" in errors[0], out.stdout
    assert "Traceback" not in out.stdout
    assert lines[lines.index("RC2 0") - 1] == "0"  # no .partial- file left in the store's folders
    assert "RC2 0" in lines and f"ROWS {len(keys)}" in lines, out.stdout


def test_a_file_that_is_not_an_onnx_model_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ATTNLOOP_HOME", str(tmp_path / "home"))
    put_frames(open_store(str(tmp_path / "store"), create=True), 2)
    for name, data in (("notes.onnx", b"this is not a model"), ("empty.onnx", b"")):
        (tmp_path / name).write_bytes(data)
        assert main(["score", "--store", str(tmp_path / "store"), "--model", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{tmp_path / name} is not a model ONNX Runtime can load" in err and "attnloop export" in err
