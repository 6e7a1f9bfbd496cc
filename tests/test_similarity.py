import numpy as np
import pytest

from attnloop.priority.similarity import SimilarityIndex, collapse_duplicates


def planted(n: int = 400, dim: int = 32, seed: int = 0):
    """Random embeddings with three planted near-copies of item 7 and two of item 42."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    copies = {7: [100, 200, 300], 42: [150, 250]}
    for source, targets in copies.items():
        for t in targets:
            x[t] = x[source] + rng.normal(scale=0.02, size=dim)
    return x, [f"img{i}" for i in range(n)], copies


@pytest.mark.parametrize("method", ["exact", "faiss"])
def test_simsearch_finds_planted_duplicates(method):
    x, ids, copies = planted()
    index = SimilarityIndex(x, ids, method=method)
    found = index.neighbours(["img7"], k=10, min_similarity=0.95)
    assert sorted(found) == sorted(f"img{t}" for t in copies[7])
    both = index.neighbours(["img7", "img42"], k=10, min_similarity=0.95)
    assert set(both) == {f"img{t}" for ts in copies.values() for t in ts}
    rows, sims = index.search(x[:1], 1)
    assert rows[0] == ["img0"] and sims[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_exact_and_approximate_agree_on_neighbours():
    x, ids, _ = planted(n=2000, seed=1)
    exact, approx = SimilarityIndex(x, ids, method="exact"), SimilarityIndex(x, ids, method="faiss")
    e, _ = exact.search(x[:50], 5)
    a, _ = approx.search(x[:50], 5)
    recall = np.mean([len(set(r) & set(s)) / 5 for r, s in zip(e, a)])
    assert recall >= 0.9


def test_collapse_keeps_one_of_each_group():
    x, ids, copies = planted()
    kept = collapse_duplicates(x, ids, threshold=0.95)
    assert len(kept) == len(ids) - 5
    assert "img7" in kept and "img100" not in kept and "img42" in kept and "img250" not in kept


def test_bad_input_is_refused():
    x = np.random.default_rng(0).normal(size=(10, 4))
    ids = [f"img{i}" for i in range(10)]
    with pytest.raises(ValueError, match="valid names"):
        SimilarityIndex(x, ids, method="annoy")
    with pytest.raises(ValueError, match="unique"):
        SimilarityIndex(x, ["a"] * 10)
    with pytest.raises(KeyError, match="not in the index"):
        SimilarityIndex(x, ids).neighbours(["nope"])
