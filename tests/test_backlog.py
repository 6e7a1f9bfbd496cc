"""Scoring a backlog one partition per task on Prefect's Dask task runner, on Prefect's real engine
(a temporary server from ``prefect_test_harness``) and a real Dask cluster of two worker processes;
and the ledger when runs on other partitions commit at the same moment."""

import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from prefect.testing.utilities import prefect_test_harness

from attnloop import layout, scores, scoring
from attnloop.config import Settings
from attnloop.imaging import encode_png
from attnloop.registry import file_version
from attnloop.storage import open_store
from attnloop.layout import frame_key
from conftest import write_tiny_manifest

PARTITIONS = [("line-1", "2026-11-25"), ("line-1", "2026-11-26"), ("line-2", "2026-11-26")]
RUN_COLUMNS = {"scored_at", "captured_at", "embedding_ref"}  # differ between any two runs (and stores the frames were written to) by design
BROKEN = b"\x89PNG\r\n\x1a\nnot really a png"


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory) -> Path:
    from attnloop.export import export_onnx
    from attnloop.training import TrainConfig, train

    root = tmp_path_factory.mktemp("backlog-model")
    result = train(write_tiny_manifest(root / "data"), TrainConfig(epochs=1, guidance="none"), progress=False)
    return export_onnx(result.model, result.card, root / "tiny.onnx")


def put_backlog(store, *, per_partition: int = 4) -> tuple[list[str], str]:
    """Frames in three (source, day) partitions and one corrupt frame; returns the good keys and the bad one."""
    rng = np.random.default_rng(0)
    good = []
    for source, day in PARTITIONS:
        for i in range(per_partition):
            key = frame_key(source, day, f"{i:03d}")
            store.put(key, encode_png(rng.integers(0, 256, size=(32, 32, 1), dtype=np.uint8)))
            good.append(key)
    bad = frame_key("line-2", "2026-11-26", "broken")
    store.put(bad, BROKEN)
    return sorted(good), bad


def _reason(data: bytes) -> str:
    from attnloop.imaging import ImageError, decode

    try:
        decode(data)
    except ImageError as err:
        return err.reason
    raise AssertionError("the broken frame decoded")


BROKEN_REASON = _reason(BROKEN)  # the reason decoding gives it; whatever it is, scoring records that


def rows(store, version: str) -> dict[str, dict]:
    table = scores.read_scores(store, model_version=version)
    out: dict[str, dict] = {}
    for row in table.to_pylist() if table is not None else []:
        assert row["key"] not in out, f"{row['key']} was scored twice"
        path, index = row["embedding_ref"].split("#")
        row["embedding"] = np.load(io.BytesIO(store.get(path)))[int(index)]
        out[row["key"]] = row
    return out


def quarantined(store, version: str) -> list[tuple[str, str]]:
    return sorted(
        (record["key"], record["reason"])
        for info in store.list(layout.quarantine_prefix(version))
        for record in map(json.loads, store.get(info.key).decode().splitlines())
    )


def test_backlog_is_scored_once_per_partition_on_dask_and_matches_the_score_flow(onnx_path, tmp_path, monkeypatch):
    from distributed import Client, LocalCluster, get_task_stream

    from attnloop.config import DASK_ADDRESS_ENV
    from flows import backlog
    from flows.backlog import score_backlog
    from flows.score import score

    store = Settings.from_env().store(create=True)
    good, bad = put_backlog(store)
    version = file_version(onnx_path)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an ONNX model")
    with prefect_test_harness(server_startup_timeout=120):
        # an existing cluster, named the way a site names its own (processes: tasks cross a process boundary)
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
            monkeypatch.setenv(DASK_ADDRESS_ENV, cluster.scheduler_address)
            with get_task_stream(client) as stream:
                first = score_backlog(model=str(onnx_path))
            partition_tasks = [t for t in stream.data if str(t["key"]).startswith("score_partition")]
            assert len(partition_tasks) == len(PARTITIONS)  # one Dask task per partition, run on the cluster's workers
            assert {t["worker"] for t in partition_tasks} <= set(cluster.scheduler_info["workers"])
            # failing partitions fail the run only once every partition was tried, and the error names each
            with monkeypatch.context() as patch, pytest.raises(RuntimeError, match=r"3 of 3 partitions failed(.|\n)*line-2/2026-11-26: .*not a model ONNX Runtime can load \(InvalidProtobuf"):
                patch.setattr(backlog, "score_partition", backlog.score_partition.with_options(retries=0))
                score_backlog(model=str(broken))
            with pytest.raises(FileNotFoundError, match="missing.onnx"):  # no version to hold the lease for: before any partition
                score_backlog(model=str(tmp_path / "missing.onnx"))
        monkeypatch.delenv(DASK_ADDRESS_ENV)
        again = score_backlog(model=str(onnx_path), workers=2)  # the default: a local cluster of its own
        other = open_store(str(tmp_path / "plain"), create=True)
        put_backlog(other)
        plain = score(store=other.uri, model=str(onnx_path))

    assert (first["partitions"], first["scored"], first["quarantined"], first["already_done"]) == (3, 12, 1, 0)
    assert {(r["source"], r["day"]): r["scored"] + r["quarantined"] for r in first["results"]} == {
        ("line-1", "2026-11-25"): 4, ("line-1", "2026-11-26"): 4, ("line-2", "2026-11-26"): 5,
    }
    assert len({r["run_id"] for r in first["results"]}) == 3  # one scoring run per partition
    assert (again["scored"], again["quarantined"], again["already_done"]) == (0, 0, 13)
    assert (plain["scored"], plain["quarantined"]) == (12, 1)

    backlog_rows, plain_rows = rows(store, version), rows(other, version)
    assert sorted(backlog_rows) == sorted(plain_rows) == good
    for key in good:
        b, p = backlog_rows[key], plain_rows[key]
        assert set(b) == set(p)
        for column in set(b) - RUN_COLUMNS:
            if isinstance(b[column], (float, list, np.ndarray)):
                np.testing.assert_allclose(b[column], p[column], rtol=1e-5, atol=1e-6, err_msg=f"{key}: {column}")
            else:
                assert b[column] == p[column], f"{key}: {column}"
    assert quarantined(store, version) == quarantined(other, version) == [(bad, BROKEN_REASON)]


class PausingStore:
    """The real store; the first put under ``pause_before`` waits for ``go`` after setting ``ready``."""

    def __init__(self, store, pause_before: str):
        self.store, self.pause_before = store, pause_before
        self.ready, self.go = threading.Event(), threading.Event()

    def put(self, key, data, **kw):
        if key.startswith(self.pause_before) and not self.ready.is_set():
            self.ready.set()
            assert self.go.wait(30), "the other run never went on"
        self.store.put(key, data, **kw)

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_a_run_starting_while_another_commits_leaves_the_ledger_whole(onnx_path, tmp_path):
    """Run A (line-2) has written its Parquet part but not yet its quarantine record or ledger entry
    when run B (line-1) reads the ledger; B writes its repair of A's part after A's own entry.
    Every frame must still count as done afterwards, once."""
    from attnloop.runtime import OnnxModel

    model = OnnxModel(onnx_path, device="cpu")
    store = open_store(str(tmp_path / "store"), create=True)
    good, bad = put_backlog(store)
    a_store = PausingStore(store, "quarantine/")  # A stops after its Parquet part, before the rest
    b_store = PausingStore(store, "ledger/")  # B stops after reading the ledger, before writing its repair

    # both under one lease holder, as the backlog flow's partitions are (leased=True)
    a = threading.Thread(
        target=scoring.score_store, args=(a_store, model), kwargs={"model_version": "v", "source": "line-2", "progress": False, "leased": True}
    )
    a.start()
    assert a_store.ready.wait(60)
    b_summary = {}
    b = threading.Thread(
        target=lambda: b_summary.update(
            s=scoring.score_store(b_store, model, model_version="v", source="line-1", overlays=0, progress=False, leased=True)
        )
    )
    b.start()
    assert b_store.ready.wait(60)  # B has listed A's Parquet part as an orphan and is about to record it
    a_store.go.set()
    a.join(60)  # A writes its quarantine record and its ledger entry
    b_store.go.set()
    b.join(60)  # B's repair lands after A's entry
    assert not a.is_alive() and not b.is_alive()
    assert b_summary["s"].scored == 8 and b_summary["s"].recovered_parts == 1

    done, _ = scoring.done_keys(store, "v")
    assert done.keys() == set(good) | {bad}
    third = scoring.score_store(store, model, model_version="v", progress=False)
    assert (third.scored, sum(third.quarantined.values()), third.already_done) == (0, 0, 13)
    assert sorted(rows(store, "v")) == good  # each frame once
    assert quarantined(store, "v") == [(bad, BROKEN_REASON)]
