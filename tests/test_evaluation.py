import numpy as np
import pytest

from attnloop.evaluation import confusion_matrix, energy_share, summarize


def test_confusion_matrix_rows_are_truth():
    matrix = confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]


def test_energy_share_removes_the_floor_and_skips_empty_masks():
    attention = np.full((2, 2, 2), 0.5)
    attention[:, 0, 0] = 0.9  # mass above the floor lies in cell (0, 0) only
    masks = np.zeros((2, 2, 2))
    masks[0, 0, 0] = 1
    share = energy_share(attention, masks)
    assert share[0] == pytest.approx(1.0)
    assert np.isnan(share[1])


def test_summarize_reports_per_class_and_attention_metrics():
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    labels = np.array([0, 1, 1])
    attention = np.zeros((3, 2, 2))
    attention[:, 0, 0] = 1.0
    boxes = np.zeros((3, 2, 2))
    boxes[:, 0, 0] = 1
    confounders = np.zeros((3, 2, 2))
    confounders[:, 1, 1] = 1
    out = summarize(probabilities, labels, ["ok", "hole"], attention=attention, box_masks=boxes, confounder_masks=confounders)
    assert out["accuracy"] == pytest.approx(2 / 3)
    assert out["per_class"] == {"ok": 1.0, "hole": 0.5}
    assert out["confusion"] == [[1, 0], [1, 1]]
    assert out["attention_in_box"] == pytest.approx(1.0)
    assert out["wrong_reason"] == pytest.approx(0.0)
