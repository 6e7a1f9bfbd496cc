"""A drift drill on real images: a mill model watches two lines for a day; at hour ``--drift-at`` the
camera of line-b drifts (exposure and focus). A monitor run every hour (its 6-hour window) says when
the first alert comes, and that none came before; the monitoring page at the end is screenshotted.

    PYTHONPATH=platform python benchmarks/monitoring_drill.py --out docs/benchmarks/monitoring-drill.md --screenshot docs/images/monitoring.png

Frames land in a folder store with their landing time set to their hour (the listing's time is
what monitoring reads); the model is a mill ABN trained for a few epochs; its drift reference is
the family's stream split as a steady camera sees it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--per-hour", type=int, default=60, help="frames per line and hour")
    parser.add_argument("--drift-at", type=int, default=19, help="the hour line-b's camera drifts")
    parser.add_argument("--exposure", type=float, default=1.5)
    parser.add_argument("--blur", type=float, default=1.5)
    parser.add_argument("--out", default=None)
    parser.add_argument("--screenshot", default=None)
    args = parser.parse_args()

    from attnloop.config import Settings
    from attnloop.datasets import make_dataset
    from attnloop.export import export_onnx
    from attnloop.holdout import load_holdout
    from attnloop.monitoring import reference, run
    from attnloop.monitoring.stats import Window
    from attnloop.runtime import OnnxModel
    from attnloop.scoring import score_store
    from attnloop.stream import Shift, write_stream
    from attnloop.training import ORIGINAL_ABN, TrainConfig, train

    root = Path(tempfile.mkdtemp(prefix="attnloop-drill-"))
    make_dataset("mill", root / "mill", seed=0, size=240)
    result = train(root / "mill", TrainConfig(epochs=2, guidance="none", seed=0, **ORIGINAL_ABN), progress=False)
    model = OnnxModel(export_onnx(result.model, result.card, root / "model.onnx"), device="cpu")
    settings = Settings.from_env({**os.environ, "ATTNLOOP_HOME": str(root / "home"), "ATTNLOOP_STORE": (root / "store").as_uri()})
    store = settings.store(create=True)
    reference.build(store, model, "1", load_holdout(root / "mill", split="stream"))
    end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=args.hours)
    rows = []
    for hour in range(args.hours):
        landed = start + timedelta(hours=hour)
        for line, seed in (("line-a", 1000 + hour), ("line-b", 2000 + hour)):
            drifted = line == "line-b" and hour >= args.drift_at
            shift = Shift(exposure=args.exposure, blur=args.blur) if drifted else None
            keys = write_stream(store, "mill", count=args.per_hour, seed=seed, source=line, day=landed.date(), prefix=f"h{hour:02d}-", shift=shift)
            for i, key in enumerate(keys):
                stamp = (landed + timedelta(seconds=i * 3600 / args.per_hour)).timestamp()
                os.utime(store.root / key, (stamp, stamp))
        score_store(store, model, model_version="1", overlays=8, progress=False)
        report = run.monitor(store, thresholds=settings.monitor, window=Window.last(settings.monitor.window_hours, end=landed + timedelta(hours=1)))
        rows.append((hour, sorted({(a["source"], a["figure"]) for a in report["alerts"]})))
        print(f"hour {hour:2d}: {rows[-1][1] or 'no alert'}", flush=True)
    first = next((hour for hour, alerts in rows if any(s == "line-b" for s, _ in alerts)), None)
    false = [(hour, alerts) for hour, alerts in rows if any(s == "line-a" for s, _ in alerts) or (hour < args.drift_at and alerts)]
    if args.screenshot:
        shoot(settings, args.screenshot)
    text = "\n".join(
        [
            "# Monitoring: a drift drill on real images",
            "",
            "```",
            "PYTHONPATH=platform python benchmarks/monitoring_drill.py " + " ".join(sys.argv[1:]),
            "```",
            "",
            f"Two lines of the `mill` stream, {args.per_hour} frames an hour each for {args.hours} hours, scored by a mill ABN;",
            f"at hour {args.drift_at} line-b's camera drifts (exposure ×{args.exposure}, blur σ {args.blur} px). A monitor run every hour",
            f"over its {settings.monitor.window_hours:g}-hour window, default thresholds:",
            "",
            "| hour | alerts (line, figure) |",
            "|---|---|",
            *[f"| {hour}{' (drift starts)' if hour == args.drift_at else ''} | {', '.join(f'{s} {f}' for s, f in alerts) or '—'} |" for hour, alerts in rows],
            "",
            f"- first alert on line-b: hour {first} ({'the first run after the drift began' if first == args.drift_at else f'{first - args.drift_at if first is not None else None} runs after it began'})",
            f"- alerts on the steady line, or before the drift: {len(false)} of {len(rows)} runs",
            "",
        ]
    )
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


def shoot(settings, path: str) -> None:
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from attnloop.apps.monitor_page import server

    httpd = server(settings, port=0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1900"):
        options.add_argument(argument)
    options.binary_location = shutil.which("chromium") or ""
    browser = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    try:
        browser.get(f"http://127.0.0.1:{httpd.server_port}/")
        browser.save_screenshot(path)
    finally:
        browser.quit()
        httpd.shutdown()


if __name__ == "__main__":
    sys.exit(main())
