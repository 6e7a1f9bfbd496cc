"""Annotation sets: people's corrections, versioned in the store. The one writer and reader.

A version is two immutable objects (keys: :mod:`attnloop.layout`): ``annotations/v000N.jsonl``,
the whole set as of that version, one :class:`Entry` per line in the annotation format training
reads (:mod:`attnloop.datasets.annotations`) plus provenance fields, and ``annotations/v000N.json``,
its metadata: the JSONL's sha256, the parent version, the count and what the writer records
(the harvest's watermark, its problems). The metadata is written last, so a version exists only
once both are complete.

A published version is never rewritten: both objects are created with the store's atomic create
(:func:`attnloop.lease.create`), so of two writers of one version exactly one wins and the other
gets :class:`VersionTaken` (and builds the next version on the set as it now is). A writer that
dies between the two leaves a JSONL without metadata: the version never counts as written, and
once it is ``ORPHAN_AGE`` old :func:`next_version` passes over its number.

Reading checks the JSONL against the recorded hash, so a set altered after it was written is
refused (:class:`SetAltered`, which says how to recover), never trained on. Sets written before
this module read the same way.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from attnloop import layout
from attnloop.datasets.annotations import Annotation, parse_annotation
from attnloop.storage import Store


@dataclass(frozen=True)
class Entry:
    """One annotated image: the correction (boxes, class) and where it came from."""

    image: str  # the frame's object key
    boxes: list[list[float]] = field(default_factory=list)  # evidence boxes in pixels, x1/y1 exclusive
    label: str | None = None  # the class the annotator gave (None: no class, not trained on)
    shortcut_boxes: list[list[float]] = field(default_factory=list)  # what the model wrongly used (shortcut marks)
    hash: str | None = None  # the frame's content hash when it was pushed
    predicted: str | None = None  # the model's class on the task
    flags: list[str] = field(default_factory=list)  # e.g. "no object": the class alone, nothing to box
    comment: str | None = None
    task: int | None = None  # the Label Studio task, annotation and its last edit
    annotation: int | None = None
    updated_at: str | None = None
    project: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> "Entry":
        image, annotation = parse_annotation(dict(data), where)
        parsed = ("image", "boxes", "label", "shortcut_boxes")
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data and name not in parsed}
        return cls(image=image, boxes=annotation.boxes, label=annotation.label, shortcut_boxes=annotation.shortcut_boxes, **known)

    def training(self) -> Annotation:
        """What training reads of it."""
        return Annotation([list(b) for b in self.boxes], label=self.label, shortcut_boxes=[list(b) for b in self.shortcut_boxes])


class VersionTaken(ValueError):
    """Another writer published this version first; it stays as that writer left it."""

    def __init__(self, message: str, *, version: int) -> None:
        super().__init__(message)
        self.version = version


class SetAltered(ValueError):
    """A version's JSONL no longer matches the hash its metadata records (or the metadata is unreadable)."""

    def __init__(self, message: str, *, version: int, key: str) -> None:
        super().__init__(message)
        self.version, self.key = version, key


REBUILD = "attnloop ls harvest --rebuild"  # the recovery from an altered set
ORPHAN_AGE = timedelta(minutes=5)  # a JSONL this long without its metadata was left by a killed writer (the gap is milliseconds)


@dataclass(frozen=True)
class AnnotationSet:
    version: int
    key: str  # the JSONL object
    entries: dict[str, Entry]  # by image key, in the set's order
    meta: dict


def latest_version(store: Store, prefix: str = layout.ANNOTATIONS) -> int | None:
    """The newest complete version (its metadata exists), or None."""
    prefix = layout.annotation_prefix(prefix)
    versions = [v for info in store.list(prefix) if (v := layout.annotation_version_of(info.key, prefix)) is not None]
    return max(versions) if versions else None


def next_version(store: Store, prefix: str = layout.ANNOTATIONS, *, after: int | None) -> int:
    """The number of the version that follows ``after`` (the latest complete version the writer
    built on): ``after + 1``, so that a version published meanwhile makes the write fail instead of
    being left out of the next one. A JSONL without metadata older than ``ORPHAN_AGE`` is a killed
    writer's and keeps its number: the next free one is taken instead."""
    prefix = layout.annotation_prefix(prefix)
    complete, partial = set(), {}
    for info in store.list(prefix):
        meta = layout.annotation_version_of(info.key, prefix)
        body = layout.annotation_set_version(info.key)
        if meta is not None:
            complete.add(meta)
        elif body is not None and body[0] == prefix:
            partial[body[1]] = info.modified
    version = (after or 0) + 1
    cutoff = datetime.now(timezone.utc) - ORPHAN_AGE
    while version not in complete and version in partial and (partial[version] is None or partial[version] < cutoff):
        version += 1
    return version


def _altered(store: Store, version: int, key: str, meta_key: str, what: str) -> SetAltered:
    return SetAltered(
        f"annotation set v{version} in {store.uri}: {what}; the set was altered after it was written, so training and harvest "
        f"refuse it. Restore {key} and {meta_key} from a backup, or run `{REBUILD}`, which reads every completed annotation "
        f"from Label Studio again and writes the next version (its metadata names v{version} as the altered parent)",
        version=version, key=key,
    )


def read(store: Store, version: int, prefix: str = layout.ANNOTATIONS) -> AnnotationSet:
    """A version, checked against its recorded hash (:class:`SetAltered` if it no longer matches)."""
    meta_key = layout.annotation_meta_key(version, prefix)
    key = layout.annotation_set_key(version, prefix)
    try:
        raw = store.get(meta_key)
    except KeyError:
        raise LookupError(
            f"annotation set version {version} has no metadata {meta_key} in {store.uri}: it was never completed "
            "(or was not written by attnloop); harvest again"
        ) from None
    try:
        meta = json.loads(raw)
        if not isinstance(meta, dict) or not isinstance(meta.get("jsonl"), str) or not isinstance(meta.get("sha256"), str):
            raise ValueError("not an object with 'jsonl' and 'sha256'")
    except ValueError as err:
        raise _altered(store, version, key, meta_key, f"its metadata {meta_key} is unreadable ({err})") from None
    try:
        body = store.get(meta["jsonl"])
    except KeyError:
        raise _altered(store, version, meta["jsonl"], meta_key, f"{meta['jsonl']}, which {meta_key} names, is missing") from None
    digest = hashlib.sha256(body).hexdigest()
    if digest != meta["sha256"]:
        raise _altered(store, version, meta["jsonl"], meta_key, f"{meta['jsonl']} has sha256 {digest}, but {meta_key} records {meta['sha256']}")
    entries: dict[str, Entry] = {}
    for number, line in enumerate(body.decode().splitlines(), start=1):
        if line.strip():
            entry = Entry.from_json(json.loads(line), f"{meta['jsonl']}:{number}")
            entries[entry.image] = entry
    return AnnotationSet(version, meta["jsonl"], entries, meta)


def read_key(store: Store, key: str) -> AnnotationSet:
    """The version whose JSONL is ``key`` (``annotations/v0003.jsonl``)."""
    parsed = layout.annotation_set_version(key)
    if parsed is None:
        raise ValueError(f"{key!r} is not an annotation set's key; expected <prefix>/v<NNNN>.jsonl, e.g. annotations/v0003.jsonl")
    prefix, version = parsed
    return read(store, version, prefix)


def latest(store: Store, prefix: str = layout.ANNOTATIONS) -> AnnotationSet | None:
    """The newest complete version, checked, or None when there is none."""
    version = latest_version(store, prefix)
    return None if version is None else read(store, version, prefix)


def write(
    store: Store, entries: Mapping[str, Entry], *, version: int, parent: int | None, prefix: str = layout.ANNOTATIONS, **meta: Any
) -> AnnotationSet:
    """Publish ``entries`` as ``version`` (the JSONL, then its metadata with ``meta``); returns it.

    Both objects are created, never overwritten: :class:`VersionTaken` when the version (or its
    JSONL, from a writer in flight or one that died) already exists; nothing is changed then."""
    from attnloop.lease import create

    key = layout.annotation_set_key(version, prefix)
    meta_key = layout.annotation_meta_key(version, prefix)
    ordered = {image: entries[image] for image in sorted(entries)}
    body = "".join(entry.to_json() + "\n" for entry in ordered.values()).encode()
    if store.exists(meta_key) or not _created(store, key, body, create, content_type="application/x-ndjson"):
        raise VersionTaken(
            f"annotation set v{version} already exists in {store.uri} ({key}), or another writer is publishing it; a published "
            "version is never rewritten: build the next version on the set as it now is",
            version=version,
        )
    record = {
        "version": version,
        "parent": parent,
        "jsonl": key,
        "sha256": hashlib.sha256(body).hexdigest(),
        "count": len(ordered),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **meta,
    }
    if not _created(store, meta_key, json.dumps(record, indent=1).encode(), create, content_type="application/json"):
        raise VersionTaken(
            f"annotation set v{version} was published in {store.uri} by another writer at the same moment ({meta_key}); "
            "nothing was overwritten: build the next version on the set as it now is",
            version=version,
        )
    return AnnotationSet(version, key, ordered, record)


def _created(store: Store, key: str, data: bytes, create, *, content_type: str) -> bool:
    """Create ``key``; an object already there with these very bytes counts as created (a retried
    request that had landed)."""
    if create(store, key, data, content_type=content_type):
        return True
    try:
        return store.get(key) == data
    except KeyError:
        return False
