"""``monitor``: each line's figures and drift over the last hours, written to the store and shown as a
Prefect artifact; each alert is a Prefect event (``attnloop.monitor.alert``) that an automation
routes (flows/automations/monitor-alert.yaml: a webhook notification)."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event

from attnloop.config import current
from attnloop.monitoring import run
from attnloop.monitoring.stats import Window


@task
def measure(store_uri: str | None, window_hours: float | None) -> dict:
    settings = current()
    store = settings.store(store_uri)
    window = Window.last(window_hours or settings.monitor.window_hours)
    report = run.monitor(store, thresholds=settings.monitor, window=window, page=settings.monitor_url)
    report["key"] = run.write(store, report)
    return report


def alert_event(alert: dict, report: dict):
    """One alert as a Prefect event: the line is the resource, the figure a related resource, so
    an automation can match either (``attnloop.line.<source>``, ``attnloop.figure.<name>``)."""
    return emit_event(
        event=run.EVENT,
        resource={"prefect.resource.id": f"attnloop.line.{alert['source']}", "prefect.resource.name": alert["source"]},
        related=[{"prefect.resource.id": f"attnloop.figure.{alert['figure']}", "prefect.resource.role": "figure"}],
        payload={**alert, "run_id": report["run_id"], "report": report.get("key")},
    )


@flow(name="monitor", log_prints=True)
def monitor(store: str | None = None, window_hours: float | None = None) -> dict:
    """Returns the report's summary: lines, alerts (each as emitted) and where the report is."""
    logger = get_run_logger()
    report = measure(store, window_hours)
    create_markdown_artifact(run.markdown(report), key="monitor", description=f"monitor run {report['run_id']}")
    emitted = 0
    for alert in report["alerts"]:
        logger.warning("ALERT %s — %s", alert["message"], alert["link"])
        emitted += alert_event(alert, report) is not None
    logger.info("%d lines, %d alerts (%d events); report %s", len(report["lines"]), len(report["alerts"]), emitted, report["key"])
    return {"lines": [line["source"] for line in report["lines"]], "alerts": report["alerts"], "events": emitted, "report": report["key"]}


ALERT_BLOCK = "attnloop-alerts"
ALERT_AUTOMATION = "attnloop monitor alert"


def route_alerts(webhook_url: str) -> str:
    """Send every alert event to ``webhook_url`` (a chat or paging webhook, JSON ``{"text": …}``):
    a webhook notification block and the automation that fires it on each event, created or
    replaced (safe to run at every start-up). Returns the automation's id."""
    from prefect.automations import Automation, EventTrigger, SendNotification
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    block = CustomWebhookNotificationBlock(name="attnloop", url=webhook_url, json_data={"text": "{{subject}}\n{{body}}"})
    block_id = block.save(ALERT_BLOCK, overwrite=True)
    for existing in _automations(ALERT_AUTOMATION):
        existing.delete()
    automation = Automation(
        name=ALERT_AUTOMATION,
        description="A monitor run found a line whose figure crossed its threshold (attnloop.monitoring.thresholds).",
        trigger=EventTrigger(expect={run.EVENT}, match={"prefect.resource.id": "attnloop.line.*"}, posture="Reactive", threshold=1),
        actions=[
            SendNotification(
                block_document_id=block_id,
                subject="attnloop alert: line {{ event.payload.source }}, {{ event.payload.figure }}",
                body="{{ event.payload.message }}\nframes: {{ event.payload.link }}\nreport: {{ event.payload.report }}",
            )
        ],
    ).create()
    return str(automation.id)


def _automations(name: str) -> list:
    from prefect.automations import Automation

    try:
        found = Automation.read(name=name)
    except ValueError:  # none of that name
        return []
    return found if isinstance(found, list) else [found]
