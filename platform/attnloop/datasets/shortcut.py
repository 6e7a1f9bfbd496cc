"""``shortcut``: a small generated dataset whose true object and shortcut are both known.

Gray 64×64 images of one shape (disc, square, cross, ring, …) at a random place on a noisy
background. A decoy patch sits in a random corner; in ``train``/``val`` its grey level encodes
the class (``255 − step·label``, the Decoy-MNIST rule) on a ``shortcut_rate`` share of the images
(the rest get a random level); in ``test``/``stream`` the level is always random, so a model that
learned the patch falls to chance there. Boxes: the shape; confounder box: the patch.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from attnloop.datasets.manifest import Record, write_manifest
from attnloop.imaging import encode_png

SHAPES = ("disc", "square", "cross", "ring", "triangle", "bar")
SIDE = 64
PATCH = 8


def _draw(canvas: np.ndarray, shape: str, cx: int, cy: int, r: int, level: int) -> None:
    if shape == "disc":
        cv2.circle(canvas, (cx, cy), r, level, -1)
    elif shape == "square":
        cv2.rectangle(canvas, (cx - r, cy - r), (cx + r - 1, cy + r - 1), level, -1)
    elif shape == "cross":
        t = max(2, r // 3)
        cv2.rectangle(canvas, (cx - r, cy - t), (cx + r - 1, cy + t - 1), level, -1)
        cv2.rectangle(canvas, (cx - t, cy - r), (cx + t - 1, cy + r - 1), level, -1)
    elif shape == "ring":
        cv2.circle(canvas, (cx, cy), r, level, max(2, r // 3))
    elif shape == "triangle":
        pts = np.array([[cx, cy - r], [cx - r, cy + r - 1], [cx + r - 1, cy + r - 1]], np.int32)
        cv2.fillPoly(canvas, [pts], level)
    elif shape == "bar":
        cv2.rectangle(canvas, (cx - r, cy - max(2, r // 3)), (cx + r - 1, cy + max(2, r // 3) - 1), level, -1)


def _object_box(canvas: np.ndarray, level: int) -> list[float]:
    ys, xs = np.nonzero(canvas == level)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def make_image(rng: np.random.Generator, label: int, classes: int, *, shortcut: bool) -> tuple[np.ndarray, list, list]:
    step = 200 // max(1, classes - 1)
    canvas = np.zeros((SIDE, SIDE), np.uint8)
    r = int(rng.integers(5, 9))
    margin = PATCH + r + 1
    cx, cy = (int(v) for v in rng.integers(margin, SIDE - margin, size=2))
    level = int(rng.integers(100, 126))
    _draw(canvas, SHAPES[label], cx, cy, r, level)
    box = _object_box(canvas, level)
    noise = rng.normal(60, 25, size=canvas.shape)
    image = np.where(canvas > 0, canvas + rng.normal(0, 25, size=canvas.shape), noise)
    corner = int(rng.integers(4))
    px, py = (0 if corner % 2 == 0 else SIDE - PATCH), (0 if corner < 2 else SIDE - PATCH)
    grey = 255 - step * (label if shortcut else int(rng.integers(classes)))
    image[py : py + PATCH, px : px + PATCH] = grey
    confounder = [float(px), float(py), float(px + PATCH), float(py + PATCH)]
    return np.clip(image, 0, 255).astype(np.uint8), [box], [confounder]


def make_shortcut(
    out: str | Path, *, seed: int = 0, size: int = 400, classes: int = 4, shortcut_rate: float = 1.0
) -> list[Record]:
    """Write the dataset (``size`` training images; val and stream a quarter, test a half) and its manifest."""
    if not 2 <= classes <= len(SHAPES):
        raise ValueError(f"classes must be 2–{len(SHAPES)}, got {classes}")
    if size < classes:
        raise ValueError(f"size must be at least the number of classes ({classes}), got {size}")
    out = Path(out)
    rng = np.random.default_rng(seed)
    counts = {"train": size, "val": max(classes, size // 4), "test": max(classes, size // 2), "stream": max(classes, size // 4)}
    records = []
    for split, count in counts.items():
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            label = i % classes
            shortcut = split in ("train", "val") and rng.random() < shortcut_rate
            image, boxes, confounders = make_image(rng, label, classes, shortcut=shortcut)
            rel = f"images/{split}/{i:05d}.png"
            (out / rel).write_bytes(encode_png(image))
            records.append(Record(rel, split, SHAPES[label], boxes, confounders))
    write_manifest(out, records)
    (out / "README.md").write_text(
        f"# shortcut dataset (seed {seed})\n\n"
        f"Classes: {', '.join(SHAPES[:classes])}. Gray {SIDE}×{SIDE} PNG, one shape per image.\n\n"
        f"Shortcut: an {PATCH}×{PATCH} patch in a random corner whose grey level is 255 − "
        f"{200 // max(1, classes - 1)}·label on {shortcut_rate:.0%} of train/val images and random in test/stream.\n\n"
        "Boxes: the shape. Confounder boxes: the patch.\n\n"
        + "".join(f"- {split}: {count} images\n" for split, count in counts.items())
    )
    return records
