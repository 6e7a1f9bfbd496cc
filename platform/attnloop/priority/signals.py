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
# (the attention signals only where the maps are passed, which serving does not do): computed in
# one place, :func:`frame_signals`.
ROW_SIGNALS = ("least_confidence", "margin", "entropy", "branch_disagreement", "background_attention", "attention_focus")
PRIORITY = "margin"  # the signal the platform ranks frames by (:func:`priority`)
AREA_TARGET = 0.15  # the share of the image a map opens when its card names no area prior (attnloop.models.abn's default)
# A frame's attention is "fixed on one spot" (scoring's and monitoring's ``off_object`` flag) when its
# attention focus exceeds this quantile of the focus on its model version's drift reference
# (docs/benchmarks/off-object.md): the flag marks the reference's top tenth, and a line where more
# frames fixate than on the reference shows it as a rise.
OFF_OBJECT_QUANTILE = 0.9


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
    near 0; a diffuse map, or one spread over background, scores near 1. A ranking signal only: a
    map whose area prior opens ~15 % of the image puts an object size of 1–5 % near 1 on nearly
    every frame, so what flags frames is :func:`attention_focus` (docs/benchmarks/off-object.md).
    """
    if not 0.0 < object_fraction <= 1.0:
        raise ValueError(f"object_fraction must be in (0, 1], got {object_fraction}")
    e = attention_energy(attention)
    k = max(1, int(round(object_fraction * e.shape[1])))
    top = -np.sort(-e, axis=1)[:, :k].sum(axis=1)
    total = e.sum(axis=1)
    return np.where(total > EPS, 1.0 - top / np.maximum(total, EPS), 1.0)


def attention_focus(attention: np.ndarray, *, area: float = AREA_TARGET) -> np.ndarray:
    """Share of attention energy in the map's strongest cells, as many as the model's area prior opens.

    ``area`` is the share of the image the map is trained to open (the card's ``area_target``,
    :func:`area_target`), not a guess at the object's size. A map that opens what its prior lets
    it, spread evenly, scores about ``area``; one fixed on a spot smaller than that scores near 1;
    a flat map (no energy above its floor) scores 0. On the shortcut families the frames a shortcut
    decides are the most focused ones (docs/benchmarks/off-object.md).
    """
    if not 0.0 < area <= 1.0:
        raise ValueError(f"area must be a share of the image in (0, 1], got {area}")
    e = attention_energy(attention)
    k = max(1, int(round(area * e.shape[1])))
    top = np.partition(e, e.shape[1] - k, axis=1)[:, e.shape[1] - k :].sum(axis=1)
    total = e.sum(axis=1)
    return np.where(total > EPS, top / np.maximum(total, EPS), 0.0)


def area_target(card: Any) -> float:
    """The share of the image ``card``'s attention map is trained to open (:data:`AREA_TARGET` for a
    card without an area prior: the original ABN)."""
    options = (getattr(card, "extra", None) or {}).get("attention") or {}
    return float(options.get("area_target") or AREA_TARGET)


def focus_threshold(focus: np.ndarray, *, quantile: float = OFF_OBJECT_QUANTILE) -> float:
    """The attention focus above which a frame counts as fixed on one spot: the ``quantile`` of the
    focus on known-good frames (a model version's drift reference)."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must lie in (0, 1), got {quantile}")
    values = np.asarray(focus, np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("no attention focus values to set the off-object threshold from; score the reference frames with their attention maps")
    return float(np.quantile(values, quantile))


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
    probabilities: np.ndarray,
    attention_probabilities: np.ndarray,
    attention: np.ndarray | None = None,
    *,
    object_fraction: float | None = None,
    area: float = AREA_TARGET,
) -> dict[str, np.ndarray]:
    """The :data:`ROW_SIGNALS` of a batch of model outputs, by name: attention focus with the maps
    (``area``: the card's :func:`area_target`), background attention with the maps and the
    object's typical share of the image."""
    out = {
        "least_confidence": least_confidence(probabilities),
        "margin": margin(probabilities),
        "entropy": entropy(probabilities),
        "branch_disagreement": branch_disagreement(probabilities, attention_probabilities),
    }
    if attention is not None:
        out["attention_focus"] = attention_focus(attention, area=area)
        if object_fraction is not None:
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
