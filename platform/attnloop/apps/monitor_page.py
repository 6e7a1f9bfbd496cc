"""The monitoring page: one HTML page per request, for the people who watch the lines.

It shows the alerts first, then per line its trends over the window (frames, confidence, margin,
attention fixed on one spot, class mix) with the alert thresholds drawn, its drift figures against
the model's reference, the highest-priority frames of the last hours with their attention
overlays (and their Label Studio tasks where they have one), and the champion with its gate
history. The figures are a monitor run's (:func:`attnloop.monitoring.run.monitor`, no events
sent); plots are matplotlib PNGs inlined, so the page is one file that can also be written out.

``attnloop monitor serve`` serves it (:func:`serve`); ``attnloop monitor page`` writes it.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from attnloop import layout
from attnloop.config import Settings
from attnloop.monitoring import run
from attnloop.monitoring.stats import Window, open_rows
from attnloop.redact import redact

log = logging.getLogger(__name__)
TREND_HOURS = 24.0  # the span of the trend plots
TOP_HOURS = 6  # the highest-priority frames are those of the last hours
TOP_FRAMES = 12
FIGURE_NAMES = {
    "class_psi": "class mix (PSI)", "confidence_ks": "confidence (KS distance)", "embedding_auc": "embeddings (classifier AUC)",
    "off_object_rise": "attention fixed on one spot (rise)", "quarantine_share": "frames not scorable (share)",
}
STYLE = """
body{font-family:system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}header p{margin:4px 0 0;color:#b9c0cc;font-size:13px}
main{padding:16px 24px;max-width:1400px}
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:12px 16px;margin:0 0 16px}
section.alert{border-left:6px solid #d33}
.alerts{background:#fff0f0;border:1px solid #e9a8a8}.quiet{background:#effaf1;border:1px solid #a8d9b3}.empty{background:#fff8e6;border:1px solid #e8c56d}
h2{font-size:17px;margin:4px 0 10px}h3{font-size:14px;margin:12px 0 6px}
table{border-collapse:collapse;font-size:13px}td,th{border-bottom:1px solid #e6e9ee;padding:4px 10px;text-align:left}
td.bad{color:#b00;font-weight:600}.muted{color:#6b7280;font-size:13px}
img.plot{max-width:100%}.frames{display:flex;flex-wrap:wrap;gap:10px}
.frame{width:150px;font-size:11px}.frame img,.missing{width:150px;height:150px;object-fit:contain;background:#111;border-radius:4px}.missing{color:#999;display:flex;align-items:center;justify-content:center}
"""


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _trend_plot(source: str, hourly: list[dict], mix: list[dict], line: dict, thresholds: dict, span: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    mine = [r for r in hourly if r["source"] == source]
    t = [datetime.fromisoformat(r["bucket"]) for r in mine]
    with matplotlib.rc_context({"text.parse_math": False}):  # a class named "$x$" is a name, not a formula
        return _trend_axes(source, t, mine, mix, line, thresholds, span)


def _trend_axes(source: str, t: list, mine: list[dict], mix: list[dict], line: dict, thresholds: dict, span: dict) -> str:
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 4, figsize=(15, 2.8))
    axes[0].bar(t, [r["frames"] for r in mine], width=1 / 24 * 0.9, color="#4c78a8", align="edge")
    t = [x + timedelta(minutes=30) for x in t]  # a point at the middle of its hour
    axes[0].set_title("frames per hour", fontsize=10)
    axes[1].plot(t, [r["confidence_median"] for r in mine], marker=".", label="median")
    axes[1].plot(t, [r["confidence_p10"] for r in mine], marker=".", label="10th percentile")
    axes[1].plot(t, [r["margin_mean"] for r in mine], marker=".", label="margin (mean)")
    reference = line.get("reference")
    if reference:
        axes[1].axhline(reference["confidence_median"], color="grey", linestyle="--", linewidth=1, label="reference median")
    axes[1].set_ylim(0, 1)
    axes[1].set_title("confidence and margin", fontsize=10)
    axes[1].legend(fontsize=7, loc="lower left")
    axes[2].plot(t, [r["off_object_share"] for r in mine], marker=".", color="#e45756")
    share = reference.get("off_object_share") if reference else None
    if share is not None and share == share:  # a reference written before the attention focus has none (NaN)
        axes[2].axhline(share, color="grey", linestyle="--", linewidth=1, label="reference")
        axes[2].axhline(share + thresholds["off_object_rise"], color="#d33", linestyle=":", linewidth=1.5, label="alert threshold")
        axes[2].legend(fontsize=7, loc="upper left")
    axes[2].set_ylim(0, 1)
    axes[2].set_title("share with attention fixed on one spot", fontsize=10)
    classes = sorted({r["class"] for r in mix if r["source"] == source})
    buckets = sorted({r["bucket"] for r in mix if r["source"] == source})
    counts = {(r["bucket"], r["class"]): r["frames"] for r in mix if r["source"] == source}
    totals = [sum(counts.get((b, c), 0) for c in classes) or 1 for b in buckets]
    bottom = np.zeros(len(buckets))
    times = [datetime.fromisoformat(b) if isinstance(b, str) else b for b in buckets]
    for c in classes:
        share = np.array([counts.get((b, c), 0) / n for b, n in zip(buckets, totals)])
        axes[3].bar(times, share, bottom=bottom, width=1 / 24 * 0.9, label=c, align="edge")
        bottom += share
    axes[3].set_ylim(0, 1)
    axes[3].set_title("class mix", fontsize=10)
    axes[3].legend(fontsize=6, loc="upper left", ncol=2)
    for ax in axes:
        ax.set_xlim(datetime.fromisoformat(span["start"]), datetime.fromisoformat(span["end"]))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%d %H:%M"))
        ax.tick_params(labelsize=7)
        for label in ax.get_xticklabels():
            label.set_rotation(30)
    fig.tight_layout()
    return _png(fig)


def _figure_table(line: dict) -> str:
    if not line["figures"]:
        return f'<p class="muted">{html.escape(line["status"])}</p>'
    rows = []
    for f in line["figures"]:
        p = "" if f["p_value"] is None else f"{f['p_value']:.2g}"
        rows.append(
            f'<tr><td>{FIGURE_NAMES.get(f["name"], f["name"])}</td><td class="{"bad" if f["alert"] else ""}">{f["value"]:.3f}</td>'
            f'<td>{f["threshold"]:g}</td><td>{p}</td><td>{html.escape(f["detail"])}</td><td>{"ALERT" if f["alert"] else "ok"}</td></tr>'
        )
    status = "" if line["status"] == "ok" else f'<p class="muted">{html.escape(line["status"])}</p>'
    return status + "<table><tr><th>figure</th><th>value</th><th>threshold</th><th>p-value</th><th>what moved</th><th></th></tr>" + "".join(rows) + "</table>"


def _tested(line: dict) -> str:
    if "tested" not in line:
        return ""
    start, end = (datetime.fromisoformat(line["tested"][k]) for k in ("start", "end"))
    return f" (frames of {start:%H:%M} → {end:%H:%M} UTC)"


def _thumbnail(store, row: dict) -> str:
    """The frame's attention overlay (as scored), else the frame itself, inlined."""
    for key in (layout.overlay_key(row["model_version"], row["key"]), row["key"]):
        try:
            data = store.get(key, max_bytes=8 << 20)
        except KeyError:
            continue
        except Exception as err:  # an unreadable thumbnail never takes the page down
            log.warning("thumbnail %s: %s", key, err)
            continue
        kind = "png" if data[:4] == b"\x89PNG" else "jpeg"
        return f"data:image/{kind};base64," + base64.b64encode(data).decode()
    return ""


def _task_links(settings: Settings, keys: list[str]) -> dict[str, str]:
    """Label Studio task pages of the frames that have a task (none when Label Studio is not set up)."""
    if not settings.label_studio.url or not settings.label_studio.token or not keys:
        return {}
    try:
        from attnloop.labelstudio.project import find_project, iter_tasks

        ls = settings.label_studio.client()
        project = find_project(ls, settings.label_studio.project)
        if project is None:
            return {}
        wanted, out = set(keys), {}
        for task in iter_tasks(ls, project.id):
            key = (getattr(task, "data", None) or {}).get("key")
            if key in wanted:
                out[key] = f"{settings.label_studio.url}/projects/{project.id}/data?task={task.id}"
        return out
    except Exception as err:  # Label Studio down: the page still shows the frames
        log.warning("Label Studio task links: %s", err)
        return {}


def _registry(settings: Settings) -> tuple[str, list[dict]]:
    """The champion version and every version's gate decision, newest first."""
    try:
        from attnloop import registry

        client = registry.connect(settings.registry_uri)
        champion = registry.alias_version(client, settings.model_name, registry.CHAMPION)
        versions = client.search_model_versions(f"name='{settings.model_name}'")
    except Exception as err:
        return redact(f"the registry could not be read ({type(err).__name__}: {err})"), []
    history = []
    for v in sorted(versions, key=lambda v: int(v.version), reverse=True):
        tags = {k.removeprefix(registry.TAG): value for k, value in (v.tags or {}).items()}
        history.append(
            {"version": v.version, "gate": tags.get("gate", "not gated"), "at": tags.get("gate.at", ""), "reasons": tags.get("gate.reasons", ""),
             "champion": str(v.version) == champion, "promoted_at": tags.get("promoted_at", "")}
        )
    return (f"version {champion}" if champion else "no champion yet"), history


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def render(settings: Settings, *, store_uri: str | None = None, hours: float | None = None, now: datetime | None = None) -> str:
    """The page, computed now from the store (``store_uri``, else the configured one) and the
    registry and Label Studio where reachable. A store without scored frames in the window is a
    warning that names the store, never a green page."""
    store = settings.store(store_uri)
    thresholds = settings.monitor
    window = Window.last(hours or TREND_HOURS, end=now)  # the trends'; drift and alerts are a monitor run's
    tested = Window.last(thresholds.window_hours, end=window.end)
    report = run.monitor(store, thresholds=thresholds, window=tested, trends=window, page="")
    recent = Window(max(window.start, window.end - timedelta(hours=TOP_HOURS)), window.end)
    with open_rows(store, recent) as rows:
        top = rows.top(recent, limit=TOP_FRAMES)
    links = _task_links(settings, [r["key"] for r in top])
    champion, history = _registry(settings)
    alerted = {a["source"] for a in report["alerts"]}
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>attnloop monitoring</title><style>{STYLE}</style></head><body>",
        f"<header><h1>attnloop — production monitoring</h1><p>trends {window.start:%Y-%m-%d %H:%M} → {window.end:%Y-%m-%d %H:%M} UTC · "
        f"drift tested on each line's last hours (up to {thresholds.window_hours:g} h) · "
        f"{_plural(len(report['lines']), 'line')} · champion {html.escape(champion)} · generated {datetime.now(timezone.utc):%H:%M:%S} UTC</p>"
        f"<p>store {html.escape(redact(store.uri))}</p></header><main>",
    ]
    if not report["lines"]:
        parts.append(
            f'<section class="empty" id="alerts"><h2>No scored frames in this store</h2><p>{html.escape(redact(store.uri))} holds no '
            f"scoring rows from {window.start:%Y-%m-%d %H:%M} to {window.end:%Y-%m-%d %H:%M} UTC, so nothing here is being watched. "
            "Is this the store the lines write to (<code>--store</code>, <code>ATTNLOOP_STORE</code>)? Are frames arriving "
            "(<code>attnloop stream add</code>) and is scoring running (<code>attnloop score</code>, the score flow)?</p></section>"
        )
    elif report["alerts"]:
        items = "".join(
            f'<li><a href="#line-{html.escape(a["source"])}">{html.escape(a["message"])}</a></li>' for a in report["alerts"]
        )
        parts.append(f'<section class="alerts" id="alerts"><h2>{_plural(len(report["alerts"]), "alert")}</h2><ul>{items}</ul></section>')
    else:
        parts.append('<section class="quiet" id="alerts"><h2>No alerts</h2><p class="muted">every line is within its thresholds</p></section>')
    for line in report["lines"]:
        source = line["source"]
        plot = _trend_plot(source, report["hourly"], report["mix"], line, report["thresholds"], report["trends"])
        lost = ", ".join(f"{k} {v}" for k, v in sorted(line.get("quarantined", {}).items())) or "none"
        parts.append(
            f'<section id="line-{html.escape(source)}" class="line{" alert" if source in alerted else ""}">'
            f'<h2>{html.escape(source)}</h2><p class="muted">{line["frames"]} frames · model version {html.escape(str(line["model_version"]))} · '
            f"not scorable: {html.escape(lost)}</p>"
            f'<img class="plot" alt="trends of {html.escape(source)}" src="{plot}">'
            f"<h3>Drift against the reference{_tested(line)}</h3>{_figure_table(line)}</section>"
        )
    cards = []
    for r in top:
        link = links.get(r["key"])
        task = f' · <a href="{html.escape(link)}">Label Studio task</a>' if link else ""
        picture = _thumbnail(store, r)
        shown = f'<img alt="{html.escape(r["key"])}" src="{picture}">' if picture else '<div class="missing">frame not in the store</div>'
        cards.append(
            f'<div class="frame">{shown}<br>'
            f'{html.escape(r["source"])} · {html.escape(r["class"])} {r["confidence"]:.2f}<br>'
            f'<span class="muted">{html.escape(r["key"].rsplit("/", 1)[-1])}</span>{task}</div>'
        )
    parts.append(
        f'<section id="frames"><h2>Highest-priority frames of the last {TOP_HOURS} hours</h2>'
        f'<p class="muted">least margin first, with the attention overlay where scoring wrote one</p><div class="frames">{"".join(cards) or "none"}</div></section>'
    )
    gate_rows = "".join(
        f'<tr><td>{h["version"]}{" (champion)" if h["champion"] else ""}</td><td>{html.escape(h["gate"])}</td><td>{html.escape(h["at"])}</td>'
        f'<td>{html.escape(h["promoted_at"])}</td><td>{html.escape(h["reasons"][:300])}</td></tr>'
        for h in history
    )
    parts.append(
        f'<section id="models"><h2>Champion: {html.escape(champion)}</h2>'
        + (f"<table><tr><th>version</th><th>gate</th><th>gated at</th><th>promoted at</th><th>reasons</th></tr>{gate_rows}</table>" if history else "")
        + "</section></main></body></html>"
    )
    return "".join(parts)


class _Page:
    """The rendered page, kept ``ttl`` seconds (a monitor run per request would be wasteful)."""

    def __init__(self, settings: Settings, store_uri: str | None, hours: float | None, ttl: float) -> None:
        self.settings, self.store_uri, self.hours, self.ttl = settings, store_uri, hours, ttl
        self.lock = threading.Lock()
        self.cached: tuple[float, str] | None = None

    def get(self) -> str:
        with self.lock:
            if self.cached is None or time.monotonic() - self.cached[0] > self.ttl:
                self.cached = (time.monotonic(), render(self.settings, store_uri=self.store_uri, hours=self.hours))
            return self.cached[1]


def server(
    settings: Settings, *, store_uri: str | None = None, host: str = "127.0.0.1", port: int = 8765, hours: float | None = None, ttl: float = 60.0
) -> ThreadingHTTPServer:
    """An HTTP server of the page (``/``) and ``/health``; call ``serve_forever`` on it."""
    page = _Page(settings, store_uri, hours, ttl)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/health":
                return self._send(200, b'{"status": "ok"}', "application/json")
            if path not in ("/", "/index.html"):
                return self._send(404, b"not found", "text/plain")
            try:
                body = page.get().encode()
            except Exception as err:
                log.exception("monitoring page")
                return self._send(500, redact(f"the monitoring page could not be made: {type(err).__name__}: {err}").encode(), "text/plain")
            self._send(200, body, "text/html; charset=utf-8")

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.info("%s " + format, self.address_string(), *args)

    return ThreadingHTTPServer((host, port), Handler)
