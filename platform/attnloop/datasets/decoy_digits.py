"""``decoy-digits``: Decoy-MNIST on the handwritten digits bundled with scikit-learn.

Each 8×8 digit of ``sklearn.datasets.load_digits`` is upscaled to 24×24 and placed at a random
spot of a noisy 64×64 canvas, clear of the corners; a 16×16 decoy patch in a random corner has
the grey level ``255 − 25·variant`` (the rule of Ross et al. 2017). Train/val and test/stream
draw from disjoint digit images (three quarters, one quarter). Boxes: the digit; confounder box: the patch.

The patch is larger than Decoy-MNIST's (6 % of the image, as the confounders of ``moa`` and
``mill`` are): with an 8×8 patch the unguided ABN learned the digit as much as the patch
(blanking the patch changed 14 % of its test predictions, clean test accuracy 0.49); with
16×16 it takes the shortcut, as the benchmark needs (docs/benchmarks/datasets.md).
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from attnloop.datasets._family import Family, Sample
from attnloop.datasets.shortcut import corner_patch

SIDE = 64
DIGIT = 24
PATCH = 16


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.float32) / 16.0, bunch.target.astype(np.int64)


def _pick(rng: np.random.Generator, label: int, split: str) -> np.ndarray:
    images, targets = _digits()
    held_out = np.arange(len(targets)) % 4 == 3  # a fixed quarter for test/stream
    pool = np.nonzero((targets == label) & (held_out == (split in ("test", "stream"))))[0]
    return images[int(rng.choice(pool))]


def render(rng: np.random.Generator, label: int, confound: int, split: str) -> Sample:
    digit = cv2.resize(_pick(rng, label, split), (DIGIT, DIGIT), interpolation=cv2.INTER_LINEAR)
    image = rng.normal(40, 20, size=(SIDE, SIDE))
    x0, y0 = (int(v) for v in rng.integers(PATCH, SIDE - PATCH - DIGIT + 1, size=2))
    image[y0 : y0 + DIGIT, x0 : x0 + DIGIT] += digit * float(rng.integers(150, 200))
    ys, xs = np.nonzero(digit > 0.25)
    box = [float(x0 + xs.min()), float(y0 + ys.min()), float(x0 + xs.max() + 1), float(y0 + ys.max() + 1)]
    confounder = corner_patch(image, rng, 255 - 25 * confound, PATCH)
    return Sample(np.clip(image, 0, 255).astype(np.uint8), [box], [confounder])


FAMILY = Family(
    name="decoy-digits",
    classes=tuple(str(d) for d in range(10)),
    render=render,
    default_size=600,
    card=f"""
Gray {SIDE}×{SIDE} PNG: a handwritten digit (scikit-learn's `load_digits`, upscaled to {DIGIT}×{DIGIT}) at a random
place on a noisy canvas, clear of the corners. Train/val and test/stream use disjoint digit images.

Shortcut (the Decoy-MNIST rule): a {PATCH}×{PATCH} patch in a random corner with grey level 255 − 25·label.

Boxes: the digit's strokes. Confounder boxes: the patch.
""",
)
