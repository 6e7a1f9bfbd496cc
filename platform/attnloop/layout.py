"""The object store's layout: every prefix attnloop reads or writes, and the keys under them.

One store holds the whole loop's state (docs/architecture.md). Nothing else spells a prefix;
every module builds and parses keys here:

============================================================  ==========================================
``frames/<source>/<yyyy-mm-dd>/<id>.<ext>``                    camera frames (:mod:`attnloop.stream`)
``scores/source=<s>/date=<d>/part-<version>-<part>.parquet``    scoring rows (:mod:`attnloop.scores`)
``embeddings/<version>/<part>.npy``                            the rows' embeddings, by row number
``ledger/<version>/<part>.json``                               what each part covered (:mod:`attnloop.scoring`)
``quarantine/<version>/<part>.jsonl``                          frames that could not be scored, with why
``reports/<version>/<run>.json`` · ``.md`` · ``-attention.png``  a scoring run's summary
``overlays/<version>/<frame key without extension>.png``       attention overlays for annotators
``annotations/v<NNNN>.jsonl`` · ``.json``                      annotation sets (:mod:`attnloop.annotation_set`)
``leases/<name>/<generation>.json``                            leases (:mod:`attnloop.lease`)
``references/<version>/rows.parquet`` · ``embeddings.npy``      a model's drift reference (:mod:`attnloop.monitoring`)
``monitoring/<yyyy-mm-dd>/<run>.json``                         a monitor run's figures and alerts
============================================================  ==========================================

``<part>`` is ``<run id>-<sequence>``; ``<version>`` a model version made safe for a path
(:func:`safe_version`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

FRAMES = "frames/"
SCORES = "scores/"
EMBEDDINGS = "embeddings/"
LEDGER = "ledger/"
QUARANTINE = "quarantine/"
REPORTS = "reports/"
OVERLAYS = "overlays/"
ANNOTATIONS = "annotations/"
LEASES = "leases/"
REFERENCES = "references/"
MONITORING = "monitoring/"

EXTENSIONS = ("png", "jpg", "jpeg", "tif", "tiff", "bmp", "webp")
CONTENT_TYPES = {
    "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "tif": "image/tiff", "tiff": "image/tiff", "bmp": "image/bmp",
    "webp": "image/webp",
}
_FRAME = re.compile(r"^frames/(?!\.\.?/)(?P<source>[A-Za-z0-9_.-]+)/(?P<date>\d{4}-\d{2}-\d{2})/(?P<id>[^/]+)\.(?P<ext>[A-Za-z0-9]+)$")
_ANNOTATION_META = re.compile(r"v(\d{4,})\.json")


# --- frames -------------------------------------------------------------------------------------


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
    match = _FRAME.match(key)
    return FrameKey(**match.groupdict()) if match else None


def frames_prefix(source: str | None = None) -> str:
    """Where a source's frames are listed (every source's without one). ``source`` may narrow to a day: ``line-1/2026-11-26``."""
    return f"{FRAMES}{source}/" if source else FRAMES


def looks_like_frame(key: str) -> bool:
    """Whether a key claims to be a frame (an image extension), whatever its layout."""
    return key.rsplit(".", 1)[-1].lower() in EXTENSIONS


# --- scoring --------------------------------------------------------------------------------------


def safe_version(version: str) -> str:
    """A model version as a path segment."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(version))


def score_part_key(version: str, part: str, *, source: str, day: str) -> str:
    return f"{SCORES}source={source}/date={day}/part-{safe_version(version)}-{part}.parquet"


_SCORE_FILE = re.compile(r"^scores/source=(?P<source>[^/]+)/date=(?P<date>\d{4}-\d{2}-\d{2})/part-[^/]+\.parquet$")


def score_file_of(key: str) -> tuple[str, str] | None:
    """``(source, day)`` of a scores file's key (None: not a scores file): which files a query over
    some lines and days reads, decided from the listing alone."""
    match = _SCORE_FILE.match(key)
    return (match["source"], match["date"]) if match else None


def score_part_of(key: str, version: str) -> str | None:
    """The part id of a scores file of ``version`` (None: another version's, or not a scores file)."""
    match = re.match(rf"part-{re.escape(safe_version(version))}-(?P<id>[0-9a-f]+-\d+)\.parquet$", key.rsplit("/", 1)[-1])
    return match["id"] if match else None


def embeddings_key(version: str, part: str) -> str:
    return f"{EMBEDDINGS}{safe_version(version)}/{part}.npy"


def ledger_prefix(version: str) -> str:
    return f"{LEDGER}{safe_version(version)}/"


def ledger_key(version: str, name: str) -> str:
    return f"{ledger_prefix(version)}{name}.json"


def quarantine_prefix(version: str) -> str:
    return f"{QUARANTINE}{safe_version(version)}/"


def quarantine_key(version: str, part: str) -> str:
    return f"{quarantine_prefix(version)}{part}.jsonl"


def quarantine_part_of(key: str) -> str:
    return key.rsplit("/", 1)[-1].removesuffix(".jsonl")


def report_key(version: str, run: str, suffix: str) -> str:
    """A scoring run's report file: ``suffix`` ``.json``, ``.md`` or ``-attention.png``."""
    return f"{REPORTS}{safe_version(version)}/{run}{suffix}"


def overlay_prefix(version: str) -> str:
    return f"{OVERLAYS}{safe_version(version)}/"


def overlay_key(version: str, key: str) -> str:
    """The attention overlay of a frame, as scored by ``version``."""
    return f"{overlay_prefix(version)}{key.rsplit('.', 1)[0]}.png"


# --- annotation sets ------------------------------------------------------------------------------


def annotation_prefix(prefix: str = ANNOTATIONS) -> str:
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def annotation_set_key(version: int, prefix: str = ANNOTATIONS) -> str:
    return f"{annotation_prefix(prefix)}v{version:04d}.jsonl"


def annotation_meta_key(version: int, prefix: str = ANNOTATIONS) -> str:
    return f"{annotation_prefix(prefix)}v{version:04d}.json"


def annotation_version_of(key: str, prefix: str = ANNOTATIONS) -> int | None:
    """The version a set's metadata key names (``annotations/v0003.json`` → 3), or None."""
    prefix = annotation_prefix(prefix)
    match = _ANNOTATION_META.fullmatch(key[len(prefix) :]) if key.startswith(prefix) else None
    return int(match[1]) if match else None


def annotation_set_version(key: str) -> tuple[str, int] | None:
    """The prefix and version of a set's JSONL key (``annotations/v0003.jsonl`` → ``("annotations/", 3)``), or None."""
    match = re.fullmatch(r"(?P<prefix>(?:.*/)?)v(?P<version>\d{4,})\.jsonl", key)
    return (match["prefix"], int(match["version"])) if match else None


# --- leases ---------------------------------------------------------------------------------------


def lease_prefix(name: str) -> str:
    return f"{LEASES}{name}/"


def lease_key(name: str, generation: int) -> str:
    return f"{lease_prefix(name)}{generation:012d}.json"


LEASE_PROBES = f"{LEASES}.probe/"


def reference_key(version: str, name: str) -> str:
    """A model version's drift reference: ``rows.parquet`` (scoring rows of its holdout),
    ``embeddings.npy`` and ``reference.json`` (what it was made from)."""
    return f"{REFERENCES}{safe_version(version)}/{name}"


def monitoring_key(day: str, run: str) -> str:
    return f"{MONITORING}{day}/{run}.json"
