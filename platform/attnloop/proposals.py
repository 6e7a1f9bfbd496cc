"""Box proposals from attention maps: where the model looked, as a box an annotator can correct.

Pure numpy + OpenCV (no torch), so serving and scoring can call it. Boxes are in image pixels,
``(x0, y0, x1, y1)`` with x1/y1 exclusive, the convention of the manifests.
"""

from __future__ import annotations

import cv2
import numpy as np

from attnloop.masks import box_mask

Box = tuple[float, float, float, float]


MAX_SHARE = 0.5  # a proposal covering more of the frame than this shows nothing an annotator can use
SEEN = 0.5  # a simulated person sees the model looking at a region when its proposal covers this share of it
TIGHTER = (0.75, 0.9)  # thresholds tried, in turn, when the region at the first covers too much


def attention_box(
    attention: np.ndarray, image_size: tuple[int, int], *, threshold: float = 0.5, max_share: float = MAX_SHARE
) -> Box | None:
    """The box around the largest connected region (8-connectivity) of the map above
    ``min + threshold · (max − min)``, scaled from the map's cells to an image of ``image_size``
    (height, width). None for a flat map, which points nowhere.

    A box covering more than ``max_share`` of the frame is no proposal (a weak model's nearly
    flat map, or attention spread everywhere, gives one at the first threshold): the map's top
    region is taken instead, at the thresholds of ``TIGHTER`` in turn; where even that covers too
    much, None. Ties in area go to the region holding more attention, so two equal blobs give the
    stronger one.
    """
    a = np.asarray(attention, np.float64)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"expected an h×w attention map, got shape {np.shape(attention)}")
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold is a share of the map's range in [0, 1), got {threshold}")
    if not 0.0 < max_share <= 1.0:
        raise ValueError(f"max_share is a share of the frame in (0, 1], got {max_share}")
    height, width = image_size
    if height <= 0 or width <= 0:
        raise ValueError(f"image_size must be a positive (height, width), got {image_size}")
    if not np.isfinite(a).all():
        raise ValueError("the attention map holds NaN or infinite values")
    low, high = float(a.min()), float(a.max())
    if high - low <= 1e-12 * max(1.0, abs(high)):
        return None
    for level in (threshold, *(t for t in TIGHTER if t > threshold)):
        x0, y0, x1, y1 = _region_box(a, low + level * (high - low), low)
        if (x1 - x0) * (y1 - y0) <= max_share * a.size:
            sx, sy = width / a.shape[1], height / a.shape[0]
            return (float(x0 * sx), float(y0 * sy), float(x1 * sx), float(y1 * sy))
    return None


def _region_box(a: np.ndarray, cut: float, low: float) -> tuple[int, int, int, int]:
    """The cell box (x0, y0, x1, y1) of the largest region above ``cut`` (ties: more attention)."""
    mask = (a > cut).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    mass = np.bincount(labels.ravel(), weights=(a - low).ravel(), minlength=count)
    best = max(range(1, count), key=lambda i: (stats[i, cv2.CC_STAT_AREA], mass[i]))
    x, y = int(stats[best, cv2.CC_STAT_LEFT]), int(stats[best, cv2.CC_STAT_TOP])
    return x, y, x + int(stats[best, cv2.CC_STAT_WIDTH]), y + int(stats[best, cv2.CC_STAT_HEIGHT])


def covered(proposal: Box | None, region: np.ndarray) -> float:
    """The share of ``region`` (a coverage mask, as :func:`attnloop.masks.box_mask` makes) that lies
    inside the ``proposal`` box, both at the mask's resolution; 0 without a proposal or a region."""
    total = float(np.sum(region))
    if proposal is None or total <= 0:
        return 0.0
    inside = box_mask([proposal], image_size=region.shape, out_size=region.shape)
    return float((region * inside).sum() / total)


def sees(proposal: Box | None, region: np.ndarray, *, share: float = SEEN) -> bool:
    """Whether a person looking at the model's proposal sees it on ``region``: the proposal covers at
    least ``share`` of it. The simulated annotator marks a shortcut exactly then."""
    return covered(proposal, region) >= share
