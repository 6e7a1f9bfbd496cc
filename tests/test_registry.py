"""Registry and promotion gate against real MLflow stores: a plain SQLite file and an ``mlflow server``
process on loopback (SQLite backend, artifacts in the S3 test server)."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from attnloop import registry
from attnloop.gate import AWAIT, PROMOTE, REFUSE, Policy
from attnloop.holdout import load_holdout
from attnloop.models import load_checkpoint, save_checkpoint
from attnloop.publish import register_run
from attnloop.runtime import OnnxModel
from attnloop.training import ORIGINAL_ABN, TrainConfig, save_run, train
from conftest import write_tiny_manifest

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A weak model, a strong one, the strong one with a class cut off, and one whose classes do not match."""
    root = tmp_path_factory.mktemp("registry")
    data = write_tiny_manifest(root / "data", per_class=30)
    out = {}
    for name, config in {
        "weak": TrainConfig(epochs=1, lr=1e-6, guidance="none", **ORIGINAL_ABN),
        "strong": TrainConfig(epochs=6, guidance="none", **ORIGINAL_ABN),
    }.items():
        result = train(data, config, progress=False)
        out[name] = save_run(root / name, result, config, data="tiny")
        (out[name] / "data.json").write_text(json.dumps({"data": str(data), "boxes": None}))
    model, card, info = load_checkpoint(out["strong"])
    with torch.no_grad():
        model.fc.bias[card.class_names.index("bar")] = -1e3  # never predicts "bar"
    out["collapsed"] = _copy_run(out["strong"], root / "collapsed", model, card, info)
    model, card, info = load_checkpoint(out["strong"])
    out["foreign"] = _copy_run(out["strong"], root / "foreign", model, dataclasses.replace(card, class_names=("cat", "dog")), info)
    return data, out


def _copy_run(source, target, model, card, info):
    target.mkdir()
    save_checkpoint(target / "model.pt", model, card, info)
    card.save(target / "card.json")
    (target / "metrics.json").write_text((source / "metrics.json").read_text())
    return target


@pytest.fixture(params=["sqlite", "server"])
def store(request, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory
    if request.param == "sqlite":
        return registry.connect(f"sqlite:///{tmp_path / 'mlflow.db'}"), tmp_path / "artifacts"
    return registry.connect(request.getfixturevalue("mlflow_server_url")), None


def test_clear_gain_promotes_and_champion_loads_like_its_file(store, runs, tmp_path):
    client, artifacts = store
    data, run = runs
    holdout = load_holdout(data)
    name = "abn-gain"
    first = register_run(client, name=name, run_dir=run["weak"], holdout=holdout, artifact_root=artifacts)
    decision, _, _ = registry.gate(client, name=name, holdout=holdout, policy=Policy(min_accuracy=0.0))
    assert decision.action == PROMOTE  # first champion: only the absolute minimum applies
    second = register_run(client, name=name, run_dir=run["strong"], holdout=holdout, annotation_set="v1", artifact_root=artifacts)
    tags = registry.version_tags(client, name, second)
    assert tags["parent_version"] == first and tags["annotation_set"] == "v1" and tags["data_hash"] == "tiny"
    assert float(tags["holdout_accuracy"]) >= 0.9
    decision, version, text = registry.gate(client, name=name, holdout=holdout, policy=Policy(min_gain=0.1))
    assert (decision.action, version) == (PROMOTE, second), text
    assert registry.alias_version(client, name, registry.CHAMPION) == second
    assert registry.alias_version(client, name, registry.CHALLENGER) is None
    tags = registry.version_tags(client, name, second)
    assert tags["gate"] == PROMOTE and tags["previous_champion"] == first and float(tags["gate.gain_low"]) >= 0.1
    # models:/NAME@champion gives what the exported file gives
    champion, resolved = registry.load(client, name, dst=tmp_path / "dl")
    exported = OnnxModel(run["strong"] / "model.onnx", device="cpu")
    batch = np.random.default_rng(0).standard_normal((4, exported.card.channels, *exported.card.input_size)).astype(np.float32)
    assert resolved == second
    for key, value in exported.run(batch).items():
        np.testing.assert_array_equal(champion.run(batch)[key], value)
    # the run holds the figures, the checkpoint and the gate report
    run_id = client.get_model_version(name, second).run_id
    files = {f.path for f in client.list_artifacts(run_id)} | {f.path for f in client.list_artifacts(run_id, "figures")}
    assert {"card.json", "metrics.json", "pytorch", "figures/confusion_test.png", "figures/attention_test.png", "gate"} <= files
    assert client.get_run(run_id).data.metrics["test_accuracy"] >= 0.9


def test_refusals_leave_the_champion_untouched(store, runs):
    client, artifacts = store
    data, run = runs
    holdout = load_holdout(data)
    name = "abn-refuse"
    register_run(client, name=name, run_dir=run["strong"], artifact_root=artifacts)
    champion = registry.gate(client, name=name, holdout=holdout)[1]
    for challenger, policy, reason in [
        ("strong", Policy(), "lower bound"),  # the same model again: no gain, refused at the default threshold
        ("collapsed", Policy(), "class 'bar' fell"),
        ("foreign", Policy(), "evaluation failed"),
    ]:
        version = register_run(client, name=name, run_dir=run[challenger], artifact_root=artifacts)
        decision, gated, text = registry.gate(client, name=name, holdout=holdout, policy=policy)
        assert gated == version and decision.action == REFUSE
        assert any(reason in r for r in decision.reasons), decision.reasons
        assert registry.alias_version(client, name, registry.CHAMPION) == champion
        tags = registry.version_tags(client, name, version)
        assert tags["gate"] == REFUSE and reason in tags["gate.reasons"] and tags["gate.champion_version"] == champion


def test_approval_and_rollback(store, runs):
    client, artifacts = store
    data, run = runs
    holdout = load_holdout(data)
    name = "abn-approve"
    first = register_run(client, name=name, run_dir=run["weak"], artifact_root=artifacts)
    registry.gate(client, name=name, holdout=holdout, policy=Policy(min_accuracy=0.0))
    second = register_run(client, name=name, run_dir=run["strong"], artifact_root=artifacts)
    decision, _, _ = registry.gate(client, name=name, holdout=holdout, policy=Policy(approval=True))
    assert decision.action == AWAIT
    assert registry.alias_version(client, name, registry.CHAMPION) == first  # waits for a person
    with pytest.raises(ValueError, match="not awaiting approval"):
        registry.approve(client, name, first, by="ana")
    registry.approve(client, name, second, by="ana")
    assert registry.alias_version(client, name, registry.CHAMPION) == second
    assert registry.version_tags(client, name, second)["approved_by"] == "ana"
    assert registry.rollback(client, name) == (second, first)
    assert registry.alias_version(client, name, registry.CHAMPION) == first
    with pytest.raises(LookupError, match="nothing to roll back to"):
        registry.rollback(client, name)


def test_model_references_are_spelled_in_one_place_and_read_back():
    from attnloop.registry import Source, champion_uri, model_uri, parse_source

    assert champion_uri("mill") == "models:/mill@champion" == model_uri("mill", alias="champion")
    assert parse_source(champion_uri("mill")) == Source("mill", alias="champion")
    assert parse_source(model_uri("mill", version=7)) == Source("mill", version="7")
    assert parse_source(model_uri("mill", version=7)).uri == "models:/mill/7"
    assert parse_source("runs/model.onnx").uri == "runs/model.onnx"
    with pytest.raises(ValueError, match="an alias or a version"):
        model_uri("mill", alias="champion", version=3)
    with pytest.raises(ValueError, match="an alias or a version"):
        model_uri("mill")
