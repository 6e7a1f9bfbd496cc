"""End to end on the local stack (``infra/local-stack``): moto's S3 server, an ``mlflow server``, a
Prefect server with a process worker and the serving service as processes on loopback, with the
session's real Label Studio. The deployments come from ``flows/prefect.yaml`` exactly as a site
deploys them; the test triggers them through the Prefect API and watches MLflow and serving."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from attnloop import registry
from attnloop.config import Settings
from attnloop.gate import REFUSE
from attnloop.apps.localstack import ROOT, start, stop
from conftest import register_weak_champion, write_tiny_manifest

pytestmark = [pytest.mark.services, pytest.mark.slow]

SCHEDULED = ("score/score", "annotate/annotate", "loop/harvest-retrain")
RUN_TIMEOUT = 900


@pytest.fixture(scope="module")
def stack(label_studio, tmp_path_factory):
    """The stack, its environment for this process, and every deployment of flows/prefect.yaml."""
    workdir = tmp_path_factory.mktemp("stack")
    data = write_tiny_manifest(workdir / "data", per_class=20)
    settings = {
        "ATTNLOOP_LABEL_STUDIO_PROJECT": f"e2e {uuid.uuid4().hex[:8]}",
        # the weak champion answers one class for everything; the class rule would refuse any model
        # that gives up a little of that one class, which is not what these tests are about
        "ATTNLOOP_GATE_MIN_ACCURACY": "0",
        "ATTNLOOP_GATE_MAX_CLASS_DROP": "1.0",
    }
    running = start(workdir, services=("s3", "mlflow", "prefect", "worker", "serving"), label_studio=label_studio, settings=settings, progress=False)
    try:
        env = {**os.environ, **running.env(), "ATTNLOOP_CODE_DIR": str(ROOT), "ATTNLOOP_BASE_DATA": str(data), "ATTNLOOP_HOLDOUT": str(data)}
        deploy = subprocess.run(
            [str(Path(sys.executable).with_name("prefect")), "--no-prompt", "deploy", "--all", "--prefect-file", "flows/prefect.yaml"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )
        assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
        yield running, data
    finally:
        stop(workdir, progress=False)


@pytest.fixture
def stack_env(stack, monkeypatch):
    """This test process talks to the stack's services, as ``source env.sh`` would make a shell do."""
    running, data = stack
    for name, value in running.env().items():
        monkeypatch.setenv(name, value)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: running.env()["PREFECT_API_URL"]}):
        from prefect import get_client

        with get_client(sync_client=True) as client:
            for name in SCHEDULED:  # the schedules stay in the deployments; they must not fire mid-test
                client.pause_deployment(client.read_deployment_by_name(name).id)
        yield running, data


def worker_log(running) -> str:
    return Path(running.processes["worker"].log).read_text(errors="replace")[-6000:]


def run(name: str, running, **parameters):
    """Trigger a deployment through the API and wait for the worker to finish it."""
    from prefect.deployments import run_deployment

    flow_run = run_deployment(name, parameters=parameters, timeout=RUN_TIMEOUT, poll_interval=2)
    assert flow_run.state is not None and flow_run.state.is_completed(), f"{name}: {flow_run.state}\n{worker_log(running)}"
    return flow_run


def served_version(running) -> str | None:
    with urllib.request.urlopen(f"{running.url('serving')}/model", timeout=5) as response:
        return json.loads(response.read())["version"]


def wait_served(running, version: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        try:
            seen = served_version(running)
        except OSError:
            seen = None
        if seen == version:
            return
        time.sleep(2.0)
    raise AssertionError(f"serving still has version {seen}, not {version}")


def put_swapped_frames(store, source: str, workdir: Path, *, per_class: int) -> dict:
    """Frames drawn like the tiny manifest's (other seed) in the store, with every label swapped in
    their truth, by object key."""
    from attnloop.datasets import Record
    from attnloop.layout import frame_key

    root = write_tiny_manifest(workdir, per_class=per_class, seed=1)
    truth = {}
    for i, line in enumerate(json.loads(text) for text in (root / "manifest.jsonl").read_text().splitlines()):
        key = frame_key(source, "2026-11-26", f"{i:03d}")
        store.put(key, (root / line["image"]).read_bytes())
        truth[key] = Record(key, "stream", {"square": "bar", "bar": "square"}[line["label"]], line["boxes"], [])
    return truth


def test_loop_deployment_promotes_when_the_gain_passes_and_not_otherwise(stack_env, tmp_path):
    from attnloop.labelstudio import write_truth
    from test_flows_labelstudio import put_labeled_frames

    running, data = stack_env
    settings = Settings.from_env()
    client = registry.connect(settings.registry_uri)
    weak = register_weak_champion(data, tmp_path)
    wait_served(running, weak)
    store = settings.store(create=True)

    # turn 1: the annotator boxes what the champion gets wrong; the fine-tuned model passes the gate
    truth = put_labeled_frames(store, "line-e2e", 6)
    run("loop/loop", running, top_k=6, annotator="simulated", truth=str(write_truth(tmp_path / "truth.jsonl", truth)), epochs=6)
    better = registry.alias_version(client, settings.model_name, registry.CHAMPION)
    assert better not in (None, weak), worker_log(running)
    tags = registry.version_tags(client, settings.model_name, better)
    assert tags["parent_version"] == weak and tags["annotation_set"].startswith("annotations/")
    wait_served(running, better)

    # turn 2: an annotator who swaps every label on many frames like the holdout's; the challenger
    # learns the swap, is registered, and the gate refuses it (a handful of swapped frames would not
    # do: the base data outweighs them and more epochs alone can lift the challenger above the champion)
    swapped = put_swapped_frames(store, "line-e2e-2", tmp_path / "swapped", per_class=16)
    run("loop/loop", running, top_k=len(swapped), annotator="simulated", truth=str(write_truth(tmp_path / "swapped.jsonl", swapped)), epochs=6)
    challenger = registry.alias_version(client, settings.model_name, registry.CHALLENGER)
    assert challenger not in (weak, better)
    tags = registry.version_tags(client, settings.model_name, challenger)
    assert tags["gate"] == REFUSE and tags["gate.reasons"], tags
    assert registry.alias_version(client, settings.model_name, registry.CHAMPION) == better
    time.sleep(3)
    assert served_version(running) == better


def test_promote_deployment_pauses_for_a_persons_approval(stack_env, tmp_path):
    """The promote deployment (approval on) pauses with the decision waiting; a person's input resumes it."""
    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.flow_runs import resume_flow_run

    from attnloop.publish import register_run
    from attnloop.training import ORIGINAL_ABN, TrainConfig, save_run, train

    running, data = stack_env
    settings = Settings.from_env()
    client = registry.connect(settings.registry_uri)
    register_weak_champion(data, tmp_path)
    good = train(data, TrainConfig(epochs=6, guidance="none", **ORIGINAL_ABN), progress=False)
    challenger = register_run(client, name=settings.model_name, run_dir=save_run(tmp_path / "good", good, TrainConfig(), data="tiny"), artifact_root=settings.artifact_root)

    flow_run = run_deployment("promote/promote", timeout=0)  # returns at once: the run is scheduled
    deadline = time.monotonic() + RUN_TIMEOUT
    with get_client(sync_client=True) as prefect:
        while time.monotonic() < deadline:
            state = prefect.read_flow_run(flow_run.id).state
            if state is not None and (state.is_paused() or state.is_final()):
                break
            time.sleep(2.0)
        assert state is not None and state.is_paused(), f"{state}\n{worker_log(running)}"
        assert registry.alias_version(client, settings.model_name, registry.CHAMPION) != challenger  # nothing moves while paused
        resume_flow_run(flow_run.id, run_input={"approve": True, "by": "approver@example.com"})
        while time.monotonic() < deadline:
            state = prefect.read_flow_run(flow_run.id).state
            if state is not None and state.is_final():
                break
            time.sleep(2.0)
    assert state.is_completed(), f"{state}\n{worker_log(running)}"
    assert registry.alias_version(client, settings.model_name, registry.CHAMPION) == challenger
    assert registry.version_tags(client, settings.model_name, challenger).get("approved_by") == "approver@example.com"
    wait_served(running, challenger)
