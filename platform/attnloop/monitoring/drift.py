"""Drift of one line against the serving model's reference, four figures, each a well-known test:

- **class mix**: population stability index (PSI, from scipy's relative entropy) and Pearson's χ²
  test of the two class counts (``scipy.stats.chi2_contingency``);
- **confidence**: the two-sample Kolmogorov–Smirnov distance and test (``scipy.stats.ks_2samp``);
- **embeddings**: a classifier two-sample test — how well a logistic regression tells the line's
  embeddings from the reference's (the ROC AUC of its cross-validated scores, scikit-learn; 0.5:
  indistinguishable), whose p-value is the Mann–Whitney U test of those scores
  (``scipy.stats.mannwhitneyu``; the AUC is U / (n₁n₀)). A permutation test would need thousands of
  refits to reach the alert level: with 30 permutations its p-value cannot go below 1/31 ≈ 0.032;
- **attention**: the rise of the share of "off-object" frames — attention fixed on one spot, its
  focus above the model version's threshold (:mod:`attnloop.monitoring.reference`) — with Fisher's
  exact test (``scipy.stats.fisher_exact``, one-sided).

A figure alerts when its size passes its threshold and its test is significant
(:mod:`attnloop.monitoring.thresholds`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from attnloop.monitoring.thresholds import Thresholds

EPSILON = 1e-4  # a class absent on one side still gets this share, so PSI stays finite
MAX_EMBEDDINGS = 400  # per side: enough for the classifier test, bounded in time


@dataclass(frozen=True)
class Figure:
    name: str  # class_psi | confidence_ks | embedding_auc | off_object_rise
    value: float
    threshold: float
    p_value: float | None
    alert: bool
    detail: str = ""  # what moved, in words

    def to_dict(self) -> dict:
        return asdict(self)


def psi(reference: Sequence[float], current: Sequence[float]) -> float:
    """Population stability index of two distributions over the same bins (counts or shares)."""
    from scipy.special import rel_entr

    a = np.asarray(reference, float)
    b = np.asarray(current, float)
    a = np.maximum(a / a.sum(), EPSILON)
    b = np.maximum(b / b.sum(), EPSILON)
    return float(np.sum(rel_entr(b, a) + rel_entr(a, b)))


def class_mix(reference: Sequence[str], current: Sequence[str], thresholds: Thresholds) -> Figure:
    from scipy.stats import chi2_contingency

    classes = sorted(set(reference) | set(current))
    ref, cur = Counter(reference), Counter(current)
    table = np.array([[ref[c] for c in classes], [cur[c] for c in classes]], float)
    value = psi(table[0], table[1])
    used = table[:, table.sum(axis=0) > 0]
    p = float(chi2_contingency(used).pvalue) if used.shape[1] > 1 else 1.0
    shares = table / table.sum(axis=1, keepdims=True)
    moved = sorted(zip(classes, shares[1] - shares[0]), key=lambda t: -abs(t[1]))[:2]
    detail = ", ".join(f"{c} {shares[0][classes.index(c)]:.0%} → {shares[1][classes.index(c)]:.0%}" for c, _ in moved)
    return Figure("class_psi", value, thresholds.class_psi, p, value >= thresholds.class_psi and p < thresholds.p_value, detail)


def confidence(reference: Sequence[float], current: Sequence[float], thresholds: Thresholds) -> Figure:
    from scipy.stats import ks_2samp

    result = ks_2samp(np.asarray(reference, float), np.asarray(current, float))
    value, p = float(result.statistic), float(result.pvalue)
    detail = f"median {np.median(reference):.2f} → {np.median(current):.2f}"
    return Figure("confidence_ks", value, thresholds.confidence_ks, p, value >= thresholds.confidence_ks and p < thresholds.p_value, detail)


def off_object(reference: Sequence[bool], current: Sequence[bool], thresholds: Thresholds) -> Figure:
    from scipy.stats import fisher_exact

    r, c = np.asarray(reference, bool), np.asarray(current, bool)
    rise = float(c.mean() - r.mean())
    p = float(fisher_exact([[int(c.sum()), int((~c).sum())], [int(r.sum()), int((~r).sum())]], alternative="greater").pvalue)
    detail = f"{r.mean():.0%} of reference frames → {c.mean():.0%}"
    return Figure("off_object_rise", rise, thresholds.off_object_rise, p, rise >= thresholds.off_object_rise and p < thresholds.p_value, detail)


def embeddings(reference: np.ndarray, current: np.ndarray, thresholds: Thresholds, *, seed: int = 0) -> Figure:
    """The classifier two-sample test on at most :data:`MAX_EMBEDDINGS` embeddings a side."""
    from scipy.stats import mannwhitneyu
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    a = np.asarray(reference, np.float32)
    b = np.asarray(current, np.float32)
    a = a[rng.permutation(len(a))[:MAX_EMBEDDINGS]]
    b = b[rng.permutation(len(b))[:MAX_EMBEDDINGS]]
    x = np.concatenate([a, b])
    y = np.r_[np.zeros(len(a)), np.ones(len(b))]
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=500))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    scores = cross_val_predict(model, x, y, cv=folds, method="decision_function")  # each frame scored by a model that never saw it
    test = mannwhitneyu(scores[y == 1], scores[y == 0], alternative="greater")
    auc, p = float(test.statistic) / (len(b) * len(a)), float(test.pvalue)
    detail = f"a classifier tells them apart with ROC AUC {auc:.2f} (0.5: not at all)"
    return Figure("embedding_auc", auc, thresholds.embedding_auc, p, auc >= thresholds.embedding_auc and p < thresholds.p_value, detail)
