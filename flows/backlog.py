"""``score-backlog``: a large backlog scored one partition (source, day) per task on Prefect's
Dask task runner — a local cluster by default, or an existing Dask scheduler named by
``dask_address`` or ``ATTNLOOP_DASK_ADDRESS`` (a Dask cluster on Kubernetes, say).

Each task runs :func:`attnloop.scoring.score_store` on its partition, so the ledger keeps every
frame scored once per model version: a rerun, or a retry of one partition, scores only what is
left. The model is pinned once, an alias such as ``@champion`` to its version, so every partition
is scored by the same version even if the alias moves during the run. The flow holds the store's
scoring lease of that version (:func:`attnloop.scoring.lease_name`) for the whole run, so no
``attnloop score`` process scores the same frames meanwhile; the partitions, disjoint, run in
parallel under it.

Workers of an existing cluster need the same code and the same environment as the flow (the
attnloop image, ``ATTNLOOP_STORE``, S3 and MLflow settings): each task reads its settings there.
"""

from __future__ import annotations

import tempfile
from collections import Counter

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.tasks import exponential_backoff
from prefect_dask import DaskTaskRunner

from attnloop import lease
from attnloop.config import current
from attnloop.registry import open_source
from attnloop.scoring import lease_name, score_store
from flows import scoring_slot

@task(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=5), retry_jitter_factor=0.5)
def list_partitions(store_uri: str | None, source: str | None) -> tuple[str, list[dict]]:
    """The store's URI and its partitions in key order, each ``{"source", "day", "frames"}``."""
    from attnloop.stream import iter_frames

    store = current().store(store_uri)
    counts = Counter((parsed.source, parsed.date) for _, parsed in iter_frames(store, source=source))
    return store.uri, [{"source": s, "day": d, "frames": n} for (s, d), n in sorted(counts.items())]


@task(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=5), retry_jitter_factor=0.5)
def pin_model(model: str | None) -> str:
    """The model source with its alias resolved to a version (``models:/NAME/VERSION``); a file passes through."""
    from attnloop import registry

    settings = current()
    source = model or registry.champion_uri(settings.model_name)
    parsed = registry.parse_source(source)
    if parsed.alias is None:
        return source
    version = registry.alias_version(registry.connect(settings.registry_uri), parsed.name, parsed.alias)
    if version is None:
        raise LookupError(f"{parsed.name} has no version with the alias {parsed.alias!r}; register and promote a model first")
    return registry.model_uri(parsed.name, version=version)


def pinned_version(pinned: str) -> str:
    """The version id a pinned source scores under: the registry version, or the file's name and hash."""
    from attnloop import registry

    parsed = registry.parse_source(pinned)
    return parsed.version if parsed.path is None else registry.file_version(parsed.path)


@task(
    retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=5), retry_jitter_factor=0.5,
    task_run_name="score {source}/{day}",
)
def score_partition(store_uri: str, model: str, version: str, source: str, day: str, object_fraction: float, overlays: int) -> dict:
    """Rerunning is safe: the ledger makes a retry score only what is left of the partition. It runs
    under the flow's lease of ``version``, so it refuses a model file that changed since."""
    settings = current()
    with tempfile.TemporaryDirectory(prefix="attnloop-backlog-") as tmp:
        onnx, loaded = open_source(model, registry_uri=settings.registry_uri, dst=tmp, threads=settings.threads)
        if loaded != version:
            raise RuntimeError(f"{model} is version {loaded} now, not {version} as when the backlog run started; nothing scored here, rerun the backlog")
        summary = score_store(
            settings.store(store_uri), onnx, model_version=version,
            source=f"{source}/{day}",  # frames are listed under frames/<source>/ as a prefix: this narrows it to one day
            object_fraction=object_fraction, overlays=overlays, progress=False, leased=True,
        )
    return {"source": source, "day": day, **summary.to_dict()}


@flow(name="score-partitions")
def score_partitions(store_uri: str, model: str, version: str, partitions: list[dict], object_fraction: float, overlays: int) -> list[dict]:
    """One task per partition on the flow's task runner; every partition is tried before a failure is raised."""
    futures = [
        score_partition.submit(store_uri, model, version, p["source"], p["day"], object_fraction, overlays) for p in partitions
    ]
    outcomes = [_outcome(future) for future in futures]
    failed = [f"{p['source']}/{p['day']}: {outcome!r}" for p, outcome in zip(partitions, outcomes) if isinstance(outcome, BaseException)]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(partitions)} partitions failed after their retries (the others are committed; "
                           "rerun to score what is left):\n" + "\n".join(failed))
    return outcomes


def _outcome(future) -> dict | BaseException:
    """A partition's summary, or what stopped it: its task's error, or Dask's when a worker died under it."""
    try:
        return future.result(raise_on_failure=False)
    except Exception as err:
        return err


def dask_runner(dask_address: str | None, workers: int | None) -> DaskTaskRunner:
    """An existing Dask scheduler where one is named, else a local cluster of ``workers`` processes
    (one per CPU core when None), each running one partition at a time."""
    address = dask_address or current().dask_address
    if address:
        return DaskTaskRunner(address=address)
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be positive, got {workers}")
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True})


@flow(name="score-backlog", log_prints=True)
def score_backlog(
    store: str | None = None,
    model: str | None = None,
    source: str | None = None,
    dask_address: str | None = None,
    workers: int | None = None,
    object_fraction: float = 0.1,
    overlays: int = 16,
) -> dict:
    """Score every frame not yet scored by the (pinned) model, one task per (source, day) on Dask.
    ``overlays`` is per partition. Waits for the scoring slot (:mod:`flows.scoring_slot`) and the
    store's scoring lease of the version, which it holds to the end. Returns the totals and each
    partition's summary."""
    runner = dask_runner(dask_address, workers)
    with scoring_slot.acquire(None):  # one scoring run at a time: a running `score` finishes first
        return _score_backlog(runner, store, model, source, object_fraction, overlays)


def _score_backlog(runner: DaskTaskRunner, store: str | None, model: str | None, source: str | None, object_fraction: float, overlays: int) -> dict:
    store_uri, partitions = list_partitions(store, source)
    pinned = pin_model(model)
    version = pinned_version(pinned)
    logger = get_run_logger()
    logger.info("%d partitions, %d frames in %s; model %s", len(partitions), sum(p["frames"] for p in partitions), store_uri, pinned)
    with lease.hold(current().store(store_uri), lease_name(version), wait=None):  # a command-line run finishes first
        results = score_partitions.with_options(task_runner=runner)(store_uri, pinned, version, partitions, object_fraction, overlays) if partitions else []
    totals = {key: sum(r[key] for r in results) for key in ("scored", "quarantined", "already_done")}
    create_table_artifact(
        [{k: r[k] for k in ("source", "day", "scored", "quarantined", "already_done", "run_id")} for r in results],
        key="backlog-partitions",
        description=f"score-backlog: {totals['scored']} frames scored in {len(results)} partitions by {pinned}",
    )
    logger.info("scored %d frames, %d quarantined, %d already done, in %d partitions", *totals.values(), len(results))
    return {"model": pinned, "partitions": len(results), **totals, "results": results}
