"""Selection strategies: which ``budget`` images of a pool a person should correct first.

Every strategy is ``rank(pool, budget, *, context) -> ordered ids`` over a :class:`Pool` (one
scoring pass: probabilities of both branches, attention maps, embeddings, labels where known)
and never returns an id in ``context.exclude`` (already queued). Strategies live in a
registry; :func:`rank` looks them up by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Hashable, Sequence

import numpy as np

from attnloop.priority import signals as S
from attnloop.priority.similarity import SimilarityIndex


@dataclass
class Pool:
    ids: list[Hashable]
    probabilities: np.ndarray  # N×K perception branch
    attention_probabilities: np.ndarray  # N×K attention branch
    attention: np.ndarray  # N×h×w
    embeddings: np.ndarray  # N×D
    labels: np.ndarray | None = None  # N class indices, where known

    def __post_init__(self) -> None:
        n = len(self.ids)
        for name in ("probabilities", "attention_probabilities", "attention", "embeddings"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} rows for {n} ids")


@dataclass
class Context:
    object_fraction: float = 0.05  # the typical object's share of the image
    class_weights: dict[int, float] | None = None  # weight per predicted class index
    exclude: set[Hashable] = field(default_factory=set)  # already queued
    confusion: np.ndarray | None = None  # K×K from a labeled validation set
    mistakes: Sequence[Hashable] = ()  # ids flagged as mistakes by a person (SimSearch seeds)
    seed: int = 0


SIGNALS: dict[str, Callable[[Pool, Context], np.ndarray]] = {
    "least_confidence": lambda p, c: S.least_confidence(p.probabilities),
    "margin": lambda p, c: S.margin(p.probabilities),
    "entropy": lambda p, c: S.entropy(p.probabilities),
    "branch_disagreement": lambda p, c: S.branch_disagreement(p.probabilities, p.attention_probabilities),
    "background_attention": lambda p, c: S.background_attention(p.attention, object_fraction=c.object_fraction),
    "attention_spread": lambda p, c: S.attention_spread(p.attention),
    "confusion": lambda p, c: S.confusion_driven(p.probabilities, _needs(c.confusion, "confusion")),
    "wrong_first": lambda p, c: S.wrong_first(p.probabilities, _needs(p.labels, "labels")),
    "composite": lambda p, c: (SIGNALS["least_confidence"](p, c) + SIGNALS["branch_disagreement"](p, c) + SIGNALS["background_attention"](p, c)) / 3,
    "priority": lambda p, c: _platform_priority(p, c),
}


def _platform_priority(pool: Pool, context: Context) -> np.ndarray:
    """What the platform ranks frames by (:func:`attnloop.scoring.priority`), from the pool's signals.

    ``composite`` is the platform's earlier priority: the mean of least confidence, branch
    disagreement and background attention."""
    from attnloop.scoring import priority

    names = ("least_confidence", "margin", "entropy", "branch_disagreement", "background_attention")
    return np.asarray(priority({name: SIGNALS[name](pool, context) for name in names}), np.float64)


def _needs(value, name: str):
    if value is None:
        raise ValueError(f"this strategy needs {name}; pass them in the pool or context")
    return value


def _weighted(pool: Pool, context: Context, scores: np.ndarray) -> np.ndarray:
    if not context.class_weights:
        return scores
    predicted = pool.probabilities.argmax(axis=1)
    return scores * np.array([context.class_weights.get(int(k), 1.0) for k in predicted])


def _order(pool: Pool, context: Context, scores: np.ndarray) -> list[Hashable]:
    """Ids by descending score (ties by pool order), excluded ids left out."""
    order = np.argsort(-scores, kind="stable")
    return [pool.ids[i] for i in order if pool.ids[i] not in context.exclude]


def by_signal(name: str) -> Callable[..., list[Hashable]]:
    def rank_by(pool: Pool, budget: int, *, context: Context) -> list[Hashable]:
        return _order(pool, context, _weighted(pool, context, SIGNALS[name](pool, context)))[:budget]

    rank_by.__name__ = name
    return rank_by


def random_order(pool: Pool, budget: int, *, context: Context) -> list[Hashable]:
    scores = np.random.default_rng(context.seed).random(len(pool.ids))
    return _order(pool, context, scores)[:budget]


def simsearch(pool: Pool, budget: int, *, context: Context) -> list[Hashable]:
    """Seed mistakes (flagged, else wrong-first or least confidence), each followed by its near neighbours."""
    fallback = "wrong_first" if pool.labels is not None else "least_confidence"
    ranked = _order(pool, context, SIGNALS[fallback](pool, context))
    seeds = [s for s in context.mistakes if s not in context.exclude] or ranked[: max(1, budget // 5)]
    index = SimilarityIndex(pool.embeddings, pool.ids)
    chosen: list[Hashable] = []
    for seed in seeds:
        for id_ in [seed, *index.neighbours([seed], k=10, min_similarity=0.9)]:
            if id_ not in context.exclude and id_ not in chosen:
                chosen.append(id_)
    chosen += [id_ for id_ in ranked if id_ not in chosen]
    return chosen[:budget]


HYBRID_SIGNALS = ("least_confidence", "branch_disagreement", "background_attention")


def percentile(scores: np.ndarray) -> np.ndarray:
    """Rank-normalize to [0, 1] so signals on different scales combine fairly."""
    ranks = np.argsort(np.argsort(scores, kind="stable"), kind="stable")
    return ranks / max(1, len(scores) - 1)


def k_center_greedy(embeddings: np.ndarray, candidates: Sequence[int], budget: int) -> list[int]:
    """Pick ``budget`` candidates that cover the embedding space: each next one is the farthest from those picked."""
    if not candidates:
        return []
    x = embeddings[list(candidates)].astype(np.float64)
    picked = [0]
    distance = np.linalg.norm(x - x[0], axis=1)
    distance[0] = -1.0  # never picked twice, even where the rest coincide with it
    while len(picked) < min(budget, len(candidates)):
        nxt = int(np.argmax(distance))
        picked.append(nxt)
        distance = np.minimum(distance, np.linalg.norm(x - x[nxt], axis=1))
        distance[picked] = -1.0
    return [candidates[i] for i in picked]


def hybrid(pool: Pool, budget: int, *, context: Context, signals: Sequence[str] = HYBRID_SIGNALS, shortlist: int = 4) -> list[Hashable]:
    """Mean of rank-normalized signals; among the top ``shortlist × budget``, a diverse batch by k-center greedy."""
    scores = np.mean([percentile(SIGNALS[name](pool, context)) for name in signals], axis=0)
    scores = _weighted(pool, context, scores)
    position = {id_: i for i, id_ in enumerate(pool.ids)}
    top = [position[id_] for id_ in _order(pool, context, scores)[: shortlist * budget]]
    return [pool.ids[i] for i in k_center_greedy(pool.embeddings, top, budget)]


STRATEGIES: dict[str, Callable[..., list[Hashable]]] = {
    "random": random_order,
    **{name: by_signal(name) for name in SIGNALS},
    "simsearch": simsearch,
    "hybrid": hybrid,
}


def rank(strategy: str, pool: Pool, budget: int, *, context: Context | None = None) -> list[Hashable]:
    """The ``budget`` ids to correct first under ``strategy``, most urgent first."""
    try:
        fn = STRATEGIES[strategy]
    except KeyError:
        raise ValueError(f"unknown strategy {strategy!r}; valid names: {', '.join(STRATEGIES)}") from None
    if budget < 0:
        raise ValueError(f"budget must be ≥ 0, got {budget}")
    return fn(pool, budget, context=context or Context()) if budget else []
