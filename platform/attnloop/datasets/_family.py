"""What every generated dataset family shares: splits, seeding, files, manifest, card and grid.

A family is a :class:`Family`: its classes, the text of its dataset card, and a ``render``
function that draws one image. ``render(rng, label, confound, split)`` draws class ``label``
with the confounder variant ``confound``: in ``train``/``val`` that is the label itself on a
``shortcut_rate`` share of the images (the shortcut), otherwise a random variant, and always
random in ``test``/``stream``, where the shortcut is broken. Each image gets its own generator
seeded from (seed, split, index), so files are byte-identical for the same seed and size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from attnloop.datasets.manifest import SPLITS, Record, write_manifest, write_origin
from attnloop.imaging import encode_png


@dataclass(frozen=True)
class Sample:
    image: np.ndarray  # H×W or H×W×C, uint8 or uint16
    boxes: list[list[float]]  # where the evidence is (pixel [x0, y0, x1, y1], x1/y1 exclusive)
    confounder_boxes: list[list[float]] = field(default_factory=list)


Render = Callable[[np.random.Generator, int, int, str], Sample]


@dataclass(frozen=True)
class Family:
    name: str
    classes: tuple[str, ...]
    render: Render
    card: str  # markdown: what the images show, the shortcut rule, what the boxes mark
    default_size: int = 400
    confounders: int | None = None  # number of confounder variants (default: one per class)
    extension: str = "png"  # "tiff" for multi-channel images (one page per channel)

    @property
    def variants(self) -> int:
        return self.confounders or len(self.classes)


def split_counts(size: int, classes: int) -> dict[str, int]:
    """``size`` training images; val and stream a quarter of that, test a half (at least one per class)."""
    return {
        "train": size,
        "val": max(classes, size // 4),
        "test": max(classes, size // 2),
        "stream": max(classes, size // 4),
    }


def encode(image: np.ndarray, extension: str) -> bytes:
    if extension == "png":
        return encode_png(image)
    if extension == "tiff":
        pages = [image] if image.ndim == 2 else [image[:, :, c] for c in range(image.shape[2])]
        ok, buf = cv2.imencodemulti(".tiff", pages)
        if not ok:
            raise ValueError(f"could not encode a {image.shape} {image.dtype} array as TIFF")
        return buf.tobytes()
    raise ValueError(f"unknown extension {extension!r}; valid names: png, tiff")


def stream_frames(family: Family, *, seed: int = 0, count: int) -> Iterator[tuple[Record, bytes]]:
    """The first ``count`` images of the family's stream split, rendered in memory as encoded bytes
    (the same images ``generate`` writes for that split), for the stream simulator."""
    split_index = SPLITS.index("stream")
    classes = len(family.classes)
    for i in range(count):
        rng = np.random.default_rng([seed, split_index, i])
        label = i % classes
        sample = family.render(rng, label, int(rng.integers(family.variants)), "stream")
        rel = f"images/stream/{i:05d}.{family.extension}"
        yield Record(rel, "stream", family.classes[label], sample.boxes, sample.confounder_boxes), encode(sample.image, family.extension)


def generate(family: Family, out: str | Path, *, seed: int = 0, size: int | None = None, shortcut_rate: float = 1.0) -> list[Record]:
    """Write ``out/images/<split>/<n>.<ext>``, ``manifest.jsonl``, ``README.md`` and ``grid.png``."""
    size = family.default_size if size is None else size
    classes = len(family.classes)
    if size < classes:
        raise ValueError(f"size must be at least the number of classes ({classes}), got {size}")
    if not 0.0 <= shortcut_rate <= 1.0:
        raise ValueError(f"shortcut_rate must be in [0, 1], got {shortcut_rate}")
    out = Path(out)
    counts = split_counts(size, classes)
    records, samples = [], []
    for split_index, split in enumerate(SPLITS):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        for i in range(counts[split]):
            rng = np.random.default_rng([seed, split_index, i])
            label = i % classes
            shortcut = split in ("train", "val") and rng.random() < shortcut_rate
            confound = label if shortcut else int(rng.integers(family.variants))
            sample = family.render(rng, label, confound, split)
            rel = f"images/{split}/{i:05d}.{family.extension}"
            (out / rel).write_bytes(encode(sample.image, family.extension))
            records.append(Record(rel, split, family.classes[label], sample.boxes, sample.confounder_boxes))
            if split == "train" and i < 4 * classes:
                samples.append((family.classes[label], sample))
    write_manifest(out, records)
    write_origin(out, origin="generated", boxes="truth", family=family.name, seed=seed, shortcut_rate=shortcut_rate)
    (out / "README.md").write_text(dataset_card(family, seed=seed, shortcut_rate=shortcut_rate, counts=counts))
    (out / "grid.png").write_bytes(encode_png(example_grid(samples)))
    return records


def dataset_card(family: Family, *, seed: int, shortcut_rate: float, counts: dict[str, int]) -> str:
    return (
        f"# `{family.name}` dataset (seed {seed})\n\n"
        f"Classes ({len(family.classes)}): {', '.join(family.classes)}.\n\n"
        f"{family.card.strip()}\n\n"
        f"The shortcut holds on {shortcut_rate:.0%} of train/val images; test and stream break it.\n\n"
        "| split | images |\n|---|---|\n"
        + "".join(f"| {split} | {count} |\n" for split, count in counts.items())
        + "\n![examples with boxes (green) and confounders (red)](grid.png)\n"
    )


def _display(image: np.ndarray) -> np.ndarray:
    """Any sample → 8-bit RGB for the grid (multi-channel: first channel red, second green)."""
    x = image.astype(np.float32)
    if x.ndim == 2:
        x = x[:, :, None]
    x = x / (65535.0 if image.dtype == np.uint16 else 255.0)
    if x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    elif x.shape[2] == 2:
        x = np.concatenate([x, np.zeros_like(x[:, :, :1])], axis=2)
    x = x[:, :, :3] / max(1e-6, float(x[:, :, :3].max()))
    return (x * 255).astype(np.uint8)


def example_grid(samples: list[tuple[str, Sample]], *, columns: int = 4, cell: int = 128) -> np.ndarray:
    """A grid of examples, one row per class, boxes in green and confounders in red (RGB uint8)."""
    by_class: dict[str, list[Sample]] = {}
    for name, sample in samples:
        by_class.setdefault(name, []).append(sample)
    label_h, gap = 16, 3
    grid = np.full((len(by_class) * (cell + label_h), columns * (cell + gap) - gap, 3), 255, np.uint8)
    for row, (name, items) in enumerate(by_class.items()):
        top = row * (cell + label_h)
        cv2.putText(grid, name, (4, top + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        for col, sample in enumerate(items[:columns]):
            tile = _display(sample.image)
            sy, sx = cell / tile.shape[0], cell / tile.shape[1]
            tile = np.ascontiguousarray(cv2.resize(tile, (cell, cell), interpolation=cv2.INTER_NEAREST))
            for boxes, colour in ((sample.confounder_boxes, (255, 0, 0)), (sample.boxes, (0, 200, 0))):
                for x0, y0, x1, y1 in boxes:
                    cv2.rectangle(tile, (int(x0 * sx), int(y0 * sy)), (int(x1 * sx) - 1, int(y1 * sy) - 1), colour, 1)
            left = col * (cell + gap)
            grid[top + label_h : top + label_h + cell, left : left + cell] = tile
    return grid
