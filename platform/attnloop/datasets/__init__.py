"""Benchmark dataset families and the manifest format."""

from __future__ import annotations

from pathlib import Path

from attnloop.datasets import decoy_digits, mill, moa, scenes, shortcut
from attnloop.datasets._family import Family, Sample, generate, stream_frames
from attnloop.datasets.annotations import Annotation, from_manifest_boxes, read_annotations
from attnloop.datasets.manifest import SPLITS, Record, by_split, class_names, read_manifest, read_origin, write_manifest, write_origin

FAMILIES: dict[str, Family] = {f.name: f for f in (shortcut.FAMILY, decoy_digits.FAMILY, scenes.FAMILY, moa.FAMILY, mill.FAMILY)}


def make_dataset(
    family: str, out: str | Path, *, seed: int = 0, size: int | None = None, shortcut_rate: float = 1.0
) -> list[Record]:
    """Generate a family into ``out``: images, ``manifest.jsonl``, ``README.md`` and ``grid.png``."""
    try:
        spec = FAMILIES[family]
    except KeyError:
        raise ValueError(f"unknown dataset family {family!r}; valid names: {', '.join(FAMILIES)}") from None
    return generate(spec, out, seed=seed, size=size, shortcut_rate=shortcut_rate)


__all__ = [
    "FAMILIES",
    "SPLITS",
    "Annotation",
    "Family",
    "Record",
    "Sample",
    "by_split",
    "class_names",
    "from_manifest_boxes",
    "generate",
    "stream_frames",
    "make_dataset",
    "read_annotations",
    "read_manifest",
    "read_origin",
    "write_manifest",
    "write_origin",
]
