"""``annotate``: the highest-priority scored frames go to Label Studio as pre-annotated tasks."""

from __future__ import annotations

import tempfile

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.tasks import exponential_backoff

from attnloop.config import current
from attnloop.priority import DEFAULT_RANKING


def _may_pass(task, task_run, state) -> bool:
    """Retry what may pass by itself (Label Studio away, another push holding the lease); a setting
    to fix (Label Studio does not serve the store's images) fails at once."""
    from attnloop.labelstudio.push import NotServed

    try:
        state.result()
    except NotServed:
        return False
    except Exception:
        return True
    return True


@task(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=10), retry_jitter_factor=0.5, retry_condition_fn=_may_pass)
def push_candidates(model: str | None, top_k: int, max_open: int | None, store_uri: str | None, ranking: str) -> dict:
    """The ``top_k`` best frames not queued yet. A retry after Label Studio went away is safe: keys
    already queued are never pushed twice."""
    from attnloop.labelstudio import bootstrap
    from attnloop.labelstudio.push import push_scored
    from attnloop.registry import champion_uri, open_source

    settings = current()
    with tempfile.TemporaryDirectory(prefix="attnloop-annotate-") as tmp:
        onnx, version = open_source(model or champion_uri(settings.model_name), registry_uri=settings.registry_uri, dst=tmp)
    store = settings.store(store_uri)
    ls_settings = settings.label_studio
    ls = ls_settings.client()
    project = bootstrap(ls, title=ls_settings.project, classes=list(onnx.card.class_names))
    result = push_scored(
        ls, project, store=store, model_version=version, limit=top_k, ranking=ranking, max_open=max_open,
        document_root=ls_settings.document_root,
    )
    candidates = result.candidates
    create_table_artifact(
        [{"rank": c.rank, "key": c.key, "priority": round(c.priority, 4), "predicted": c.predicted} for c in candidates[:20]],
        key="top-candidates",
        description=f"the {min(20, len(candidates))} highest-priority frames of model version {version}",
    )
    return {"project": project.id, "created": result.created, "already_queued": result.skipped_existing, "held_back": result.skipped_backpressure}


@flow(name="annotate", log_prints=True)
def annotate(
    model: str | None = None, top_k: int = 50, max_open: int | None = 500, store: str | None = None, ranking: str = DEFAULT_RANKING
) -> dict:
    """Push the ``top_k`` best frames not yet queued, by ``ranking``: ``coverage`` (the default: spread
    over predicted classes and clusters, the benchmark's best with shortcut marks), ``priority``
    (margin) or ``hybrid`` (a diverse batch; docs/benchmarks/strategies.md)."""
    pushed = push_candidates(model, top_k, max_open, store, ranking)
    get_run_logger().info("Label Studio project %s: %d tasks created, %d already queued, %d held back", *pushed.values())
    return pushed
