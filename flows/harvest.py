"""``harvest``: completed Label Studio annotations become the next annotation-set version."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.tasks import exponential_backoff

from attnloop.config import current
from attnloop.layout import ANNOTATIONS


@task(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=10), retry_jitter_factor=0.5)
def harvest_annotations(store_uri: str | None, prefix: str) -> dict:
    """Idempotent: the watermark makes a retry take only what is still new."""
    from attnloop.labelstudio import harvest
    from attnloop.labelstudio.project import find_project, project_classes

    settings = current()
    ls_settings = settings.label_studio
    ls = ls_settings.client()
    project = find_project(ls, ls_settings.project)
    if project is None:
        raise LookupError(f"no Label Studio project titled {ls_settings.project!r}; run the annotate flow first")
    result = harvest(ls, project, store=settings.store(store_uri), classes=project_classes(project), prefix=prefix)
    lines = [f"# Harvest — annotation set v{result.version}" if result.written else "# Harvest — nothing new", ""]
    lines.append(f"{result.added} added, {result.updated} updated, {result.removed} removed; {len(result.problems)} problems")
    lines += [f"- task {p.task}: {p.reason} — {p.detail}" for p in result.problems]
    create_markdown_artifact("\n".join(lines) + "\n", key="harvest-summary")
    return {"version": result.version, "key": result.key, "written": result.written, "added": result.added, "updated": result.updated, "problems": len(result.problems)}


@flow(name="harvest", log_prints=True)
def harvest(store: str | None = None, prefix: str = ANNOTATIONS) -> dict:
    """Returns the set's ``version`` and ``key`` after the harvest, whether one was ``written``, and the counts."""
    summary = harvest_annotations(store, prefix)
    get_run_logger().info("annotation set %s: %d added, %d updated, %d problems", summary["key"], summary["added"], summary["updated"], summary["problems"])
    return summary
