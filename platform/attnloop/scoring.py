"""Score the frames of an object store with ONNX Runtime, each content exactly once per model version.

Pipeline: list frames lazily → fetch, decode and preprocess in worker threads (a bounded window
ahead of inference, so reading overlaps the model and memory stays bounded whatever the
backlog) → batched ONNX Runtime → priority signals → rows. A frame that fails for a reason of its
own (a key no frame may have, an object the store refuses, bytes that do not decode or preprocess)
is quarantined with the reason and the run goes on; only a failure that is not the frame's (the
store unreachable, the model failing on a batch) stops a run, and a rerun is then safe.

Exactly-once: rows (:class:`attnloop.scores.ScoreRow`) are committed in parts. A part is one
Parquet file per (source, date) under ``scores/`` (:mod:`attnloop.layout`) followed by its ledger
entry ``ledger/<version>/<run>-<seq>.json``: every key with its content hash, status and the listing's
signature (ETag and size) it was read under. A run first reads the ledger; a part written by a
run that died before its ledger entry is found by its name, its keys are read back and its ledger
entry is written then. So a re-run after a crash scores only what is left, and no row is ever
written twice. A listed object whose signature is in the ledger is not read again; one whose
signature changed is read and hashed, and scored again only if its content is new (a frame
replaced under its key, a quarantined frame uploaded again whole). Ledger items from before the
signatures (``[key, hash, status]``) still count: such frames are hashed once and their signature
recorded.

One run per model version at a time: a run holds the store's lease :func:`lease_name` (see
:mod:`attnloop.lease`), so two ``attnloop score`` processes never score the same frames twice.
Runs on disjoint sets of frames under one lease holder (the backlog flow's partitions) may share a
store and a model version at the same time: a run only ever adds files under names of its own,
and the ledger is the union of its entries (see :func:`done_keys`).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import uuid
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterator

import numpy as np
from tqdm.auto import tqdm

from attnloop import imaging, layout, lease, scores
from attnloop.layout import FrameKey, safe_version
from attnloop.monitoring.reference import off_object_threshold
from attnloop.priority import frame_signals, priority
from attnloop.priority.signals import OFF_OBJECT_QUANTILE, area_target
from attnloop.runtime import OnnxModel
from attnloop.scores import ScoreRow
from attnloop.storage import TRANSIENT_CODES, Store
from attnloop.stream import Listed, list_frames

log = logging.getLogger(__name__)

STORE_CODES = {"NoSuchBucket", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "AccountProblem", "AllAccessDisabled"}


def lease_name(version: str) -> str:
    """The store lease a scoring run of ``version`` holds (:mod:`attnloop.lease`)."""
    return f"score-{safe_version(version)}"


@dataclass
class Frame:
    key: str
    parsed: FrameKey | None  # None for a key no frame may have
    etag: str = ""  # the listing's signature: ETag and size
    nbytes: int = 0
    captured_at: str | None = None  # when the frame landed in the store (the listing's modification time)
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
    changed: int = 0  # frames in the ledger already, scored (or quarantined) again because their content changed
    classes: Counter = field(default_factory=Counter)
    confidence_histogram: list[int] = field(default_factory=lambda: [0] * 10)
    off_object: int = 0  # frames whose attention focus is above the version's off-object threshold
    off_object_threshold: float | None = None  # from the version's drift reference; None: it has none, no frame is flagged
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
            "changed": self.changed,
            "class_distribution": dict(self.classes),
            "confidence_histogram": {"edges": [round(i / 10, 1) for i in range(11)], "counts": self.confidence_histogram},
            "off_object_share": self.off_object / self.scored if self.scored and self.off_object_threshold is not None else None,
            "off_object_threshold": self.off_object_threshold,
            "parts": self.parts,
            "recovered_parts": self.recovered_parts,
            "overlays": [key for _, key, _ in sorted(self.top, reverse=True)],
            "attention_sheet": self.attention_sheet,
        }


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


# --- ledger ----------------------------------------------------------------------------------


class Ledger:
    """What a model version's ledger holds: every (key, content hash) done with its status, and the
    listing signatures (ETag, size) they were read under. Items are ``[key, hash, status, etag,
    size]``; older ledgers' ``[key, hash, status]`` count as done without a signature."""

    def __init__(self) -> None:
        self.status: dict[tuple[str, str | None], str] = {}
        self.signatures: set[tuple[str, str, int]] = set()
        self._keys: set[str] = set()

    def add(self, item: list) -> None:
        key, digest, status = item[0], item[1], item[2]
        self.status[(key, digest)] = status
        self._keys.add(key)
        if len(item) >= 5 and item[3]:
            self.signatures.add((key, item[3], int(item[4])))

    def keys(self) -> set[str]:
        return set(self._keys)

    def knows(self, key: str) -> bool:
        return key in self._keys

    def unchanged(self, key: str, etag: str, size: int) -> bool:
        """Whether the object was read under this very signature before: then it need not be read."""
        return bool(etag) and (key, etag, size) in self.signatures

    def __contains__(self, pair: tuple[str, str | None]) -> bool:
        return pair in self.status


def done_keys(store: Store, version: str) -> tuple[Ledger, int]:
    """The ledger of a model version (what is scored or quarantined already); repairs parts a
    crashed run left without a ledger entry. Returns the ledger and the number of parts repaired.

    A scores or quarantine file that no ledger entry lists is an orphan. Another run may be
    between writing a part's files and its entry right now, so the repair goes under a name of
    its own (``<part>.recovered-<digest>.json``): it never replaces the entry that run is about
    to write, and the keys both record are the same keys, counted once."""
    version = safe_version(version)
    done = Ledger()
    covered: set[str] = set()
    for info in store.list(layout.ledger_prefix(version)):
        entry = json.loads(store.get(info.key))
        covered.update(entry["files"])
        for item in entry["items"]:
            done.add(item)
    orphans: dict[str, list[str]] = {}
    for key, part in scores.part_files(store, version):
        if key not in covered:
            orphans.setdefault(part, []).append(key)
    for info in store.list(layout.quarantine_prefix(version)):
        if info.key not in covered:
            orphans.setdefault(layout.quarantine_part_of(info.key), []).append(info.key)
    for part, keys in orphans.items():
        items = []
        for key in keys:
            if key.endswith(".jsonl"):
                records = [json.loads(line) for line in store.get(key).decode().splitlines() if line]
                items += [[q["key"], q["hash"], f"quarantined:{q['reason']}", q.get("etag", ""), q.get("size", 0)] for q in records]
                continue
            table = scores.read_part(store, key, columns=["key", "hash"])
            items += [[k, h, "scored"] for k, h in zip(table["key"].to_pylist(), table["hash"].to_pylist())]
        log.warning(
            "part %s of version %s had files without a ledger entry (a run stopped after writing them, or is writing its entry now); "
            "recorded %d keys", part, version, len(items),
        )
        digest = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:12]
        _write_ledger(store, version, part, items, keys, name=f"{part}.recovered-{digest}")
        for item in items:
            done.add(item)
    return done, len(orphans)


def _write_ledger(store: Store, version: str, part: str, items: list[list], files: list[str], *, name: str | None = None) -> None:
    body = json.dumps({"part": part, "files": files, "items": items, "written_at": _now()}).encode()
    store.put(layout.ledger_key(version, name or part), body, content_type="application/json")


def _now(timespec: str = "seconds") -> str:
    return datetime.now(timezone.utc).isoformat(timespec=timespec)


# --- scoring ---------------------------------------------------------------------------------


def _own_read_error(err: Exception) -> bool:
    """Whether a failed read is the object's own fault (a key or object the store refuses, no
    permission on it, an archived object) rather than the store's (unreachable, failing, wrong
    credentials): only the first quarantines a frame, the second stops the run."""
    if isinstance(err, (ConnectionError, TimeoutError)):
        return False
    if isinstance(err, (ValueError, OSError)):
        return True
    code = getattr(err, "code", None)  # minio's S3Error
    return isinstance(code, str) and code not in TRANSIENT_CODES and code not in STORE_CODES


def _load(store: Store, listed: Listed, model: OnnxModel, limits: imaging.Limits) -> Frame:
    key = listed.info.key
    modified = listed.info.modified
    frame = Frame(
        key, listed.parsed, etag=listed.info.etag, nbytes=listed.info.size,
        captured_at=None if modified is None else modified.astimezone(timezone.utc).isoformat(timespec="milliseconds"),
    )
    if listed.problem is not None:
        frame.reason, frame.message = "bad_key", listed.problem
        return frame
    try:
        data = store.get(key)
    except KeyError as err:  # deleted between listing and reading: if it comes back, it is read then
        frame.reason, frame.message, frame.etag = "missing", str(err), ""
        return frame
    except Exception as err:
        if not _own_read_error(err):
            raise
        # no signature recorded: an object the store refused is tried again by the next run
        frame.reason, frame.message, frame.etag = "unreadable", f"{key} could not be read ({type(err).__name__}: {err})", ""
        return frame
    frame.hash = content_hash(data)
    try:
        image = imaging.decode(data, limits=limits, name=key)
    except imaging.ImageError as err:
        frame.reason, frame.message = err.reason, str(err)
        return frame
    except MemoryError:
        raise  # the host is short of memory (decodes are bounded by ``limits``): not this frame's fault
    except Exception as err:
        frame.reason, frame.message = "corrupt", f"{key} could not be decoded ({type(err).__name__}: {err})"
        return frame
    try:
        frame.size = image.shape[:2]
        frame.tensor = imaging.preprocess(image, model.card, name=key)
    except imaging.ImageError as err:
        frame.reason, frame.message = err.reason, str(err)
    except MemoryError:
        raise
    except Exception as err:
        frame.reason, frame.message = "preprocess_failed", f"{key} could not be preprocessed for the model ({type(err).__name__}: {err})"
    return frame


def _prefetch(store: Store, todo: Iterator[Listed], model: OnnxModel, limits: imaging.Limits, *, workers: int, window: int) -> Iterator[Frame]:
    """Frames in listing order, loaded by ``workers`` threads at most ``window`` ahead."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch") as pool:
        pending: deque[Future] = deque()
        for listed in todo:
            pending.append(pool.submit(_load, store, listed, model, limits))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class _Part:
    """Rows and ledger items waiting to be committed as one part."""

    def __init__(self) -> None:
        self.rows: list[ScoreRow] = []
        self.embeddings: list[np.ndarray] = []
        self.quarantined: list[dict] = []
        self.items: list[list] = []  # [key, hash, status, etag, size] for every frame of the part

    def __len__(self) -> int:
        return len(self.items)


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
    limits: imaging.Limits | None = None,
    overlays: int = 16,
    progress: bool = True,
    lease_wait: float | None = 60.0,
    lease_ttl: float = 30.0,
    leased: bool = False,
) -> RunSummary:
    """Score every frame not yet scored by ``model_version``; returns the run's summary (also
    written to ``reports/<version>/<run>.json`` and ``.md``). The ``overlays`` frames of highest
    priority get an attention overlay at :func:`attnloop.layout.overlay_key`, ready for annotators.

    The run holds the store's lease :func:`lease_name` (``lease_ttl``), waiting up to ``lease_wait``
    seconds (None: without bound) while another run of the version holds it, then raises
    :class:`attnloop.lease.Busy`. ``leased``: the caller holds that lease for this run (the backlog
    flow does, while its disjoint partitions are scored in parallel)."""
    if batch_size < 1 or part_rows < 1 or workers < 1:
        raise ValueError(f"batch_size, part_rows and workers must be positive, got {batch_size}, {part_rows}, {workers}")
    options = dict(
        source=source, batch_size=batch_size, part_rows=part_rows, workers=workers, object_fraction=object_fraction,
        limits=limits or imaging.Limits.for_card(model.card), overlays=overlays, progress=progress,
    )
    if leased:
        return _score(store, model, model_version=model_version, held=None, **options)
    with lease.hold(store, lease_name(model_version), ttl=lease_ttl, wait=lease_wait) as held:
        return _score(store, model, model_version=model_version, held=held, **options)


def _score(
    store: Store, model: OnnxModel, *, model_version: str, source: str | None, batch_size: int, part_rows: int, workers: int,
    object_fraction: float, limits: imaging.Limits, overlays: int, progress: bool, held: lease.Held | None,
) -> RunSummary:
    version = safe_version(model_version)
    run_id = uuid.uuid4().hex[:12]
    summary = RunSummary(run_id, str(model_version), top_size=overlays, off_object_threshold=off_object_threshold(store, str(model_version)))
    done, summary.recovered_parts = done_keys(store, version)  # read under the lease: no other run adds to it now

    def todo() -> Iterator[Listed]:
        for listed in list_frames(store, source=source):
            if done.unchanged(listed.info.key, listed.info.etag, listed.info.size):
                summary.already_done += 1
            else:
                yield listed

    part, seq = _Part(), 0
    batch: list[Frame] = []
    bar = tqdm(desc="scoring", unit="frame", disable=not progress)

    def flush_batch() -> None:
        if batch:
            _infer(model, batch, part, summary, version=str(model_version), object_fraction=object_fraction)
            bar.update(len(batch))
            batch.clear()

    def commit() -> None:
        if held is not None:
            held.check()  # another run took the lease over (this one stalled past its ttl): stop before writing
        _commit(store, part, version, f"{run_id}-{seq}", summary)

    for frame in _prefetch(store, todo(), model, limits, workers=workers, window=max(2 * batch_size, workers)):
        if frame.hash is not None and (frame.key, frame.hash) in done:
            # the same content under a new signature (rewritten, copied, or an older ledger): record the signature only
            summary.already_done += 1
            part.items.append([frame.key, frame.hash, done.status[(frame.key, frame.hash)], frame.etag, frame.nbytes])
        elif frame.reason is not None:
            record = {"key": frame.key, "hash": frame.hash, "reason": frame.reason, "message": frame.message, "etag": frame.etag, "size": frame.nbytes}
            part.quarantined.append(record)
            part.items.append([frame.key, frame.hash, f"quarantined:{frame.reason}", frame.etag, frame.nbytes])
            summary.quarantined[frame.reason] += 1
            summary.changed += done.knows(frame.key)
            log.warning("%s — quarantined", frame.message)
        else:
            summary.changed += done.knows(frame.key)
            batch.append(frame)
            if len(batch) >= batch_size:
                flush_batch()
        if len(part) >= part_rows:
            flush_batch()
            commit()
            part, seq = _Part(), seq + 1
    flush_batch()
    if len(part):
        commit()
    bar.close()
    for _, key, attention in sorted(summary.top, reverse=True):
        write_overlay(store, key, attention, model_version=str(model_version))
    if summary.top:
        summary.attention_sheet = write_attention_sheet(store, summary)
    write_report(store, summary)
    return summary


def write_overlay(store: Store, key: str, attention: np.ndarray, *, model_version: str) -> str:
    """The frame with its attention map as a heat map, stored next to the scores."""
    picture = imaging.overlay(imaging.decode(store.get(key), name=key), attention)
    target = layout.overlay_key(model_version, key)
    store.put(target, imaging.encode_png(picture), content_type="image/png")
    return target


def write_attention_sheet(store: Store, summary: RunSummary, *, columns: int = 8) -> str:
    """The run's highest-priority frames with their attention, tiled into one PNG beside its report."""
    from attnloop.figures import attention_grid

    top = sorted(summary.top, reverse=True)
    images = [imaging.decode(store.get(key), name=key) for _, key, _ in top]
    captions = [key.rsplit("/", 1)[-1].rsplit(".", 1)[0] for _, key, _ in top]
    target = layout.report_key(summary.model_version, summary.run_id, "-attention.png")
    store.put(target, attention_grid(images, [a for _, _, a in top], captions, columns=columns), content_type="image/png")
    return target


def _infer(model: OnnxModel, frames: list[Frame], part: _Part, summary: RunSummary, *, version: str, object_fraction: float) -> None:
    out = model.predict(np.stack([f.tensor for f in frames]))
    p = out["probabilities"]
    attention = out["attention"][:, 0]
    top = p.argmax(axis=1)
    values = frame_signals(p, out["attention_probabilities"], attention, object_fraction=object_fraction, area=area_target(model.card))
    now = _now("milliseconds")  # fine enough to tell which of two rows of a replaced frame is newer
    names = model.card.class_names
    for i, frame in enumerate(frames):
        confidence = float(p[i].max())
        row = ScoreRow(
            key=frame.key,
            hash=frame.hash,
            width=int(frame.size[1]),
            height=int(frame.size[0]),
            predicted=names[int(top[i])],
            source=frame.parsed.source,
            date=frame.parsed.date,
            scored_at=now,
            captured_at=frame.captured_at,
            model_version=version,
            probabilities=tuple(p[i].astype(np.float32).tolist()),
            confidence=confidence,
            signals={k: float(v[i]) for k, v in values.items()},
            attention=attention[i].astype(np.float32),
        )
        part.rows.append(row)
        part.items.append([frame.key, frame.hash, "scored", frame.etag, frame.nbytes])
        part.embeddings.append(out["embedding"][i].astype(np.float32))
        summary.scored += 1
        summary.classes[row.predicted] += 1
        summary.confidence_histogram[min(9, int(confidence * 10))] += 1
        if summary.off_object_threshold is not None:
            summary.off_object += int(row.signals["attention_focus"] > summary.off_object_threshold)
        if summary.top_size:
            entry = (priority(row.signals), frame.key, attention[i].copy())
            if len(summary.top) < summary.top_size:
                heapq.heappush(summary.top, entry)
            elif entry[0] > summary.top[0][0]:
                heapq.heapreplace(summary.top, entry)
    for frame in frames:
        frame.tensor = None  # the window holds keys, not pixels, once inferred


def _commit(store: Store, part: _Part, version: str, part_id: str, summary: RunSummary) -> None:
    """Write the part's rows (:func:`attnloop.scores.write_part`) and quarantine records, then its ledger entry."""
    files = scores.write_part(store, part.rows, part.embeddings, version=version, part=part_id)
    if part.quarantined:
        key = layout.quarantine_key(version, part_id)
        store.put(key, "".join(json.dumps(q) + "\n" for q in part.quarantined).encode(), content_type="application/x-ndjson")
        files.append(key)
    _write_ledger(store, version, part_id, part.items, files)
    summary.parts.append(part_id)


# --- monitoring ------------------------------------------------------------------------------


def report_markdown(summary: RunSummary) -> str:
    d = summary.to_dict()
    lines = [
        f"# Scoring run {d['run_id']} — model version {d['model_version']}",
        "",
        f"- frames scored: {d['scored']}; already scored before: {d['already_done']}; quarantined: {d['quarantined']}",
    ]
    if d["changed"]:
        lines.append(f"- scored again because their content changed under the same key: {d['changed']}")
    if d["quarantined_by_reason"]:
        lines.append("- quarantined by reason: " + ", ".join(f"{k} {v}" for k, v in sorted(d["quarantined_by_reason"].items())))
    if d["off_object_share"] is not None:
        lines.append(
            f"- attention fixed on one spot (attention focus above {d['off_object_threshold']:.3f}, its "
            f"{100 * OFF_OBJECT_QUANTILE:.0f}th percentile on the version's drift reference): {d['off_object_share']:.1%} of frames "
            f"(the reference: {1 - OFF_OBJECT_QUANTILE:.0%})"
        )
    elif d["scored"]:
        lines.append(
            f"- attention fixed on one spot: not judged — model version {d['model_version']} has no drift reference with an "
            "off-object threshold yet (promotion writes one; `attnloop monitor reference` writes it by hand)"
        )
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
    json_key, md_key = (layout.report_key(summary.model_version, summary.run_id, suffix) for suffix in (".json", ".md"))
    store.put(json_key, json.dumps(summary.to_dict(), indent=2).encode(), content_type="application/json")
    store.put(md_key, report_markdown(summary).encode(), content_type="text/markdown")
    return json_key, md_key
