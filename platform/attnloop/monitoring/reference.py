"""A model version's drift reference: its holdout scored once, as production frames are, and
stored with the model (``references/<version>/``, :func:`attnloop.layout.reference_key`).

The promote flow writes it when a version becomes the champion (a model change starts a new
reference); ``attnloop monitor reference`` writes it by hand. The rows have the scoring schema
(:func:`attnloop.scores.schema`, source ``reference``), so every figure compares like with like.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from attnloop import layout, scores
from attnloop.holdout import Holdout
from attnloop.priority.signals import frame_signals
from attnloop.runtime import OnnxModel
from attnloop.scoring import OFF_OBJECT
from attnloop.storage import Store

SOURCE = "reference"
OBJECT_FRACTION = 0.1  # the score flow's default: background attention must be computed alike on both sides


@dataclass(frozen=True)
class Reference:
    version: str
    classes: list[str]  # predicted class per holdout image
    confidence: np.ndarray
    off_object: np.ndarray  # bool
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
        values = frame_signals(p, out["attention_probabilities"], attention, object_fraction=object_fraction)
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
    """Store ``rows`` (scoring-row records) and their embeddings as ``version``'s reference;
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
    meta = {
        "model_version": version, "frames": len(rows), "off_object_threshold": OFF_OBJECT,
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
    table = pq.read_table(io.BytesIO(store.get(layout.reference_key(version, "rows.parquet"))), columns=[scores.CLASS, "confidence", "background_attention"])
    embeddings = np.load(io.BytesIO(store.get(layout.reference_key(version, "embeddings.npy"))), allow_pickle=False)
    background = np.asarray(table["background_attention"].to_numpy(zero_copy_only=False), float)
    return Reference(
        version=version,
        classes=[str(c) for c in table[scores.CLASS].to_pylist()],
        confidence=np.asarray(table["confidence"].to_numpy(zero_copy_only=False), float),
        off_object=background > meta.get("off_object_threshold", OFF_OBJECT),
        embeddings=embeddings,
        meta=meta,
    )


def from_rows(store: Store, version: str, *, start, end, sources=None) -> dict:
    """A reference period instead of a holdout: ``version``'s own scoring rows of ``sources``
    (every line's without) landed in ``[start, end)`` — a known-good stretch of production, for a
    line whose images the holdout does not represent (another camera, another plant)."""
    from attnloop.monitoring.stats import Window, open_rows

    window = Window(start, end)
    with open_rows(store, window, sources=sources) as rows:
        records = rows.query(
            f"""SELECT key, "{scores.CLASS}" AS class, confidence, background_attention, embedding_ref FROM rows
               WHERE t >= ? AND t < ? AND model_version = ? ORDER BY key""",
            [*window.bounds(), version],
        )
    if not records:
        raise LookupError(f"no frames scored by model version {version} between {start} and {end}; nothing to make a reference of")
    embeddings = scores.read_embeddings(store, [r["embedding_ref"] for r in records])
    rows_out = [
        scores.ScoreRow(
            key=r["key"], hash="", width=0, height=0, predicted=r["class"], source=SOURCE, model_version=version, confidence=r["confidence"],
            signals={"background_attention": r["background_attention"]} if r["background_attention"] is not None else {},
        ).to_record()
        for r in records
    ]
    return save(store, version, rows_out, embeddings, period={"start": window.start.isoformat(), "end": window.end.isoformat()},
                sources=sorted(sources) if sources else "every line")
