"""Box proposals from attention maps: where the model looked, as a box an annotator can correct.

Pure numpy + OpenCV (no torch), so serving and scoring can call it. Boxes are in image pixels,
``(x0, y0, x1, y1)`` with x1/y1 exclusive, the convention of the manifests.
"""

from __future__ import annotations

import cv2
import numpy as np

Box = tuple[float, float, float, float]


def attention_box(attention: np.ndarray, image_size: tuple[int, int], *, threshold: float = 0.5) -> Box | None:
    """The box around the largest connected region (8-connectivity) of the map above
    ``min + threshold · (max − min)``, scaled from the map's cells to an image of ``image_size``
    (height, width). None for a flat map, which points nowhere.

    Ties in area go to the region holding more attention, so two equal blobs give the stronger one.
    """
    a = np.asarray(attention, np.float64)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"expected an h×w attention map, got shape {np.shape(attention)}")
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold is a share of the map's range in [0, 1), got {threshold}")
    height, width = image_size
    if height <= 0 or width <= 0:
        raise ValueError(f"image_size must be a positive (height, width), got {image_size}")
    if not np.isfinite(a).all():
        raise ValueError("the attention map holds NaN or infinite values")
    low, high = float(a.min()), float(a.max())
    if high - low <= 1e-12 * max(1.0, abs(high)):
        return None
    mask = (a > low + threshold * (high - low)).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    mass = np.bincount(labels.ravel(), weights=(a - low).ravel(), minlength=count)
    best = max(range(1, count), key=lambda i: (stats[i, cv2.CC_STAT_AREA], mass[i]))
    x, y = stats[best, cv2.CC_STAT_LEFT], stats[best, cv2.CC_STAT_TOP]
    w, h = stats[best, cv2.CC_STAT_WIDTH], stats[best, cv2.CC_STAT_HEIGHT]
    sx, sy = width / a.shape[1], height / a.shape[0]
    return (float(x * sx), float(y * sy), float((x + w) * sx), float((y + h) * sy))
