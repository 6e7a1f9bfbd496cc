"""Shortcut marks at the platform's edges: the marks people drew, spread over the store's frames and a data folder.

:mod:`attnloop.propagation` matches regions on images in memory; this module feeds it: the marks of
an annotation set (:func:`drawn`), the scored frames of the store, decoded a chunk at a time so a
large stream never sits in memory at once (:func:`over_frames`: the confirmation batch the
annotate side sends to Label Studio), and the images of a labeled data folder (:func:`over_folder`:
weak supervision for a retraining, where the labels are known). Frames that do not decode are
left out (scoring has quarantined them already).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from attnloop import imaging
from attnloop.annotation_set import AnnotationSet
from attnloop.datasets import Annotation, Record
from attnloop.propagation import THRESHOLD, Mark, Match, propagate
from attnloop.storage import Store

log = logging.getLogger(__name__)

CHUNK = 1000  # frames decoded and matched at a time


def drawn(annotations: AnnotationSet | None) -> list[Mark]:
    """Every shortcut mark people drew in an annotation set, on the frame it was drawn on."""
    if annotations is None:
        return []
    return [Mark(entry.image, tuple(box)) for entry in annotations.entries.values() for box in entry.shortcut_boxes]


def _decoded(read, keys: Iterable[str]) -> dict[str, np.ndarray]:
    out = {}
    for key in keys:
        try:
            out[key] = imaging.decode(read(key), name=str(key))
        except (imaging.ImageError, KeyError, OSError) as err:
            log.warning("%s: left out of propagation (%s)", key, err)
    return out


def _spread(marks: Sequence[Mark], marked: dict[str, np.ndarray], read, keys: Sequence[str], *, threshold: float, chunk: int) -> list[Match]:
    best: dict = {}
    for start in range(0, len(keys), chunk):
        frames = _decoded(read, keys[start : start + chunk])
        for match in propagate(marks, {**marked, **frames}, threshold=threshold):
            if match.image not in best or match.similarity > best[match.image].similarity:
                best[match.image] = match
    return sorted(best.values(), key=lambda m: -m.similarity)


def over_frames(
    store: Store, marks: Sequence[Mark], keys: Sequence[str], *, threshold: float = THRESHOLD, chunk: int = CHUNK
) -> list[Match]:
    """The frames among ``keys`` (object keys) that show a marked region again, best match first."""
    marked = _decoded(store.get, dict.fromkeys(m.image for m in marks))
    marks = [m for m in marks if m.image in marked]
    if not marks:
        return []
    return _spread(marks, marked, store.get, [k for k in keys if k not in marked], threshold=threshold, chunk=chunk)


def over_folder(
    store: Store, marks: Sequence[Mark], root: str | Path, records: Sequence[Record], *, threshold: float = THRESHOLD, chunk: int = CHUNK
) -> dict[str, Annotation]:
    """Shortcut marks for the ``records`` of a data folder that show a marked region again (the marks'
    frames read from ``store``), as annotations that train on them: the region erased and penalized,
    the record's own label kept."""
    root = Path(root)
    marked = _decoded(store.get, dict.fromkeys(m.image for m in marks))
    marks = [m for m in marks if m.image in marked]
    if not marks:
        return {}
    by_image = {r.image: r for r in records}
    matches = _spread(marks, marked, lambda image: (root / image).read_bytes(), list(by_image), threshold=threshold, chunk=chunk)
    return {m.image: Annotation(shortcut_boxes=[list(m.box)]) for m in matches}


def over_base(store: Store, annotations: AnnotationSet, base_data: str | Path, *, threshold: float = THRESHOLD) -> dict[str, Annotation]:
    """The marks people drew in ``annotations`` propagated over the training images of the data folder
    ``base_data`` (what a retraining replays), by image as its manifest names them."""
    from attnloop.datasets import read_manifest

    base = [r for r in read_manifest(base_data) if r.split == "train"]
    return over_folder(store, drawn(annotations), base_data, base, threshold=threshold)
