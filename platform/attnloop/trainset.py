"""From an annotation-set version in the store to a folder ``train`` can read.

Annotated stream frames live in the object store under their keys; training reads a manifest
folder. :func:`materialize` writes one: the base labeled dataset (replayed, reached through a
symbolic link, nothing copied) plus every annotated frame downloaded as a ``train`` image whose
label is the annotator's class, and returns the annotations keyed the way the manifest names the
images. The folder is a pure function of the set's content, so a retraining can be repeated.

:func:`training_set` is what ``attnloop train --boxes`` reads: a set that names the data's images
as it is, a harvested set (object keys) through :func:`materialize`, and a set that names
nothing the data has as an error that shows both.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from attnloop import annotation_set
from attnloop.datasets import Annotation, Record, read_annotations, read_manifest, read_origin, write_manifest
from attnloop.storage import LocalStore, Store

log = logging.getLogger(__name__)

BASE = "base"
FRAMES = "annotated"


def materialize(store: Store, key: str, *, out: str | Path, base: str | Path | None = None) -> tuple[Path, dict[str, Annotation]]:
    """Write ``out/manifest.jsonl`` (base records under ``base/``, annotated frames under
    ``annotated/``) and return the folder and the annotations for ``train(..., annotations=...)``.

    ``key`` is the key of a harvested set's JSONL (``annotations/v000N.jsonl``), read through
    :func:`attnloop.annotation_set.read_key` (a set altered since it was written is refused).
    Entries without a class cannot be trained on and are left out with a warning.
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
    for entry in annotation_set.read_key(store, key).entries.values():
        if not entry.label:
            log.warning("%s: %s has no class; left out of training", key, entry.image)
            continue
        if known and entry.label not in known:
            raise ValueError(f"{key}: {entry.image}: class {entry.label!r} is not one of the base data's classes {sorted(known)}")
        image = f"{FRAMES}/{entry.image}"
        target = out / image
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(store.get(entry.image))
        annotation = entry.training()
        records.append(Record(image, "train", entry.label, annotation.boxes, []))
        annotations[image] = annotation
    if not annotations:
        raise ValueError(f"{key} holds no annotation with an image and a class; nothing to retrain on")
    write_manifest(out, records)
    return out, annotations


def default_boxes(data: str | Path) -> tuple[str | None, str]:
    """What ``attnloop train`` guides with when ``--boxes`` is not given, and a note saying so.

    A person's boxes imported with the data (``attnloop data import --boxes``) are used; a
    generated family's true boxes are not (they are for experiments: ``--boxes manifest``), and
    boxes of unknown origin are not either — the note says how to use them."""
    boxed = sum(1 for r in read_manifest(data) if r.split == "train" and r.boxes)
    if not boxed:
        return None, ""
    origin = read_origin(data)
    if origin.get("boxes") == "people":
        return "manifest", f"the boxes imported with the data on {boxed} training images; --boxes none trains without them"
    if origin.get("boxes") == "truth":
        return None, f"the family's true boxes of {boxed} training images left out; --boxes manifest trains with them"
    return None, f"the manifest's boxes of {boxed} training images left out; --boxes manifest trains with them"


def training_set(
    data: str | Path, boxes: str | None, *, out: str | Path, store: Store | None = None
) -> tuple[Path, dict[str, Annotation] | None]:
    """The folder ``attnloop train --data DATA --boxes BOXES`` trains on, and its annotations.

    ``boxes``: none, ``manifest``, a JSONL whose images are the data's (as in its manifest), or a
    harvested set, whose images are object keys: the file inside a local store
    (``STORE/annotations/v000N.jsonl``, the frames beside it) or, with ``store``, its key there
    (any store). A harvested set is materialized under ``out``, the data replayed, as the retrain
    flow does. A set none of whose entries names a training image raises, showing what its keys
    look like and what the data has.
    """
    from attnloop.training import resolve_annotations

    data = Path(data)
    if boxes in (None, "", "none", "manifest"):
        return data, resolve_annotations(data, boxes)
    path = Path(boxes)
    if not path.is_file():
        if store is not None and store.exists(str(boxes)):
            return materialize(store, str(boxes), out=out, base=data)
        where = f"neither a file nor an object of {store.uri}" if store is not None else "not a file"
        raise FileNotFoundError(
            f"annotation set {boxes} is {where}; give a JSONL file, or a harvested set's key with --store URI "
            "(e.g. --store s3://bucket/prefix --boxes annotations/v0003.jsonl)"
        )
    annotations = read_annotations(path)
    images = [r.image for r in read_manifest(data) if r.split == "train"]
    matched = annotations.keys() & set(images)
    if matched:
        if len(matched) < len(annotations):
            log.warning("%s: %d of its %d entries name no training image of %s; left out", boxes, len(annotations) - len(matched), len(annotations), data)
        return data, annotations
    holder = _local_store_of(path, list(annotations))
    if holder is not None:
        found, key = holder
        log.info("%s is a harvested set of the local store %s: training on its frames plus %s", boxes, found.root, data)
        return materialize(found, key, out=out, base=data)
    keys = ", ".join(repr(k) for k in list(annotations)[:2]) or "none"
    raise ValueError(
        f"annotation set {boxes}: none of its {len(annotations)} entries names a training image of {data / 'manifest.jsonl'} "
        f"(its images look like {keys}; the data's like {', '.join(repr(i) for i in images[:2])}); no model was trained. "
        "A set written by `attnloop ls harvest` names object keys: give the file inside its local store, with the frames "
        "beside it (STORE/annotations/v000N.jsonl), or its key with --store URI"
    )


def _local_store_of(path: Path, keys: list[str]) -> tuple[LocalStore, str] | None:
    """The local store folder that holds the set file and the frames its keys name, and the set's key there."""
    sample = keys[:5]
    if not sample:
        return None
    for folder in path.resolve().parents:
        if all((folder / key).is_file() for key in sample):
            return LocalStore(folder), path.resolve().relative_to(folder).as_posix()
    return None
