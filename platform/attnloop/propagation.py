"""Propagation: from a few shortcut marks to every image that shares the mistake.

A person marks, on a few images, the region the model wrongly used (a shortcut mark: a camera's
signature stamp, a plate's edge). Propagation finds that region again on the other images: a
region descriptor — the histogram of oriented gradients (HOG, scikit-image) of the marked patch,
model-free and indifferent to exposure — is compared, as it is and mirrored left-right and
top-bottom (the same stamp or artefact in another corner of the frame shows its edges the other
way round), with every window of the mark's size on every image, and an image's best window
becomes a propagated mark where its cosine similarity passes :data:`THRESHOLD`. The platform then applies the propagated marks as weak supervision
(counterexamples that erase the matched region, :mod:`attnloop.training`) or sends them to Label
Studio as one confirmation batch ordered by similarity.

Windows lie on a grid of :data:`CELL` pixels; the comparison is one matrix product per image
(exact), or FAISS's exact inner-product index over every window of the pool where the pool is
large (``method="faiss"``; ``"auto"`` switches at :data:`EXACT_LIMIT` windows). Pure numpy,
scikit-image and FAISS: no torch, so scoring-side code can call it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Iterable, Mapping, Sequence

import numpy as np

from attnloop.masks import Box

CELL = 4  # pixels per HOG cell, the windows' grid step
ORIENTATIONS = 9
THRESHOLD = 0.9  # cosine similarity a window needs to count as the marked region again (docs/benchmarks/propagation.md)
EXACT_LIMIT = 2_000_000  # windows in the pool above which "auto" uses FAISS
METHODS = ("auto", "exact", "faiss")


@dataclass(frozen=True)
class Mark:
    """A shortcut mark a person drew: the image it is on and the region, in pixels."""

    image: Hashable
    box: Box


@dataclass(frozen=True)
class Match:
    """A propagated mark: the region on ``image`` that looks like ``source``'s mark."""

    image: Hashable
    box: tuple[float, float, float, float]
    similarity: float
    source: Hashable


def _gray(image: np.ndarray) -> np.ndarray:
    x = np.asarray(image, np.float32)
    if x.ndim == 3:
        x = x.mean(axis=2)
    if x.ndim != 2:
        raise ValueError(f"expected an H×W or H×W×C image, got shape {np.shape(image)}")
    return x


def _cells(image: np.ndarray) -> np.ndarray:
    """Per-cell orientation histograms (rows × cols × orientations), each cell L2-normalized."""
    from skimage.feature import hog

    x = _gray(image)
    if min(x.shape) < CELL:
        return np.zeros((0, 0, ORIENTATIONS), np.float32)
    cells = hog(x, orientations=ORIENTATIONS, pixels_per_cell=(CELL, CELL), cells_per_block=(1, 1), feature_vector=False)
    return cells[:, :, 0, 0, :].astype(np.float32)


def _span(box: Box) -> tuple[int, int, int, int]:
    """The box on the cell grid: first cell row and column, rows and columns covered (at least one)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    c0, r0 = int(round(x0 / CELL)), int(round(y0 / CELL))
    return r0, c0, max(1, int(round((y1 - y0) / CELL))), max(1, int(round((x1 - x0) / CELL)))


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def _windows(cells: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Every window of rows × cols cells: unit descriptors (N×D) and their top-left cells (N×2)."""
    if cells.shape[0] < rows or cells.shape[1] < cols:
        return np.zeros((0, rows * cols * ORIENTATIONS), np.float32), np.zeros((0, 2), int)
    view = np.lib.stride_tricks.sliding_window_view(cells, (rows, cols), axis=(0, 1))  # R×C×O×rows×cols
    n_r, n_c = view.shape[:2]
    flat = view.transpose(0, 1, 3, 4, 2).reshape(n_r * n_c, rows * cols * ORIENTATIONS)
    corners = np.stack(np.meshgrid(np.arange(n_r), np.arange(n_c), indexing="ij"), axis=-1).reshape(-1, 2)
    return _unit(flat), corners


def describe(image: np.ndarray, box: Box) -> np.ndarray | None:
    """The unit HOG descriptor of ``box`` on ``image`` (snapped to the cell grid), or None where it falls off the image."""
    variants = _variants(image, box)
    return None if variants is None else variants[0]


def _variants(image: np.ndarray, box: Box) -> list[np.ndarray] | None:
    """The mark's descriptor as it is and mirrored (left-right, top-bottom, both), distinct ones only."""
    x = _gray(image)
    r0, c0, rows, cols = _span(box)
    cells = _cells(x)
    if r0 < 0 or c0 < 0 or r0 + rows > cells.shape[0] or c0 + cols > cells.shape[1]:
        return None
    height, width = cells.shape[0] * CELL, cells.shape[1] * CELL
    out: list[np.ndarray] = []
    for flip_x, flip_y in ((False, False), (True, False), (False, True), (True, True)):
        mirrored = x[:height, :width][:: -1 if flip_y else 1, :: -1 if flip_x else 1]
        r = cells.shape[0] - r0 - rows if flip_y else r0
        c = cells.shape[1] - c0 - cols if flip_x else c0
        vector = _unit(_cells(mirrored)[r : r + rows, c : c + cols].reshape(-1))
        if not any(float(vector @ seen) > 1 - 1e-6 for seen in out):
            out.append(vector)
    return out


def propagate(
    marks: Sequence[Mark],
    images: Mapping[Hashable, np.ndarray],
    *,
    threshold: float = THRESHOLD,
    exclude: Iterable[Hashable] = (),
    method: str = "auto",
) -> list[Match]:
    """Each image's best match to any mark (a window of that mark's size), where its similarity
    reaches ``threshold``; most similar first. ``images`` holds the marks' own images and the pool;
    images in ``exclude`` (and those a person marked) get no match."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid names: {', '.join(METHODS)}")
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
    missing = [m.image for m in marks if m.image not in images]
    if missing:
        raise KeyError(f"marked images not among the images given: {missing[:5]}")
    queries = []  # (descriptor, mark, rows, cols): every mark as drawn and mirrored
    for mark in marks:
        _, _, rows, cols = _span(mark.box)
        queries += [(vector, mark, rows, cols) for vector in _variants(images[mark.image], mark.box) or []]
    skip = set(exclude) | {m.image for m in marks}
    pool = [key for key in images if key not in skip]
    if not queries or not pool:
        return []
    cells = {key: _cells(images[key]) for key in pool}  # each image's HOG once, whatever the marks' sizes
    best: dict[Hashable, Match] = {}
    for shape in sorted({(rows, cols) for _, _, rows, cols in queries}):
        group = [(vector, mark) for vector, mark, rows, cols in queries if (rows, cols) == shape]
        q = np.stack([vector for vector, _ in group]).astype(np.float32)
        windows = [_windows(cells[key], *shape) for key in pool]
        owner = np.concatenate([np.full(len(d), n) for n, (d, _) in enumerate(windows)])
        if not len(owner):
            continue
        c = np.concatenate([corners for _, corners in windows])
        scores = _similarities(np.concatenate([d for d, _ in windows]), q, method)  # windows × marks
        which = scores.argmax(axis=1)
        top = scores[np.arange(len(owner)), which]
        order = np.lexsort((-top, owner))  # by image, its best window first
        first = order[np.r_[True, owner[order][1:] != owner[order][:-1]]]
        for i in first[top[first] >= threshold]:
            key = pool[int(owner[i])]
            if key in best and best[key].similarity >= top[i]:
                continue
            r, col = (int(v) for v in c[i])
            box = (float(col * CELL), float(r * CELL), float((col + shape[1]) * CELL), float((r + shape[0]) * CELL))
            best[key] = Match(key, box, float(top[i]), group[int(which[i])][1].image)
    return sorted(best.values(), key=lambda m: -m.similarity)


def _similarities(windows: np.ndarray, queries: np.ndarray, method: str) -> np.ndarray:
    """windows × queries cosine similarities (both unit vectors)."""
    if method == "faiss" or (method == "auto" and len(windows) > EXACT_LIMIT):
        import faiss

        index = faiss.IndexFlatIP(queries.shape[1])
        index.add(np.ascontiguousarray(queries, np.float32))
        # every window against every query: a flat index over the queries answers it in one search
        scores, order = index.search(np.ascontiguousarray(windows, np.float32), queries.shape[0])
        out = np.empty_like(scores)
        np.put_along_axis(out, order, scores, axis=1)
        return out
    return windows @ queries.T


def iou(a: Box, b: Box) -> float:
    ax0, ay0, ax1, ay1 = a
    bx0, by0, bx1, by1 = b
    w, h = max(0.0, min(ax1, bx1) - max(ax0, bx0)), max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = w * h
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0 else 0.0


def agreement(matches: Sequence[Match], truth: Mapping[Hashable, Sequence[Box]], *, min_iou: float = 0.5) -> dict[str, float]:
    """Precision (share of matches on a true shortcut region, IoU ≥ ``min_iou``) and recall (share of
    images with a true shortcut region that got a correct match) against ``truth`` (image → its
    confounder boxes; images absent from it have none)."""
    correct = sum(any(iou(m.box, t) >= min_iou for t in truth.get(m.image, ())) for m in matches)
    having = [key for key, boxes in truth.items() if boxes]
    hit = {m.image for m in matches if any(iou(m.box, t) >= min_iou for t in truth.get(m.image, ()))}
    return {
        "matches": len(matches),
        "precision": correct / len(matches) if matches else float("nan"),
        "recall": len(hit & set(having)) / len(having) if having else float("nan"),
    }
