"""``infra/local-stack``: start, status, env, stop — ending only the processes it started."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from attnloop.apps.localstack import ROOT, STATE, Process, Stack, alive, start, status, stop

pytestmark = pytest.mark.services


def test_start_status_env_stop(tmp_path):
    stack = start(tmp_path, services=("s3",), settings={"ATTNLOOP_GATE_MIN_GAIN": "0.02"}, progress=False)
    try:
        rows = status(tmp_path)
        assert [(r["service"], r["running"], r["answers"]) for r in rows] == [("s3", True, True)]
        env = (tmp_path / "env.sh").read_text()
        assert f"export ATTNLOOP_S3_ENDPOINT='{stack.url('s3')}'" in env and "export ATTNLOOP_GATE_MIN_GAIN='0.02'" in env
        from minio import Minio

        client = Minio(endpoint=stack.url("s3").split("://", 1)[1], access_key=stack.s3_key, secret_key=stack.s3_secret, secure=False)
        assert {b.name for b in client.list_buckets()} == {"attnloop", "mlflow"}
        with pytest.raises(RuntimeError, match="stop. it first"):
            start(tmp_path, services=("s3",), progress=False)
    finally:
        assert stop(tmp_path, progress=False) == ["s3"]
    assert not alive(stack.processes["s3"]) and status(tmp_path) == []


def test_stop_leaves_a_process_whose_pid_was_reused_alone(tmp_path):
    """A recorded pid whose start time differs is someone else's process now: it is not signalled."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        stack = Stack(tmp_path, s3_key="k", s3_secret="s")
        stack.processes["s3"] = Process("s3", 1, other.pid, 1.0, str(tmp_path / "s3.log"))
        stack.save()
        assert stop(tmp_path, progress=False) == []
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_the_script_refuses_unknown_services_and_reports_no_stack(tmp_path):
    script = ROOT / "infra" / "local-stack"
    out = subprocess.run([str(script), "status", "--dir", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 1 and "no stack" in out.stdout
    out = subprocess.run([str(script), "start", "--dir", str(tmp_path), "--services", "s3,minio"], capture_output=True, text=True)
    assert out.returncode != 0 and "unknown services ['minio']" in out.stderr
    assert not (Path(tmp_path) / STATE).exists() or json.loads((Path(tmp_path) / STATE).read_text())["processes"] == {}
