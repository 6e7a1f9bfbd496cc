"""Image streams in the object store: the frame layout and a simulator that feeds it.

Frames live at ``frames/<source>/<yyyy-mm-dd>/<id>.<ext>``; a source is a camera, a line or a
microscope. Another client may write keys no frame may have (``..`` segments, a deeper layout):
:func:`list_frames` yields them with the problem, so scoring quarantines them rather than skip or
fail on them. The simulator writes a dataset family's stream split there (the split where the
training shortcut is broken and, for ``mill``, the line drifts), for demos and tests.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Iterator

from tqdm.auto import tqdm

from attnloop.storage import ObjectInfo, Store

FRAMES = "frames/"
EXTENSIONS = ("png", "jpg", "jpeg", "tif", "tiff", "bmp", "webp")
_KEY = re.compile(r"^frames/(?!\.\.?/)(?P<source>[A-Za-z0-9_.-]+)/(?P<date>\d{4}-\d{2}-\d{2})/(?P<id>[^/]+)\.(?P<ext>[A-Za-z0-9]+)$")
CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "tif": "image/tiff", "tiff": "image/tiff", "bmp": "image/bmp", "webp": "image/webp"}


@dataclass(frozen=True)
class FrameKey:
    source: str
    date: str  # yyyy-mm-dd
    id: str
    ext: str

    @property
    def key(self) -> str:
        return f"{FRAMES}{self.source}/{self.date}/{self.id}.{self.ext}"


def frame_key(source: str, day: date | str, frame_id: str, ext: str = "png") -> str:
    key = FrameKey(source, day if isinstance(day, str) else day.isoformat(), frame_id, ext).key
    if parse_frame_key(key) is None:
        raise ValueError(f"{key!r} is not a valid frame key: source and id use letters, digits, '_', '-', '.'")
    return key


def parse_frame_key(key: str) -> FrameKey | None:
    """The parts of a frame key, or None for anything that is not a frame (other files are ignored)."""
    match = _KEY.match(key)
    return FrameKey(**match.groupdict()) if match else None


@dataclass(frozen=True)
class Listed:
    """An object under ``frames/`` as listed: a frame (``parsed``), or a key no frame may have (``problem``)."""

    info: ObjectInfo
    parsed: FrameKey | None
    problem: str | None = None


def list_frames(store: Store, *, source: str | None = None, start_after: str | None = None) -> Iterator[Listed]:
    """Frames in key order with their listing (size, ETag), lazily, so a backlog of any size streams
    through; also every key that claims to be a frame (an image extension) but breaks the layout."""
    prefix = f"{FRAMES}{source}/" if source else FRAMES
    for info in store.list(prefix, start_after=start_after):
        parsed = parse_frame_key(info.key)
        if parsed is not None:
            yield Listed(info, parsed)
        elif info.key.rsplit(".", 1)[-1].lower() in EXTENSIONS:
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

    The source is ``source``, else the family's name. Returns the keys written.
    """
    from attnloop.datasets import FAMILIES, stream_frames

    if family not in FAMILIES:
        raise ValueError(f"unknown dataset family {family!r}; valid names: {', '.join(FAMILIES)}")
    if count < 1:
        raise ValueError(f"count must be positive, got {count}")
    if rate is not None and rate <= 0:
        raise ValueError(f"rate must be positive frames per second, got {rate}")
    spec = FAMILIES[family]
    day = day or datetime.now(timezone.utc).date()
    keys = []
    start = time.monotonic()
    stamp = datetime.now(timezone.utc).strftime("%H%M%S")
    for i, (record, data) in enumerate(tqdm(stream_frames(spec, seed=seed, count=count), total=count, desc="frames", disable=not progress)):
        key = frame_key(source or family, day, f"{stamp}-s{seed}-{i:06d}", spec.extension)
        store.put(key, data, content_type=CONTENT_TYPES.get(spec.extension, "application/octet-stream"))
        keys.append(key)
        if rate is not None:
            time.sleep(max(0.0, start + (i + 1) / rate - time.monotonic()))
    return keys
