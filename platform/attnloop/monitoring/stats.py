"""The scoring rows summarised over time, per line (source) and hour or day, queried in place.

The rows stay in their Parquet parts (:mod:`attnloop.scores`); the files a question needs are
chosen from the listing (their keys carry the line and the day, :func:`attnloop.layout.score_file_of`)
and read in place by DuckDB's own Parquet reader over the store's filesystem (a folder, or S3 by
range requests through the store's pyarrow client), which reads only the columns a query names and
aggregates in parallel. Nothing is loaded into Python row by row.

A row's time is when its frame landed in the store (``captured_at``, the listing's time), else when
it was scored (parts written before ``captured_at`` existed). A frame scored by several model
versions (a new champion scoring the history again) counts once, under its newest scoring.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cache
from typing import Mapping, Sequence

from attnloop import layout, scores
from attnloop.storage import Store

COLUMNS = (
    "key", "source", "date", "scored_at", "captured_at", "model_version", scores.CLASS, "confidence", "margin", "background_attention",
    "attention_focus", "embedding_ref",
)
BUCKETS = {"hour": (13, ":00:00+00:00"), "day": (10, "T00:00:00+00:00")}  # ISO text prefix length → what makes it its bucket's start


@dataclass(frozen=True)
class Window:
    """``[start, end)`` in UTC."""

    start: datetime
    end: datetime

    @classmethod
    def last(cls, hours: float, *, end: datetime | None = None) -> "Window":
        end = (end or datetime.now(timezone.utc)).astimezone(timezone.utc)
        return cls(end - timedelta(hours=hours), end)

    def bounds(self) -> list[str]:
        """The window as the rows spell times (ISO, UTC, milliseconds): text compares in time order."""
        return [t.astimezone(timezone.utc).isoformat(timespec="milliseconds") for t in (self.start, self.end)]

    def days(self) -> set[str]:
        """Every day the window touches, as ``yyyy-mm-dd`` (a scores file's day)."""
        first, last = self.start.date(), (self.end - timedelta(microseconds=1)).date()
        return {(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)}


def score_files(store: Store, *, window: Window | None = None, sources: Sequence[str] | None = None) -> list[str]:
    """The scores files of ``sources`` (every line's without) on the window's days, from the listing.
    A frame's day is its key's, which may differ from its landing time's by the hours around
    midnight: the day before and after are read too, and the query keeps only the window."""
    days = None
    if window is not None:
        days = Window(window.start - timedelta(days=1), window.end + timedelta(days=1)).days()
    wanted = None if sources is None else set(sources)
    out = []
    for info in store.list(layout.SCORES):
        parsed = layout.score_file_of(info.key)
        if parsed is None:
            continue
        source, day = parsed
        if (wanted is None or source in wanted) and (days is None or day in days):
            out.append(info.key)
    return sorted(out)


class Rows:
    """A DuckDB connection with the view ``rows`` over some scores files: one row per frame (its
    newest scoring), the columns of :data:`COLUMNS` plus ``frame_time`` (its time, TIMESTAMPTZ, UTC) and
    ``off_object``: the frame's attention is fixed on one spot — its attention focus is above its
    model version's threshold (:func:`attnloop.monitoring.reference.off_object_threshold`, set from
    the version's drift reference); NULL where the version has no threshold or the row no focus
    (parts written before it), so shares count only the frames that have a flag.

    ``off_object`` maps a model version (as a path segment, :func:`attnloop.layout.safe_version`)
    to its threshold; without it, each version's is read from its reference."""

    def __init__(self, store: Store, keys: Sequence[str], *, threads: int | None = None, off_object: Mapping[str, float] | None = None) -> None:
        import duckdb
        import pyarrow.fs as pafs

        self.store, self.keys = store, list(keys)
        filesystem, paths = store.arrow_files(self.keys)
        local = isinstance(filesystem, pafs.LocalFileSystem)
        # a folder store's rows are read through one process-wide database, each Rows its own session
        # (its views its own; Parquet footers cached across sessions, parts never change); an S3 store
        # gets a database of its own, for the filesystem it registers
        self.con = _shared().cursor() if local and not threads else duckdb.connect(config={"threads": threads} if threads else {})
        self.con.execute("SET TimeZone = 'UTC'")
        self.con.execute("SET enable_object_cache = true")
        self.con.execute(f"CREATE TEMP VIEW score_files AS {self._files(filesystem, paths)}")
        versions = {key.rsplit("/", 1)[-1].rsplit("-", 2)[0] for key in self.keys}  # part-<version>-<run>-<seq>.parquet
        newest = "QUALIFY row_number() OVER (PARTITION BY key ORDER BY scored_at DESC) = 1" if len(versions) > 1 else ""
        if off_object is None:
            off_object = _thresholds(store, {v.removeprefix("part-") for v in versions})
        self.off_object = dict(off_object)
        self.con.execute(
            f"""CREATE TEMP VIEW rows AS SELECT * EXCLUDE (captured_at, scored_at),
                   coalesce(captured_at, scored_at) AS t,
                   TRY_CAST(coalesce(captured_at, scored_at) AS TIMESTAMPTZ) AS frame_time,
                   {_off_object_sql(self.off_object)} AS off_object, scored_at
               FROM score_files {newest}"""
        )

    def _files(self, filesystem, paths: list[str]) -> str:
        """The files as DuckDB reads them: its own Parquet reader (parallel, only the columns a query
        names), over the store's filesystem (a folder directly; S3 through pyarrow's client, which
        DuckDB sees as an fsspec filesystem). A column an older part lacks reads as null."""
        import duckdb
        import pyarrow.fs as pafs

        wanted = scores.schema()
        if not paths:
            return "SELECT " + ", ".join(f"NULL::{_duck_type(wanted.field(c).type)} AS \"{c}\"" for c in COLUMNS) + " WHERE false"
        if not isinstance(filesystem, pafs.LocalFileSystem):
            self.con.register_filesystem(_StoreFS(filesystem))
            paths = [f"attnloop-store://{p}" for p in paths]
        listed = "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"
        every = ", ".join(f'"{c}"' for c in COLUMNS)
        try:  # every part written since rows had every column: nothing to look up
            self.con.execute(f"SELECT {every} FROM read_parquet({listed}, union_by_name = true) LIMIT 0")
            return f"SELECT {every} FROM read_parquet({listed}, union_by_name = true)"
        except duckdb.BinderException:  # a column no part has (all parts older than it)
            pass
        present = {row[0] for row in self.con.execute(f"DESCRIBE SELECT * FROM read_parquet({listed}, union_by_name = true)").fetchall()}
        columns = [
            f'"{c}"' if c in present else f'NULL::{_duck_type(wanted.field(c).type)} AS "{c}"'
            for c in COLUMNS
        ]
        return f"SELECT {', '.join(columns)} FROM read_parquet({listed}, union_by_name = true)"

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> "Rows":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def query(self, sql: str, params: Sequence | None = None) -> list[dict]:
        """``sql`` over ``rows`` as a list of dicts (aggregates are small)."""
        cursor = self.con.execute(sql, list(params or ()))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, values)) for values in cursor.fetchall()]

    def overview(self, window: Window, *, bucket: str = "hour") -> dict[str, list[dict]]:
        """What a monitor run and the page draw, in one scan of the rows: ``hourly`` — per line, time
        bucket and model version: frames, confidence (mean, 10th percentile, median), margin mean
        (1 − (top probability − runner-up)), the share of frames with the attention off the object
        and frames below 0.5 confidence; ``mix`` — frames per line, bucket and predicted class;
        ``lines`` — as :meth:`lines` to the bucket (first and last are buckets, the model version
        the one that scored the newest bucket)."""
        if bucket not in BUCKETS:
            raise ValueError(f"unknown bucket {bucket!r}; valid: {', '.join(BUCKETS)}")
        width, rest = BUCKETS[bucket]
        # the class counts as one FILTER each (cheaper than a map per group): the classes seen first
        names = [r["class"] for r in self.query(f'SELECT DISTINCT "{scores.CLASS}" AS class FROM rows WHERE t >= ? AND t < ? ORDER BY 1', window.bounds())]
        counts = "".join(f', count(*) FILTER (WHERE "{scores.CLASS}" = ?) AS "class {i}"' for i in range(len(names)))
        groups = self.query(
            f"""SELECT source, substr(t, 1, {width}) AS bucket, model_version,
                   count(*) AS frames,
                   avg(confidence) AS confidence_mean,
                   quantile_cont(confidence, [0.1, 0.5]) AS confidence_quantiles,
                   avg(1 - margin) AS margin_mean,
                   avg(off_object::DOUBLE) AS off_object_share,
                   count(off_object) AS flagged,
                   count(*) FILTER (WHERE confidence < 0.5) AS low_confidence{counts}
               FROM rows WHERE t >= ? AND t < ?
               GROUP BY ALL""",
            [*names, *window.bounds()],
        )
        groups.sort(key=lambda g: (g["source"], g["bucket"], str(g["model_version"])))
        hourly, mix, lines = [], {}, {}
        for g in groups:
            start = datetime.fromisoformat(g["bucket"] + rest)
            p10, median = g.pop("confidence_quantiles")
            flagged = g.pop("flagged")  # frames with an off-object flag (a threshold and a focus)
            classes = {name: g.pop(f"class {i}") for i, name in enumerate(names)}
            hourly.append({**g, "bucket": start, "confidence_p10": p10, "confidence_median": median})
            for name, n in classes.items():
                if n:
                    mix[(g["source"], start, name)] = mix.get((g["source"], start, name), 0) + n
            line = lines.setdefault(g["source"], {"source": g["source"], "frames": 0, "off": 0.0, "flagged": 0, "first": start})
            line["frames"] += g["frames"]
            line["off"] += (g["off_object_share"] or 0.0) * flagged
            line["flagged"] += flagged
            line["last"], line["model_version"] = start, g["model_version"]  # groups come in time order: the newest last
        return {
            "hourly": hourly,
            "mix": [{"source": s, "bucket": b, "class": c, "frames": n} for (s, b, c), n in sorted(mix.items())],
            "lines": [
                {"source": x["source"], "frames": x["frames"], "model_version": x["model_version"], "first": x["first"],
                 "last": x["last"], "off_object_share": x["off"] / x["flagged"] if x["flagged"] else None}
                for x in lines.values()
            ],
        }

    def lines(self, window: Window) -> list[dict]:
        """Per line over the whole window: frames, the newest model version, first and last frame time."""
        return self.query(
            """SELECT source, count(*) AS frames, arg_max(model_version, scored_at) AS model_version,
                      CAST(min(t) AS TIMESTAMPTZ) AS first, CAST(max(t) AS TIMESTAMPTZ) AS last, avg(off_object::DOUBLE) AS off_object_share
               FROM rows WHERE t >= ? AND t < ? GROUP BY source ORDER BY source""",
            window.bounds(),
        )

    def values(self, window: Window, source: str, *, model_version: str | None = None, limit: int | None = None) -> dict[str, list]:
        """One line's per-frame figures in the window (what a drift test compares with the
        reference): class, confidence, off_object and embedding_ref, newest first."""
        version = "AND model_version = ?" if model_version else ""
        rows = self.query(
            f"""SELECT "{scores.CLASS}" AS class, confidence, off_object, embedding_ref FROM rows
               WHERE t >= ? AND t < ? AND source = ? {version} ORDER BY t DESC {f'LIMIT {int(limit)}' if limit else ''}""",
            [*window.bounds(), source, *([model_version] if model_version else [])],
        )
        return {name: [r[name] for r in rows] for name in ("class", "confidence", "off_object", "embedding_ref")}

    def top(self, window: Window, *, limit: int = 12) -> list[dict]:
        """The highest-priority frames (least margin first: the platform's priority) in the window."""
        return self.query(
            f"""SELECT key, source, model_version, "{scores.CLASS}" AS class, confidence, margin AS priority,
                      background_attention, frame_time
               FROM rows WHERE t >= ? AND t < ? ORDER BY margin DESC, key LIMIT {int(limit)}""",
            window.bounds(),
        )


def _thresholds(store: Store, versions: set[str]) -> dict[str, float]:
    """The off-object threshold of each model version that has one (from its drift reference)."""
    from attnloop.monitoring.reference import off_object_threshold

    found = {v: off_object_threshold(store, v) for v in sorted(versions)}
    return {v: t for v, t in found.items() if t is not None}


def _off_object_sql(thresholds: Mapping[str, float]) -> str:
    """``off_object`` in SQL: the row's attention focus above its version's threshold, else NULL."""
    if not thresholds:
        return "CAST(NULL AS BOOLEAN)"
    version = "regexp_replace(CAST(model_version AS VARCHAR), '[^A-Za-z0-9_.-]', '_', 'g')"  # layout.safe_version
    cases = " ".join(
        f"WHEN '{v.replace(chr(39), chr(39) * 2)}' THEN attention_focus > {float(t)!r}" for v, t in sorted(thresholds.items())
    )
    return f"CASE {version} {cases} ELSE CAST(NULL AS BOOLEAN) END"


@cache
def _shared():
    """The process's DuckDB database for folder stores (opening one costs more than a small query)."""
    import duckdb

    return duckdb.connect()


def _StoreFS(filesystem):
    """pyarrow's S3 client as the fsspec filesystem ``attnloop-store://`` DuckDB reads through."""
    from fsspec.implementations.arrow import ArrowFSWrapper

    class StoreFS(ArrowFSWrapper):
        protocol = "attnloop-store"

        @classmethod
        def _strip_protocol(cls, path):  # ``attnloop-store://bucket/key`` → ``bucket/key`` (the bucket is not a host)
            path = path[0] if isinstance(path, list) else path
            return path.split("://", 1)[-1].rstrip("/")

    return StoreFS(filesystem)


def _duck_type(arrow_type) -> str:
    import pyarrow as pa

    return "DOUBLE" if pa.types.is_floating(arrow_type) else "BIGINT" if pa.types.is_integer(arrow_type) else "VARCHAR"


def open_rows(store: Store, window: Window | None = None, *, sources: Sequence[str] | None = None, threads: int | None = None) -> Rows:
    """The rows of ``sources`` around ``window`` (every line's, every day's without), ready to query."""
    return Rows(store, score_files(store, window=window, sources=sources), threads=threads)


def quarantined(store: Store, window: Window) -> dict[str, dict[str, int]]:
    """Frames that could not be scored, per line and reason, for the frames of the window's days
    (a quarantine record knows its frame's key, hence its line and day)."""
    import json

    days = window.days()
    out: dict[str, dict[str, int]] = {}
    for info in store.list(layout.QUARANTINE):
        if not info.key.endswith(".jsonl"):
            continue
        for line in store.get(info.key).decode().splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            frame = layout.parse_frame_key(str(record.get("key", "")))
            source, day = (frame.source, frame.date) if frame else ("(not a frame key)", None)
            if day is not None and day not in days:
                continue
            reasons = out.setdefault(source, {})
            reasons[record.get("reason", "unknown")] = reasons.get(record.get("reason", "unknown"), 0) + 1
    return out
