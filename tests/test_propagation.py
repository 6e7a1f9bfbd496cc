"""Propagation of shortcut marks: a region marked on a few images found again on the others."""

import numpy as np
import pytest

from attnloop.propagation import Mark, agreement, describe, iou, propagate


def stamped(rng: np.random.Generator, corner: int | None, level: int = 200) -> tuple[np.ndarray, list[float] | None]:
    """A noisy 64×64 board, with a framed 24×12 stamp in one corner (None: no stamp)."""
    image = rng.normal(120, 12, size=(64, 64))
    if corner is None:
        return np.clip(image, 0, 255).astype(np.uint8), None
    x0, y0 = (0 if corner % 2 == 0 else 40), (0 if corner < 2 else 52)
    image[y0 : y0 + 12, x0 : x0 + 24] = 15
    image[y0 + 2 : y0 + 10, x0 + 2 : x0 + 22] = level
    return np.clip(image, 0, 255).astype(np.uint8), [float(x0), float(y0), float(x0 + 24), float(y0 + 12)]


def test_a_marked_stamp_is_found_in_every_corner_and_nowhere_else():
    rng = np.random.default_rng(0)
    images, truth = {}, {}
    for i in range(40):
        corner = None if i % 4 == 3 else i % 4
        images[i], box = stamped(rng, corner, level=int(rng.choice([60, 130, 200, 250])))
        truth[i] = [box] if box else []
    marks = [Mark(0, truth[0][0])]
    matches = propagate(marks, images)
    assert 0 not in {m.image for m in matches}  # the marked image itself gets none
    quality = agreement(matches, {k: v for k, v in truth.items() if k != 0})
    assert quality["precision"] == 1.0 and quality["recall"] >= 0.9, quality
    assert all(m.source == 0 and 0.8 <= m.similarity <= 1.0 for m in matches)
    assert [m.similarity for m in matches] == sorted((m.similarity for m in matches), reverse=True)
    assert not {m.image for m in matches} & {k for k, v in truth.items() if not v}  # stamp-free boards stay unmarked
    # the exact and the FAISS paths agree
    faiss = propagate(marks, images, method="faiss")
    assert [(m.image, m.box) for m in faiss] == [(m.image, m.box) for m in matches]
    assert [m.similarity for m in faiss] == pytest.approx([m.similarity for m in matches], abs=1e-5)


def test_bad_input_says_what_is_wrong():
    image = np.zeros((32, 32), np.uint8)
    assert describe(image, [28, 28, 60, 60]) is None  # off the image
    with pytest.raises(KeyError, match="not among the images"):
        propagate([Mark("gone", [0, 0, 8, 8])], {"a": image})
    with pytest.raises(ValueError, match="valid names: auto, exact, faiss"):
        propagate([], {"a": image}, method="fast")
    assert propagate([], {"a": image}) == []
    assert iou([0, 0, 4, 4], [2, 0, 6, 4]) == pytest.approx(1 / 3)
