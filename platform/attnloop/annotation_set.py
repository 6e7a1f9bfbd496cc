"""Annotation sets: people's corrections, versioned in the store. The one writer and reader.

A version is two immutable objects (keys: :mod:`attnloop.layout`): ``annotations/v000N.jsonl``,
the whole set as of that version, one :class:`Entry` per line in the annotation format training
reads (:mod:`attnloop.datasets.annotations`) plus provenance fields, and ``annotations/v000N.json``,
its metadata: the JSONL's sha256, the parent version, the count and what the writer records
(the harvest's watermark, its problems). The metadata is written last, so a version exists only
once both are complete; a writer that dies in between leaves a JSONL the next one overwrites.
Reading checks the JSONL against the recorded hash, so a set altered after it was written is
refused, never trained on. Sets written before this module read the same way.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
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


def read(store: Store, version: int, prefix: str = layout.ANNOTATIONS) -> AnnotationSet:
    """A version, checked against its recorded hash."""
    meta_key = layout.annotation_meta_key(version, prefix)
    try:
        meta = json.loads(store.get(meta_key))
    except KeyError:
        raise LookupError(
            f"annotation set version {version} has no metadata {meta_key} in {store.uri}: it was never completed "
            "(or was not written by attnloop); harvest again"
        ) from None
    body = store.get(meta["jsonl"])
    digest = hashlib.sha256(body).hexdigest()
    if digest != meta["sha256"]:
        raise ValueError(f"{meta['jsonl']} has sha256 {digest}, but {meta_key} records {meta['sha256']}; the set was altered")
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
    """Write ``entries`` as ``version`` (the JSONL, then its metadata with ``meta``); returns it."""
    key = layout.annotation_set_key(version, prefix)
    ordered = {image: entries[image] for image in sorted(entries)}
    body = "".join(entry.to_json() + "\n" for entry in ordered.values()).encode()
    store.put(key, body, content_type="application/x-ndjson")
    record = {
        "version": version,
        "parent": parent,
        "jsonl": key,
        "sha256": hashlib.sha256(body).hexdigest(),
        "count": len(ordered),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **meta,
    }
    store.put(layout.annotation_meta_key(version, prefix), json.dumps(record, indent=1).encode(), content_type="application/json")
    return AnnotationSet(version, key, ordered, record)
