"""``moa``: fluorescence microscopy of cells whose mechanism of action shows in a few of them.

Two-channel 16-bit 64×64 images (channel 0 nuclei, channel 1 cytoplasm) of 4–7 cells with
camera-like noise (shot noise, read noise, offset) under an uneven illumination field. In
every class but ``control``, 2–3 cells show the phenotype: enlarged nuclei, nuclei broken into
fragments, elongated cytoplasm, or a tight cluster of 3 cells; the others look like control.
A plate artefact fills a corner of the image, and its kind (crescent, fibre, clump, bubble,
glare) is the confounder variant. Boxes: the phenotype cells; confounder box: the corner.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from attnloop.datasets._family import Family, Sample

SIDE = 64
CORNER = 18  # side of the artefact's corner region (7.9 % of the image)
CLASSES = ("control", "enlarged_nuclei", "fragmented_nuclei", "elongated", "clustered")
ARTEFACTS = ("well-edge crescent", "fibre", "debris clump", "air bubble", "edge glare")
ARTEFACT_CHANNELS = ((1.0, 1.0), (0.0, 1.0), (1.0, 0.0), (0.5, 0.5), (1.0, 0.4))  # (nuclei, cytoplasm) weight
ARTEFACT_LEVEL = 24000.0  # ADU; cells peak near 6000
NUCLEUS_LEVEL = 6000.0
CYTOPLASM_LEVEL = 2200.0
BACKGROUND = (250.0, 350.0)  # autofluorescence per channel, ADU
OFFSET, GAIN, READ_NOISE = 100.0, 2.0, 8.0  # camera: ADU offset, ADU per electron, read noise in ADU
GAP = 2.0  # minimum free space between cells that are not clustered, and between cells and the artefact
SUB = 16  # cv2 sub-pixel drawing: coordinates in 1/16 px (shift=4)


def _px(value: float) -> int:
    return int(round(value * SUB))


def _ellipse(canvas: np.ndarray, cx: float, cy: float, a: float, b: float, angle: float, level: float) -> None:
    cv2.ellipse(canvas, (_px(cx), _px(cy)), (_px(a), _px(b)), angle, 0, 360, level, -1, cv2.LINE_8, 4)


def _extent(a: float, b: float, angle: float) -> tuple[float, float]:
    """Half width and half height of an ellipse with semi-axes ``a``, ``b`` rotated by ``angle`` degrees."""
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return math.hypot(a * c, b * s), math.hypot(a * s, b * c)


def _cell(rng: np.random.Generator, kind: str) -> dict:
    """Shape of one cell (centred at the origin): cytoplasm ellipse, nucleus ellipse(s), brightness."""
    angle = float(rng.uniform(0, 180))
    a = float(rng.uniform(5.0, 6.5))
    b = a * float(rng.uniform(0.8, 1.0))
    r = float(rng.uniform(2.6, 3.4))
    nuclei = [(float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1)), r, r * float(rng.uniform(0.8, 1.0)), 1.0)]
    if kind == "enlarged_nuclei":
        a, b = a * 1.35, b * 1.35
        r = float(rng.uniform(5.0, 5.8))
        nuclei = [(0.0, 0.0, r, r * float(rng.uniform(0.85, 1.0)), 0.9)]
    elif kind == "fragmented_nuclei":
        nuclei = []
        for _ in range(int(rng.integers(4, 7))):
            rho, phi = float(rng.uniform(1.5, 3.8)), float(rng.uniform(0, 2 * math.pi))
            f = float(rng.uniform(0.9, 1.5))
            nuclei.append((rho * math.cos(phi), rho * math.sin(phi), f, f, 1.3))
    elif kind == "elongated":
        a, b = float(rng.uniform(10.0, 12.0)), float(rng.uniform(3.6, 4.4))
        nuclei = [(0.0, 0.0, r * 1.3, r * 0.8, 1.0)]
    return {"a": a, "b": b, "angle": angle, "nuclei": nuclei, "brightness": float(rng.uniform(0.75, 1.0))}


def _fits(cx: float, cy: float, half: tuple[float, float], radius: float, placed: list, forbidden: list[float]) -> bool:
    hw, hh = half
    x0, y0, x1, y1 = cx - hw - 1, cy - hh - 1, cx + hw + 1, cy + hh + 1
    if x0 < 0 or y0 < 0 or x1 > SIDE or y1 > SIDE:
        return False
    fx0, fy0, fx1, fy1 = forbidden
    if x0 < fx1 + GAP and x1 > fx0 - GAP and y0 < fy1 + GAP and y1 > fy0 - GAP:
        return False
    return all(math.hypot(cx - px, cy - py) >= radius + pr + GAP for px, py, pr in placed)


def _place(rng: np.random.Generator, half: tuple[float, float], radius: float, placed: list, forbidden: list[float]) -> tuple[float, float] | None:
    """A random centre where a shape of this extent fits, or None after 60 tries."""
    for _ in range(60):
        cx, cy = (float(v) for v in rng.uniform(0, SIDE, size=2))
        if _fits(cx, cy, half, radius, placed, forbidden):
            return cx, cy
    return None


def _layout(rng: np.random.Generator, label: int, forbidden: list[float]) -> list[tuple[float, float, dict, bool]]:
    """Cells as (cx, cy, shape, shows_evidence): the phenotype cells first, then control cells."""
    kind = CLASSES[label]
    placed: list[tuple[float, float, float]] = []  # exclusion discs (cx, cy, radius)
    cells = []
    if kind == "clustered":
        members = [_cell(rng, "control") for _ in range(3)]
        rho = 4.7  # neighbouring centres ~8 px apart: the cytoplasm overlaps
        radius = rho + max(max(c["a"], c["b"]) for c in members)
        centre = _place(rng, (radius, radius), radius, placed, forbidden)
        if centre is not None:
            phi = float(rng.uniform(0, 2 * math.pi))
            for k, cell in enumerate(members):
                t = phi + 2 * math.pi * k / 3
                cells.append((centre[0] + rho * math.cos(t), centre[1] + rho * math.sin(t), cell, True))
            placed.append((*centre, radius))
        evidence = []
    else:
        evidence = [_cell(rng, kind) for _ in range(int(rng.integers(1, 3) if kind == "control" else rng.integers(2, 4)))]
    others = [_cell(rng, "control") for _ in range(int(rng.integers(4, 8)) - len(cells) - len(evidence))]
    for i, cell in enumerate(evidence + others):
        half = _extent(cell["a"], cell["b"], cell["angle"])
        radius = max(cell["a"], cell["b"])
        centre = _place(rng, half, radius, placed, forbidden)
        if centre is not None:
            cells.append((*centre, cell, i < len(evidence)))
            placed.append((*centre, radius))
    return cells


def _artefact(rng: np.random.Generator, variant: int) -> np.ndarray:
    """The artefact in a CORNER×CORNER×2 patch whose image corner is the top-left one."""
    mask = np.zeros((CORNER, CORNER), np.float32)
    j = int(rng.integers(-1, 2))
    if variant == 0:
        cv2.circle(mask, (0, 0), 11 + j, 1.0, 5)
    elif variant == 1:
        cv2.line(mask, (1, 16 + j), (16 + j, 1), 1.0, 3)
    elif variant == 2:
        cv2.circle(mask, (8 + j, 8), 5, 1.0, -1)
    elif variant == 3:
        cv2.circle(mask, (8, 8 + j), 6, 1.0, 2)
    else:
        cv2.fillPoly(mask, [np.array([[0, 0], [11 + j, 0], [0, 11 + j]], np.int32)], 1.0)
    mask = cv2.GaussianBlur(mask, (0, 0), 0.7)
    level = ARTEFACT_LEVEL * float(rng.uniform(0.9, 1.1))
    return mask[:, :, None] * (level * np.asarray(ARTEFACT_CHANNELS[variant], np.float32))


def render(rng: np.random.Generator, label: int, confound: int, split: str) -> Sample:
    corner = int(rng.integers(4))
    left, top = (0 if corner % 2 == 0 else SIDE - CORNER), (0 if corner < 2 else SIDE - CORNER)
    forbidden = [float(left), float(top), float(left + CORNER), float(top + CORNER)]
    nuclei = np.zeros((SIDE, SIDE), np.float32)
    cytoplasm = np.zeros((SIDE, SIDE), np.float32)
    boxes = []
    for cx, cy, cell, evidence in _layout(rng, label, forbidden):
        _ellipse(cytoplasm, cx, cy, cell["a"], cell["b"], cell["angle"], CYTOPLASM_LEVEL * cell["brightness"])
        c, s = math.cos(math.radians(cell["angle"])), math.sin(math.radians(cell["angle"]))
        for dx, dy, a, b, gain in cell["nuclei"]:
            x, y = cx + dx * c - dy * s, cy + dx * s + dy * c
            _ellipse(nuclei, x, y, a, b, cell["angle"], NUCLEUS_LEVEL * cell["brightness"] * gain)
        if evidence:
            hw, hh = _extent(cell["a"], cell["b"], cell["angle"])
            boxes.append([float(max(0, math.floor(cx - hw - 1))), float(max(0, math.floor(cy - hh - 1))),
                          float(min(SIDE, math.ceil(cx + hw + 1))), float(min(SIDE, math.ceil(cy + hh + 1)))])
    signal = np.stack([cv2.GaussianBlur(nuclei, (0, 0), 1.0), cv2.GaussianBlur(cytoplasm, (0, 0), 1.5)], axis=-1)
    signal += np.asarray(BACKGROUND, np.float32)
    patch = _artefact(rng, confound)[:: 1 if corner < 2 else -1, :: 1 if corner % 2 == 0 else -1]
    signal[top : top + CORNER, left : left + CORNER] += patch
    theta, depth = float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0.0, 0.2))
    ys, xs = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32) / SIDE - 0.5
    signal *= (1 - depth * (0.5 + xs * math.cos(theta) + ys * math.sin(theta)))[:, :, None]
    counts = rng.poisson(signal / GAIN) * GAIN + OFFSET + rng.normal(0, READ_NOISE, size=signal.shape)
    return Sample(np.clip(np.rint(counts), 0, 65535).astype(np.uint16), boxes, [forbidden])


FAMILY = Family(
    name="moa",
    classes=CLASSES,
    render=render,
    default_size=400,
    extension="tiff",
    card=f"""
Fluorescence microscopy, {SIDE}×{SIDE} px, 16-bit, two-page TIFF: page 0 nuclei, page 1 cytoplasm.
4–7 cells per image with camera noise (shot noise at {GAIN:g} ADU/e⁻, {READ_NOISE:g} ADU read noise,
{OFFSET:g} ADU offset) under an uneven illumination field. In each class but `control`, 2–3 cells
show the mechanism-of-action phenotype and the rest look like control: `enlarged_nuclei` (large
nuclei in larger cells), `fragmented_nuclei` (each nucleus broken into 4–6 small bright fragments),
`elongated` (stretched cytoplasm), `clustered` (3 cells packed together; other cells never touch).

Shortcut: a bright plate artefact in a random {CORNER}×{CORNER} corner, one kind per label in
class order: {", ".join(ARTEFACTS)}, each with its own channel mix. No cell enters that corner.

Boxes: each phenotype cell (for `control`, 1–2 ordinary cells). Confounder boxes: the artefact's corner.
""",
)
