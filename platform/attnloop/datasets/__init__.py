"""Benchmark dataset families and the manifest format."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from attnloop.datasets.annotations import Annotation, from_manifest_boxes, read_annotations
from attnloop.datasets.manifest import SPLITS, Record, by_split, class_names, read_manifest, write_manifest
from attnloop.datasets.shortcut import make_shortcut

FAMILIES: dict[str, Callable[..., list[Record]]] = {"shortcut": make_shortcut}


def make_dataset(family: str, out: str | Path, *, seed: int = 0, size: int | None = None) -> list[Record]:
    try:
        maker = FAMILIES[family]
    except KeyError:
        raise ValueError(f"unknown dataset family {family!r}; valid names: {', '.join(FAMILIES)}") from None
    return maker(out, seed=seed, **({"size": size} if size is not None else {}))


__all__ = [
    "FAMILIES",
    "SPLITS",
    "Annotation",
    "Record",
    "by_split",
    "class_names",
    "from_manifest_boxes",
    "make_dataset",
    "read_annotations",
    "read_manifest",
    "write_manifest",
]
