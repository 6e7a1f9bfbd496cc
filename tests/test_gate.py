import numpy as np
import pytest

from attnloop.gate import AWAIT, PROMOTE, REFUSE, Outcome, Policy, decide, paired_bootstrap, report

CLASSES = ["ok", "hole"]


def outcome(correct, in_box=0.5, labels=None) -> Outcome:
    correct = np.asarray(correct, bool)
    labels = np.arange(correct.size) % 2 if labels is None else np.asarray(labels)
    return Outcome(correct=correct, in_box=np.full(correct.size, in_box), labels=labels)


def test_paired_bootstrap_interval_contains_the_gain_and_is_seeded():
    rng = np.random.default_rng(0)
    a = rng.random(400) < 0.6
    b = a | (rng.random(400) < 0.3)
    gain, low, high = paired_bootstrap(a, b, seed=1)
    assert low < gain < high and gain == pytest.approx(b.mean() - a.mean())
    assert paired_bootstrap(a, b, seed=1) == (gain, low, high)
    with pytest.raises(ValueError, match="equal, non-empty"):
        paired_bootstrap(a, b[:10])


def test_clear_gain_promotes():
    decision = decide(outcome([1] * 180 + [0] * 20), outcome([1] * 120 + [0] * 80), class_names=CLASSES, policy=Policy(min_gain=0.05))
    assert decision.action == PROMOTE and decision.reasons == []
    assert decision.figures["gain"] == pytest.approx(0.3) and decision.figures["gain_low"] > 0.05


def test_gain_under_the_threshold_is_refused():
    champion = [1] * 150 + [0] * 50
    challenger = [1] * 144 + [0] * 6 + [1] * 10 + [0] * 40  # fixes 10, breaks 6: +2 points, within the noise
    decision = decide(outcome(challenger), outcome(champion), class_names=CLASSES, policy=Policy(min_gain=0.0))
    assert decision.action == REFUSE and "lower bound" in decision.reasons[0]


def test_a_challenger_no_better_than_the_champion_is_refused():
    champion = [1] * 150 + [0] * 50
    same = decide(outcome(champion), outcome(champion), class_names=CLASSES, policy=Policy(min_gain=0.0))
    assert same.action == REFUSE and same.figures["gain_low"] == 0.0 and "lower bound" in same.reasons[0]
    one_more = decide(outcome([1] * 151 + [0] * 49), outcome(champion), class_names=CLASSES, policy=Policy(min_gain=0.0))
    assert one_more.action == REFUSE  # one image more is within the noise


def test_a_gain_with_an_attention_regression_is_refused():
    decision = decide(
        outcome([1] * 190 + [0] * 10, in_box=0.20), outcome([1] * 120 + [0] * 80, in_box=0.60), class_names=CLASSES
    )
    assert decision.action == REFUSE
    assert any("attention-in-box fell from 0.600 to 0.200" in r for r in decision.reasons)
    assert decision.figures["gain_low"] > 0  # the accuracy gain alone would have passed


def test_a_gain_with_a_collapsed_class_is_refused():
    labels = np.array([0] * 150 + [1] * 50)
    champion = np.array([1] * 75 + [0] * 75 + [1] * 50)  # ok 0.50, hole 1.00
    challenger = np.array([1] * 150 + [1] * 20 + [0] * 30)  # ok 1.00, hole 0.40: +25 points overall
    decision = decide(outcome(challenger, labels=labels), outcome(champion, labels=labels), class_names=CLASSES)
    assert decision.figures["gain"] > 0.1 and decision.figures["gain_low"] > 0
    assert decision.action == REFUSE
    assert decision.reasons == ["class 'hole' fell from 1.000 to 0.400 (more than 0.10)"]


def test_first_champion_needs_the_absolute_minimum():
    assert decide(outcome([1] * 60 + [0] * 40), None, class_names=CLASSES, policy=Policy(min_accuracy=0.5)).action == PROMOTE
    refused = decide(outcome([1] * 40 + [0] * 60), None, class_names=CLASSES, policy=Policy(min_accuracy=0.5))
    assert refused.action == REFUSE and "no champion yet" in refused.reasons[0]


def test_failed_evaluation_is_refused_and_approval_mode_waits():
    failed = decide(None, outcome([1] * 10), class_names=CLASSES, error="corrupt ONNX file")
    assert failed.action == REFUSE and failed.reasons == ["evaluation failed: corrupt ONNX file"]
    waiting = decide(outcome([1] * 200), outcome([1] * 100 + [0] * 100), class_names=CLASSES, policy=Policy(approval=True))
    assert waiting.action == AWAIT and waiting.passed
    text = report(waiting, name="m", challenger_version="3", champion_version="2")
    assert "Decision: awaiting-approval" in text and "| accuracy | 1.000 | 0.500 |" in text


def test_different_holdouts_cannot_be_compared():
    decision = decide(outcome([1] * 10), outcome([1] * 12), class_names=CLASSES)
    assert decision.action == REFUSE and "same holdout" in decision.reasons[0]
