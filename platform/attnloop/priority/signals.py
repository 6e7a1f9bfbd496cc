"""Priority signals: how much correcting an image is likely to help, from one scoring pass.

Pure numpy functions of model outputs (PyTorch or ONNX Runtime alike). Every signal is
oriented the same way — higher means "correct this one sooner" — and lies in [0, 1].
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from attnloop.evaluation import attention_energy, energy_share

EPS = 1e-12

# The signals every scoring row carries (attnloop.scores), every task shows and serving answers
# (background attention needs the object's size, which serving does not know): computed in one
# place, :func:`frame_signals`.
ROW_SIGNALS = ("least_confidence", "margin", "entropy", "branch_disagreement", "background_attention")
PRIORITY = "margin"  # the signal the platform ranks frames by (:func:`priority`)


def _probabilities(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"expected N×K class probabilities with K ≥ 2, got shape {p.shape}")
    return p


def least_confidence(probabilities: np.ndarray) -> np.ndarray:
    """1 − the top probability, rescaled so that a uniform prediction scores 1."""
    p = _probabilities(probabilities)
    k = p.shape[1]
    return (1.0 - p.max(axis=1)) * k / (k - 1)


def margin(probabilities: np.ndarray) -> np.ndarray:
    """1 − (top probability − runner-up): 1 when the two best classes tie."""
    top2 = np.sort(_probabilities(probabilities), axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


def entropy(probabilities: np.ndarray) -> np.ndarray:
    """Shannon entropy divided by log K: 1 for a uniform prediction, 0 for a certain one."""
    p = _probabilities(probabilities)
    return -(p * np.log(np.clip(p, EPS, 1.0))).sum(axis=1) / np.log(p.shape[1])


def branch_disagreement(perception: np.ndarray, attention: np.ndarray) -> np.ndarray:
    """Jensen–Shannon divergence (base 2, in [0, 1]) between the two branches' probabilities.

    An ABN predicts twice — from the attention branch and from the perception branch; where
    they disagree, the attention map is unlikely to explain the prediction.
    """
    p, q = _probabilities(perception), _probabilities(attention)
    m = 0.5 * (p + q)

    def kl(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a * (np.log2(np.clip(a, EPS, 1.0)) - np.log2(np.clip(b, EPS, 1.0)))).sum(axis=1)

    return np.clip(0.5 * kl(p, m) + 0.5 * kl(q, m), 0.0, 1.0)


def background_attention(attention: np.ndarray, *, object_fraction: float) -> np.ndarray:
    """Share of attention energy outside the k strongest cells, k = the typical object's area.

    ``object_fraction`` is the object's typical share of the image (a user setting: a dirt spot
    on a board is ~0.01, a cell in a well ~0.05). A map focused on an object-sized region scores
    near 0; a diffuse map, or one spread over background, scores near 1.
    """
    if not 0.0 < object_fraction <= 1.0:
        raise ValueError(f"object_fraction must be in (0, 1], got {object_fraction}")
    e = attention_energy(attention)
    k = max(1, int(round(object_fraction * e.shape[1])))
    top = -np.sort(-e, axis=1)[:, :k].sum(axis=1)
    total = e.sum(axis=1)
    return np.where(total > EPS, 1.0 - top / np.maximum(total, EPS), 1.0)


def attention_spread(attention: np.ndarray) -> np.ndarray:
    """A size-free background estimate: entropy of the attention energy over the map / log(cells).

    1 for a flat map (the model looked everywhere), 0 when all energy sits in one cell.
    """
    e = attention_energy(attention)
    total = e.sum(axis=1, keepdims=True)
    share = np.where(total > EPS, e / np.maximum(total, EPS), 1.0 / e.shape[1])
    return -(share * np.log(np.clip(share, EPS, 1.0))).sum(axis=1) / np.log(e.shape[1])


def outside_box(attention: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Share of attention energy outside given boxes (coverage masks at the map's resolution)."""
    share = energy_share(attention, masks)
    return np.where(np.isnan(share), 1.0, 1.0 - share)


def confusion_driven(probabilities: np.ndarray, confusion: np.ndarray) -> np.ndarray:
    """How often a labeled validation set confuses this image's two most likely classes.

    The rate is the pair's symmetric off-diagonal count over the two classes' support, scaled
    so the most confused pair scores 1.
    """
    p = _probabilities(probabilities)
    c = np.asarray(confusion, np.float64)
    if c.shape != (p.shape[1], p.shape[1]):
        raise ValueError(f"confusion must be {p.shape[1]}×{p.shape[1]}, got {c.shape}")
    support = c.sum(axis=1)
    pair = (c + c.T) / np.maximum(support[:, None] + support[None, :], 1.0)
    np.fill_diagonal(pair, 0.0)
    if pair.max() > 0:
        pair = pair / pair.max()
    order = np.argsort(-p, axis=1)
    return pair[order[:, 0], order[:, 1]]


def wrong_first(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Misclassified images first (1), ranked among themselves and the rest by least confidence.

    Needs labels; misclassified scores lie in [0.5, 1], correct ones in [0, 0.5).
    """
    p = _probabilities(probabilities)
    labels = np.asarray(labels)
    if labels.shape != (len(p),):
        raise ValueError(f"expected {len(p)} labels, got shape {labels.shape}")
    wrong = p.argmax(axis=1) != labels
    return np.where(wrong, 0.5, 0.0) + 0.499 * least_confidence(p)


def frame_signals(
    probabilities: np.ndarray, attention_probabilities: np.ndarray, attention: np.ndarray | None = None, *, object_fraction: float | None = None
) -> dict[str, np.ndarray]:
    """The :data:`ROW_SIGNALS` of a batch of model outputs, by name; background attention only
    with the maps and the object's typical share of the image."""
    out = {
        "least_confidence": least_confidence(probabilities),
        "margin": margin(probabilities),
        "entropy": entropy(probabilities),
        "branch_disagreement": branch_disagreement(probabilities, attention_probabilities),
    }
    if attention is not None and object_fraction is not None:
        out["background_attention"] = background_attention(attention, object_fraction=object_fraction)
    return {name: out[name] for name in ROW_SIGNALS if name in out}


def priority(signals: Mapping[str, Any]) -> Any:
    """How soon a frame should be corrected, from its signals (one frame's, or arrays of a pool's):
    its margin uncertainty, 1 − (top probability − runner-up). What overlays, the attention sheet
    and the annotate flow rank by.

    The strategy benchmark (docs/benchmarks/strategies.md) chose it: margin is the best signal with a
    few boxes on `mill`, while the earlier composite, the mean of least confidence, branch
    disagreement and background attention (the benchmark's ``composite``), fell below random there;
    branch disagreement and background attention are at or below random on most families. Every
    signal stays in the rows and the tasks.
    """
    return signals[PRIORITY]
