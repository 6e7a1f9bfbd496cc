"""Is the attention map faithful? Metrics that ask the model itself (pure numpy, so they run on ONNX Runtime).

Agreement with boxes (:mod:`attnloop.evaluation`) says whether a map points where a person would;
these metrics say whether it shows what the *model* uses. A model is a ``predict`` callable from a
normalized N×C×H×W float32 batch to N×K class probabilities (:func:`onnx_predict` makes one from
an :class:`~attnloop.runtime.OnnxModel`). Maps live on an h×w grid of cells; a cell is the
(H/h)×(W/w) pixel block under it, and a removed cell takes the ``baseline`` value (0.0 is the
training mean after normalization).

* *Pointing game* (Zhang et al. 2016): does the map's maximum fall inside the object?
* *Deletion / insertion* (Petsiuk et al. 2018, RISE): remove (reveal) cells most salient first
  and follow the class probability; a faithful map makes it fall (rise) fast, so deletion AUC is
  low and insertion AUC high, compared with a random order of the same cells.
* *Occlusion* (Zeiler & Fergus 2014) and *RISE* maps: saliency measured by perturbing the input,
  faithful by construction, to compare the attention map with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    from attnloop.runtime import OnnxModel

Predict = Callable[[np.ndarray], np.ndarray]
# For a batch of jobs, the index of the image each job perturbs and its N×cells mask of removed cells.
Plan = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def onnx_predict(model: OnnxModel, *, batch_size: int = 256) -> Predict:
    """A ``predict`` callable on an ONNX model: class probabilities, at most ``batch_size`` images a run."""
    _check_batch_size(batch_size)

    def predict(batch: np.ndarray) -> np.ndarray:
        parts = [model.predict(batch[start : start + batch_size])["probabilities"] for start in range(0, len(batch), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, model.card.num_classes), np.float32)

    return predict


# --- pointing game -------------------------------------------------------------------------------


def pointing(attention: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per image, 1.0 if the map's maximum cell has mask coverage > 0, else 0.0; NaN where the mask is empty.

    Maps and masks are N×h×w (or N×1×h×w) on the same grid. Of tied maxima the first in
    row-major order counts.
    """
    attention = _maps(attention, "attention")
    masks = _maps(masks, "masks")
    if masks.shape != attention.shape:
        raise ValueError(f"masks have shape {masks.shape} but attention has {attention.shape}; build the masks at the attention size")
    flat = attention.reshape(len(attention), -1)
    if not np.isfinite(flat).all():
        raise ValueError("attention holds NaN or infinite values; a map's maximum is undefined there")
    covered = masks.reshape(len(masks), -1) > 0
    hit = covered[np.arange(len(flat)), flat.argmax(axis=1)] if len(flat) else np.zeros(0, bool)
    return np.where(covered.any(axis=1), hit.astype(np.float64), np.nan)


def pointing_chance(masks: np.ndarray) -> np.ndarray:
    """Per image, the share of cells with coverage > 0: the hit rate of a random point; NaN for empty masks."""
    covered = _maps(masks, "masks").reshape(len(masks), -1) > 0
    return np.where(covered.any(axis=1), covered.mean(axis=1), np.nan)


# --- orders --------------------------------------------------------------------------------------


def saliency_order(saliency: np.ndarray) -> np.ndarray:
    """N×(h·w) cell indices (row-major), most salient first; equal cells keep their row-major order."""
    flat = _maps(saliency, "saliency").reshape(len(saliency), -1).astype(np.float64)
    if not np.isfinite(flat).all():
        raise ValueError("saliency holds NaN or infinite values; cells cannot be ranked")
    return np.argsort(-flat, axis=1, kind="stable")


def random_order(n: int, cells: int, *, seed: int) -> np.ndarray:
    """n independent random permutations of ``cells`` cells (N×cells), from ``numpy.random.default_rng(seed)``."""
    if n < 0 or cells < 1:
        raise ValueError(f"random_order needs n >= 0 images and cells >= 1; got n={n}, cells={cells}")
    return np.random.default_rng(seed).permuted(np.tile(np.arange(cells), (n, 1)), axis=1)


# --- deletion / insertion ------------------------------------------------------------------------


def deletion_insertion(
    predict: Predict,
    images: np.ndarray,
    classes: np.ndarray,
    order: np.ndarray,
    *,
    grid: tuple[int, int],
    steps: int = 16,
    baseline: float = 0.0,
    batch_size: int = 256,
) -> dict[str, np.ndarray]:
    """Deletion and insertion curves and their areas (Petsiuk et al. 2018) for cells taken in ``order``.

    ``order`` is N×(h·w) (or one row for all images), a permutation of the cells, most salient
    first (:func:`saliency_order`). Step k of ``steps`` has the first ⌊k·h·w/steps⌋ cells of the
    order removed (deletion: set to ``baseline``) or revealed (insertion: the rest set to
    ``baseline``; insertion starts from the all-baseline image, not a blurred one). Each curve is
    the probability of ``classes[i]`` at steps 0…steps: deletion runs from the intact image to the
    all-baseline one, insertion the other way. The areas are trapezoids over the share of cells
    (``fraction``, 0…1). Takes 2·N·(steps+1) forward passes, ``batch_size`` images at a time.
    """
    images, classes = _images(images), _classes(classes, len(images))
    grid = _check_grid(grid, images)
    _check_batch_size(batch_size)
    cells = grid[0] * grid[1]
    order = _order(order, len(images), cells)
    if not 1 <= steps <= cells:
        raise ValueError(f"steps must be between 1 and the {cells} cells of the {grid[0]}×{grid[1]} grid; got {steps}")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(cells), order.shape), axis=1)
    counts = np.arange(steps + 1) * cells // steps
    points = steps + 1

    def plan(jobs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        index, rest = np.divmod(jobs, 2 * points)
        insertion, step = np.divmod(rest, points)
        taken = rank[index] < counts[step][:, None]
        return index, taken ^ insertion.astype(bool)[:, None]

    jobs = 2 * points * len(images)
    scores = _class_probabilities(predict, images, classes, jobs, plan, grid=grid, baseline=baseline, batch_size=batch_size)
    scores = scores.reshape(len(images), 2, points)
    deletion, insertion = scores[:, 0], scores[:, 1]
    fraction = counts / cells
    return {
        "deletion": _trapezoid(deletion, fraction),
        "insertion": _trapezoid(insertion, fraction),
        "deletion_curve": deletion,
        "insertion_curve": insertion,
        "fraction": fraction,
    }


# --- perturbation saliency -----------------------------------------------------------------------


def occlusion_map(
    predict: Predict,
    images: np.ndarray,
    classes: np.ndarray,
    *,
    grid: tuple[int, int],
    window: int = 2,
    baseline: float = 0.0,
    batch_size: int = 256,
) -> np.ndarray:
    """N×h×w: for each cell, p(x) − p(x occluded), the drop of the probability of ``classes[i]``.

    The occluder is ``window``×``window`` cells set to ``baseline``, placed so the cell sits at
    offset ⌊(window−1)/2⌋ in it (centred for odd windows) and shifted inward at the border so it
    stays whole. Costly: N·(h·w + 1) forward passes, ``batch_size`` images at a time.
    """
    images, classes = _images(images), _classes(classes, len(images))
    grid = _check_grid(grid, images)
    _check_batch_size(batch_size)
    h, w = grid
    if not 1 <= window <= min(h, w):
        raise ValueError(f"window must be between 1 and {min(h, w)} cells for the {h}×{w} grid; got {window}")
    starts_y = np.clip(np.arange(h) - (window - 1) // 2, 0, h - window)
    starts_x = np.clip(np.arange(w) - (window - 1) // 2, 0, w - window)
    rows = (np.arange(h)[None, :] >= starts_y[:, None]) & (np.arange(h)[None, :] < starts_y[:, None] + window)
    cols = (np.arange(w)[None, :] >= starts_x[:, None]) & (np.arange(w)[None, :] < starts_x[:, None] + window)
    occluders = (rows[:, None, :, None] & cols[None, :, None, :]).reshape(h * w, h * w)
    # Row 0 removes nothing: the intact image.
    occluders = np.concatenate([np.zeros((1, h * w), bool), occluders])
    points = h * w + 1

    def plan(jobs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        index, which = np.divmod(jobs, points)
        return index, occluders[which]

    jobs = points * len(images)
    scores = _class_probabilities(predict, images, classes, jobs, plan, grid=grid, baseline=baseline, batch_size=batch_size)
    scores = scores.reshape(len(images), points)
    return (scores[:, :1] - scores[:, 1:]).reshape(len(images), h, w)


def rise_map(
    predict: Predict,
    images: np.ndarray,
    classes: np.ndarray,
    *,
    grid: tuple[int, int],
    samples: int = 500,
    mask_grid: tuple[int, int] = (7, 7),
    keep: float = 0.5,
    seed: int = 0,
    baseline: float = 0.0,
    batch_size: int = 256,
) -> np.ndarray:
    """N×h×w RISE saliency (Petsiuk et al. 2018): the class probability averaged over random masks.

    Each of ``samples`` masks keeps each cell of a coarse ``mask_grid`` with probability ``keep``,
    is stretched bilinearly over a canvas one coarse cell larger than the image and cropped at a
    random shift, so mask edges fall anywhere. The masked image is x·M + baseline·(1 − M); a
    cell's saliency is Σ p(x·M)·M̄ / (samples·keep), M̄ the mask's mean over the cell. The same
    masks serve every image. Takes N·samples forward passes, ``batch_size`` images at a time.
    """
    images, classes = _images(images), _classes(classes, len(images))
    grid = _check_grid(grid, images)
    _check_batch_size(batch_size)
    if samples < 1 or not 0 < keep <= 1:
        raise ValueError(f"rise_map needs samples >= 1 and 0 < keep <= 1; got samples={samples}, keep={keep}")
    if len(mask_grid) != 2 or min(mask_grid) < 1:
        raise ValueError(f"mask_grid must be two positive cell counts (rows, columns); got {mask_grid}")
    height, width = images.shape[-2:]
    rng = np.random.default_rng(seed)
    coarse = (rng.random((samples, *mask_grid)) < keep).astype(np.float32)
    step_y, step_x = -(-height // mask_grid[0]), -(-width // mask_grid[1])
    shifts = np.stack([rng.integers(0, step_y, samples), rng.integers(0, step_x, samples)], axis=1)
    up_y = _bilinear_weights(mask_grid[0], (mask_grid[0] + 1) * step_y)
    up_x = _bilinear_weights(mask_grid[1], (mask_grid[1] + 1) * step_x)
    h, w = grid
    saliency = np.zeros((len(images), h * w))
    base = np.float32(baseline)
    for start in range(0, samples, batch_size):
        chunk = slice(start, min(start + batch_size, samples))
        canvas = np.einsum("yi,mij,xj->myx", up_y, coarse[chunk], up_x, optimize=True)
        crops = [canvas[m, dy : dy + height, dx : dx + width] for m, (dy, dx) in enumerate(shifts[chunk])]
        masks = np.stack(crops).astype(np.float32)
        pooled = masks.reshape(len(masks), h, height // h, w, width // w).mean(axis=(2, 4)).reshape(len(masks), h * w)
        for i, image in enumerate(images):
            batch = image[None] * masks[:, None] + base * (1 - masks[:, None])
            probabilities = _probabilities(predict, batch)
            saliency[i] += _pick(probabilities, np.full(len(batch), classes[i])) @ pooled
    return (saliency / (samples * keep)).reshape(len(images), h, w)


# --- internals -----------------------------------------------------------------------------------


def _bilinear_weights(n_in: int, n_out: int) -> np.ndarray:
    """n_out×n_in weights that stretch n_in cells over n_out pixels by linear interpolation between cell centres."""
    centres = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    low = np.floor(centres).astype(int)
    high = np.minimum(low + 1, n_in - 1)
    frac = centres - low
    weights = np.zeros((n_out, n_in))
    np.add.at(weights, (np.arange(n_out), low), 1 - frac)
    np.add.at(weights, (np.arange(n_out), high), frac)
    return weights


def _class_probabilities(
    predict: Predict,
    images: np.ndarray,
    classes: np.ndarray,
    jobs: int,
    plan: Plan,
    *,
    grid: tuple[int, int],
    baseline: float,
    batch_size: int,
) -> np.ndarray:
    """p(classes[index]) for each of ``jobs`` perturbed images, built and scored ``batch_size`` at a time."""
    out = np.empty(jobs)
    for start in range(0, jobs, batch_size):
        index, removed = plan(np.arange(start, min(start + batch_size, jobs)))
        batch = _remove(images[index], removed, grid=grid, baseline=baseline)
        out[start : start + len(index)] = _pick(_probabilities(predict, batch), classes[index])
    return out


def _remove(images: np.ndarray, removed: np.ndarray, *, grid: tuple[int, int], baseline: float) -> np.ndarray:
    """Images with the pixel blocks of the removed cells (N×cells booleans) set to ``baseline``."""
    n, channels, height, width = images.shape
    h, w = grid
    blocks = images.reshape(n, channels, h, height // h, w, width // w)
    gone = removed.reshape(n, 1, h, 1, w, 1)
    return np.where(gone, np.float32(baseline), blocks).reshape(n, channels, height, width)


def _probabilities(predict: Predict, batch: np.ndarray) -> np.ndarray:
    probabilities = np.asarray(predict(batch))
    if probabilities.ndim != 2 or len(probabilities) != len(batch):
        raise ValueError(
            f"predict must return N×K class probabilities; for a batch of {len(batch)} it returned shape {probabilities.shape}"
        )
    return probabilities


def _pick(probabilities: np.ndarray, classes: np.ndarray) -> np.ndarray:
    if len(classes) and classes.max() >= probabilities.shape[1]:
        raise ValueError(f"class {int(classes.max())} asked for but predict returns {probabilities.shape[1]} classes")
    return probabilities[np.arange(len(classes)), classes].astype(np.float64)


def _trapezoid(curves: np.ndarray, fraction: np.ndarray) -> np.ndarray:
    """Trapezoid area under each row of ``curves`` over ``fraction`` (what ``np.trapezoid`` computes)."""
    return ((curves[:, 1:] + curves[:, :-1]) / 2 * np.diff(fraction)).sum(axis=1)


def _maps(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 3:
        raise ValueError(f"{name} must be N×h×w (or N×1×h×w); got shape {array.shape}")
    return array


def _images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must be a normalized N×C×H×W batch; got shape {images.shape}")
    return images


def _classes(classes: np.ndarray, n: int) -> np.ndarray:
    classes = np.asarray(classes)
    if classes.shape != (n,) or not np.issubdtype(classes.dtype, np.integer):
        raise ValueError(f"classes must be {n} integer class indices, one per image; got shape {classes.shape}, dtype {classes.dtype}")
    if n and classes.min() < 0:
        raise ValueError(f"classes must be non-negative indices; got {int(classes.min())}")
    return classes.astype(np.int64)


def _check_grid(grid: tuple[int, int], images: np.ndarray) -> tuple[int, int]:
    height, width = images.shape[-2:]
    if len(grid) != 2 or min(grid) < 1:
        raise ValueError(f"grid must be two positive cell counts (rows, columns); got {grid}")
    h, w = int(grid[0]), int(grid[1])
    if height % h or width % w:
        raise ValueError(
            f"the {h}×{w} grid does not divide the {height}×{width} images into equal blocks; "
            "use the model card's attention_size on inputs of its input_size, or resize the map"
        )
    return h, w


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch_size}")


def _order(order: np.ndarray, n: int, cells: int) -> np.ndarray:
    order = np.asarray(order)
    if order.ndim == 1:
        order = np.broadcast_to(order, (n, len(order)))
    if order.shape != (n, cells) or not np.issubdtype(order.dtype, np.integer):
        raise ValueError(
            f"order must be {n}×{cells} integer cell indices (one permutation per image); got shape {order.shape}, dtype {order.dtype}"
        )
    bad = np.flatnonzero((np.sort(order, axis=1) != np.arange(cells)).any(axis=1))
    if bad.size:
        raise ValueError(f"order row {int(bad[0])} is not a permutation of the {cells} cells (each index 0…{cells - 1} exactly once)")
    return order.astype(np.int64)
