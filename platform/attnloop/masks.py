"""Boxes → coverage masks at any resolution (numpy and OpenCV only, so serving and the gate stay torch-free)."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

Box = Sequence[float]


def _coverage(lo: float, hi: float, cells: int) -> np.ndarray:
    """Share of each unit cell 0..cells-1 covered by the interval [lo, hi)."""
    edges = np.arange(cells, dtype=np.float32)
    return np.clip(np.minimum(hi, edges + 1) - np.maximum(lo, edges), 0.0, 1.0)


def box_mask(
    boxes: Sequence[Box],
    *,
    image_size: tuple[int, int],
    out_size: tuple[int, int],
    margin: float = 0.0,
    blur: float = 0.0,
) -> np.ndarray:
    """Boxes in an image of ``image_size`` (h, w) → mask of ``out_size`` in [0, 1].

    A cell's value is the share of it the boxes cover (exact for any resolution). ``margin``
    widens each box by that fraction of its width/height on every side; ``blur`` (in cells) adds
    a Gaussian fall-off outside the boxes, for attention maps that are smoother than boxes.
    """
    (height, width), (out_h, out_w) = image_size, out_size
    mask = np.zeros(out_size, np.float32)
    for x0, y0, x1, y1 in boxes:
        dx, dy = margin * (x1 - x0), margin * (y1 - y0)
        x0, x1 = max(0.0, x0 - dx) * out_w / width, min(width, x1 + dx) * out_w / width
        y0, y1 = max(0.0, y0 - dy) * out_h / height, min(height, y1 + dy) * out_h / height
        mask = np.maximum(mask, np.outer(_coverage(y0, y1, out_h), _coverage(x0, x1, out_w)))
    if blur > 0 and mask.any():
        soft = cv2.GaussianBlur(mask, (0, 0), sigmaX=blur, borderType=cv2.BORDER_CONSTANT)
        mask = np.maximum(mask, soft / soft.max())
    return mask
