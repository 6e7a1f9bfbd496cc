"""Stream scoring against a real S3 server over HTTP (moto's, on loopback) through the minio client."""

import json
from datetime import datetime
import resource
import struct
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from attnloop import imaging, layout, scores, scoring
from attnloop.imaging import encode_png
from attnloop.runtime import OnnxModel
from attnloop.storage import open_store
from attnloop.layout import frame_key, parse_frame_key
from attnloop.stream import simulate
from services import S3_KEY, S3_SECRET

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    from attnloop.export import export_onnx
    from attnloop.training import TrainConfig, train
    from conftest import write_tiny_manifest

    root = tmp_path_factory.mktemp("scoring")
    data = write_tiny_manifest(root / "data", size=64, channels=3)
    result = train(data, TrainConfig(epochs=1, guidance="none"), progress=False)
    return OnnxModel(export_onnx(result.model, result.card, root / "model.onnx"), device="cpu")


@pytest.fixture
def store(s3_endpoint):
    return open_store(f"s3://stream-{uuid.uuid4().hex[:8]}", endpoint=s3_endpoint, access_key=S3_KEY, secret_key=S3_SECRET, create=True)


def frame(seed: int, size: int = 16) -> bytes:
    return encode_png(np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8))


def put_frames(store, count: int, *, source: str = "line-1", start: int = 0) -> list[str]:
    keys = [frame_key(source, "2026-11-26", f"{i:06d}") for i in range(start, start + count)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: store.put(k, frame(int(k[-10:-4])), content_type="image/png"), keys))
    return keys


def rows_per_key(store, version):
    table = scores.read_scores(store, model_version=version, columns=["key"])
    keys = table["key"].to_pylist() if table is not None else []
    return {k: keys.count(k) for k in set(keys)}


class CrashingStore:
    """The real store, except that the n-th write dies — as a killed process would."""

    def __init__(self, store, crash_on_put: int):
        self.store, self.left = store, crash_on_put

    def put(self, key, data, **kw):
        self.left -= 1
        if self.left == 0:
            raise RuntimeError(f"injected crash before writing {key}")
        self.store.put(key, data, **kw)

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_frame_keys_round_trip():
    key = frame_key("line-2", "2026-11-26", "000123", "tif")
    assert key == "frames/line-2/2026-11-26/000123.tif"
    assert parse_frame_key(key).source == "line-2" and parse_frame_key("scores/x.parquet") is None
    with pytest.raises(ValueError, match="not a valid frame key"):
        frame_key("line 2", "2026-11-26", "1")


# writes per part: embeddings, Parquet, ledger entry. Crash before the first Parquet; after it but
# before its ledger entry (an orphan part the next run must recover); after one whole part.
@pytest.mark.parametrize("crash_on_put", [2, 3, 5])
def test_a_crashed_run_is_simply_rerun_and_scores_each_frame_once(store, onnx_model, crash_on_put):
    keys = put_frames(store, 150)
    crashing = CrashingStore(store, crash_on_put)
    with pytest.raises(RuntimeError, match="injected crash"):
        # a long lease: no renewal (a write) lands among the writes counted
        scoring.score_store(crashing, onnx_model, model_version="7", batch_size=16, part_rows=40, progress=False, lease_ttl=600)
    partial = rows_per_key(store, "7")
    assert 0 < len(partial) < 150 or crash_on_put == 2
    summary = scoring.score_store(store, onnx_model, model_version="7", batch_size=16, part_rows=40, progress=False)
    counts = rows_per_key(store, "7")
    assert sorted(counts) == keys and set(counts.values()) == {1}  # every frame, exactly once
    assert summary.scored == 150 - len(partial) and summary.already_done == len(partial)
    assert summary.recovered_parts == (1 if crash_on_put == 3 else 0)
    again = scoring.score_store(store, onnx_model, model_version="7", progress=False)
    assert again.scored == 0 and again.already_done == 150
    other = scoring.score_store(store, onnx_model, model_version="8", batch_size=64, progress=False)
    assert other.scored == 150  # each model version scores everything once


def test_rows_carry_the_contract_and_match_the_model(store, onnx_model):
    keys = put_frames(store, 20, source="cam-a")
    summary = scoring.score_store(store, onnx_model, model_version="v1", batch_size=8, overlays=3, progress=False)
    table = scores.read_scores(store, model_version="v1")
    rows = {r["key"]: r for r in table.to_pylist()}
    assert sorted(rows) == keys
    expected = {
        "key", "hash", "source", "date", "width", "height", "scored_at", "captured_at", "model_version", "class", "probabilities", "confidence", "margin",
        "entropy", "least_confidence", "background_attention", "attention_focus", "branch_disagreement", "attention", "attention_h",
        "attention_w", "embedding_ref",
    }
    assert set(table.column_names) == expected
    direct = onnx_model.predict_bytes([store.get(k) for k in keys])
    for i, key in enumerate(keys):
        np.testing.assert_allclose(rows[key]["probabilities"], direct["probabilities"][i], atol=1e-5)
        assert rows[key]["class"] == onnx_model.card.class_names[direct["probabilities"][i].argmax()]
        assert (rows[key]["width"], rows[key]["height"]) == (16, 16)
        assert datetime.fromisoformat(rows[key]["captured_at"]).tzinfo is not None  # when the frame landed: monitoring's clock
        assert (rows[key]["width"], rows[key]["height"]) == (16, 16)
    ref = rows[keys[3]]["embedding_ref"]
    path, index = ref.split("#")
    embeddings = np.load(__import__("io").BytesIO(store.get(path)))
    np.testing.assert_allclose(embeddings[int(index)], direct["embedding"][3], atol=1e-5)
    assert len(summary.to_dict()["overlays"]) == 3
    for key in summary.to_dict()["overlays"]:
        assert store.get(layout.overlay_key("v1", key))[:4] == b"\x89PNG"
    sheet = imaging.decode(store.get(summary.to_dict()["attention_sheet"]))  # the three overlays side by side, captioned
    assert sheet.shape[1] == 3 * 96 and sheet.shape[0] > 96
    report = json.loads(store.get(f"reports/v1/{summary.run_id}.json"))
    assert report["scored"] == 20 and sum(report["class_distribution"].values()) == 20
    assert sum(report["confidence_histogram"]["counts"]) == 20
    assert "frames scored: 20" in store.get(f"reports/v1/{summary.run_id}.md").decode()


def test_off_object_frames_are_judged_against_the_versions_reference(store, onnx_model):
    """A frame is off object when its attention focus passes its version's threshold, the 90th
    percentile on its drift reference: frames like the reference are about a tenth off object (the
    fixed cut on background attention put every frame there), and without a reference none is judged."""
    from attnloop.datasets import Record
    from attnloop.holdout import Holdout
    from attnloop.monitoring import reference

    put_frames(store, 60, source="cam-r")
    unjudged = scoring.score_store(store, onnx_model, model_version="r1", batch_size=16, overlays=0, progress=False)
    assert unjudged.to_dict()["off_object_share"] is None
    assert "not judged" in store.get(f"reports/r1/{unjudged.run_id}.md").decode()

    names = onnx_model.card.class_names
    holdout = Holdout([Record(f"h{i}.png", "test", names[0], [], []) for i in range(200)], [frame(1000 + i) for i in range(200)],
                      [(16, 16)] * 200, list(names), "seeded")
    meta = reference.build(store, onnx_model, "r2", holdout)
    summary = scoring.score_store(store, onnx_model, model_version="r2", batch_size=16, overlays=0, progress=False)
    rows = scores.read_scores(store, model_version="r2").to_pylist()
    focus = np.array([r["attention_focus"] for r in rows])
    assert summary.off_object_threshold == meta["off_object_threshold"]
    assert summary.off_object == int((focus > meta["off_object_threshold"]).sum())
    assert summary.to_dict()["off_object_share"] < 0.3
    assert "attention fixed on one spot (attention focus above" in store.get(f"reports/r2/{summary.run_id}.md").decode()


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def test_bad_frames_are_quarantined_with_reasons(store, onnx_model):
    good = put_frames(store, 3, source="lab")
    bad = {
        "corrupt": b"\x89PNG\r\n\x1a\nthis is not a png at all" + b"IEND\xaeB`\x82",
        "truncated": frame(1)[:-30],
        "unsupported_mode": encode_png(np.zeros((8, 8, 4), np.uint16)),
        "too_large": _png_header(20000, 20000),
        "not_an_image": b"%PDF-1.7 a document, not a frame",
    }
    for name, data in bad.items():
        store.put(frame_key("lab", "2026-11-26", f"bad-{name}"), data)
    summary = scoring.score_store(store, onnx_model, model_version="q", progress=False)
    assert summary.scored == len(good)
    assert dict(summary.quarantined) == {"corrupt": 2, "truncated": 1, "unsupported_mode": 1, "too_large": 1}
    records = [json.loads(line) for o in store.list("quarantine/q/") for line in store.get(o.key).decode().splitlines()]
    assert {r["key"].rsplit("/", 1)[-1] for r in records} == {f"bad-{n}.png" for n in bad}
    assert all(r["message"] for r in records)
    assert scoring.score_store(store, onnx_model, model_version="q", progress=False).already_done == 8  # not retried


def test_simulator_writes_the_stream_split(store):
    keys = simulate(store, "mill", count=6, progress=False)
    assert len(keys) == 6 and all(parse_frame_key(k).source == "mill" for k in keys)
    assert store.get(keys[0])[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="unknown dataset family"):
        simulate(store, "nope", count=1)


@pytest.mark.slow
def test_memory_stays_bounded_over_ten_thousand_frames(store, onnx_model):
    """10 000 frames: held all at once, their 3×64×64 tensors alone would take ~490 MB."""
    put_frames(store, 500, source="warm-up")
    put_frames(store, 10_000)
    scoring.score_store(store, onnx_model, model_version="mem", source="warm-up", batch_size=64, part_rows=2048, progress=False)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    summary = scoring.score_store(store, onnx_model, model_version="mem", source="line-1", batch_size=64, part_rows=2048, progress=False)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    assert summary.scored == 10_000
    assert grown < 150, f"peak memory grew by {grown:.0f} MB while scoring 10 000 frames"


def test_candidates_leave_out_queued_frames_and_hybrid_picks_a_spread_batch(store, onnx_model):
    """What the annotate flow pushes: the best frames not queued yet, by margin or as a diverse batch,
    chosen by the one selection the benchmark measures (attnloop.priority.select) over the stored rows."""
    from attnloop.labelstudio.push import ranked_candidates
    from attnloop.priority import select

    put_frames(store, 60)
    scoring.score_store(store, onnx_model, model_version="3", batch_size=16, part_rows=25, progress=False)
    rows = scores.read_scores(store, model_version="3").to_pylist()

    by_margin = ranked_candidates(store, "3", ranking="priority")
    assert [c.key for c in by_margin] == [r["key"] for r in sorted(rows, key=lambda r: -r["margin"])]
    queued = {c.key for c in by_margin[:5]}
    assert [c.key for c in ranked_candidates(store, "3", limit=5, exclude=queued, ranking="priority")] == [c.key for c in by_margin[5:10]]
    # the default (coverage): every predicted class before a second frame of any, none queued twice
    spread = ranked_candidates(store, "3", limit=4, exclude=queued)
    classes = {r["class"] for r in rows if r["key"] not in queued}
    assert len(spread) == 4 and not queued & {c.key for c in spread}
    assert len({next(r["class"] for r in rows if r["key"] == c.key) for c in spread}) == min(4, len(classes))
    assert len(ranked_candidates(store, "3")) == len(rows)  # no limit: every frame, in order

    batch = ranked_candidates(store, "3", limit=6, exclude=queued, ranking="hybrid")
    assert len({c.key for c in batch}) == 6 and not queued & {c.key for c in batch}
    pool = scores.selection_pool(store, scores.read_rows(store, "3"))
    assert [c.key for c in batch] == select(pool, 6, ranking="hybrid", exclude=queued)
    stored = scores.read_embeddings(store, [r["embedding_ref"] for r in rows])
    np.testing.assert_array_equal(np.asarray(pool.embeddings), stored)  # the pool reads the rows' own embeddings

    with pytest.raises(ValueError, match="give its size"):
        ranked_candidates(store, "3", ranking="hybrid")
    with pytest.raises(ValueError, match="valid names: coverage, priority, hybrid"):
        ranked_candidates(store, "3", ranking="newest")
