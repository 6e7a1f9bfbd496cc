import numpy as np
import pytest

from attnloop.card import ModelCard
from attnloop.priority import (
    attention_focus,
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
from attnloop.priority.signals import AREA_TARGET, area_target, focus_threshold

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


def faithful_maps(count: int, *, seed: int, spot: float = 0.0) -> np.ndarray:
    """32×32 maps as the default model makes them: a sigmoid whose logit sits at the area prior's
    (15 % open) with cell noise; ``spot`` adds that much logit on one random 3×3 spot (the map
    fixed on one place, as on the frames a shortcut decides)."""
    rng = np.random.default_rng(seed)
    logit = np.log(0.15 / 0.85) + 0.3 * rng.normal(size=(count, 32, 32))
    if spot:
        for i, (y, x) in enumerate(rng.integers(0, 29, size=(count, 2))):
            logit[i, y : y + 3, x : x + 3] += spot
    return 1.0 / (1.0 + np.exp(-logit))


def test_typical_maps_are_not_all_off_object_and_a_fixed_spot_is():
    """The off-object flag used to be background attention (object size 0.1, the score flow's
    default) above 0.5: every map that opens what its area prior lets it passed, so the share was
    100 % on every line. The flag is now the attention focus above its reference's 90th percentile."""
    reference, typical, spots = faithful_maps(300, seed=0), faithful_maps(300, seed=1), faithful_maps(50, seed=2, spot=4.0)
    assert (background_attention(typical, object_fraction=0.1) > 0.5).all()  # what the old flag saw
    cut = focus_threshold(attention_focus(reference))
    flagged = attention_focus(typical) > cut
    assert 0.03 < flagged.mean() < 0.2  # about the reference's tenth, as it should be for frames like the reference
    assert (attention_focus(spots) > cut).all()
    assert (background_attention(spots, object_fraction=0.1) > 0.5).all()  # the old flag could not tell the two apart


def test_attention_focus_is_measured_against_the_area_prior():
    one = np.zeros((1, 8, 8))
    one[0, 2:4, 2:4] = 0.9  # 4 cells: fewer than the prior opens
    assert attention_focus(one, area=8 / 64)[0] == pytest.approx(1.0)
    assert attention_focus(np.full((1, 8, 8), 0.15), area=0.15)[0] == 0.0  # no energy above the floor: no spot
    even = np.random.default_rng(3).uniform(0.0, 1.0, size=(200, 16, 16))
    assert np.median(attention_focus(even, area=0.25)) < 0.45  # spread over the map: little more than its area
    with pytest.raises(ValueError, match="area"):
        attention_focus(one, area=0.0)
    card = dict(arch="abn_cifar", class_names=("a", "b"), input_size=(32, 32), channels=1, mean=(0.5,), std=(0.2,), attention_size=(16, 16))
    assert area_target(ModelCard(**card, extra={"attention": {"gate": "multiply", "area_target": 0.2}})) == 0.2
    assert area_target(ModelCard(**card, extra={"attention": {"gate": "residual"}})) == AREA_TARGET  # the original ABN has no prior


def test_the_off_object_threshold_is_a_quantile_of_the_reference():
    values = np.linspace(0.0, 1.0, 101)
    assert focus_threshold(values) == pytest.approx(0.9)
    assert focus_threshold(np.r_[values, np.nan], quantile=0.5) == pytest.approx(0.5)  # frames without a focus do not count
    with pytest.raises(ValueError, match="no attention focus"):
        focus_threshold(np.array([np.nan]))
    with pytest.raises(ValueError, match="quantile"):
        focus_threshold(values, quantile=1.0)


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
