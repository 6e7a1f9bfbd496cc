"""The scoring row: what scoring writes for every frame, in one Parquet schema, and every reader of it.

A row is one frame scored by one model version (:class:`ScoreRow`). Scoring writes rows in parts
(:func:`write_part`: one Parquet file per source and day, the embeddings beside them in one
``.npy`` per part); the annotate step, the benchmarks and the tests read them back here
(:func:`read_scores`, :func:`read_rows`, :func:`read_embeddings`). The columns are the
fields of :class:`ScoreRow` with the class under ``class`` and one column per priority signal
(:data:`attnloop.priority.signals.ROW_SIGNALS`); :func:`schema` fixes their types, which are
those of every part written since scoring began, so old parts read beside new ones.
Where the files lie: :mod:`attnloop.layout`. The whole data flow: docs/architecture.md.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from attnloop import layout
from attnloop.priority.signals import ROW_SIGNALS
from attnloop.storage import Store

CLASS = "class"  # the column of the predicted class (a keyword in Python, hence ``ScoreRow.predicted``)
REQUIRED = ("key", "hash", "width", "height", CLASS)


def schema():
    """The Parquet schema of the rows (pyarrow is imported when it is needed)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("key", pa.string()),
            ("hash", pa.string()),
            ("source", pa.string()),
            ("date", pa.string()),
            ("width", pa.int64()),
            ("height", pa.int64()),
            ("scored_at", pa.string()),
            ("captured_at", pa.string()),
            ("model_version", pa.string()),
            (CLASS, pa.string()),
            ("probabilities", pa.list_(pa.float64())),
            ("confidence", pa.float64()),
            *((name, pa.float64()) for name in ROW_SIGNALS),
            ("attention", pa.list_(pa.float64())),
            ("attention_h", pa.int64()),
            ("attention_w", pa.int64()),
            ("embedding_ref", pa.string()),
        ]
    )


@dataclass(frozen=True)
class ScoreRow:
    """One frame scored by one model version."""

    key: str  # the frame's object key
    hash: str  # its content hash (the key and hash identify what was scored)
    width: int
    height: int
    predicted: str  # the model's class
    source: str | None = None
    date: str | None = None  # yyyy-mm-dd, from the key
    scored_at: str | None = None  # ISO time, to the millisecond: the newer of two rows of a replaced frame
    captured_at: str | None = None  # ISO time the frame landed in the store (its listing's time): monitoring's clock
    model_version: str | None = None
    probabilities: tuple[float, ...] = ()
    confidence: float | None = None
    signals: Mapping[str, float] = field(default_factory=dict)  # ROW_SIGNALS, each in [0, 1], higher: correct sooner
    attention: np.ndarray | None = field(default=None, compare=False)  # h×w map in [0, 1]
    embedding_ref: str | None = None  # ``embeddings/<version>/<part>.npy#<row>``

    def to_record(self) -> dict[str, Any]:
        """The row as its Parquet columns."""
        attention = self.attention
        return {
            "key": self.key,
            "hash": self.hash,
            "source": self.source,
            "date": self.date,
            "width": int(self.width),
            "height": int(self.height),
            "scored_at": self.scored_at,
            "captured_at": self.captured_at,
            "model_version": self.model_version,
            CLASS: self.predicted,
            "probabilities": [float(v) for v in self.probabilities],
            "confidence": self.confidence,
            **{name: self.signals.get(name) for name in ROW_SIGNALS},
            "attention": None if attention is None else np.asarray(attention, np.float32).ravel().tolist(),
            "attention_h": None if attention is None else int(attention.shape[0]),
            "attention_w": None if attention is None else int(attention.shape[1]),
            "embedding_ref": self.embedding_ref,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "ScoreRow":
        """A row from its columns (a Parquet row, or a dict with at least the :data:`REQUIRED` ones)."""
        missing = [k for k in REQUIRED if record.get(k) is None]
        if missing:
            raise ValueError(f"scoring row {record.get('key', '?')!r} lacks {', '.join(missing)}; expected a row written by attnloop score")
        attention = None
        if record.get("attention") is not None and record.get("attention_h") and record.get("attention_w"):
            attention = np.asarray(record["attention"], np.float32).reshape(int(record["attention_h"]), int(record["attention_w"]))
        confidence = record.get("confidence")
        return cls(
            key=str(record["key"]),
            hash=str(record["hash"]),
            width=int(record["width"]),
            height=int(record["height"]),
            predicted=str(record[CLASS]),
            source=record.get("source"),
            date=record.get("date"),
            scored_at=record.get("scored_at"),
            captured_at=record.get("captured_at"),
            model_version=None if record.get("model_version") is None else str(record["model_version"]),
            probabilities=tuple(float(v) for v in record.get("probabilities") or ()),
            confidence=None if confidence is None else float(confidence),
            signals={name: float(record[name]) for name in ROW_SIGNALS if record.get(name) is not None},
            attention=attention,
            embedding_ref=record.get("embedding_ref"),
        )


# --- writing ----------------------------------------------------------------------------------


def write_part(store: Store, rows: Sequence[ScoreRow], embeddings: Sequence[np.ndarray], *, version: str, part: str) -> list[str]:
    """Write one part's rows (one Parquet file per source and day) and their embeddings; returns the
    Parquet keys. The embeddings go first: a row never names a file that is not there."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not rows:
        return []
    if len(rows) != len(embeddings):
        raise ValueError(f"{len(rows)} rows with {len(embeddings)} embeddings")
    embeddings_key = layout.embeddings_key(version, part)
    buffer = io.BytesIO()
    np.save(buffer, np.stack(embeddings))
    store.put(embeddings_key, buffer.getvalue(), content_type="application/octet-stream")
    groups: dict[tuple[str, str], list[dict]] = {}
    for i, row in enumerate(rows):
        record = replace(row, embedding_ref=f"{embeddings_key}#{i}").to_record()
        groups.setdefault((str(row.source), str(row.date)), []).append(record)
    table_schema, files = schema(), []
    for (source, day), records in sorted(groups.items()):
        key = layout.score_part_key(version, part, source=source, day=day)
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(records, schema=table_schema), buffer, compression="zstd")
        store.put(key, buffer.getvalue(), content_type="application/vnd.apache.parquet")
        files.append(key)
    return files


# --- reading ----------------------------------------------------------------------------------


def part_files(store: Store, version: str | None = None) -> Iterator[tuple[str, str | None]]:
    """``(key, part id)`` of every scores file; with ``version``, only that version's (part id never None then)."""
    for info in store.list(layout.SCORES):
        if not info.key.endswith(".parquet"):
            continue
        part = None if version is None else layout.score_part_of(info.key, version)
        if version is None or part is not None:
            yield info.key, part


def read_part(store: Store, key: str, columns: list[str] | None = None):
    """One scores file as a pyarrow Table."""
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(store.get(key)), columns=columns)


def read_scores(store: Store, *, model_version: str | None = None, columns: list[str] | None = None, latest: bool = False):
    """Every committed row (a pyarrow Table), optionally of one model version; None when there is none.
    A frame replaced under its key has a row per content; ``latest`` keeps each key's newest row only."""
    import pyarrow as pa

    wanted = None if columns is None else list(dict.fromkeys([*columns, *(["key", "scored_at"] if latest else [])]))
    tables = [read_part(store, key, wanted) for key, _ in part_files(store, model_version)]
    if not tables:
        return None
    table = pa.concat_tables(tables, promote_options="default")  # a column older parts lack reads as null
    if latest:
        newest: dict[str, tuple[str, int]] = {}
        for i, (key, at) in enumerate(zip(table["key"].to_pylist(), table["scored_at"].to_pylist())):
            if key not in newest or at >= newest[key][0]:
                newest[key] = (at, i)
        table = table.take(sorted(i for _, i in newest.values()))
    return table.select(columns) if columns is not None else table


def read_rows(store: Store, model_version: str) -> list[ScoreRow]:
    """A model version's rows, one per frame key (a frame replaced under its key: its newest content's);
    LookupError when it has none."""
    table = read_scores(store, model_version=model_version, latest=True)
    if table is None:
        raise LookupError(f"no scores for model version {model_version!r} in {store.uri}; run `attnloop score` first")
    return [ScoreRow.from_record(record) for record in table.to_pylist()]


def latest_version(store: Store) -> str:
    """The model version of the newest scored row: what ``attnloop score`` recorded last."""
    table = read_scores(store, columns=["model_version", "scored_at"])
    if table is None or table.num_rows == 0:
        raise LookupError(f"no scores in {store.uri}; run `attnloop score` first")
    return str(max(table.to_pylist(), key=lambda r: str(r["scored_at"]))["model_version"])


def read_embeddings(store: Store, refs: Sequence[str]) -> np.ndarray:
    """The embeddings the rows' references name, each file read once."""
    files: dict[str, np.ndarray] = {}
    out = []
    for ref in refs:
        key, _, row = ref.partition("#")
        if key not in files:
            files[key] = np.load(io.BytesIO(store.get(key)), allow_pickle=False)
        out.append(files[key][int(row)])
    return np.stack(out)


class StoredEmbeddings:
    """Rows' embeddings read from the store only when indexed: a ranking that needs a few (a
    shortlist) never reads the rest. ``embeddings[indices]`` is an N×D array."""

    def __init__(self, store: Store, refs: Sequence[str | None]) -> None:
        self.store, self.refs = store, list(refs)

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index) -> np.ndarray:
        picked = np.arange(len(self.refs))[index]
        if np.ndim(picked) == 0:
            return read_embeddings(self.store, [self._ref(int(picked))])[0]
        return read_embeddings(self.store, [self._ref(int(i)) for i in picked])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def _ref(self, i: int) -> str:
        ref = self.refs[i]
        if not ref:
            raise LookupError(f"scoring row {i} has no embedding reference")
        return ref


def selection_pool(store: Store, rows: Sequence[ScoreRow]):
    """The rows as the pool :func:`attnloop.priority.select` chooses from: their probabilities,
    attention and signals as scored, their embeddings read when a ranking needs them."""
    from attnloop.priority.strategies import Pool

    return Pool.from_signals(
        ids=[row.key for row in rows],
        probabilities=np.array([row.probabilities for row in rows], np.float64).reshape(len(rows), -1),
        attention=[row.attention for row in rows],
        embeddings=StoredEmbeddings(store, [row.embedding_ref for row in rows]),
        signals={name: np.array([row.signals.get(name, np.nan) for row in rows], np.float64) for name in ROW_SIGNALS},
    )

