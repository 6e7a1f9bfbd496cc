"""The manifest format (docs/architecture.md): one JSON object per image in ``DIR/manifest.jsonl``,
and beside it ``DIR/dataset.json``, where the folder came from and whose its boxes are:
``{"origin": "generated", "boxes": "truth", ...}`` for a benchmark family (every image's true
evidence, for experiments) or ``{"origin": "imported", "boxes": "people", ...}`` for a folder
``attnloop data import`` described with a person's boxes (what ``attnloop train`` guides with by
default). A folder without it says nothing about its boxes."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

SPLITS = ("train", "val", "test", "stream")
MANIFEST = "manifest.jsonl"
ORIGIN = "dataset.json"
BOX_ORIGINS = ("people", "truth", "none")  # a person's boxes, a generator's true boxes, no boxes


@dataclass(frozen=True)
class Record:
    image: str  # path relative to the manifest's folder
    split: str
    label: str
    boxes: list[list[float]] = field(default_factory=list)
    confounder_boxes: list[list[float]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


def _boxes(value: object, where: str) -> list[list[float]]:
    if not isinstance(value, list) or not all(isinstance(b, list) and len(b) == 4 for b in value):
        raise ValueError(f"{where}: boxes must be a list of [x0, y0, x1, y1], got {value!r}")
    for box in value:
        if not (box[2] > box[0] and box[3] > box[1]):
            raise ValueError(f"{where}: box {box} has no area (x1/y1 must exceed x0/y0)")
    return [[float(v) for v in box] for box in value]


def parse_record(data: dict, where: str = "record") -> Record:
    missing = [k for k in ("image", "split", "label") if k not in data]
    if missing:
        raise ValueError(f"{where}: missing {', '.join(missing)}; a record needs image, split and label")
    if data["split"] not in SPLITS:
        raise ValueError(f"{where}: split {data['split']!r} is not one of {', '.join(SPLITS)}")
    return Record(
        image=str(data["image"]),
        split=data["split"],
        label=str(data["label"]),
        boxes=_boxes(data.get("boxes", []), where),
        confounder_boxes=_boxes(data.get("confounder_boxes", []), where),
    )


def read_manifest(root: str | Path) -> list[Record]:
    path = Path(root) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"no {MANIFEST} in {root}; make one with `attnloop data make FAMILY --out {root}`")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                data = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not JSON ({err.msg})") from None
            records.append(parse_record(data, f"{path}:{number}"))
    if not records:
        raise ValueError(f"{path} lists no images")
    return records


def write_manifest(root: str | Path, records: Iterable[Record]) -> Path:
    path = Path(root) / MANIFEST
    path.write_text("".join(r.to_json() + "\n" for r in records))
    return path


def write_origin(root: str | Path, *, origin: str, boxes: str, **details: object) -> Path:
    """Record where the folder came from (``generated`` / ``imported``) and whose its boxes are (:data:`BOX_ORIGINS`)."""
    if boxes not in BOX_ORIGINS:
        raise ValueError(f"unknown box origin {boxes!r}; valid names: {', '.join(BOX_ORIGINS)}")
    path = Path(root) / ORIGIN
    path.write_text(json.dumps({"origin": origin, "boxes": boxes, **details}, indent=1) + "\n")
    return path


def read_origin(root: str | Path) -> dict:
    """The folder's :data:`ORIGIN` record, or an empty one when it has none (or an unreadable one)."""
    try:
        data = json.loads((Path(root) / ORIGIN).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def class_names(records: Iterable[Record]) -> list[str]:
    return sorted({r.label for r in records})


def by_split(records: Iterable[Record]) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = {}
    for record in records:
        out.setdefault(record.split, []).append(record)
    return out
