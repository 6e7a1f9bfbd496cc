import numpy as np
import pytest

from attnloop.priority.strategies import STRATEGIES, Context, Pool, k_center_greedy, rank


def make_pool(n: int = 60, k: int = 3, seed: int = 0) -> Pool:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * 2
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    attention_logits = logits + rng.normal(size=(n, k))
    attention_probabilities = np.exp(attention_logits) / np.exp(attention_logits).sum(axis=1, keepdims=True)
    return Pool(
        ids=[f"img{i}" for i in range(n)],
        probabilities=probabilities,
        attention_probabilities=attention_probabilities,
        attention=rng.uniform(size=(n, 8, 8)),
        embeddings=rng.normal(size=(n, 16)),
        labels=rng.integers(0, k, size=n),
    )


CONTEXT = dict(confusion=np.array([[10, 3, 0], [2, 12, 1], [0, 1, 9]]))


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_strategies_never_return_excluded_ids(strategy):
    pool = make_pool()
    exclude = set(pool.ids[::2])
    chosen = rank(strategy, pool, 20, context=Context(exclude=exclude, **CONTEXT))
    assert len(chosen) == 20 and len(set(chosen)) == 20
    assert not set(chosen) & exclude
    assert set(chosen) <= set(pool.ids)
    assert rank(strategy, pool, 0, context=Context(**CONTEXT)) == []
    everything = rank(strategy, pool, 1000, context=Context(exclude=exclude, **CONTEXT))
    assert sorted(everything) == sorted(set(pool.ids) - exclude)


def test_single_signal_strategies_follow_their_signal():
    pool = make_pool()
    chosen = rank("least_confidence", pool, 5)
    top = pool.probabilities.max(axis=1)
    assert [pool.ids.index(i) for i in chosen] == list(np.argsort(top)[:5])
    wrong = set(np.nonzero(pool.probabilities.argmax(axis=1) != pool.labels)[0])
    first = [pool.ids.index(i) for i in rank("wrong_first", pool, len(wrong))]
    assert set(first) == wrong


def test_class_weights_move_a_class_up():
    pool = make_pool()
    predicted = pool.probabilities.argmax(axis=1)
    chosen = rank("entropy", pool, 10, context=Context(class_weights={2: 100.0}))
    assert all(predicted[pool.ids.index(i)] == 2 for i in chosen[: min(10, int((predicted == 2).sum()))])


def test_simsearch_brings_the_neighbours_of_a_flagged_mistake():
    pool = make_pool()
    pool.embeddings[[11, 22, 33]] = pool.embeddings[5] + 0.01
    chosen = rank("simsearch", pool, 4, context=Context(mistakes=["img5"]))
    assert chosen[0] == "img5" and set(chosen[1:4]) == {"img11", "img22", "img33"}


def test_hybrid_keeps_the_batch_diverse():
    pool = make_pool(n=80)
    copies = list(range(10, 30))
    pool.embeddings[copies] = pool.embeddings[10]  # twenty copies of one frame …
    pool.probabilities[copies] = 1 / 3  # … all maximally uncertain
    plain = [pool.ids.index(i) for i in rank("least_confidence", pool, 10)]
    mixed = [pool.ids.index(i) for i in rank("hybrid", pool, 10)]
    assert len(set(plain) & set(copies)) == 10
    assert len(set(mixed) & set(copies)) <= 2


def test_k_center_greedy_picks_spread_points():
    points = np.array([[0.0, 0], [0.1, 0], [10, 0], [10.1, 0], [0, 10]])
    picked = k_center_greedy(points, [0, 1, 2, 3, 4], 3)
    assert picked[0] == 0  # the most urgent candidate comes first
    assert [len({0, 1} & set(picked)), len({2, 3} & set(picked)), len({4} & set(picked))] == [1, 1, 1]


def test_k_center_greedy_never_picks_a_candidate_twice():
    """Identical embeddings (the same frame seen twice, say) still give a batch of distinct candidates."""
    points = np.array([[1.0, 1], [1.0, 1], [1.0, 1], [5, 5]])
    assert sorted(k_center_greedy(points, [0, 1, 2, 3], 4)) == [0, 1, 2, 3]
    assert k_center_greedy(points, [0, 1, 2], 3) == [0, 1, 2]


def test_errors_name_what_is_missing():
    pool = make_pool()
    with pytest.raises(ValueError, match="valid names: random"):
        rank("oracle", pool, 3)
    with pytest.raises(ValueError, match="needs confusion"):
        rank("confusion", pool, 3)
    pool.labels = None
    with pytest.raises(ValueError, match="needs labels"):
        rank("wrong_first", pool, 3)
    with pytest.raises(ValueError, match="rows for 60 ids"):
        Pool(pool.ids, pool.probabilities[:5], pool.attention_probabilities, pool.attention, pool.embeddings)
