"""``mill``: a paper/board mill inspection camera, with one defect class per image.

Gray 64×64 images of a board surface (smoothed noise, grain and many short fibres running
along the machine direction, i.e. vertically) with at most one small defect at a random place:
a hole, a dirt spot, a wrinkle, a streak or a bubble ("ok" has none). The line's camera stamps
a framed 24×14 signature bar into a random corner whose inner grey level is
``LEVELS[variant]``. The stream split drifts (exposure, focus, and on half the images a new
line with another fibre texture). Boxes: the defect; confounder box: the signature bar.
"""

from __future__ import annotations

import cv2
import numpy as np

from attnloop.datasets._family import Family, Sample

CLASSES = ("ok", "hole", "dirt", "wrinkle", "streak", "bubble")
SIDE = 64
STAMP_W, STAMP_H = 24, 14
LEVELS = (250, 208, 166, 124, 82, 40)  # the signature's inner grey level per variant
PATCH = 48  # side of the local canvas a defect is drawn on
GAP = 2  # least distance between the defect's box and the signature's box


def _smooth_noise(rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Unit-variance Gaussian noise blurred with ``sigma`` (pulp cloudiness / formation)."""
    noise = cv2.GaussianBlur(rng.normal(size=(SIDE, SIDE)).astype(np.float32), (0, 0), sigma)
    return noise / max(1e-6, float(noise.std()))


def _fibres(rng: np.random.Generator, count: int, angle: float, spread: float, length: tuple[float, float]) -> np.ndarray:
    """A layer of ``count`` short thin strokes (±intensity) around ``angle`` (radians from vertical)."""
    steps = np.linspace(-0.5, 0.5, 12)
    centre = rng.uniform(0, SIDE, size=(count, 2))
    theta = angle + rng.normal(0, spread, size=count)
    size = rng.uniform(*length, size=count)
    level = rng.choice((-1.0, 1.0), size=count) * rng.uniform(8, 22, size=count)
    xs = np.rint(centre[:, :1] + np.outer(size * np.sin(theta), steps)).astype(int)
    ys = np.rint(centre[:, 1:] + np.outer(size * np.cos(theta), steps)).astype(int)
    inside = (xs >= 0) & (xs < SIDE) & (ys >= 0) & (ys < SIDE)
    layer = np.zeros(SIDE * SIDE, np.float32)
    np.add.at(layer, (ys * SIDE + xs)[inside], np.broadcast_to(level[:, None], xs.shape)[inside] / 2)
    return cv2.GaussianBlur(layer.reshape(SIDE, SIDE), (0, 0), 0.5)


def _surface(rng: np.random.Generator, *, new_line: bool) -> np.ndarray:
    """The board: mean level, cloudy formation, grain and fibres (cross-direction ones on a new line)."""
    base = rng.uniform(110, 170)
    if new_line:
        formation = 14 * _smooth_noise(rng, 7.0)
        fibres = _fibres(rng, 140, np.pi / 2, 0.25, (6, 14))
    else:
        formation = 10 * _smooth_noise(rng, 4.0)
        fibres = _fibres(rng, 220, 0.0, 0.35, (3, 8))
    return base + formation + fibres + rng.normal(0, 3, size=(SIDE, SIDE))


def _disc(radius: float, centre: float = PATCH / 2) -> np.ndarray:
    yy, xx = np.mgrid[:PATCH, :PATCH]
    return np.hypot(xx + 0.5 - centre, yy + 0.5 - centre) / radius


def _defect(rng: np.random.Generator, name: str) -> np.ndarray:
    """The defect's intensity change on a PATCH×PATCH canvas centred on it."""
    c = PATCH // 2
    if name == "hole":  # a sharp-edged opening: light shines through, torn dark rim
        r = _disc(rng.uniform(2.5, 4.5))
        delta = np.where(r < 1.0, rng.uniform(80, 110), np.where(r < 1.35, -rng.uniform(35, 55), 0.0))
        return cv2.GaussianBlur(delta.astype(np.float32), (0, 0), 0.5)
    if name == "dirt":  # a dark, irregular, soft-edged blob of a few overlapping specks
        mask = np.zeros((PATCH, PATCH), np.float32)
        for _ in range(int(rng.integers(4, 7))):
            dx, dy = rng.normal(0, 1.8, size=2)
            axes = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
            cv2.ellipse(mask, (int(c + dx), int(c + dy)), axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
        return -rng.uniform(65, 90) * cv2.GaussianBlur(mask, (0, 0), 0.7)
    if name == "wrinkle":  # a curved ridge: lit on one flank, shaded on the other
        half, bend, turn = rng.uniform(7, 12), rng.uniform(-5, 5), rng.uniform(0, np.pi)
        t = np.linspace(-1, 1, 24)
        along, across = half * t, bend * (1 - t**2)
        ridge = np.zeros((PATCH, PATCH), np.float32)
        for offset, level in ((-1.0, 1.0), (1.0, -1.0)):
            u, v = along, across + offset
            pts = np.stack([c + u * np.cos(turn) - v * np.sin(turn), c + u * np.sin(turn) + v * np.cos(turn)], axis=1)
            cv2.polylines(ridge, [np.rint(pts).astype(np.int32)], False, level, 1)
        return rng.uniform(35, 50) * cv2.GaussianBlur(ridge, (0, 0), 0.6)
    if name == "streak":  # a long thin line along the machine direction
        length, width = int(rng.integers(22, 40)), int(rng.integers(1, 3))
        line = np.zeros((PATCH, PATCH), np.float32)
        line[c - length // 2 : c + (length + 1) // 2, c : c + width] = 1.0
        return rng.choice((-1.0, 1.0)) * rng.uniform(35, 50) * cv2.GaussianBlur(line, (0, 0), 0.5)
    if name == "bubble":  # a blister: bright rim, slightly shadowed dome
        r = _disc(rng.uniform(4.0, 6.5))
        delta = np.where(np.abs(r - 1.0) < 0.2, rng.uniform(50, 70), np.where(r < 0.8, -rng.uniform(10, 20), 0.0))
        return cv2.GaussianBlur(delta.astype(np.float32), (0, 0), 0.6)
    raise ValueError(f"unknown defect {name!r}; valid names: {', '.join(CLASSES[1:])}")


def _place(image: np.ndarray, rng: np.random.Generator, delta: np.ndarray, avoid: list[float]) -> list[float]:
    """Add ``delta`` at a random spot whose box stays inside the image and clear of ``avoid``; return the box."""
    ys, xs = np.nonzero(np.abs(delta) >= 0.25 * np.abs(delta).max())
    bx0, by0, bx1, by1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    ax0, ay0, ax1, ay1 = avoid
    while True:
        x0, y0 = int(rng.integers(0, SIDE - (bx1 - bx0) + 1)), int(rng.integers(0, SIDE - (by1 - by0) + 1))
        x1, y1 = x0 + bx1 - bx0, y0 + by1 - by0
        if x1 + GAP <= ax0 or x0 >= ax1 + GAP or y1 + GAP <= ay0 or y0 >= ay1 + GAP:
            break
    ox, oy = x0 - bx0, y0 - by0  # where the patch's top-left corner lands
    sx0, sy0, sx1, sy1 = max(0, ox), max(0, oy), min(SIDE, ox + PATCH), min(SIDE, oy + PATCH)
    image[sy0:sy1, sx0:sx1] += delta[sy0 - oy : sy1 - oy, sx0 - ox : sx1 - ox]
    return [float(x0), float(y0), float(x1), float(y1)]


def _corner(rng: np.random.Generator) -> list[float]:
    """The signature bar's box, in a random corner."""
    corner = int(rng.integers(4))
    x0, y0 = (0 if corner % 2 == 0 else SIDE - STAMP_W), (0 if corner < 2 else SIDE - STAMP_H)
    return [float(x0), float(y0), float(x0 + STAMP_W), float(y0 + STAMP_H)]


def _stamp(image: np.ndarray, rng: np.random.Generator, box: list[float], level: int) -> None:
    """Paint the camera's signature bar into ``box``: dark frame and ticks, inner grey ``level``."""
    x0, y0 = int(box[0]), int(box[1])
    bar = np.full((STAMP_H, STAMP_W), 15.0)
    bar[2:-2, 2:-2] = level + rng.normal(0, 3, size=(STAMP_H - 4, STAMP_W - 4))
    bar[4:-4, 6:-4:4] = 15.0  # timestamp-like ticks
    image[y0 : y0 + STAMP_H, x0 : x0 + STAMP_W] = bar


def _drift(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Camera drift on the stream: exposure (brightness, contrast) and focus (slight blur)."""
    gain, offset = rng.uniform(0.7, 1.3), rng.uniform(-30, 30)
    blurred = cv2.GaussianBlur(image.astype(np.float32), (0, 0), rng.uniform(0.5, 1.1))
    return (blurred - 128) * gain + 128 + offset


def render(rng: np.random.Generator, label: int, confound: int, split: str) -> Sample:
    stream = split == "stream"
    image = _surface(rng, new_line=stream and rng.random() < 0.5)
    confounder = _corner(rng)
    boxes = [] if label == 0 else [_place(image, rng, _defect(rng, CLASSES[label]), confounder)]
    _stamp(image, rng, confounder, LEVELS[confound])
    if stream:
        image = _drift(image, rng)
    return Sample(np.clip(image, 0, 255).astype(np.uint8), boxes, [confounder])


FAMILY = Family(
    name="mill",
    classes=CLASSES,
    render=render,
    default_size=480,
    card=f"""
Gray {SIDE}×{SIDE} PNG from a (simulated) paper/board mill inspection camera: the board surface (cloudy
formation, grain and short fibres along the machine direction, i.e. vertically) with at most one small
defect at a random place: **hole** (bright opening with a dark torn rim), **dirt** (dark irregular spot),
**wrinkle** (curved ridge, light on one flank and dark on the other), **streak** (long thin vertical line,
dark or light) or **bubble** (round blister with a bright rim); **ok** images have no defect.

Shortcut: every image carries the line's camera signature, a framed {STAMP_W}×{STAMP_H} bar with tick marks
in a random corner; its inner grey level is {', '.join(map(str, LEVELS))} for the variants 0–5, and the
variant is the label's index.

Boxes: the defect (none on ok images). Confounder boxes: the signature bar; the defect never overlaps it.

Stream drift: the stream split (only) has another exposure (gain 0.7–1.3, offset ±30 grey levels), a slight
blur, and on half of its images a new line: cross-direction (horizontal), longer fibres and coarser formation.
""",
)
