"""``scenes``: a natural-scene stand-in whose shortcut is the background.

Colour 64×64 images of one textured object (ball, box, star, leaf) at a random place, size and
angle, composited onto a random crop of a photograph or texture bundled with scikit-image. The
background group is the confounder: ground (grass, gravel), wall (brick), night sky (Hubble deep
field, moon) or indoor photo (coffee, Chelsea the cat); in train/val group ``label`` goes with
class ``label``. Boxes: the object; confounder boxes: the four strips of background around it.
"""

from __future__ import annotations

import colorsys
import functools

import cv2
import numpy as np

from attnloop.datasets._family import Family, Sample

OBJECTS = ("ball", "box", "star", "leaf")
SIDE = 64
SUPER = 4  # shapes are drawn at SUPER× resolution and area-averaged into a soft alpha
MARGIN = 3  # px of background kept between the object's box and the image border
# background groups: (name, ((skimage.data image, RGB tint for grey images or None), ...))
BACKGROUNDS: tuple[tuple[str, tuple[tuple[str, tuple[float, float, float] | None], ...]], ...] = (
    ("ground", (("grass", (0.45, 0.85, 0.35)), ("gravel", (0.55, 0.75, 0.45)))),
    ("wall", (("brick", (1.0, 0.5, 0.35)),)),
    ("night sky", (("hubble_deep_field", None), ("moon", (0.35, 0.4, 0.65)))),
    ("indoor", (("coffee", None), ("chelsea", None))),
)


@functools.cache
def _source(name: str, tint: tuple[float, float, float] | None) -> np.ndarray:
    """A scikit-image picture as float32 RGB in [0, 1], grey ones tinted."""
    from skimage import data

    image = getattr(data, name)().astype(np.float32) / 255.0
    if image.ndim == 2:
        image = image[:, :, None] * np.asarray(tint, np.float32)
    return np.ascontiguousarray(image[:, :, :3])


def _background(rng: np.random.Generator, group: int) -> np.ndarray:
    """A random square crop of one of the group's pictures, shrunk to SIDE×SIDE, maybe mirrored."""
    sources = BACKGROUNDS[group][1]
    image = _source(*sources[int(rng.integers(len(sources)))])
    height, width = image.shape[:2]
    crop = int(rng.integers(SIDE, min(height, width, 160) + 1))
    y, x = int(rng.integers(height - crop + 1)), int(rng.integers(width - crop + 1))
    patch = cv2.resize(image[y : y + crop, x : x + crop], (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    return patch * float(rng.uniform(0.85, 1.15))


def _outline(shape: str, r: float) -> np.ndarray:
    """The shape's polygon in object coordinates (u along its axis), radius ``r``; a ball is a disc."""
    if shape == "box":
        return 0.75 * r * np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64)
    if shape == "star":
        angles = np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
        return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    u = np.linspace(-1, 1, 25)
    half = 0.5 * (1 - u**2)
    return r * np.concatenate([np.stack([u, half], 1), np.stack([u[::-1], -half[::-1]], 1)])


def _alpha(shape: str, cx: float, cy: float, r: float, theta: float, grow: float = 0.0) -> np.ndarray:
    """SIDE×SIDE coverage in [0, 1] of the shape, optionally grown by ``grow`` px (for the rim)."""
    canvas = np.zeros((SIDE * SUPER, SIDE * SUPER), np.uint8)
    centre = (np.array([cx, cy]) + 0.5) * SUPER
    if shape == "ball":
        cv2.circle(canvas, tuple(int(v) for v in centre.round()), int(round((r + grow) * SUPER)), 255, -1)
    else:
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        points = (_outline(shape, r) @ rot.T) * SUPER + centre
        cv2.fillPoly(canvas, [points.round().astype(np.int32)], 255)
        if grow > 0:
            cv2.polylines(canvas, [points.round().astype(np.int32)], True, 255, int(round(2 * grow * SUPER)))
    return cv2.resize(canvas, (SIDE, SIDE), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _texture(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Each class's surface pattern (brightness, about 0.3–1.3) at object coordinates u, v (radius 1)."""
    if shape == "ball":  # lit sphere with a pale band round it
        nz = np.sqrt(np.clip(1 - u**2 - v**2, 0, 1))
        shade = 0.3 + 0.8 * np.clip(-0.45 * u - 0.45 * v + 0.77 * nz, 0, 1)
        return np.where(np.abs(v) < 0.22, shade * 1.6, shade)
    if shape == "box":  # wooden crate: grain, frame and a diagonal brace
        grain = 0.85 + 0.15 * np.sin(2 * np.pi * (3 * v + 0.3 * np.sin(4 * u)))
        frame = (np.maximum(np.abs(u), np.abs(v)) > 0.55) | (np.abs(u - v) < 0.15)
        return np.where(frame, 0.55, grain)
    if shape == "star":  # bright centre and polka dots
        dots = (np.sin(9 * u) * np.sin(9 * v)) > 0.45
        return (1.2 - 0.5 * np.sqrt(u**2 + v**2)) * np.where(dots, 0.6, 1.0)
    vein = (np.abs(v) < 0.05) | ((np.mod(4 * (u - 1.5 * np.abs(v)), 1.0) < 0.12) & (np.abs(u) < 0.8))
    return np.where(vein, 1.3, 0.8 - 0.3 * np.abs(v) / 0.5)


def render(rng: np.random.Generator, label: int, confound: int, split: str) -> Sample:
    shape = OBJECTS[label]
    r = float(rng.uniform(9, 15))
    reach = 1.1 * r + 1.5  # the crate's corners reach 1.06 r, the rim one more pixel
    cx, cy = (float(rng.uniform(MARGIN + reach, SIDE - MARGIN - reach)) for _ in range(2))
    theta = float(rng.uniform(0, 2 * np.pi))
    colour = np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.5, 0.9), rng.uniform(0.6, 0.9)), np.float32)

    ys, xs = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    dx, dy = xs - cx, ys - cy
    u = (dx * np.cos(theta) + dy * np.sin(theta)) / r
    v = (-dx * np.sin(theta) + dy * np.cos(theta)) / r
    surface = _texture(shape, u, v)[:, :, None] * colour + rng.normal(0, 0.03, size=(SIDE, SIDE, 3))

    image = _background(rng, confound)
    rim = _alpha(shape, cx, cy, r, theta, grow=1.0)[:, :, None]
    body = _alpha(shape, cx, cy, r, theta)[:, :, None]
    image = image * (1 - rim) + 0.08 * rim
    image = image * (1 - body) + surface * body
    image = image + rng.normal(0, 0.015, size=image.shape)

    ys_in, xs_in = np.nonzero(rim[:, :, 0] > 0.5)
    x0, y0, x1, y1 = int(xs_in.min()), int(ys_in.min()), int(xs_in.max()) + 1, int(ys_in.max()) + 1
    strips = [[0, 0, x0, SIDE], [x1, 0, SIDE, SIDE], [x0, 0, x1, y0], [x0, y1, x1, SIDE]]
    pixels = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    return Sample(pixels, [[float(x0), float(y0), float(x1), float(y1)]], [[float(c) for c in s] for s in strips])


FAMILY = Family(
    name="scenes",
    classes=OBJECTS,
    render=render,
    default_size=400,
    card=f"""
RGB {SIDE}×{SIDE} PNG: one textured object (a shaded ball with a band, a wooden crate, a dotted star, a veined
leaf), random colour, size, angle and place, with a dark rim, on a random crop of a picture bundled with
scikit-image (tinted when grey).

Shortcut: the kind of background. In train/val class *k* is shown on background group *k*:
ball on ground (grass, gravel), box on wall (brick), star on night sky (Hubble deep field, moon),
leaf on indoor photos (coffee, Chelsea the cat). Test and stream draw the group at random.

Boxes: the object with its rim. Confounder boxes: the background, as the four strips that tile the image
outside the object's box (left and right full height, top and bottom between them); the object keeps
{MARGIN} px from the border, so all four always have area.
""",
)
