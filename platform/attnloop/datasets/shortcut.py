"""``shortcut``: the smallest dataset whose true object and shortcut are both known.

Gray 64×64 images of one shape (disc, square, cross, ring) at a random place on a noisy
background, and an 8×8 decoy patch in a random corner whose grey level is ``255 − 66·variant``
(the Decoy-MNIST rule). Boxes: the shape; confounder box: the patch.
"""

from __future__ import annotations

import cv2
import numpy as np

from attnloop.datasets._family import Family, Sample

SHAPES = ("disc", "square", "cross", "ring")
SIDE = 64
PATCH = 8
STEP = 200 // (len(SHAPES) - 1)


def _draw(canvas: np.ndarray, shape: str, cx: int, cy: int, r: int, level: int) -> None:
    if shape == "disc":
        cv2.circle(canvas, (cx, cy), r, level, -1)
    elif shape == "square":
        cv2.rectangle(canvas, (cx - r, cy - r), (cx + r - 1, cy + r - 1), level, -1)
    elif shape == "cross":
        t = max(2, r // 3)
        cv2.rectangle(canvas, (cx - r, cy - t), (cx + r - 1, cy + t - 1), level, -1)
        cv2.rectangle(canvas, (cx - t, cy - r), (cx + t - 1, cy + r - 1), level, -1)
    else:
        cv2.circle(canvas, (cx, cy), r, level, max(2, r // 3))


def corner_patch(image: np.ndarray, rng: np.random.Generator, grey: int, patch: int) -> list[float]:
    """Paint a square patch of ``grey`` into a random corner; return its box."""
    side_y, side_x = image.shape[:2]
    corner = int(rng.integers(4))
    px, py = (0 if corner % 2 == 0 else side_x - patch), (0 if corner < 2 else side_y - patch)
    image[py : py + patch, px : px + patch] = grey
    return [float(px), float(py), float(px + patch), float(py + patch)]


def render(rng: np.random.Generator, label: int, confound: int, split: str) -> Sample:
    canvas = np.zeros((SIDE, SIDE), np.uint8)
    r = int(rng.integers(5, 9))
    margin = PATCH + r + 1
    cx, cy = (int(v) for v in rng.integers(margin, SIDE - margin, size=2))
    level = int(rng.integers(100, 126))
    _draw(canvas, SHAPES[label], cx, cy, r, level)
    ys, xs = np.nonzero(canvas)
    box = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
    image = np.where(canvas > 0, canvas + rng.normal(0, 25, size=canvas.shape), rng.normal(60, 25, size=canvas.shape))
    confounder = corner_patch(image, rng, 255 - STEP * confound, PATCH)
    return Sample(np.clip(image, 0, 255).astype(np.uint8), [box], [confounder])


FAMILY = Family(
    name="shortcut",
    classes=SHAPES,
    render=render,
    default_size=400,
    card=f"""
Gray {SIDE}×{SIDE} PNG, one low-contrast shape per image on a noisy background.

Shortcut: an {PATCH}×{PATCH} patch in a random corner whose grey level is 255 − {STEP}·label.

Boxes: the shape. Confounder boxes: the patch.
""",
)
