"""Image streams in the object store: the frame layout and a simulator that feeds it.

Frames live at ``frames/<source>/<yyyy-mm-dd>/<id>.<ext>`` (:mod:`attnloop.layout`); a source is a camera, a line or a
microscope. Another client may write keys no frame may have (``..`` segments, a deeper layout):
:func:`list_frames` yields them with the problem, so scoring quarantines them rather than skip or
fail on them. The simulator writes a dataset family's stream split there (the split where the
training shortcut is broken and, for ``mill``, the line drifts), for demos and tests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Iterator

from tqdm.auto import tqdm

from attnloop.layout import CONTENT_TYPES, FrameKey, frame_key, frames_prefix, looks_like_frame, parse_frame_key
from attnloop.storage import ObjectInfo, Store

if TYPE_CHECKING:
    from attnloop.datasets import Record


@dataclass(frozen=True)
class Listed:
    """An object under ``frames/`` as listed: a frame (``parsed``), or a key no frame may have (``problem``)."""

    info: ObjectInfo
    parsed: FrameKey | None
    problem: str | None = None


def list_frames(store: Store, *, source: str | None = None, start_after: str | None = None) -> Iterator[Listed]:
    """Frames in key order with their listing (size, ETag), lazily, so a backlog of any size streams
    through; also every key that claims to be a frame (an image extension) but breaks the layout."""
    for info in store.list(frames_prefix(source), start_after=start_after):
        parsed = parse_frame_key(info.key)
        if parsed is not None:
            yield Listed(info, parsed)
        elif looks_like_frame(info.key):
            yield Listed(info, None, (
                f"object key {info.key!r} is not a frame key (frames/<source>/<yyyy-mm-dd>/<id>.<ext>, no empty, '.' or '..' "
                "parts); it was not read"
            ))


def iter_frames(store: Store, *, source: str | None = None, start_after: str | None = None) -> Iterator[tuple[str, FrameKey]]:
    """Frame keys in key order (lazily); keys that break the layout are left out."""
    for listed in list_frames(store, source=source, start_after=start_after):
        if listed.parsed is not None:
            yield listed.info.key, listed.parsed


def simulate(
    store: Store,
    family: str,
    *,
    count: int,
    rate: float | None = None,
    seed: int = 0,
    source: str | None = None,
    day: date | None = None,
    progress: bool = True,
) -> list[str]:
    """Write ``count`` frames of ``family``'s stream split; ``rate`` frames per second (None: as fast as possible).

    The source is ``source``, else the family's name; frame ids start with the time of day, so a
    second run adds frames. Returns the keys written.
    """
    stamp = datetime.now(timezone.utc).strftime("%H%M%S")
    return list(write_stream(store, family, count=count, rate=rate, seed=seed, source=source, day=day, prefix=f"{stamp}-", progress=progress))


def write_stream(
    store: Store,
    family: str,
    *,
    count: int,
    seed: int = 0,
    source: str | None = None,
    day: date | None = None,
    rate: float | None = None,
    prefix: str = "",
    progress: bool = False,
) -> dict[str, Record]:
    """Write ``count`` frames of ``family``'s stream split (ids ``<prefix>s<seed>-<n>``) and return
    their ground truth by object key (each record's ``image`` is the key): what a simulated
    annotator knows."""
    from attnloop.datasets import FAMILIES, Record, stream_frames

    if family not in FAMILIES:
        raise ValueError(f"unknown dataset family {family!r}; valid names: {', '.join(FAMILIES)}")
    if count < 1:
        raise ValueError(f"count must be positive, got {count}")
    if rate is not None and rate <= 0:
        raise ValueError(f"rate must be positive frames per second, got {rate}")
    spec = FAMILIES[family]
    day = day or datetime.now(timezone.utc).date()
    truth: dict[str, Record] = {}
    start = time.monotonic()
    frames = stream_frames(spec, seed=seed, count=count)
    for i, (record, data) in enumerate(tqdm(frames, total=count, desc="frames", disable=not progress)):
        key = frame_key(source or family, day, f"{prefix}s{seed}-{i:06d}", spec.extension)
        store.put(key, data, content_type=CONTENT_TYPES.get(spec.extension, "application/octet-stream"))
        truth[key] = Record(key, record.split, record.label, record.boxes, record.confounder_boxes)
        if rate is not None:
            time.sleep(max(0.0, start + (i + 1) / rate - time.monotonic()))
    return truth
