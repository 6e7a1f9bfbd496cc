"""``attnloop demo``: the loop on embedded defaults, on a tiny configuration against the session's Label Studio;
and the local Label Studio management it shares with the tests."""

import contextlib
import io

import pytest
from prefect.testing.utilities import prefect_test_harness

from attnloop.apps.demo import MARKER, DemoConfig, run_demo
from attnloop.apps import labelstudio_server as server


@pytest.fixture(scope="module")
def prefect_server():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def demo_output(workdir, config: DemoConfig) -> tuple[dict, str]:
    """Run the demo and return what it printed. Not through capsys: Prefect's console log handler keeps the
    stderr it first met, and capsys closes its stream after the test, which breaks the next test's flows."""
    with contextlib.redirect_stdout(io.StringIO()) as out:
        result = run_demo(workdir, config=config, progress=False)
    return result, out.getvalue()


@pytest.mark.services
def test_the_demo_runs_one_turn_and_changes_the_champion(label_studio, prefect_server, tmp_path, monkeypatch):
    from attnloop import annotation_set, registry
    from attnloop.config import Settings
    from attnloop.labelstudio import read_truth
    from attnloop.storage import open_store

    url, token = label_studio
    monkeypatch.setenv("ATTNLOOP_LABEL_STUDIO_URL", url)
    monkeypatch.setenv("ATTNLOOP_LABEL_STUDIO_TOKEN", token)
    monkeypatch.setenv("ATTNLOOP_LABEL_STUDIO_DOCUMENT_ROOT", str(tmp_path.parent))  # the session server's root: pytest's base folder
    # a set this small cannot show a significant gain; the gate is opened so that the test checks the
    # plumbing (a challenger is trained on the harvested boxes and becomes the champion), not the figure
    for name, value in (("MIN_GAIN", "-1"), ("MAX_CLASS_DROP", "1"), ("ATTENTION_TOLERANCE", "1")):
        monkeypatch.setenv(f"ATTNLOOP_GATE_{name}", value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # a configured service the demo must ignore
    config = DemoConfig(size=12, frames=8, top_k=4, initial_epochs=1, retrain_epochs=1)
    result, out = demo_output(tmp_path / "demo", config)

    assert "Traceback" not in out and "database is locked" not in out, out[-3000:]
    assert "[6/6]" in out and "champion" in out and "before (trained without boxes)" in out and "after (one turn of the loop)" in out
    assert "where to look" in out and "mlflow ui --backend-store-uri sqlite:///" in out and "prefect server start" in out
    loop = result["loop"]
    assert (loop["scored"], loop["pushed"], loop["annotated"]) == (8, 4, 4)
    assert result["gate"] == "promote" and result["promoted"]
    assert (result["before"].version, result["after"].version) == ("1", "2")
    truth = read_truth(tmp_path / "demo" / "truth.jsonl")
    harvested = annotation_set.read(open_store((tmp_path / "demo" / "store").as_uri()), loop["annotation_version"])
    assert harvested.key == loop["annotation_set"]
    entries = harvested.entries
    # every annotated frame is in the set: a defect with its boxes, an "ok" frame (flagged "no object") with its class alone
    assert len(entries) == 4 and all(e.label == truth[key].label and len(e.boxes) == len(truth[key].boxes) for key, e in entries.items())
    assert result["before"].boxes == 0 and result["after"].annotated == len(entries)
    assert result["after"].boxes == sum(len(truth[key].boxes) for key in entries)
    # the demo's state lives in its folder, on embedded defaults; the caller's environment is restored
    client = registry.connect(result["registry_uri"])
    assert result["registry_uri"] == f"sqlite:///{(tmp_path / 'demo' / 'mlflow.db').resolve()}"
    assert registry.alias_version(client, Settings.from_env().model_name, registry.CHAMPION) == "2"
    assert (tmp_path / "demo" / "store" / "frames" / "mill-line-1").is_dir() and (tmp_path / "demo" / MARKER).exists()
    assert Settings.from_env().mlflow_tracking_uri == "http://127.0.0.1:9"


@pytest.mark.services
def test_with_a_person_the_demo_waits_for_the_tasks_then_retrains(label_studio, prefect_server, tmp_path, monkeypatch):
    """--annotator human: the loop pushes, the demo waits until the tasks are done (a 'person' here is the
    simulated annotator in another thread, through the same API), then harvests, retrains and gates."""
    import threading
    import time

    from attnloop.apps import demo
    from attnloop.labelstudio import read_truth, simulate_annotator
    from attnloop.config import LabelStudioSettings

    url, token = label_studio
    monkeypatch.setenv("ATTNLOOP_LABEL_STUDIO_URL", url)
    monkeypatch.setenv("ATTNLOOP_LABEL_STUDIO_TOKEN", token)
    monkeypatch.setenv("ATTNLOOP_LABEL_STUDIO_DOCUMENT_ROOT", str(tmp_path.parent))  # the session server's root: pytest's base folder
    for name, value in (("MIN_GAIN", "-1"), ("MAX_CLASS_DROP", "1"), ("ATTENTION_TOLERANCE", "1")):
        monkeypatch.setenv(f"ATTNLOOP_GATE_{name}", value)
    monkeypatch.setattr(demo, "POLL_SECONDS", 0.5)
    done = {}
    waiting = demo.wait_for_people

    def a_person_comes_while_the_demo_waits(ls, project, **options):
        def annotate():
            time.sleep(1.0)
            client = LabelStudioSettings(url, token).client()
            done.update(simulate_annotator(client, project, read_truth(tmp_path / "demo" / "truth.jsonl")))

        person = threading.Thread(target=annotate, daemon=True)
        person.start()
        try:
            return waiting(ls, project, **options)
        finally:
            person.join(timeout=30)

    monkeypatch.setattr(demo, "wait_for_people", a_person_comes_while_the_demo_waits)
    config = DemoConfig(size=12, frames=8, top_k=4, initial_epochs=1, retrain_epochs=1, annotator="human")
    result, out = demo_output(tmp_path / "demo", config)

    assert "[6/8] a person in Label Studio: 4 tasks" in out and "press Enter" in out and "[8/8]" in out
    assert done["annotated"] == 4
    assert (result["loop"]["scored"], result["loop"]["pushed"]) == (8, 4) and "annotated" not in result["loop"]
    assert result["promoted"] and (result["before"].version, result["after"].version) == ("1", "2")


def test_the_demo_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ValueError, match="was not made by `attnloop demo`"):
        run_demo(tmp_path, config=DemoConfig())
    assert (tmp_path / "precious.txt").exists()


def test_a_label_studio_left_behind_by_a_killed_demo_is_ended_by_the_next(tmp_path):
    """The next demo ends what the killed one started, and only that: a record whose pid now belongs
    to another process (a different start time) leaves that process alone."""
    import json
    import subprocess

    from attnloop.apps import demo
    from attnloop.apps.processes import running, start_time

    def sleeper():
        process = subprocess.Popen(["sleep", "60"], start_new_session=True)
        return process, start_time(process.pid)

    left, left_started = sleeper()
    other, other_started = sleeper()
    try:
        workdir = tmp_path / "demo"
        demo._fresh_workdir(workdir)
        (workdir / demo.LABEL_STUDIO_PROCESS).write_text(json.dumps({"pid": left.pid, "started": left_started}))
        demo._fresh_workdir(workdir)
        assert left.wait(timeout=15) is not None and not running(left.pid, left_started)

        (workdir / demo.LABEL_STUDIO_PROCESS).write_text(json.dumps({"pid": other.pid, "started": other_started + 1}))
        demo._fresh_workdir(workdir)
        assert running(other.pid, other_started)
    finally:
        for process in (left, other):
            process.kill()
            process.wait()


def test_demo_config_names_the_valid_annotators():
    with pytest.raises(ValueError, match="valid names: simulated, human"):
        DemoConfig(annotator="crowd")


def test_a_server_folder_keeps_its_credentials(tmp_path):
    first = server.new_server(tmp_path / "ls", port=18080)
    again = server.new_server(tmp_path / "ls")
    assert (again.token, again.password, again.user) == (first.token, first.password, first.user)
    assert len(first.token) == 40 and first.password and first.url == "http://127.0.0.1:18080"
    assert (tmp_path / "ls" / server.CREDENTIALS).stat().st_mode & 0o077 == 0  # the login is the owner's alone
    assert server.new_server(tmp_path / "other").token != first.token


def test_the_executable_comes_from_the_environment_or_the_repository(tmp_path, monkeypatch):
    assert server.label_studio_bin({}) == server.ROOT / ".venv-ls" / "bin" / "label-studio"
    assert server.label_studio_bin({server.BIN_ENV: "/opt/ls/bin/label-studio"}).as_posix() == "/opt/ls/bin/label-studio"
    monkeypatch.setenv(server.BIN_ENV, str(tmp_path / "missing" / "label-studio"))
    process = server.new_server(tmp_path / "ls", local_files_root=tmp_path / "store")
    assert process.environment()["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] == str((tmp_path / "store").resolve())
    with pytest.raises(FileNotFoundError, match="ATTNLOOP_LABEL_STUDIO_BIN"):
        process.start()
    assert process.pid is None


def test_free_port_prefers_the_one_asked_for_unless_taken():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        assert server.free_port(busy) != busy
