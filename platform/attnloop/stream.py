"""Image streams in the object store: the frame layout, a user's own files into it, and a simulator that feeds it.

Frames live at ``frames/<source>/<yyyy-mm-dd>/<id>.<ext>`` (:mod:`attnloop.layout`); a source is a camera, a line or a
microscope. Another client may write keys no frame may have (``..`` segments, a deeper layout):
:func:`list_frames` yields them with the problem, so scoring quarantines them rather than skip or
fail on them. :func:`add` puts a person's own image files there (a camera's export folder, an
archive), each under a key made from its name and content, so adding the same files again adds
nothing and two different files of the same name are both kept. The simulator writes a dataset family's stream split there (the split where the
training shortcut is broken and, for ``mill``, the line drifts), for demos and tests.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Iterator

import numpy as np

from tqdm.auto import tqdm

from attnloop.layout import CONTENT_TYPES, EXTENSIONS, FrameKey, frame_key, frames_prefix, looks_like_frame, parse_frame_key
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


_SOURCE = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass
class Added:
    """What :func:`add` did: the keys written, those already in the store, the files left out and why."""

    written: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)


def check_source(source: str) -> str:
    """``source`` if it can name frames (letters, digits, '_', '-', '.'), else ValueError saying so."""
    if not _SOURCE.match(source) or source in (".", ".."):
        raise ValueError(f"source {source!r} names a camera, line or microscope with letters, digits, '_', '-' and '.' only (e.g. line-1)")
    return source


def image_files(paths: list[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """The files named and those under the folders named (recursively, in name order), and what
    was left out: names that do not exist, and files without an image extension."""
    files, skipped = [], []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        elif path.is_file():
            found = [path]
        else:
            skipped.append((str(path), "no such file or folder"))
            continue
        for file in found:
            if file.suffix.lower().lstrip(".") in EXTENSIONS:
                files.append(file)
            else:
                skipped.append((str(file), f"not an image file (extensions read: {', '.join(EXTENSIONS)})"))
    return files, skipped


def frame_id(file: Path, data: bytes) -> str:
    """A frame id from the file's name and content: the same file always gets the same id, two
    different files of the same name never do."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", file.stem).strip("-.") or "frame"
    return f"{stem[:80]}-{hashlib.sha256(data).hexdigest()[:10]}"


def add(store: Store, paths: list[str | Path], *, source: str, day: date | None = None, progress: bool = True) -> Added:
    """Put image files (and the images under folders) into the store as frames of ``source`` on
    ``day`` (default: today, UTC), keyed by :func:`frame_id`. A file already there is not written
    again; a file that is not an image attnloop reads is left out with the reason, never half-added."""
    from attnloop.imaging import read_header

    check_source(source)
    day = day or datetime.now(timezone.utc).date()
    files, skipped = image_files(paths)
    if not files and not skipped:
        raise ValueError(f"no files under {', '.join(map(str, paths))}")
    result = Added(skipped=skipped)
    for file in tqdm(files, desc="frames", unit="file", disable=not progress):
        try:
            data = file.read_bytes()
        except OSError as err:
            result.skipped.append((str(file), f"unreadable: {err.strerror or err}"))
            continue
        if read_header(data, max_pages=1) is None:
            result.skipped.append((str(file), "not a PNG, JPEG, TIFF, BMP or WebP image (its header cannot be read)"))
            continue
        ext = file.suffix.lower().lstrip(".")
        key = frame_key(source, day, frame_id(file, data), ext)
        if store.exists(key):
            result.present.append(key)
            continue
        store.put(key, data, content_type=CONTENT_TYPES.get(ext, "application/octet-stream"))
        result.written.append(key)
    return result


@dataclass(frozen=True)
class Shift:
    """A change of a line, for drift drills: ``exposure`` multiplies the pixel values (a lamp or
    gain change), ``blur`` is a Gaussian's sigma in pixels (a camera out of focus), ``classes`` the
    relative weight of each class in the line's output (a new defect mix; None: as the family)."""

    exposure: float = 1.0
    blur: float = 0.0
    classes: dict[str, float] | None = None

    def __post_init__(self) -> None:
        if self.exposure <= 0 or self.blur < 0:
            raise ValueError(f"exposure must be positive and blur non-negative, got {self.exposure} and {self.blur}")
        if self.classes is not None and (not self.classes or min(self.classes.values()) < 0 or max(self.classes.values()) <= 0):
            raise ValueError(f"class weights must be non-negative with one positive, got {self.classes}")

    @property
    def changes_pixels(self) -> bool:
        return self.exposure != 1.0 or self.blur > 0

    def apply(self, image: np.ndarray) -> np.ndarray:
        import cv2

        out = image.astype(np.float32) * self.exposure
        if self.blur > 0:
            out = cv2.GaussianBlur(out, (0, 0), self.blur)
            out = out.reshape(image.shape)
        return np.clip(out, 0, 255).astype(np.uint8)


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
    shift: Shift | None = None,
) -> list[str]:
    """Write ``count`` frames of ``family``'s stream split; ``rate`` frames per second (None: as fast as possible).

    The source is ``source``, else the family's name; frame ids start with the time of day, so a
    second run adds frames. Returns the keys written.
    """
    stamp = datetime.now(timezone.utc).strftime("%H%M%S")
    return list(write_stream(store, family, count=count, rate=rate, seed=seed, source=source, day=day, prefix=f"{stamp}-", progress=progress, shift=shift))


def _shifted(spec, shift: Shift, *, seed: int, count: int) -> Iterator[tuple["Record", bytes]]:
    """``count`` stream frames as ``shift`` changes them: classes kept with their weight's chance
    (drawn further along the stream), pixels changed."""
    from attnloop.datasets import stream_frames
    from attnloop.datasets._family import encode
    from attnloop.imaging import decode

    weights = None
    if shift.classes is not None:
        unknown = set(shift.classes) - set(spec.classes)
        if unknown:
            raise ValueError(f"unknown classes {sorted(unknown)} for {spec.name}; its classes: {', '.join(spec.classes)}")
        top = max(shift.classes.values())
        weights = {c: shift.classes.get(c, 0.0) / top for c in spec.classes}
    rng = np.random.default_rng([seed, 7])
    made = 0
    for record, data in stream_frames(spec, seed=seed, count=count * 50):
        if weights is not None and rng.random() >= weights[record.label]:
            continue
        if shift.changes_pixels:
            image = decode(data, name=record.image)
            data = encode(shift.apply(image), spec.extension)
        yield record, data
        made += 1
        if made == count:
            return
    raise ValueError(f"the class weights {shift.classes} keep too few frames of {spec.name}'s stream")


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
    shift: Shift | None = None,
) -> dict[str, Record]:
    """Write ``count`` frames of ``family``'s stream split (ids ``<prefix>s<seed>-<n>``), changed by
    ``shift`` where given, and return their ground truth by object key (each record's ``image`` is
    the key): what a simulated annotator knows."""
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
    frames = stream_frames(spec, seed=seed, count=count) if shift is None else _shifted(spec, shift, seed=seed, count=count)
    for i, (record, data) in enumerate(tqdm(frames, total=count, desc="frames", disable=not progress)):
        key = frame_key(source or family, day, f"{prefix}s{seed}-{i:06d}", spec.extension)
        store.put(key, data, content_type=CONTENT_TYPES.get(spec.extension, "application/octet-stream"))
        truth[key] = Record(key, record.split, record.label, record.boxes, record.confounder_boxes)
        if rate is not None:
            time.sleep(max(0.0, start + (i + 1) / rate - time.monotonic()))
    return truth
