"""Metrics on model outputs (pure numpy): accuracy, confusion, attention-in-box, wrong-reason.

Attention energy is the attention mass above the map's own floor (M − min M, summed): a sigmoid
map never reaches 0, and without the floor removed every share drifts toward the box's area.
*Attention-in-box* is the share of that energy inside the ground-truth boxes, *wrong-reason* the share inside the confounder boxes;
both are averaged over the images that have such boxes. The wrong-reason score of Friedrich et al. (2023) measures how much of
the confounder region an explanation activates; as a share of the map's energy, a flat map scores the confounder's area and a
map that looks only at the confounder scores 1.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted ones."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(labels, np.int64), np.asarray(predictions, np.int64)), 1)
    return matrix


def attention_energy(attention: np.ndarray) -> np.ndarray:
    """N×(h·w) attention mass above each map's floor."""
    a = np.asarray(attention, np.float64).reshape(len(attention), -1)
    return a - a.min(axis=1, keepdims=True)


def energy_share(attention: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per image, the share of attention mass inside a coverage mask (N×h×w each); NaN where the mask is empty."""
    energy = attention_energy(attention)
    masks = np.asarray(masks, np.float64).reshape(energy.shape)
    inside = (energy * masks).sum(axis=1)
    total = energy.sum(axis=1)
    share = inside / np.maximum(total, 1e-12)
    return np.where(masks.any(axis=1), share, np.nan)


def _mean_or_none(values: np.ndarray) -> float | None:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else None


def summarize(
    probabilities: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    *,
    attention: np.ndarray | None = None,
    box_masks: np.ndarray | None = None,
    confounder_masks: np.ndarray | None = None,
) -> dict:
    """Accuracy, per-class accuracy, confusion matrix and the attention metrics of one split."""
    predictions = probabilities.argmax(axis=1)
    matrix = confusion_matrix(labels, predictions, len(class_names))
    support = matrix.sum(axis=1)
    out: dict = {
        "n": int(len(labels)),
        "accuracy": float((predictions == labels).mean()) if len(labels) else None,
        "per_class": {
            name: (float(matrix[i, i] / support[i]) if support[i] else None) for i, name in enumerate(class_names)
        },
        "confusion": matrix.tolist(),
    }
    if attention is not None and box_masks is not None:
        out["attention_in_box"] = _mean_or_none(energy_share(attention, box_masks))
    if attention is not None and confounder_masks is not None:
        out["wrong_reason"] = _mean_or_none(energy_share(attention, confounder_masks))
    return out
