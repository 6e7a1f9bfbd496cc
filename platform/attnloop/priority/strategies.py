"""Selection strategies: which ``budget`` images of a pool a person should correct first.

One entry point, :func:`select` (``select(pool, budget, *, ranking, exclude)``), for the platform's
annotate step and the strategy benchmark alike. Every strategy is ``fn(pool, budget, *, context)
-> ordered ids`` over a :class:`Pool` (one scoring pass: probabilities of both branches, attention
maps, embeddings, labels where known, or the signals a scoring run already computed) and never
returns an id in ``context.exclude`` (already queued). Strategies live in :data:`STRATEGIES`; where
to add one: docs/architecture.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Collection, Hashable, Sequence

import numpy as np

from attnloop.priority import signals as S
from attnloop.priority.similarity import SimilarityIndex

# what the platform's annotate step offers (no labels needed), its default first: with shortcut marks and
# propagation, coverage spends a few corrections where every kind of image is seen, so one of them shows the
# shortcut (docs/benchmarks/strategies.md: 98 % of the all-corrections gain at 2 % on decoy-digits, where
# random failed on a seed; tied with random on mill-sub80)
RANKINGS = ("coverage", "priority", "hybrid")
DEFAULT_RANKING = RANKINGS[0]


@dataclass
class Pool:
    ids: list[Hashable]
    probabilities: np.ndarray  # N×K perception branch
    attention_probabilities: np.ndarray | None  # N×K attention branch (None: its signals are in ``signals``)
    attention: np.ndarray | list  # N×h×w (a list where maps differ in size or some are missing)
    embeddings: np.ndarray  # N×D, or anything that gives rows of one when indexed (attnloop.scores.StoredEmbeddings)
    labels: np.ndarray | None = None  # N class indices, where known
    signals: dict[str, np.ndarray] = field(default_factory=dict)  # signals already computed (by a scoring run), by name

    def __post_init__(self) -> None:
        n = len(self.ids)
        for name in ("probabilities", "attention_probabilities", "attention", "embeddings", "labels"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"{name} has {len(value)} rows for {n} ids")
        for name, value in self.signals.items():
            if len(value) != n:
                raise ValueError(f"signal {name} has {len(value)} values for {n} ids")

    @classmethod
    def from_signals(cls, *, ids: Sequence[Hashable], probabilities, attention, embeddings, signals: dict[str, np.ndarray]) -> "Pool":
        """A pool scored earlier: its branch signals come computed (scoring rows keep no attention-branch probabilities)."""
        return cls(list(ids), probabilities, None, attention, embeddings, signals=dict(signals))


@dataclass
class Context:
    object_fraction: float = 0.05  # the typical object's share of the image
    class_weights: dict[int, float] | None = None  # weight per predicted class index
    exclude: set[Hashable] = field(default_factory=set)  # already queued
    confusion: np.ndarray | None = None  # K×K from a labeled validation set
    mistakes: Sequence[Hashable] = ()  # ids flagged as mistakes by a person (SimSearch seeds)
    seed: int = 0


def _needs(value, name: str):
    if value is None:
        raise ValueError(f"this strategy needs {name}; pass them in the pool or context")
    return value


def _maps(pool: Pool) -> np.ndarray:
    if isinstance(pool.attention, np.ndarray):
        return pool.attention
    if any(a is None for a in pool.attention):
        raise ValueError("this strategy needs every image's attention map; some have none")
    return np.stack(pool.attention)


def _stored_or(name: str, compute: Callable[[Pool, Context], np.ndarray]) -> Callable[[Pool, Context], np.ndarray]:
    """The signal as the pool's scoring run computed it, else computed from the pool's outputs."""

    def signal(pool: Pool, context: Context) -> np.ndarray:
        if name in pool.signals:
            return np.asarray(pool.signals[name], np.float64)
        return compute(pool, context)

    return signal


SIGNALS: dict[str, Callable[[Pool, Context], np.ndarray]] = {
    "least_confidence": _stored_or("least_confidence", lambda p, c: S.least_confidence(p.probabilities)),
    "margin": _stored_or("margin", lambda p, c: S.margin(p.probabilities)),
    "entropy": _stored_or("entropy", lambda p, c: S.entropy(p.probabilities)),
    "branch_disagreement": _stored_or(
        "branch_disagreement",
        lambda p, c: S.branch_disagreement(p.probabilities, _needs(p.attention_probabilities, "attention-branch probabilities")),
    ),
    "background_attention": _stored_or("background_attention", lambda p, c: S.background_attention(_maps(p), object_fraction=c.object_fraction)),
    "attention_focus": _stored_or("attention_focus", lambda p, c: S.attention_focus(_maps(p))),
    "attention_spread": lambda p, c: S.attention_spread(_maps(p)),
    "confusion": lambda p, c: S.confusion_driven(p.probabilities, _needs(c.confusion, "confusion")),
    "wrong_first": lambda p, c: S.wrong_first(p.probabilities, _needs(p.labels, "labels")),
    "composite": lambda p, c: (SIGNALS["least_confidence"](p, c) + SIGNALS["branch_disagreement"](p, c) + SIGNALS["background_attention"](p, c)) / 3,
    # what the platform ranks frames by; ``composite`` was its earlier priority
    "priority": lambda p, c: np.asarray(S.priority({name: SIGNALS[name](p, c) for name in S.ROW_SIGNALS}), np.float64),
}


def _weighted(pool: Pool, context: Context, scores: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """``scores`` (of the pool's ``rows``, default all) times the weight of each one's predicted class."""
    if not context.class_weights:
        return scores
    predicted = (pool.probabilities if rows is None else pool.probabilities[rows]).argmax(axis=1)
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
    order = np.argsort(np.argsort(scores, kind="stable"), kind="stable")
    return order / max(1, len(scores) - 1)


def k_center_greedy(embeddings: np.ndarray, candidates: Sequence[int], budget: int) -> list[int]:
    """Pick ``budget`` candidates that cover the embedding space: each next one is the farthest from those picked."""
    if not candidates:
        return []
    x = np.asarray(embeddings[list(candidates)], np.float64)
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
    """Mean of signals rank-normalized among the ids not excluded; among the top ``shortlist × budget``
    of those, a diverse batch by k-center greedy (only the shortlist's embeddings are read)."""
    open_ = np.array([i for i, id_ in enumerate(pool.ids) if id_ not in context.exclude], dtype=np.int64)
    if not len(open_):
        return []
    scores = np.mean([percentile(SIGNALS[name](pool, context)[open_]) for name in signals], axis=0)
    scores = _weighted(pool, context, scores, open_)
    top = [int(open_[j]) for j in np.argsort(-scores, kind="stable")[: shortlist * budget]]
    return [pool.ids[i] for i in k_center_greedy(pool.embeddings, top, budget)]


def coverage(pool: Pool, budget: int, *, context: Context) -> list[Hashable]:
    """Coverage before depth: the budget spread over the predicted classes in proportion to their
    share of the pool (at least one each while the budget lasts), and within a class over clusters of
    the embedding (k-means, k = the class's share), the highest-priority image of each cluster
    first. A few corrections then touch every kind of image instead of one corner of the pool."""
    from sklearn.cluster import KMeans

    open_ = np.array([i for i, id_ in enumerate(pool.ids) if id_ not in context.exclude], dtype=np.int64)
    if not len(open_) or budget <= 0:
        return []
    urgency = SIGNALS["priority"](pool, context)
    predicted = pool.probabilities[open_].argmax(axis=1)
    classes, counts = np.unique(predicted, return_counts=True)
    order = np.argsort(-counts, kind="stable")  # the biggest classes get the rounding's spare corrections
    share = np.zeros(len(classes), np.int64)
    for rank in range(min(budget, len(classes))):
        share[order[rank]] = 1
    left = budget - share.sum()
    if left > 0:
        extra = np.floor(left * counts / counts.sum()).astype(np.int64)
        extra[order[: left - extra.sum()]] += 1
        share += extra
    picked: list[int] = []
    for k, n in zip(classes, share):
        members = open_[predicted == k]
        n = int(min(n, len(members)))
        if n == 0:
            continue
        if n == len(members):  # the whole class (a push of every frame): no clusters to find
            picked.extend(int(i) for i in members)
            continue
        vectors = np.asarray(pool.embeddings[members], np.float64)
        labels = KMeans(n_clusters=n, n_init=4, random_state=context.seed).fit_predict(vectors) if n > 1 else np.zeros(len(members), int)
        for cluster in range(n):
            inside = members[labels == cluster]
            if len(inside):
                picked.append(int(inside[np.argmax(urgency[inside])]))
    picked.sort(key=lambda i: -urgency[i])
    allowed, taken = set(open_.tolist()), set(picked)
    rest = [int(i) for i in np.argsort(-urgency, kind="stable") if i in allowed and i not in taken]
    return [pool.ids[i] for i in (picked + rest)[:budget]]


def jtt(pool: Pool, budget: int, *, context: Context) -> list[Hashable]:
    """The error set first, in the manner of JTT (Liu et al. 2021): the pool images the model gets
    wrong (labels are cheap), most confidently wrong first — those the shortcut decides hardest —
    then the rest by their loss. Needs labels."""
    labels = _needs(pool.labels, "labels")
    p = np.clip(pool.probabilities, 1e-12, 1.0)
    loss = -np.log(p[np.arange(len(labels)), labels])
    wrong = p.argmax(axis=1) != labels
    scores = np.where(wrong, 1.0 + p.max(axis=1), np.tanh(loss))  # every mistake above every correct image
    return _order(pool, context, scores)[:budget]


STRATEGIES: dict[str, Callable[..., list[Hashable]]] = {
    "random": random_order,
    **{name: by_signal(name) for name in SIGNALS},
    "simsearch": simsearch,
    "hybrid": hybrid,
    "coverage": coverage,
    "jtt": jtt,
}
BATCHES = ("hybrid",)  # rankings that choose a batch of a given size rather than order the whole pool


def select(
    pool: Pool, budget: int | None, *, ranking: str = "priority", exclude: Collection[Hashable] = (), context: Context | None = None
) -> list[Hashable]:
    """The ids to correct first under ``ranking`` (a name in :data:`STRATEGIES`), most urgent first,
    none in ``exclude`` (already queued) or ``context.exclude``. ``budget`` None: every id, for the
    rankings that order the pool; a batch ranking (:data:`BATCHES`) needs its size."""
    try:
        fn = STRATEGIES[ranking]
    except KeyError:
        raise ValueError(f"unknown ranking {ranking!r}; valid names: {', '.join(STRATEGIES)}") from None
    context = context or Context()
    if exclude:
        context = replace(context, exclude=set(context.exclude) | set(exclude))
    if budget is None:
        if ranking in BATCHES:
            raise ValueError(f"the {ranking} ranking picks a batch: give its size (top_k / --limit)")
        budget = len(pool.ids)
    if budget < 0:
        raise ValueError(f"budget must be ≥ 0, got {budget}")
    return fn(pool, budget, context=context) if budget else []


def check_ranking(ranking: str, allowed: Sequence[str] = RANKINGS) -> str:
    """``ranking`` if it is one of ``allowed``, else a ValueError that lists them."""
    if ranking not in allowed:
        raise ValueError(f"unknown ranking {ranking!r}; valid names: {', '.join(allowed)}")
    return ranking


def ranks(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each item's rank by descending score (1: the highest; equal scores keep their order) and its
    percentile, the share of the others ranked below it in percent (100: the highest)."""
    scores = np.asarray(scores, np.float64)
    order = np.argsort(-scores, kind="stable")
    rank = np.empty(len(scores), np.int64)
    rank[order] = np.arange(1, len(scores) + 1)
    last = len(scores) - 1
    percentile = np.round(100.0 * (last - (rank - 1)) / last, 2) if last else np.full(len(scores), 100.0)
    return rank, percentile
