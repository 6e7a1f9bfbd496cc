"""``attnloop monitor``: run the monitor once, serve or write the monitoring page, store a model's
drift reference, and route alerts to a webhook (docs: README, "For production monitoring")."""

from __future__ import annotations

import argparse
from pathlib import Path

from attnloop.config import Settings


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from attnloop.monitoring import run
    from attnloop.monitoring.stats import Window

    store = settings.store(args.store)
    report = run.monitor(store, thresholds=settings.monitor, window=Window.last(args.hours or settings.monitor.window_hours), page=settings.monitor_url)
    key = run.write(store, report)
    print(run.markdown(report))
    print(f"report: {store.uri}/{key} (the monitor flow also sends each alert as a Prefect event); "
          f"the page with every line's trends: `attnloop monitor serve{' --store ' + args.store if args.store else ''}`")
    return 1 if report["alerts"] and args.fail_on_alert else 0


def cmd_page(args: argparse.Namespace, settings: Settings) -> int:
    from attnloop.apps.monitor_page import render

    Path(args.out).write_text(render(settings, store_uri=args.store, hours=args.hours))
    print(f"wrote {args.out} (store {settings.store(args.store).uri}); open it in a browser, or serve it live with `attnloop monitor serve`")
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from attnloop.apps.monitor_page import server

    store = settings.store(args.store)  # a store that does not exist fails here, not on every request
    httpd = server(settings, store_uri=store.uri, host=args.host, port=args.port, hours=args.hours, ttl=args.refresh)
    print(f"monitoring page of {store.uri} on http://{args.host}:{httpd.server_port}/ (Ctrl-C stops it)", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return 0


def cmd_reference(args: argparse.Namespace, settings: Settings) -> int:
    import tempfile

    from attnloop.holdout import load_holdout
    from attnloop.monitoring import reference
    from attnloop.registry import champion_uri, open_source

    store = settings.store(args.store)
    if args.period_hours is not None:
        from datetime import datetime, timedelta, timezone

        end = datetime.fromisoformat(args.period_end) if args.period_end else datetime.now(timezone.utc)
        end = end if end.tzinfo else end.replace(tzinfo=timezone.utc)
        if not args.model_version:
            raise ValueError("a reference period needs --model-version: the version whose scoring rows it keeps")
        sources = args.sources.split(",") if args.sources else None
        meta = reference.from_rows(store, args.model_version, start=end - timedelta(hours=args.period_hours), end=end, sources=sources)
        print(f"drift reference of model version {meta['model_version']}: {meta['frames']} frames of {meta['period']['start']} → {meta['period']['end']}")
        print("next: `attnloop monitor run` compares each line with it")
        return 0
    if not args.holdout:
        raise ValueError("give --holdout (a manifest folder) or --period-hours (a stretch of the lines' own frames)")
    model, version = open_source(
        args.model or champion_uri(settings.model_name), registry_uri=settings.registry_uri, dst=tempfile.mkdtemp(prefix="attnloop-model-"),
        threads=settings.threads,
    )
    meta = reference.build(store, model, args.model_version or version, load_holdout(args.holdout, split=args.split),
                           object_fraction=args.object_fraction)
    print(f"drift reference of model version {meta['model_version']}: {meta['frames']} frames of holdout {meta['holdout']}")
    print("next: `attnloop monitor run` compares each line with it")
    return 0


def cmd_route(args: argparse.Namespace, settings: Settings) -> int:
    from flows.monitor import route_alerts

    automation = route_alerts(args.webhook)
    from attnloop.redact import redact

    print(f"alerts go to {redact(args.webhook)} (automation {automation}); `attnloop monitor run` or the monitor flow sends them")
    return 0


def add_commands(sub) -> None:
    monitor = sub.add_parser("monitor", help="production monitoring: trends, drift, alerts, the page").add_subparsers(dest="monitor_command", required=True)
    store_help = "store URI (default: ATTNLOOP_STORE or a folder under ATTNLOOP_HOME)"
    hours_help = "the window, in hours ending now (default: ATTNLOOP_MONITOR_WINDOW_HOURS, 24)"

    r = monitor.add_parser("run", help="each line's figures and drift over the window; writes the report, prints the alerts")
    r.add_argument("--store", default=None, help=store_help)
    r.add_argument("--hours", type=float, default=None, help=hours_help)
    r.add_argument("--fail-on-alert", action="store_true", help="exit 1 when there is an alert (for cron and CI)")
    r.set_defaults(func=cmd_run)

    p = monitor.add_parser("page", help="write the monitoring page as one HTML file")
    p.add_argument("--out", default="monitoring.html")
    p.add_argument("--store", default=None, help=store_help)
    p.add_argument("--hours", type=float, default=None, help=hours_help)
    p.set_defaults(func=cmd_page)

    s = monitor.add_parser("serve", help="serve the monitoring page")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--store", default=None, help=store_help)
    s.add_argument("--port", type=int, default=8765)
    s.add_argument("--hours", type=float, default=None, help=hours_help)
    s.add_argument("--refresh", type=float, default=60.0, help="seconds a rendered page is reused")
    s.set_defaults(func=cmd_serve)

    f = monitor.add_parser("reference", help="score a holdout with a model and store it as that model's drift reference")
    f.add_argument("--holdout", default=None, help="a manifest folder (attnloop data make / attnloop data import)")
    f.add_argument("--period-hours", type=float, default=None, help="instead of a holdout: the lines' own frames of these hours (a known-good period)")
    f.add_argument("--period-end", default=None, help="ISO time the period ends (default: now)")
    f.add_argument("--sources", default=None, help="comma-separated lines the period takes frames from (default: every line)")
    f.add_argument("--split", default="test")
    f.add_argument("--model", default=None, help="a model source (default: the registry's champion)")
    f.add_argument("--model-version", default=None, help="the version the scoring rows carry (default: the model's)")
    f.add_argument("--object-fraction", type=float, default=0.1, help="as the score flow's (background attention is computed alike)")
    f.add_argument("--store", default=None, help=store_help)
    f.set_defaults(func=cmd_reference)

    w = monitor.add_parser("route", help="send every alert to a webhook (a Prefect notification block and automation)")
    w.add_argument("--webhook", required=True, help="URL that receives a JSON {\"text\": ...} per alert")
    w.set_defaults(func=cmd_route)
