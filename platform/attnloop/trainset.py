"""From an annotation-set version in the store to a folder ``train`` can read.

Annotated stream frames live in the object store under their keys; training reads a manifest
folder. :func:`materialize` writes one: the base labeled dataset (replayed, reached through a
symbolic link, nothing copied) plus every annotated frame downloaded as a ``train`` image whose
label is the annotator's class, and returns the annotations keyed the way the manifest names the
images. The folder is a pure function of the set's content, so a retraining can be repeated.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from attnloop.datasets import Annotation, Record, read_manifest, write_manifest
from attnloop.storage import Store

log = logging.getLogger(__name__)

BASE = "base"
FRAMES = "annotated"


def materialize(store: Store, annotation_set: str, *, out: str | Path, base: str | Path | None = None) -> tuple[Path, dict[str, Annotation]]:
    """Write ``out/manifest.jsonl`` (base records under ``base/``, annotated frames under
    ``annotated/``) and return the folder and the annotations for ``train(..., annotations=...)``.

    ``annotation_set`` is the key of a harvested JSONL (``annotations/v000N.jsonl``). Entries
    without a class cannot be trained on and are left out with a warning.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records: list[Record] = []
    annotations: dict[str, Annotation] = {}
    if base is not None:
        base = Path(base).resolve()
        link = out / BASE
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(base, target_is_directory=True)
        records += [replace(r, image=f"{BASE}/{r.image}") for r in read_manifest(base)]
    known = {r.label for r in records}
    lines = store.get(annotation_set).decode().splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        entry = json.loads(line)
        key, label = entry.get("image"), entry.get("label")
        if not key or not label:
            log.warning("%s:%d has no %s; left out of training", annotation_set, number, "image" if not key else "class")
            continue
        if known and label not in known:
            raise ValueError(f"{annotation_set}:{number}: class {label!r} is not one of the base data's classes {sorted(known)}")
        image = f"{FRAMES}/{key}"
        target = out / image
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(store.get(key))
        boxes = [list(map(float, b)) for b in entry.get("boxes", [])]
        records.append(Record(image, "train", label, boxes, []))
        annotations[image] = Annotation(boxes, label=label)
    if not annotations:
        raise ValueError(f"{annotation_set} holds no annotation with an image and a class; nothing to retrain on")
    write_manifest(out, records)
    return out, annotations
