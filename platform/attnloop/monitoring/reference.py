"""A model version's drift reference: its holdout scored once, as production frames are, and
stored with the model (``references/<version>/``, :func:`attnloop.layout.reference_key`).

The promote flow writes it when a version becomes the champion (a model change starts a new
reference); ``attnloop monitor reference`` writes it by hand. The rows have the scoring schema
(:func:`attnloop.scores.schema`, source ``reference``), so every figure compares like with like.

It also sets the version's off-object threshold (``reference.json``'s ``off_object_threshold``):
the :data:`~attnloop.priority.signals.OFF_OBJECT_QUANTILE` of the reference frames' attention
focus (:func:`attnloop.priority.signals.focus_threshold`). Scoring flags a frame, and monitoring
counts it in a line's off-object share, when its focus is above its version's threshold. A
reference written before the attention focus existed has no threshold: its version's frames get
no flag until the reference is written again.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from attnloop import layout, scores
from attnloop.holdout import Holdout
from attnloop.priority.signals import OFF_OBJECT_QUANTILE, area_target, focus_threshold, frame_signals
from attnloop.runtime import OnnxModel
from attnloop.storage import Store

SOURCE = "reference"
OBJECT_FRACTION = 0.1  # the score flow's default: background attention must be computed alike on both sides
SIGNAL = "attention_focus"  # the signal the off-object threshold applies to (a reference.json without it predates it)


@dataclass(frozen=True)
class Reference:
    version: str
    classes: list[str]  # predicted class per holdout image
    confidence: np.ndarray
    off_object: np.ndarray | None  # bool per frame: attention focus above the threshold; None: a reference without one
    embeddings: np.ndarray
    meta: dict


def build(store: Store, model: OnnxModel, version: str, holdout: Holdout, *, object_fraction: float = OBJECT_FRACTION, batch_size: int = 64) -> dict:
    """Score ``holdout`` with ``model`` and store it as ``version``'s reference; returns its description."""
    names = model.card.class_names
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    rows, embeddings = [], []
    for start in range(0, len(holdout.images), batch_size):
        out = model.predict_bytes(holdout.images[start : start + batch_size])
        p, attention = out["probabilities"], out["attention"][:, 0]
        values = frame_signals(p, out["attention_probabilities"], attention, object_fraction=object_fraction, area=area_target(model.card))
        for i, record in enumerate(holdout.records[start : start + batch_size]):
            h, w = holdout.sizes[start + i]
            rows.append(
                scores.ScoreRow(
                    key=record.image, hash="", width=int(w), height=int(h), predicted=names[int(p[i].argmax())], source=SOURCE,
                    scored_at=now, model_version=version, probabilities=tuple(float(v) for v in p[i]), confidence=float(p[i].max()),
                    signals={k: float(v[i]) for k, v in values.items()},
                ).to_record()
            )
            embeddings.append(out["embedding"][i].astype(np.float32))
    return save(store, version, rows, np.stack(embeddings), holdout=holdout.digest, object_fraction=object_fraction)


def save(store: Store, version: str, rows: list[dict], embeddings: np.ndarray, **described) -> dict:
    """Store ``rows`` (scoring-row records) and their embeddings as ``version``'s reference, with the
    off-object threshold set from the rows' attention focus (None where no row has one);
    ``reference.json`` last, so a reader never sees half of one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if len(rows) != len(embeddings):
        raise ValueError(f"{len(rows)} reference rows with {len(embeddings)} embeddings")
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(embeddings, np.float32))
    store.put(layout.reference_key(version, "embeddings.npy"), buffer.getvalue(), content_type="application/octet-stream")
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=scores.schema()), buffer, compression="zstd")
    store.put(layout.reference_key(version, "rows.parquet"), buffer.getvalue(), content_type="application/vnd.apache.parquet")
    focus = [r[SIGNAL] for r in rows if r.get(SIGNAL) is not None]
    meta = {
        "model_version": version, "frames": len(rows),
        "off_object_signal": SIGNAL, "off_object_quantile": OFF_OBJECT_QUANTILE,
        "off_object_threshold": focus_threshold(focus) if focus else None,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **described,
    }
    store.put(layout.reference_key(version, "reference.json"), json.dumps(meta, indent=2).encode(), content_type="application/json")
    return meta


def read(store: Store, version: str) -> Reference | None:
    """``version``'s reference, or None when it has none (written last, ``reference.json`` marks it whole)."""
    import pyarrow.parquet as pq

    try:
        meta = json.loads(store.get(layout.reference_key(version, "reference.json")))
    except KeyError:
        return None
    data = io.BytesIO(store.get(layout.reference_key(version, "rows.parquet")))
    present = set(pq.ParquetFile(data).schema_arrow.names)
    table = pq.read_table(data, columns=[c for c in (scores.CLASS, "confidence", SIGNAL) if c in present])
    embeddings = np.load(io.BytesIO(store.get(layout.reference_key(version, "embeddings.npy"))), allow_pickle=False)
    cut = threshold_of(meta)
    off_object = None
    if cut is not None and SIGNAL in table.column_names:
        focus = np.asarray(table[SIGNAL].to_numpy(zero_copy_only=False), float)
        off_object = focus[np.isfinite(focus)] > cut
    return Reference(
        version=version,
        classes=[str(c) for c in table[scores.CLASS].to_pylist()],
        confidence=np.asarray(table["confidence"].to_numpy(zero_copy_only=False), float),
        off_object=off_object,
        embeddings=embeddings,
        meta=meta,
    )


def threshold_of(meta: dict) -> float | None:
    """The off-object threshold a reference's ``reference.json`` sets; None for one written before
    the attention focus (its ``off_object_threshold`` was a fixed cut on background attention)."""
    value = meta.get("off_object_threshold")
    return float(value) if meta.get("off_object_signal") == SIGNAL and value is not None else None


def off_object_threshold(store: Store, version: str) -> float | None:
    """``version``'s off-object threshold from its reference (None: no reference, or one without a threshold)."""
    try:
        meta = json.loads(store.get(layout.reference_key(version, "reference.json")))
    except KeyError:
        return None
    return threshold_of(meta)


def from_rows(store: Store, version: str, *, start, end, sources=None) -> dict:
    """A reference period instead of a holdout: ``version``'s own scoring rows of ``sources``
    (every line's without) landed in ``[start, end)`` — a known-good stretch of production, for a
    line whose images the holdout does not represent (another camera, another plant)."""
    from attnloop.monitoring.stats import Window, open_rows

    window = Window(start, end)
    with open_rows(store, window, sources=sources) as rows:
        records = rows.query(
            f"""SELECT key, "{scores.CLASS}" AS class, confidence, background_attention, {SIGNAL}, embedding_ref FROM rows
               WHERE t >= ? AND t < ? AND model_version = ? ORDER BY key""",
            [*window.bounds(), version],
        )
    if not records:
        raise LookupError(f"no frames scored by model version {version} between {start} and {end}; nothing to make a reference of")
    embeddings = scores.read_embeddings(store, [r["embedding_ref"] for r in records])
    rows_out = [
        scores.ScoreRow(
            key=r["key"], hash="", width=0, height=0, predicted=r["class"], source=SOURCE, model_version=version, confidence=r["confidence"],
            signals={name: r[name] for name in ("background_attention", SIGNAL) if r[name] is not None},
        ).to_record()
        for r in records
    ]
    return save(store, version, rows_out, embeddings, period={"start": window.start.isoformat(), "end": window.end.isoformat()},
                sources=sorted(sources) if sources else "every line")
