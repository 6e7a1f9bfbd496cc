"""The annotation format: the human input training reads, one JSON object per annotated image.

``{"image": "<path as in the manifest, or an object key>", "boxes": [[x0, y0, x1, y1], ...],
"label": "<corrected class>" (optional), "shortcut_boxes": [[x0, y0, x1, y1], ...] (optional:
what the model wrongly used), "attention_map": "<path to an edited map>" (optional)}``; pixel
boxes, x1/y1 exclusive. Sets written before shortcut marks existed read with none.

:func:`parse_annotation` reads one such object wherever one is read: a JSONL a person wrote
(:func:`read_annotations`) and the entries of a harvested annotation set
(:mod:`attnloop.annotation_set`, which adds provenance fields this format ignores).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from attnloop.datasets.manifest import Record, _boxes


@dataclass(frozen=True)
class Annotation:
    boxes: list[list[float]] = field(default_factory=list)  # the evidence
    label: str | None = None
    attention_map: str | None = None
    shortcut_boxes: list[list[float]] = field(default_factory=list)  # what the model wrongly used (shortcut marks)


def parse_annotation(data: dict, where: str) -> tuple[str, Annotation]:
    """One annotation object: its image and what training reads of it."""
    if not isinstance(data, dict) or "image" not in data:
        raise ValueError(f"{where}: an annotation needs an 'image'")
    annotation = Annotation(
        _boxes(data.get("boxes", []), where), data.get("label"), data.get("attention_map"), _boxes(data.get("shortcut_boxes") or [], where)
    )
    if not annotation.boxes and not annotation.shortcut_boxes and annotation.attention_map is None and not annotation.label:
        raise ValueError(f"{where}: an annotation needs boxes, shortcut_boxes, an attention_map or a label (a class correction)")
    return data["image"], annotation


def read_annotations(path: str | Path) -> dict[str, Annotation]:
    path = Path(path)
    out: dict[str, Annotation] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            image, annotation = parse_annotation(json.loads(line), f"{path}:{number}")
            out[image] = annotation
    return out


def from_manifest_boxes(records: list[Record]) -> dict[str, Annotation]:
    """Every record's ground-truth boxes as human input (the 'boxes on every image' experiment)."""
    return {r.image: Annotation(list(r.boxes)) for r in records if r.boxes}
