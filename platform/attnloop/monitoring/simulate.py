"""Seeded scoring rows of a line over time, with or without drift: what the monitoring tests, its
benchmark and the page's demonstration run on, without a model. The rows have the scoring schema and
go through :func:`attnloop.scores.write_part` like real ones.

A line's frames are drawn per class: the predicted class from ``mix``, the top probability
from a Beta around ``confidence``, the attention focus high (0.55–0.95) on an ``off_object`` share of
the frames and low (0.05–0.45) on the rest (a reference of ``off_object`` 0.1 puts its threshold, the
90th percentile, between the two), the embedding a class centre plus noise, moved by
``embedding_shift`` (a camera change moves every frame's features).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import numpy as np
import zlib

from attnloop import scores
from attnloop.storage import Store

CLASSES = ("crack", "inclusion", "patches", "pitted", "rolled", "scratches")
DIM = 32


@dataclass(frozen=True)
class Line:
    """How a line's frames look: class mix (None: uniform), confidence, off-object share, embedding shift."""

    mix: tuple[float, ...] | None = None
    confidence: float = 0.85
    off_object: float = 0.1
    embedding_shift: float = 0.0

    def drifted(self, **changes) -> "Line":
        return replace(self, **changes)


def _centres() -> np.ndarray:
    return np.random.default_rng(12345).normal(size=(len(CLASSES), DIM)).astype(np.float32)


def frames(line: Line, count: int, *, seed: int) -> tuple[list[dict], np.ndarray]:
    """``count`` frames' figures (class, probabilities, confidence, signals) and embeddings."""
    rng = np.random.default_rng(seed)
    mix = np.full(len(CLASSES), 1 / len(CLASSES)) if line.mix is None else np.asarray(line.mix, float) / np.sum(line.mix)
    labels = rng.choice(len(CLASSES), size=count, p=mix)
    top = np.clip(rng.beta(20 * line.confidence, 20 * (1 - line.confidence), size=count), 1 / len(CLASSES) + 1e-3, 0.999)
    runner = (1 - top) * rng.uniform(0.4, 1.0, size=count)
    off = rng.random(count) < line.off_object
    focus = np.where(off, rng.uniform(0.55, 0.95, count), rng.uniform(0.05, 0.45, count))
    centres = _centres()
    embeddings = centres[labels] + rng.normal(scale=1.0, size=(count, DIM)).astype(np.float32) + line.embedding_shift
    out = []
    for i in range(count):
        p = np.full(len(CLASSES), (1 - top[i] - runner[i]) / (len(CLASSES) - 2))
        second = (labels[i] + 1 + rng.integers(len(CLASSES) - 1)) % len(CLASSES)
        p[labels[i]], p[second] = top[i], runner[i]
        out.append(
            {
                "class": CLASSES[labels[i]], "probabilities": tuple(float(v) for v in p), "confidence": float(top[i]),
                "signals": {
                    "least_confidence": float(1 - top[i]), "margin": float(1 - (top[i] - runner[i])), "entropy": float(-(p * np.log(p)).sum() / np.log(len(p))),
                    "branch_disagreement": 0.0, "background_attention": float(1.0 - focus[i]), "attention_focus": float(focus[i]),
                },
            }
        )
    return out, embeddings.astype(np.float32)


def write_line(
    store: Store, source: str, line: Line, *, start: datetime, hours: float, per_hour: int, seed: int, version: str = "1", part_hours: float = 1.0,
    scored_after: timedelta = timedelta(minutes=5),
) -> int:
    """Write ``per_hour`` frames an hour of ``line`` as ``source``'s scoring rows from ``start``
    for ``hours`` (one part per ``part_hours``), each scored ``scored_after`` it landed; returns the rows written."""
    written, step = 0, 0
    while step * part_hours < hours:
        t0 = start + timedelta(hours=step * part_hours)
        count = max(1, int(round(per_hour * min(part_hours, hours - step * part_hours))))
        figures, embeddings = frames(line, count, seed=seed * 1_000_003 + step)
        rows = []
        for i, f in enumerate(figures):
            at = t0 + timedelta(hours=part_hours * i / count)
            rows.append(
                scores.ScoreRow(
                    key=f"frames/{source}/{at.date().isoformat()}/{at.strftime('%H%M%S')}-{step}-{i:05d}.png", hash=f"{seed}-{step}-{i}",
                    width=200, height=200, predicted=f["class"], source=source, date=at.date().isoformat(),
                    scored_at=(at + scored_after).isoformat(timespec="milliseconds"), captured_at=at.isoformat(timespec="milliseconds"),
                    model_version=version, probabilities=f["probabilities"], confidence=f["confidence"], signals=f["signals"],
                )
            )
        scores.write_part(store, rows, list(embeddings), version=version, part=f"{zlib.crc32(source.encode()):08x}{seed:04x}-{step}")
        written += len(rows)
        step += 1
    return written


def write_reference(store: Store, line: Line, *, count: int = 600, seed: int = 99, version: str = "1") -> dict:
    """``line``'s frames as ``version``'s drift reference (:func:`attnloop.monitoring.reference.save`)."""
    from attnloop.monitoring import reference

    figures, embeddings = frames(line, count, seed=seed)
    rows = [
        scores.ScoreRow(
            key=f"reference/{i:05d}.png", hash="", width=200, height=200, predicted=f["class"], source=reference.SOURCE, model_version=version,
            probabilities=f["probabilities"], confidence=f["confidence"], signals=f["signals"],
        ).to_record()
        for i, f in enumerate(figures)
    ]
    return reference.save(store, version, rows, embeddings, simulated=True)
