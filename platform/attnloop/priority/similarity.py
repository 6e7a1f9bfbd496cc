"""SimSearch: find the near neighbours of known mistakes in the pool's embeddings.

One interface, two engines: exact cosine kNN (numpy, for pools up to ``EXACT_LIMIT``) and
FAISS's HNSW graph on inner products of L2-normalized vectors (approximate, for millions).
A repeated mistake is then corrected in one batch, and near-duplicates are collapsed so a
batch does not spend its budget on copies of one frame.
"""

from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np

EXACT_LIMIT = 50_000
METHODS = ("auto", "exact", "faiss")


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected N×D embeddings, got shape {x.shape}")
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class SimilarityIndex:
    def __init__(self, embeddings: np.ndarray, ids: Sequence[Hashable], *, method: str = "auto", hnsw_neighbours: int = 32) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; valid names: {', '.join(METHODS)}")
        self.vectors = _normalize(embeddings)
        self.ids = list(ids)
        if len(self.ids) != len(self.vectors):
            raise ValueError(f"{len(self.ids)} ids for {len(self.vectors)} embeddings")
        if len(set(self.ids)) != len(self.ids):
            raise ValueError("ids must be unique")
        self.position = {id_: i for i, id_ in enumerate(self.ids)}
        self.method = ("exact" if len(self.ids) <= EXACT_LIMIT else "faiss") if method == "auto" else method
        self._faiss = None
        if self.method == "faiss":
            import faiss

            index = faiss.IndexHNSWFlat(self.vectors.shape[1], hnsw_neighbours, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = 128
            index.add(self.vectors)
            self._faiss = index

    def search(self, queries: np.ndarray, k: int) -> tuple[list[list[Hashable]], np.ndarray]:
        """The k most similar pool ids per query, with their cosine similarities (best first)."""
        q = _normalize(queries)
        k = min(k, len(self.ids))
        if self._faiss is not None:
            similarity, index = self._faiss.search(q, k)
        else:
            scores = q @ self.vectors.T
            index = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            similarity = np.take_along_axis(scores, index, axis=1)
        return [[self.ids[j] for j in row if j >= 0] for row in index], similarity

    def neighbours(self, seeds: Sequence[Hashable], *, k: int = 10, min_similarity: float = 0.9) -> list[Hashable]:
        """Pool ids near any seed (not the seeds themselves), most similar first, each once."""
        missing = [s for s in seeds if s not in self.position]
        if missing:
            raise KeyError(f"seed ids not in the index: {missing[:5]}")
        if not seeds:
            return []
        rows, similarity = self.search(self.vectors[[self.position[s] for s in seeds]], k + 1)
        best: dict[Hashable, float] = {}
        seed_set = set(seeds)
        for row, sims in zip(rows, similarity):
            for id_, s in zip(row, sims):
                if id_ not in seed_set and s >= min_similarity and s > best.get(id_, -2.0):
                    best[id_] = float(s)
        return sorted(best, key=lambda i: (-best[i], self.position[i]))


def collapse_duplicates(embeddings: np.ndarray, ids: Sequence[Hashable], *, threshold: float = 0.98) -> list[Hashable]:
    """Keep the first of every group of near-duplicates (cosine ≥ ``threshold``), in input order."""
    vectors = _normalize(embeddings)
    kept: list[int] = []
    for i in range(len(vectors)):
        if not kept or float((vectors[kept] @ vectors[i]).max()) < threshold:
            kept.append(i)
    return [ids[i] for i in kept]
