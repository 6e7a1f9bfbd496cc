"""``score``: every new frame in the store, scored by the champion through ONNX Runtime, once."""

from __future__ import annotations

import tempfile
from datetime import timedelta

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_image_artifact, create_markdown_artifact
from prefect.tasks import exponential_backoff

from attnloop import lease
from attnloop.config import current
from attnloop.registry import champion_uri, open_source
from attnloop.scoring import report_markdown, score_store
from flows import scoring_slot


@task(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=5), retry_jitter_factor=0.5)
def score_frames(
    store_uri: str | None, model: str | None, source: str | None, object_fraction: float, overlays: int, lease_wait: float | None = 10.0
) -> dict:
    """Rerunning is safe: the ledger makes a retry score only what is left. When another run (a
    command line's, say) holds the store's scoring lease for ``lease_wait`` seconds, this one is skipped."""
    settings = current()
    with tempfile.TemporaryDirectory(prefix="attnloop-score-") as tmp:
        onnx, version = open_source(
            model or champion_uri(settings.model_name), registry_uri=settings.registry_uri, dst=tmp, threads=settings.threads
        )
        try:
            summary = score_store(
                settings.store(store_uri), onnx, model_version=version, source=source, object_fraction=object_fraction,
                overlays=overlays, progress=False, lease_wait=lease_wait,
            )
        except lease.Busy as err:
            get_run_logger().info("skipped: %s; that run scores these frames", err)
            return {"skipped": True, "scored": 0, "quarantined": 0, "already_done": 0}
    create_markdown_artifact(report_markdown(summary), key="scoring-summary", description=f"scoring run {summary.run_id}")
    if summary.attention_sheet:
        store = settings.store(store_uri)
        create_image_artifact(
            store.presign(summary.attention_sheet, expires=timedelta(days=7)), key="scoring-attention",
            description=f"where model {version} looked on the {len(summary.top)} highest-priority frames of run {summary.run_id}",
        )
    return summary.to_dict()


@flow(name="score", log_prints=True)
def score(
    store: str | None = None,
    model: str | None = None,
    source: str | None = None,
    object_fraction: float = 0.1,
    overlays: int = 16,
    wait_for_slot: float | None = 10.0,
) -> dict:
    """Score what the ledger lacks. One scoring run at a time (:mod:`flows.scoring_slot`, and the
    store's scoring lease that command-line runs hold too): when another holds the slot or the lease
    for ``wait_for_slot`` seconds (None: as long as it takes), this turn is skipped."""
    logger = get_run_logger()
    held = scoring_slot.acquire(wait_for_slot)
    if held is None:
        logger.info("skipped: another scoring run holds the %r slot; it scores these frames, or the next turn does", scoring_slot.LIMIT)
        return {"skipped": True, "scored": 0, "quarantined": 0, "already_done": 0}
    with held:
        summary = score_frames(store, model, source, object_fraction, overlays, wait_for_slot)
    logger.info("scored %d frames, %d quarantined, %d already done", summary["scored"], summary["quarantined"], summary["already_done"])
    return summary
