"""One monitor run: each line's figures over a window, its drift against the reference of the model
that scored it, and the alerts (a figure past its threshold, :mod:`.thresholds`). The ``monitor``
flow runs it on a schedule and turns alerts into Prefect events; the page draws its reports.

A report (``monitoring/<day>/<run>.json``) holds the window, the thresholds, per line its frames,
model version, drift figures (or why there are none: too few frames, no reference) and quarantine
share, the hourly summary, and the alerts. An alert names the line, the figure, its value and the
threshold, and links to the line's frames.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np

from attnloop import layout, scores
from attnloop.monitoring import drift, reference
from attnloop.monitoring.stats import Rows, Window, open_rows, quarantined
from attnloop.monitoring.thresholds import Thresholds
from attnloop.storage import Store

EVENT = "attnloop.monitor.alert"  # the Prefect event an alert emits (flows/monitor.py)
VALUES_LIMIT = 20_000  # per line: the newest frames a drift test reads (the tests' power is long saturated by then)


@dataclass(frozen=True)
class Alert:
    source: str
    figure: str
    value: float
    threshold: float
    p_value: float | None
    detail: str
    model_version: str | None
    link: str  # the line's frames: the monitoring page's section, else the store's folder

    @property
    def message(self) -> str:
        return f"line {self.source}: {self.figure} = {self.value:.3f} crossed its threshold {self.threshold:g} ({self.detail})"

    def to_dict(self) -> dict:
        return {**asdict(self), "message": self.message}


def link_for(store: Store, source: str, page: str | None) -> str:
    return f"{page}/#line-{source}" if page else f"{store.uri}/{layout.frames_prefix(source)}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def _recent(rows: Rows, window: Window, source: str, thresholds: Thresholds) -> Window:
    """The line's test window: the last whole hours, as few as hold ``min_frames`` frames (a busy
    line is tested on its last hour, so a drift alerts at the first run after it began; a quiet one
    on more hours), at most the whole ``window``."""
    hours = max(1, int(np.ceil((window.end - window.start).total_seconds() / 3600)))
    starts = [max(window.start, window.end - timedelta(hours=k)) for k in range(1, hours + 1)]
    counts = rows.query(
        "SELECT " + ", ".join(f"count(*) FILTER (WHERE t >= ?) AS h{k}" for k in range(len(starts)))
        + " FROM rows WHERE source = ? AND t >= ? AND t < ?",
        [*[Window(t, window.end).bounds()[0] for t in starts], source, *window.bounds()],
    )[0]
    for k, start in enumerate(starts):
        if counts[f"h{k}"] >= thresholds.min_frames:
            return Window(start, window.end)
    return window


def _line_drift(rows: Rows, store: Store, window: Window, line: dict, ref: reference.Reference, thresholds: Thresholds, seed: int) -> list[drift.Figure]:
    values = rows.values(window, line["source"], model_version=line["model_version"], limit=VALUES_LIMIT)
    refs = [r for r in values["embedding_ref"] if r][: drift.MAX_EMBEDDINGS]
    figures = [
        drift.class_mix(ref.classes, values["class"], thresholds),
        drift.confidence(ref.confidence, values["confidence"], thresholds),
    ]
    flags = [v for v in values["off_object"] if v is not None]  # frames scored with an attention focus
    if ref.off_object is not None and len(flags) >= thresholds.min_frames and len(ref.off_object) >= thresholds.min_frames:
        figures.append(drift.off_object(ref.off_object, flags, thresholds))
    if len(refs) >= thresholds.min_frames and len(ref.embeddings) >= thresholds.min_frames:
        figures.append(drift.embeddings(ref.embeddings, scores.read_embeddings(store, refs), thresholds, seed=seed))
    return figures


def monitor(
    store: Store, *, thresholds: Thresholds = Thresholds(), window: Window | None = None, page: str | None = None, seed: int = 0,
    trends: Window | None = None,
) -> dict:
    """Run once over ``window`` (the last ``thresholds.window_hours`` without) and return the report;
    its hourly trends span ``trends`` (a longer window for the page; default: ``window``)."""
    window = window or Window.last(thresholds.window_hours)
    trends = trends or window
    references: dict[str, reference.Reference | None] = {}
    lines, alerts = [], []
    with open_rows(store, Window(min(window.start, trends.start), max(window.end, trends.end))) as rows:
        seen = rows.overview(trends, bucket="hour")
        tested = seen["lines"] if trends == window else rows.lines(window)
        for line in tested:
            version = line["model_version"]
            entry = {k: _jsonable(v) for k, v in line.items()}
            entry["figures"], entry["status"] = [], "ok"
            if line["frames"] < thresholds.min_frames:
                entry["status"] = f"too few frames for drift tests ({line['frames']} < {thresholds.min_frames})"
            else:
                if version not in references:
                    references[version] = reference.read(store, version)
                ref = references[version]
                if ref is None:
                    entry["status"] = f"no drift reference for model version {version}: run `attnloop monitor reference`"
                else:
                    recent = _recent(rows, window, line["source"], thresholds)
                    entry["tested"] = {"start": recent.start.isoformat(), "end": recent.end.isoformat()}
                    entry["figures"] = [f.to_dict() for f in _line_drift(rows, store, recent, line, ref, thresholds, seed)]
                    entry["reference"] = {
                        "frames": len(ref.classes), "confidence_median": float(np.median(ref.confidence)),
                        # NaN (no line on the page) for a reference written before the attention focus
                        "off_object_share": float(ref.off_object.mean()) if ref.off_object is not None else float("nan"),
                        "off_object_threshold": reference.threshold_of(ref.meta),
                    }
                    if ref.off_object is None:
                        entry["status"] = (
                            f"no off-object figure: the drift reference of model version {version} has no off-object threshold "
                            "(written before the attention focus, or from frames scored before it); write it again with `attnloop monitor reference`"
                        )
            lines.append(entry)
    bad = quarantined(store, window)
    for entry in lines:
        reasons = bad.get(entry["source"], {})
        lost = sum(reasons.values())
        share = lost / (lost + entry["frames"]) if lost + entry["frames"] else 0.0
        entry["quarantined"] = reasons
        if lost + entry["frames"] >= thresholds.min_frames:
            entry["figures"].append(
                drift.Figure(
                    "quarantine_share", share, thresholds.quarantine_share, None, share >= thresholds.quarantine_share,
                    ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) or "none",
                ).to_dict()
            )
        for figure in entry["figures"]:
            if figure["alert"]:
                alerts.append(
                    Alert(
                        entry["source"], figure["name"], figure["value"], figure["threshold"], figure["p_value"], figure["detail"],
                        entry["model_version"], link_for(store, entry["source"], page),
                    ).to_dict()
                )
    now = datetime.now(timezone.utc)
    return {
        "run_id": f"{now.strftime('%H%M%S')}-{uuid.uuid4().hex[:8]}",
        "at": now.isoformat(),
        "window": {"start": window.start.isoformat(), "end": window.end.isoformat()},
        "trends": {"start": trends.start.isoformat(), "end": trends.end.isoformat()},
        "thresholds": asdict(thresholds),
        "lines": lines,
        "alerts": alerts,
        "hourly": [{k: _jsonable(v) for k, v in row.items()} for row in seen["hourly"]],
        "mix": [{k: _jsonable(v) for k, v in row.items()} for row in seen["mix"]],
    }


def write(store: Store, report: dict) -> str:
    key = layout.monitoring_key(report["at"][:10], report["run_id"])
    store.put(key, json.dumps(report, indent=1).encode(), content_type="application/json")
    return key


def latest(store: Store) -> dict | None:
    """The newest monitor report in the store, or None."""
    keys = sorted((info.modified or datetime.min.replace(tzinfo=timezone.utc), info.key) for info in store.list(layout.MONITORING) if info.key.endswith(".json"))
    return json.loads(store.get(keys[-1][1])) if keys else None


def markdown(report: dict) -> str:
    """The report as a Prefect artifact: a table per line and the alerts."""
    out = [f"# Monitor run {report['run_id']}", "", f"Window {report['window']['start']} → {report['window']['end']}", ""]
    out += ["| line | frames | model | status | class PSI | confidence KS | embedding AUC | off-object rise | quarantined |", "|---|---|---|---|---|---|---|---|---|"]
    for line in report["lines"]:
        f = {x["name"]: x for x in line["figures"]}

        def cell(name: str) -> str:
            return "" if name not in f else f"{'**' if f[name]['alert'] else ''}{f[name]['value']:.3f}{'**' if f[name]['alert'] else ''}"

        out.append(
            f"| {line['source']} | {line['frames']} | {line['model_version']} | {line['status']} | {cell('class_psi')} | "
            f"{cell('confidence_ks')} | {cell('embedding_auc')} | {cell('off_object_rise')} | {cell('quarantine_share')} |"
        )
    out += ["", f"## Alerts ({len(report['alerts'])})", ""]
    out += [f"- {a['message']} — [frames]({a['link']})" for a in report["alerts"]] or ["none"]
    return "\n".join(out) + "\n"
