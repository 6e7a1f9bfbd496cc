"""Pictures people would rather look at than read: confusion matrices and attention grids (PNG bytes)."""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np

from attnloop import imaging


def confusion_png(matrix: np.ndarray | Sequence[Sequence[int]], class_names: Sequence[str], *, title: str = "") -> bytes:
    """Rows true classes, columns predictions; each cell shows its count, colored by row share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix, np.int64)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = 1.2 + 0.55 * len(class_names)
    with matplotlib.rc_context({"text.parse_math": False}):  # a class named "$x$" is a name, not a formula
        fig, ax = plt.subplots(figsize=(size + 1, size))
        _confusion_axes(ax, matrix, shares, class_names, title)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def _confusion_axes(ax, matrix: np.ndarray, shares: np.ndarray, class_names: Sequence[str], title: str) -> None:
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if shares[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title, fontsize=9)


def attention_grid(
    images: Sequence[np.ndarray],
    attention: Sequence[np.ndarray],
    captions: Sequence[str],
    *,
    columns: int = 8,
    tile: int = 96,
) -> bytes:
    """Attention overlays side by side, a caption (e.g. ``true → predicted``) under each."""
    import cv2

    if not images:
        raise ValueError("an attention grid needs at least one image")
    rows = -(-len(images) // columns)
    caption_h = 14
    canvas = np.full((rows * (tile + caption_h), min(columns, len(images)) * tile, 3), 255, np.uint8)
    for k, (image, att, caption) in enumerate(zip(images, attention, captions)):
        r, c = divmod(k, columns)
        picture = cv2.resize(imaging.overlay(image, att), (tile, tile), interpolation=cv2.INTER_AREA)
        y = r * (tile + caption_h)
        canvas[y : y + tile, c * tile : (c + 1) * tile] = picture
        cv2.putText(canvas, caption[:16], (c * tile + 2, y + tile + 11), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 0, 0), 1, cv2.LINE_AA)
    return imaging.encode_png(canvas)
