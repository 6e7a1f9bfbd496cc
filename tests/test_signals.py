import numpy as np
import pytest

from attnloop.priority import (
    attention_spread,
    background_attention,
    branch_disagreement,
    confusion_driven,
    entropy,
    least_confidence,
    margin,
    outside_box,
    wrong_first,
)

UNIFORM = np.full((1, 4), 0.25)
CERTAIN = np.array([[1.0, 0.0, 0.0, 0.0]])


@pytest.mark.parametrize("signal", [least_confidence, margin, entropy])
def test_uncertainty_signals_are_maximal_on_uniform_and_zero_on_certain(signal):
    assert signal(UNIFORM)[0] == pytest.approx(1.0)
    assert signal(CERTAIN)[0] == pytest.approx(0.0)
    middle = signal(np.array([[0.6, 0.3, 0.1, 0.0]]))[0]
    assert 0.0 < middle < 1.0


def test_margin_sees_a_tie_between_two_classes():
    assert margin(np.array([[0.5, 0.5, 0.0]]))[0] == pytest.approx(1.0)
    assert least_confidence(np.array([[0.5, 0.5, 0.0]]))[0] == pytest.approx(0.75)


def test_branch_disagreement():
    p = np.array([[0.7, 0.2, 0.1], [0.0, 1.0, 0.0]])
    np.testing.assert_allclose(branch_disagreement(p, p), 0.0, atol=1e-12)
    opposite = branch_disagreement(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]))
    assert opposite[0] == pytest.approx(1.0)
    partial = branch_disagreement(np.array([[0.8, 0.2]]), np.array([[0.4, 0.6]]))[0]
    assert 0.0 < partial < 1.0
    assert partial == pytest.approx(branch_disagreement(np.array([[0.4, 0.6]]), np.array([[0.8, 0.2]]))[0])


def test_attention_outside_the_box_scores_one_and_inside_zero():
    attention = np.zeros((2, 4, 4))
    attention[0, 3, 3] = 1.0  # all energy in the corner, outside the box
    attention[1, 0, 0] = 1.0  # all energy inside
    masks = np.zeros((2, 4, 4))
    masks[:, :2, :2] = 1
    np.testing.assert_allclose(outside_box(attention, masks), [1.0, 0.0])


def test_background_attention_with_an_object_size():
    focused = np.zeros((1, 8, 8))
    focused[0, 2:4, 2:4] = 0.9  # 4 cells = the object's size
    diffuse = np.random.default_rng(0).uniform(0.4, 0.6, size=(1, 8, 8))
    assert background_attention(focused, object_fraction=4 / 64)[0] == pytest.approx(0.0)
    assert background_attention(diffuse, object_fraction=4 / 64)[0] > 0.8
    flat = np.full((1, 8, 8), 0.5)  # no energy above the floor: nothing is looked at
    assert background_attention(flat, object_fraction=0.1)[0] == 1.0
    with pytest.raises(ValueError, match="object_fraction"):
        background_attention(focused, object_fraction=0.0)


def test_attention_spread_needs_no_size():
    one = np.zeros((1, 8, 8))
    one[0, 4, 4] = 1.0
    spread = attention_spread(np.concatenate([one, np.random.default_rng(1).uniform(0, 1, size=(1, 8, 8))]))
    assert spread[0] == pytest.approx(0.0) and spread[1] > 0.9


def test_confusion_driven_weights_the_most_confused_pair():
    confusion = np.array([[50, 10, 0], [12, 40, 1], [0, 1, 60]])  # classes 0 and 1 get mixed up
    probabilities = np.array([[0.5, 0.4, 0.1], [0.1, 0.2, 0.7], [0.6, 0.0, 0.4]])
    scores = confusion_driven(probabilities, confusion)
    assert scores[0] == pytest.approx(1.0)
    assert 0.0 < scores[1] < 0.1
    assert scores[2] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="3×3"):
        confusion_driven(probabilities, np.eye(2))


def test_wrong_first_puts_every_mistake_before_every_correct_prediction():
    probabilities = np.array([[0.9, 0.1], [0.55, 0.45], [0.95, 0.05], [0.6, 0.4]])
    labels = np.array([0, 0, 1, 1])
    scores = wrong_first(probabilities, labels)
    assert min(scores[2], scores[3]) > max(scores[0], scores[1])
    assert scores[3] > scores[2]  # among mistakes, the less confident first
    with pytest.raises(ValueError, match="labels"):
        wrong_first(probabilities, labels[:2])


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="N×K"):
        entropy(np.array([0.5, 0.5]))
