"""Score the frames of an object store with ONNX Runtime, each exactly once per model version.

Pipeline: list frames lazily → fetch, decode and preprocess in worker threads (a bounded window
ahead of inference, so reading overlaps the model and memory stays bounded whatever the
backlog) → batched ONNX Runtime → priority signals → rows. Bad frames are quarantined with the
reason, never a crash.

Exactly-once: rows are committed in parts. A part is one Parquet file per (source, date)
under ``scores/source=S/date=D/part-<version>-<run>-<seq>.parquet`` followed by its ledger entry
``ledger/<version>/<run>-<seq>.json`` (every key, its content hash and status). A run first
reads the ledger; a part written by a run that died before its ledger entry is found by its
name, its keys are read back and its ledger entry is written then. So a re-run after a crash
scores only what is left, and no row is ever written twice.

Runs on disjoint sets of frames (one per source and date, say) may share a store and a model
version at the same time: a run only ever adds files under names of its own, and the ledger is
the union of its entries (see :func:`done_keys`).
"""

from __future__ import annotations

import hashlib
import heapq
import io
import json
import logging
import re
import uuid
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterator

import numpy as np
from tqdm.auto import tqdm

from attnloop import imaging
from attnloop.priority import signals
from attnloop.runtime import OnnxModel
from attnloop.storage import Store
from attnloop.stream import FrameKey, iter_frames

log = logging.getLogger(__name__)

SCORES, LEDGER, QUARANTINE, EMBEDDINGS, REPORTS, OVERLAYS = "scores/", "ledger/", "quarantine/", "embeddings/", "reports/", "overlays/"
OFF_OBJECT = 0.5  # background attention above this: the model looked mostly off the object


def safe_version(version: str) -> str:
    """A model version as a path segment."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(version))


@dataclass
class Frame:
    key: str
    parsed: FrameKey
    hash: str | None = None
    tensor: np.ndarray | None = None
    size: tuple[int, int] | None = None  # (h, w) of the decoded frame
    reason: str | None = None  # quarantine reason
    message: str | None = None


@dataclass
class RunSummary:
    run_id: str
    model_version: str
    scored: int = 0
    quarantined: Counter = field(default_factory=Counter)
    already_done: int = 0
    classes: Counter = field(default_factory=Counter)
    confidence_histogram: list[int] = field(default_factory=lambda: [0] * 10)
    off_object: int = 0
    parts: list[str] = field(default_factory=list)
    recovered_parts: int = 0
    top: list = field(default_factory=list)  # heap of (priority, key, attention) for overlays
    top_size: int = 16
    attention_sheet: str | None = None  # the overlays tiled into one picture (dashboards, Prefect artifacts)

    def to_dict(self) -> dict:
        return {
            "run_id": self.run_id,
            "model_version": self.model_version,
            "scored": self.scored,
            "quarantined": sum(self.quarantined.values()),
            "quarantined_by_reason": dict(self.quarantined),
            "already_done": self.already_done,
            "class_distribution": dict(self.classes),
            "confidence_histogram": {"edges": [round(i / 10, 1) for i in range(11)], "counts": self.confidence_histogram},
            "off_object_share": self.off_object / self.scored if self.scored else None,
            "parts": self.parts,
            "recovered_parts": self.recovered_parts,
            "overlays": [key for _, key, _ in sorted(self.top, reverse=True)],
            "attention_sheet": self.attention_sheet,
        }


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


# --- ledger ----------------------------------------------------------------------------------


def _part_id(name: str, version: str) -> str | None:
    match = re.match(rf"part-{re.escape(version)}-(?P<id>[0-9a-f]+-\d+)\.parquet$", name.rsplit("/", 1)[-1])
    return match["id"] if match else None


def done_keys(store: Store, version: str) -> tuple[set[str], int]:
    """Keys already scored (or quarantined) for a model version; repairs parts a crashed run left
    without a ledger entry. Returns the keys and the number of parts repaired.

    A scores or quarantine file that no ledger entry lists is an orphan. Another run may be
    between writing a part's files and its entry right now, so the repair goes under a name of
    its own (``<part>.recovered-<digest>.json``): it never replaces the entry that run is about
    to write, and the keys both record are the same keys, counted once."""
    import pyarrow.parquet as pq

    version = safe_version(version)
    done: set[str] = set()
    covered: set[str] = set()
    for info in store.list(f"{LEDGER}{version}/"):
        entry = json.loads(store.get(info.key))
        covered.update(entry["files"])
        done.update(item[0] for item in entry["items"])
    orphans: dict[str, list[str]] = {}
    for info in store.list(SCORES):
        part = _part_id(info.key, version)
        if part is not None and info.key not in covered:
            orphans.setdefault(part, []).append(info.key)
    for info in store.list(f"{QUARANTINE}{version}/"):
        if info.key not in covered:
            orphans.setdefault(info.key.rsplit("/", 1)[-1].removesuffix(".jsonl"), []).append(info.key)
    for part, keys in orphans.items():
        items = []
        for key in keys:
            if key.endswith(".jsonl"):
                records = [json.loads(line) for line in store.get(key).decode().splitlines() if line]
                items += [[q["key"], q["hash"], f"quarantined:{q['reason']}"] for q in records]
                continue
            table = pq.read_table(io.BytesIO(store.get(key)), columns=["key", "hash"])
            items += [[k, h, "scored"] for k, h in zip(table["key"].to_pylist(), table["hash"].to_pylist())]
        log.warning(
            "part %s of version %s had files without a ledger entry (a run stopped after writing them, or is writing its entry now); "
            "recorded %d keys", part, version, len(items),
        )
        digest = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:12]
        _write_ledger(store, version, part, items, keys, name=f"{part}.recovered-{digest}")
        done.update(item[0] for item in items)
    return done, len(orphans)


def _write_ledger(store: Store, version: str, part: str, items: list[list[str]], files: list[str], *, name: str | None = None) -> None:
    body = json.dumps({"part": part, "files": files, "items": items, "written_at": _now()}).encode()
    store.put(f"{LEDGER}{version}/{name or part}.json", body, content_type="application/json")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --- scoring ---------------------------------------------------------------------------------


def _load(store: Store, key: str, parsed: FrameKey, model: OnnxModel, limits: imaging.Limits) -> Frame:
    frame = Frame(key, parsed)
    try:
        data = store.get(key)
    except KeyError as err:  # deleted between listing and reading
        frame.reason, frame.message = "missing", str(err)
        return frame
    frame.hash = content_hash(data)
    try:
        image = imaging.decode(data, limits=limits, name=key)
        frame.size = image.shape[:2]
        frame.tensor = imaging.preprocess(image, model.card, name=key)
    except imaging.ImageError as err:
        frame.reason, frame.message = err.reason, str(err)
    return frame


def _prefetch(store: Store, todo: Iterator[tuple[str, FrameKey]], model: OnnxModel, limits: imaging.Limits, *, workers: int, window: int) -> Iterator[Frame]:
    """Frames in listing order, loaded by ``workers`` threads at most ``window`` ahead."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch") as pool:
        pending: deque[Future] = deque()
        for key, parsed in todo:
            pending.append(pool.submit(_load, store, key, parsed, model, limits))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class _Part:
    """Rows waiting to be committed as one part."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.embeddings: list[np.ndarray] = []
        self.quarantined: list[dict] = []

    def __len__(self) -> int:
        return len(self.rows) + len(self.quarantined)


def score_store(
    store: Store,
    model: OnnxModel,
    *,
    model_version: str,
    source: str | None = None,
    batch_size: int = 64,
    part_rows: int = 1024,
    workers: int = 4,
    object_fraction: float = 0.1,
    limits: imaging.Limits = imaging.Limits(),
    overlays: int = 16,
    progress: bool = True,
) -> RunSummary:
    """Score every frame not yet scored by ``model_version``; returns the run's summary (also
    written to ``reports/<version>/<run>.json`` and ``.md``). The ``overlays`` frames of highest
    priority get an attention overlay at :func:`overlay_key`, ready for annotators."""
    if batch_size < 1 or part_rows < 1 or workers < 1:
        raise ValueError(f"batch_size, part_rows and workers must be positive, got {batch_size}, {part_rows}, {workers}")
    version = safe_version(model_version)
    run_id = uuid.uuid4().hex[:12]
    summary = RunSummary(run_id, str(model_version), top_size=overlays)
    done, summary.recovered_parts = done_keys(store, version)

    def todo() -> Iterator[tuple[str, FrameKey]]:
        for key, parsed in iter_frames(store, source=source):
            if key in done:
                summary.already_done += 1
            else:
                yield key, parsed

    part, seq = _Part(), 0
    batch: list[Frame] = []
    bar = tqdm(desc="scoring", unit="frame", disable=not progress)

    def flush_batch() -> None:
        if batch:
            _infer(model, batch, part, summary, version=str(model_version), object_fraction=object_fraction)
            bar.update(len(batch))
            batch.clear()

    for frame in _prefetch(store, todo(), model, limits, workers=workers, window=max(2 * batch_size, workers)):
        if frame.reason is not None:
            part.quarantined.append({"key": frame.key, "hash": frame.hash, "reason": frame.reason, "message": frame.message})
            summary.quarantined[frame.reason] += 1
            log.warning("%s — quarantined", frame.message)
        else:
            batch.append(frame)
            if len(batch) >= batch_size:
                flush_batch()
        if len(part) >= part_rows:
            flush_batch()
            _commit(store, part, version, f"{run_id}-{seq}", summary)
            part, seq = _Part(), seq + 1
    flush_batch()
    if len(part):
        _commit(store, part, version, f"{run_id}-{seq}", summary)
    bar.close()
    for _, key, attention in sorted(summary.top, reverse=True):
        write_overlay(store, key, attention, model_version=str(model_version))
    if summary.top:
        summary.attention_sheet = write_attention_sheet(store, summary)
    write_report(store, summary)
    return summary


def priority(row: dict) -> float:
    """How soon a frame should be corrected (what overlays, the attention sheet and the annotate flow
    rank by): its margin uncertainty, 1 − (top probability − runner-up).

    The strategy benchmark (docs/benchmarks/strategies.md) chose it: margin is the best signal with a
    few boxes on `mill`, while the earlier composite, the mean of least confidence, branch
    disagreement and background attention (the benchmark's ``composite``), fell below random there;
    branch disagreement and background attention are at or below random on most families. Every
    signal stays in the rows and the tasks.
    """
    return row["margin"]


def overlay_key(model_version: str, key: str) -> str:
    return f"{OVERLAYS}{safe_version(model_version)}/{key.rsplit('.', 1)[0]}.png"


def write_overlay(store: Store, key: str, attention: np.ndarray, *, model_version: str) -> str:
    """The frame with its attention map as a heat map, stored next to the scores."""
    picture = imaging.overlay(imaging.decode(store.get(key), name=key), attention)
    target = overlay_key(model_version, key)
    store.put(target, imaging.encode_png(picture), content_type="image/png")
    return target


def write_attention_sheet(store: Store, summary: RunSummary, *, columns: int = 8) -> str:
    """The run's highest-priority frames with their attention, tiled into one PNG beside its report."""
    from attnloop.figures import attention_grid

    top = sorted(summary.top, reverse=True)
    images = [imaging.decode(store.get(key), name=key) for _, key, _ in top]
    captions = [key.rsplit("/", 1)[-1].rsplit(".", 1)[0] for _, key, _ in top]
    target = f"{REPORTS}{safe_version(summary.model_version)}/{summary.run_id}-attention.png"
    store.put(target, attention_grid(images, [a for _, _, a in top], captions, columns=columns), content_type="image/png")
    return target


def _infer(model: OnnxModel, frames: list[Frame], part: _Part, summary: RunSummary, *, version: str, object_fraction: float) -> None:
    out = model.predict(np.stack([f.tensor for f in frames]))
    p = out["probabilities"]
    attention = out["attention"][:, 0]
    top = p.argmax(axis=1)
    values = {
        "least_confidence": signals.least_confidence(p),
        "margin": signals.margin(p),
        "entropy": signals.entropy(p),
        "branch_disagreement": signals.branch_disagreement(p, out["attention_probabilities"]),
        "background_attention": signals.background_attention(attention, object_fraction=object_fraction),
    }
    now = _now()
    names = model.card.class_names
    for i, frame in enumerate(frames):
        confidence = float(p[i].max())
        row = {
            "key": frame.key,
            "hash": frame.hash,
            "source": frame.parsed.source,
            "date": frame.parsed.date,
            "width": int(frame.size[1]),
            "height": int(frame.size[0]),
            "scored_at": now,
            "model_version": version,
            "class": names[int(top[i])],
            "probabilities": p[i].astype(np.float32).tolist(),
            "confidence": confidence,
            **{k: float(v[i]) for k, v in values.items()},
            "attention": attention[i].astype(np.float32).ravel().tolist(),
            "attention_h": int(attention.shape[1]),
            "attention_w": int(attention.shape[2]),
        }
        part.rows.append(row)
        part.embeddings.append(out["embedding"][i].astype(np.float32))
        summary.scored += 1
        summary.classes[row["class"]] += 1
        summary.confidence_histogram[min(9, int(confidence * 10))] += 1
        summary.off_object += int(row["background_attention"] > OFF_OBJECT)
        if summary.top_size:
            entry = (priority(row), frame.key, attention[i].copy())
            if len(summary.top) < summary.top_size:
                heapq.heappush(summary.top, entry)
            elif entry[0] > summary.top[0][0]:
                heapq.heapreplace(summary.top, entry)
    for frame in frames:
        frame.tensor = None  # the window holds keys, not pixels, once inferred


def _commit(store: Store, part: _Part, version: str, part_id: str, summary: RunSummary) -> None:
    """Write the part's Parquet files (one per source and date), embeddings and quarantine records, then its ledger entry."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files: list[str] = []
    if part.rows:
        embeddings_key = f"{EMBEDDINGS}{version}/{part_id}.npy"
        buffer = io.BytesIO()
        np.save(buffer, np.stack(part.embeddings))
        store.put(embeddings_key, buffer.getvalue(), content_type="application/octet-stream")
        for i, row in enumerate(part.rows):
            row["embedding_ref"] = f"{embeddings_key}#{i}"
        groups: dict[tuple[str, str], list[dict]] = {}
        for row in part.rows:
            groups.setdefault((row["source"], row["date"]), []).append(row)
        for (source, day), rows in sorted(groups.items()):
            key = f"{SCORES}source={source}/date={day}/part-{version}-{part_id}.parquet"
            buffer = io.BytesIO()
            pq.write_table(pa.Table.from_pylist(rows), buffer, compression="zstd")
            store.put(key, buffer.getvalue(), content_type="application/vnd.apache.parquet")
            files.append(key)
    if part.quarantined:
        key = f"{QUARANTINE}{version}/{part_id}.jsonl"
        store.put(key, "".join(json.dumps(q) + "\n" for q in part.quarantined).encode(), content_type="application/x-ndjson")
        files.append(key)
    items = [[r["key"], r["hash"], "scored"] for r in part.rows] + [[q["key"], q["hash"], f"quarantined:{q['reason']}"] for q in part.quarantined]
    _write_ledger(store, version, part_id, items, files)
    summary.parts.append(part_id)


def read_scores(store: Store, *, model_version: str | None = None, columns: list[str] | None = None):
    """Every committed row (a pyarrow Table), optionally of one model version."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for info in store.list(SCORES):
        if not info.key.endswith(".parquet"):
            continue
        if model_version is not None and _part_id(info.key, safe_version(model_version)) is None:
            continue
        tables.append(pq.read_table(io.BytesIO(store.get(info.key)), columns=columns))
    return pa.concat_tables(tables) if tables else None


# --- monitoring ------------------------------------------------------------------------------


def report_markdown(summary: RunSummary) -> str:
    d = summary.to_dict()
    lines = [
        f"# Scoring run {d['run_id']} — model version {d['model_version']}",
        "",
        f"- frames scored: {d['scored']}; already scored before: {d['already_done']}; quarantined: {d['quarantined']}",
    ]
    if d["quarantined_by_reason"]:
        lines.append("- quarantined by reason: " + ", ".join(f"{k} {v}" for k, v in sorted(d["quarantined_by_reason"].items())))
    if d["off_object_share"] is not None:
        lines.append(f"- attention mostly off the object (background attention > {OFF_OBJECT}): {d['off_object_share']:.1%} of frames")
    if d["recovered_parts"]:
        lines.append(f"- parts recovered from an earlier run that stopped before its ledger entry: {d['recovered_parts']}")
    if d["class_distribution"]:
        lines += ["", "| class | frames |", "|---|---|"] + [f"| {k} | {v} |" for k, v in sorted(d["class_distribution"].items())]
        counts = d["confidence_histogram"]["counts"]
        peak = max(counts) or 1
        lines += ["", "Confidence histogram:", "", "```"]
        lines += [f"{i / 10:.1f}–{(i + 1) / 10:.1f} {'#' * round(30 * c / peak):30} {c}" for i, c in enumerate(counts)]
        lines.append("```")
    return "\n".join(lines) + "\n"


def write_report(store: Store, summary: RunSummary) -> tuple[str, str]:
    base = f"{REPORTS}{safe_version(summary.model_version)}/{summary.run_id}"
    store.put(f"{base}.json", json.dumps(summary.to_dict(), indent=2).encode(), content_type="application/json")
    store.put(f"{base}.md", report_markdown(summary).encode(), content_type="text/markdown")
    return f"{base}.json", f"{base}.md"
