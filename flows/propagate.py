"""``propagate``: the shortcut marks people drew, found again on the scored frames, go to Label Studio
as one confirmation batch — "same mistake as that frame? keep the mark or delete it", one click
each, most similar first. Harvesting the answers feeds the next retraining."""

from __future__ import annotations

import tempfile

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.tasks import exponential_backoff

from attnloop.config import current
from attnloop.propagation import THRESHOLD


@task(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=10), retry_jitter_factor=0.5)
def push_lookalikes(model: str | None, store_uri: str | None, threshold: float, limit: int | None) -> dict:
    """Rerunning is safe: frames already queued are neither matched again nor pushed twice."""
    from attnloop import annotation_set, scores
    from attnloop.labelstudio import bootstrap, push
    from attnloop.labelstudio.push import confirmation_candidates, existing_tasks
    from attnloop.marks import drawn, over_frames
    from attnloop.registry import champion_uri, open_source

    settings = current()
    store = settings.store(store_uri)
    marks = drawn(annotation_set.latest(store))
    if not marks:
        return {"marks": 0, "matches": 0, "created": 0}
    with tempfile.TemporaryDirectory(prefix="attnloop-propagate-") as tmp:
        onnx, version = open_source(model or champion_uri(settings.model_name), registry_uri=settings.registry_uri, dst=tmp)
    rows = scores.read_rows(store, version)
    ls = settings.label_studio.client()
    project = bootstrap(ls, title=settings.label_studio.project, classes=list(onnx.card.class_names))
    queued, _ = existing_tasks(ls, project)
    matches = over_frames(store, marks, [row.key for row in rows if row.key not in queued], threshold=threshold)[:limit]
    candidates = confirmation_candidates(rows, matches)
    result = push(ls, project, candidates, store=store, model_version=version, document_root=settings.label_studio.document_root)
    create_table_artifact(
        [{"key": c.key, "similarity": round(c.priority, 4), "same as": c.confirms} for c in candidates[:20]],
        key="confirmation-batch",
        description=f"frames whose region looks like a shortcut people marked ({len(marks)} marks)",
    )
    return {"marks": len(marks), "matches": len(matches), "created": result.created}


@flow(name="propagate", log_prints=True)
def propagate(model: str | None = None, store: str | None = None, threshold: float = THRESHOLD, limit: int | None = 200) -> dict:
    """Push at most ``limit`` look-alikes of the marked shortcuts (cosine similarity of the region
    descriptor at least ``threshold``) as a confirmation batch."""
    pushed = push_lookalikes(model, store, threshold, limit)
    get_run_logger().info("%d marks, %d look-alikes, %d confirmation tasks created", pushed["marks"], pushed["matches"], pushed["created"])
    return pushed
