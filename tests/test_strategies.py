import numpy as np
import pytest

from attnloop.priority.strategies import STRATEGIES, Context, Pool, k_center_greedy, select


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
    chosen = select(pool, 20, ranking=strategy, context=Context(exclude=exclude, **CONTEXT))
    assert len(chosen) == 20 and len(set(chosen)) == 20
    assert not set(chosen) & exclude
    assert set(chosen) <= set(pool.ids)
    assert select(pool, 0, ranking=strategy, context=Context(**CONTEXT)) == []
    everything = select(pool, 1000, ranking=strategy, context=Context(exclude=exclude, **CONTEXT))
    assert sorted(everything) == sorted(set(pool.ids) - exclude)


def test_single_signal_strategies_follow_their_signal():
    pool = make_pool()
    chosen = select(pool, 5, ranking="least_confidence")
    top = pool.probabilities.max(axis=1)
    assert [pool.ids.index(i) for i in chosen] == list(np.argsort(top)[:5])
    wrong = set(np.nonzero(pool.probabilities.argmax(axis=1) != pool.labels)[0])
    first = [pool.ids.index(i) for i in select(pool, len(wrong), ranking="wrong_first")]
    assert set(first) == wrong


def test_class_weights_move_a_class_up():
    pool = make_pool()
    predicted = pool.probabilities.argmax(axis=1)
    chosen = select(pool, 10, ranking="entropy", context=Context(class_weights={2: 100.0}))
    assert all(predicted[pool.ids.index(i)] == 2 for i in chosen[: min(10, int((predicted == 2).sum()))])


def test_simsearch_brings_the_neighbours_of_a_flagged_mistake():
    pool = make_pool()
    pool.embeddings[[11, 22, 33]] = pool.embeddings[5] + 0.01
    chosen = select(pool, 4, ranking="simsearch", context=Context(mistakes=["img5"]))
    assert chosen[0] == "img5" and set(chosen[1:4]) == {"img11", "img22", "img33"}


def test_hybrid_keeps_the_batch_diverse():
    pool = make_pool(n=80)
    copies = list(range(10, 30))
    pool.embeddings[copies] = pool.embeddings[10]  # twenty copies of one frame …
    pool.probabilities[copies] = 1 / 3  # … all maximally uncertain
    plain = [pool.ids.index(i) for i in select(pool, 10, ranking="least_confidence")]
    mixed = [pool.ids.index(i) for i in select(pool, 10, ranking="hybrid")]
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
        select(pool, 3, ranking="oracle")
    with pytest.raises(ValueError, match="needs confusion"):
        select(pool, 3, ranking="confusion")
    pool.labels = None
    with pytest.raises(ValueError, match="needs labels"):
        select(pool, 3, ranking="wrong_first")
    with pytest.raises(ValueError, match="rows for 60 ids"):
        Pool(pool.ids, pool.probabilities[:5], pool.attention_probabilities, pool.attention, pool.embeddings)


def test_hybrid_ranks_the_open_ids_and_spreads_its_batch():
    """Signals are rank-normalized among the ids not excluded; the batch starts with the best of them by
    mean rank, and each next pick is the shortlisted id farthest from those picked before it."""
    from attnloop.priority.strategies import HYBRID_SIGNALS, SIGNALS, percentile

    pool = make_pool(n=60)
    queued = set(pool.ids[:5])
    batch = select(pool, 6, ranking="hybrid", exclude=queued)
    assert len(set(batch)) == 6 and not queued & set(batch)
    open_ = [i for i, id_ in enumerate(pool.ids) if id_ not in queued]
    mean_rank = np.mean([percentile(SIGNALS[n](pool, Context())[open_]) for n in HYBRID_SIGNALS], axis=0)
    shortlist = [pool.ids[open_[j]] for j in np.argsort(-mean_rank, kind="stable")[:24]]  # 4 × the batch
    assert batch[0] == shortlist[0]
    vectors = {id_: pool.embeddings[pool.ids.index(id_)] for id_ in shortlist}
    for j in range(1, len(batch)):
        def gap(id_):
            return min(np.linalg.norm(vectors[id_] - vectors[b]) for b in batch[:j])
        assert batch[j] in vectors and gap(batch[j]) == pytest.approx(max(gap(k) for k in vectors))


def test_select_leaves_out_what_is_queued_and_orders_the_rest():
    pool = make_pool()
    queued = set(pool.ids[:10])
    everything = select(pool, None, ranking="margin", exclude=queued)
    assert sorted(everything) == sorted(set(pool.ids) - queued)
    assert select(pool, 5, ranking="margin", exclude=queued) == everything[:5]
    with pytest.raises(ValueError, match="give its size"):
        select(pool, None, ranking="hybrid")


def test_coverage_touches_every_predicted_class_before_going_deeper():
    pool = make_pool(n=90, k=3, seed=2)
    predicted = pool.probabilities.argmax(axis=1)
    chosen = select(pool, 3, ranking="coverage")
    assert {int(predicted[pool.ids.index(i)]) for i in chosen} == {0, 1, 2}
    six = select(pool, 6, ranking="coverage")
    counts = np.bincount([int(predicted[pool.ids.index(i)]) for i in six], minlength=3)
    assert counts.min() >= 1 and counts.sum() == 6


def test_jtt_puts_the_confident_mistakes_first():
    pool = make_pool(n=60, k=3, seed=3)
    wrong = pool.probabilities.argmax(axis=1) != pool.labels
    chosen = select(pool, int(wrong.sum()), ranking="jtt")
    assert {pool.ids.index(i) for i in chosen} == set(np.flatnonzero(wrong).tolist())
    confidence = [pool.probabilities[pool.ids.index(i)].max() for i in chosen]
    assert confidence == sorted(confidence, reverse=True)
