"""Monitoring on seeded streams: statistics over time (DuckDB over the Parquet parts), drift
against a reference with and without drift, false alarms over a simulated week, and the alert
path on Prefect's engine down to a webhook."""

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from attnloop import scores
from attnloop.monitoring import run, simulate, stats
from attnloop.monitoring.stats import Window
from attnloop.monitoring.thresholds import Thresholds
from attnloop.storage import open_store

END = datetime(2026, 12, 4, 12, tzinfo=timezone.utc)
BASE = simulate.Line()


@pytest.fixture
def store(tmp_path):
    return open_store(str(tmp_path / "store"), create=True)


def test_hourly_statistics_come_from_the_rows(store):
    start = END - timedelta(hours=6)
    simulate.write_reference(store, BASE)  # the version's off-object threshold
    simulate.write_line(store, "line-1", BASE, start=start, hours=6, per_hour=30, seed=1)
    simulate.write_line(store, "line-2", BASE.drifted(off_object=0.6, mix=(5, 1, 1, 1, 1, 1)), start=start, hours=6, per_hour=20, seed=2)
    with stats.open_rows(store, Window(start, END)) as rows:
        seen = rows.overview(Window(start, END))
        lines = {line["source"]: line for line in rows.lines(Window(start, END))}
        last_two = rows.overview(Window(END - timedelta(hours=2), END))["hourly"]
    hourly = seen["hourly"]
    assert [(r["source"], r["frames"]) for r in hourly] == [("line-1", 30)] * 6 + [("line-2", 20)] * 6
    assert {s: line["frames"] for s, line in lines.items()} == {"line-1": 180, "line-2": 120}
    assert {x["source"]: (x["frames"], x["model_version"]) for x in seen["lines"]} == {"line-1": (180, "1"), "line-2": (120, "1")}
    assert lines["line-2"]["off_object_share"] > lines["line-1"]["off_object_share"] + 0.3
    crack = {}
    for r in seen["mix"]:
        if r["class"] == simulate.CLASSES[0]:
            crack[r["source"]] = crack.get(r["source"], 0) + r["frames"]
    assert crack["line-2"] > 0.35 * 120 and crack["line-1"] < 0.3 * 180
    assert len(last_two) == 4  # the window cuts by each frame's time, not by file
    assert all(0 < r["confidence_p10"] <= r["confidence_median"] < 1 for r in hourly)


def test_files_are_chosen_by_line_and_day_and_old_parts_read(store):
    simulate.write_line(store, "line-1", BASE, start=END - timedelta(days=5), hours=2, per_hour=10, seed=1)
    simulate.write_line(store, "line-1", BASE, start=END - timedelta(hours=2), hours=2, per_hour=10, seed=2)
    simulate.write_line(store, "line-2", BASE, start=END - timedelta(hours=2), hours=2, per_hour=10, seed=3)
    window = Window(END - timedelta(hours=3), END)
    assert all("date=2026-12-0" in k for k in stats.score_files(store, window=window))
    assert not any("date=2026-11-29" in k for k in stats.score_files(store, window=window))
    assert {k.split("/")[1] for k in stats.score_files(store, window=window, sources=["line-2"])} == {"source=line-2"}
    # a part written before rows had captured_at: its time is the scoring time
    row = scores.ScoreRow(key="frames/line-3/2026-12-04/old.png", hash="h", width=8, height=8, predicted="crack", source="line-3",
                          date="2026-12-04", scored_at=(END - timedelta(minutes=30)).isoformat(), model_version="1", confidence=0.9,
                          signals={"margin": 0.2, "background_attention": 0.1})
    scores.write_part(store, [row], [np.zeros(4, np.float32)], version="1", part="abc-0")
    with stats.open_rows(store, window) as rows:
        assert {line["source"]: line["frames"] for line in rows.lines(window)} == {"line-1": 20, "line-2": 20, "line-3": 1}
        assert {line["source"]: line["off_object_share"] for line in rows.lines(window)}["line-3"] is None  # no focus, no flag


def test_a_frame_scored_again_by_a_new_model_counts_once(store):
    start = END - timedelta(hours=1)
    simulate.write_line(store, "line-1", BASE, start=start, hours=1, per_hour=20, seed=1, version="1")
    simulate.write_line(store, "line-1", BASE, start=start, hours=1, per_hour=20, seed=1, version="2", scored_after=timedelta(days=2))
    with stats.open_rows(store, Window(start, END)) as rows:
        (line,) = rows.lines(Window(start, END))
    assert (line["frames"], line["model_version"]) == (20, "2")


@pytest.mark.parametrize(
    "change, figure",
    [
        (dict(mix=(6, 1, 1, 1, 1, 6)), "class_psi"),
        (dict(confidence=0.62), "confidence_ks"),
        (dict(embedding_shift=0.35), "embedding_auc"),
        (dict(off_object=0.4), "off_object_rise"),
    ],
)
def test_a_drifted_line_alerts_on_its_figure_and_the_others_stay_quiet(store, change, figure):
    start = END - timedelta(hours=24)
    simulate.write_reference(store, BASE)
    simulate.write_line(store, "steady", BASE, start=start, hours=24, per_hour=15, seed=1)
    simulate.write_line(store, "drifted", BASE.drifted(**change), start=start, hours=24, per_hour=15, seed=2)
    report = run.monitor(store, window=Window(start, END), page="http://monitor.example")
    alerts = {(a["source"], a["figure"]) for a in report["alerts"]}
    assert ("drifted", figure) in alerts
    assert not any(source == "steady" for source, _ in alerts)
    alert = next(a for a in report["alerts"] if a["figure"] == figure)
    assert alert["value"] >= alert["threshold"] and alert["link"] == "http://monitor.example/#line-drifted"
    assert "drifted" in alert["message"] and f"{alert['threshold']:g}" in alert["message"]


def test_no_false_alarm_over_a_simulated_week(store):
    """Hourly traffic on two steady lines for 7 days; one monitor run a day over the last 24 hours.
    Every figure of every line of every run is a chance for a false alarm: none may fire."""
    start = END - timedelta(days=7)
    simulate.write_reference(store, BASE)
    for i, source in enumerate(("line-1", "line-2")):
        simulate.write_line(store, source, BASE, start=start, hours=7 * 24, per_hour=8, seed=10 + i, part_hours=24)
    chances = alarms = 0
    for day in range(7):
        window = Window(start + timedelta(days=day), start + timedelta(days=day + 1))
        report = run.monitor(store, window=window, seed=day)
        chances += sum(len(line["figures"]) for line in report["lines"])
        alarms += len(report["alerts"])
    assert chances >= 7 * 2 * 4 and alarms == 0


def test_too_few_frames_or_no_reference_is_said_not_alerted(store):
    start = END - timedelta(hours=2)
    simulate.write_line(store, "quiet", BASE, start=start, hours=2, per_hour=5, seed=1)
    simulate.write_line(store, "busy", BASE.drifted(confidence=0.5), start=start, hours=2, per_hour=60, seed=2, version="7")
    report = run.monitor(store, window=Window(start, END))
    status = {line["source"]: line["status"] for line in report["lines"]}
    assert status["quiet"].startswith("too few frames") and "no drift reference for model version 7" in status["busy"]
    assert report["alerts"] == []


def test_thresholds_come_from_the_environment():
    assert Thresholds.from_env({"ATTNLOOP_MONITOR_CLASS_PSI": "0.4", "ATTNLOOP_MONITOR_MIN_FRAMES": "10"}) == Thresholds(class_psi=0.4, min_frames=10)
    with pytest.raises(ValueError, match="ATTNLOOP_MONITOR_CONFIDENCE_KS must be a number"):
        Thresholds.from_env({"ATTNLOOP_MONITOR_CONFIDENCE_KS": "high"})
    with pytest.raises(ValueError, match="P_VALUE"):
        Thresholds(p_value=1.5)


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        type(self).received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_an_alert_reaches_the_webhook_through_prefect(store, monkeypatch):
    """The monitor flow on Prefect's engine emits one event per alert; the automation that
    ``route_alerts`` creates turns it into a webhook notification naming line, figure and value."""
    from prefect.testing.utilities import prefect_test_harness

    monkeypatch.setenv("ATTNLOOP_STORE", store.uri)
    now = datetime.now(timezone.utc)
    simulate.write_reference(store, BASE)
    simulate.write_line(store, "line-7", BASE.drifted(confidence=0.6), start=now - timedelta(hours=4), hours=4, per_hour=40, seed=3)
    simulate.write_line(store, "line-8", BASE, start=now - timedelta(hours=4), hours=4, per_hour=40, seed=4)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with prefect_test_harness(server_startup_timeout=120):
            from flows.monitor import monitor, route_alerts

            route_alerts(f"http://127.0.0.1:{server.server_port}/hook")
            route_alerts(f"http://127.0.0.1:{server.server_port}/hook")  # replaced, not doubled
            out = monitor(window_hours=6)
            deadline = time.monotonic() + 60
            while not _Hook.received and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(2)  # a doubled automation would have sent its copy by now
    finally:
        server.shutdown()
    assert [(a["source"], a["figure"]) for a in out["alerts"]] == [("line-7", "confidence_ks")] and out["events"] == 1
    assert len(_Hook.received) == 1
    text = _Hook.received[0]["text"]
    assert "line-7" in text and "confidence_ks" in text and "crossed its threshold 0.2" in text and "frames/line-7/" in text
    assert json.loads(store.get(out["report"]))["alerts"][0]["source"] == "line-7"


@pytest.mark.services
def test_rows_in_s3_are_queried_in_place_as_in_a_folder(store, s3_endpoint):
    """The same rows in a folder and in a bucket (over HTTP, through the store's pyarrow S3 client)
    give the same figures."""
    import uuid

    from services import S3_KEY, S3_SECRET

    bucket = open_store(f"s3://monitor-{uuid.uuid4().hex[:8]}/plant-a", endpoint=s3_endpoint, access_key=S3_KEY, secret_key=S3_SECRET, create=True)
    start = END - timedelta(hours=3)
    for target in (store, bucket):
        simulate.write_line(target, "line-1", BASE, start=start, hours=3, per_hour=25, seed=5)
    window = Window(start, END)
    with stats.open_rows(store, window) as a, stats.open_rows(bucket, window) as b:
        here, there = a.overview(window), b.overview(window)
    assert here == there and sum(r["frames"] for r in there["hourly"]) == 75


def test_the_embedding_test_reaches_the_alert_level_it_documents():
    """An alert needs p < ATTNLOOP_MONITOR_P_VALUE (0.001) for every figure: the embedding test's
    p-value must be able to go that low (a 30-permutation test stopped at 1/31 ≈ 0.032)."""
    from attnloop.monitoring import drift
    from attnloop.monitoring.thresholds import Thresholds

    rng = np.random.default_rng(0)
    reference = rng.normal(size=(300, 16))
    moved = drift.embeddings(reference, rng.normal(size=(300, 16)) + 0.4, Thresholds())
    assert moved.alert and moved.p_value < 1e-3 and moved.value >= 0.75
    same = drift.embeddings(reference, rng.normal(size=(300, 16)), Thresholds())
    assert not same.alert and same.p_value > 1e-3 and same.value < 0.6


def test_the_off_object_threshold_is_set_from_the_reference_and_lines_are_flagged_against_it(store):
    """The threshold is the 90th percentile of the reference frames' attention focus, stored with
    the reference: a line like the reference has about a tenth of its frames off object, a version
    without a reference gets no flag, and a reference written before the focus says to write it again."""
    from attnloop import layout
    from attnloop.monitoring import reference

    meta = simulate.write_reference(store, BASE)
    figures, _ = simulate.frames(BASE, 600, seed=99)  # the reference's frames
    focus = np.array([f["signals"]["attention_focus"] for f in figures])
    assert meta["off_object_signal"] == "attention_focus" and meta["off_object_threshold"] == pytest.approx(np.quantile(focus, 0.9))
    assert reference.off_object_threshold(store, "1") == meta["off_object_threshold"]
    assert reference.read(store, "1").off_object.mean() == pytest.approx(0.1, abs=0.005)

    start = END - timedelta(hours=6)
    simulate.write_line(store, "steady", BASE, start=start, hours=6, per_hour=100, seed=1)
    simulate.write_line(store, "fixed", BASE.drifted(off_object=0.5), start=start, hours=6, per_hour=100, seed=2)
    simulate.write_line(store, "unreferenced", BASE, start=start, hours=6, per_hour=20, seed=3, version="2")
    with stats.open_rows(store, Window(start, END)) as rows:
        share = {line["source"]: line["off_object_share"] for line in rows.lines(Window(start, END))}
    assert 0.05 < share["steady"] < 0.15 and share["fixed"] > 0.4 and share["unreferenced"] is None
    with stats.open_rows(store, Window(start, END), sources=["steady"]) as rows:  # a threshold given, not read
        rows_off = stats.Rows(store, rows.keys, off_object={"1": 0.99}).lines(Window(start, END))
    assert rows_off[0]["off_object_share"] == 0.0

    old = {k: v for k, v in meta.items() if not k.startswith("off_object")} | {"off_object_threshold": 0.5}  # before the focus
    store.put(layout.reference_key("1", "reference.json"), json.dumps(old).encode())
    assert reference.off_object_threshold(store, "1") is None and reference.read(store, "1").off_object is None
    report = run.monitor(store, window=Window(start, END))
    steady = next(line for line in report["lines"] if line["source"] == "steady")
    assert "off_object_rise" not in {f["name"] for f in steady["figures"]} and "write it again" in steady["status"]
    assert {f["name"] for f in steady["figures"]} >= {"class_psi", "confidence_ks"}  # the other figures still run
