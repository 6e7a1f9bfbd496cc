"""``retrain``: fine-tune the champion on the latest annotation set (plus the base data) with the
retraining recipe (:mod:`attnloop.recipe`), then export, track and register the result as the ``challenger``."""

from __future__ import annotations

import tempfile
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.tasks import exponential_backoff

from attnloop.config import current
from attnloop.layout import ANNOTATIONS
from attnloop.recipe import RECIPE


@task(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=5))
def latest_annotation_set(store_uri: str | None, prefix: str = ANNOTATIONS) -> str:
    """The newest annotation set's key; a set whose content no longer matches its recorded hash is refused."""
    from attnloop import annotation_set

    store = current().store(store_uri)
    latest = annotation_set.latest(store, prefix)
    if latest is None:
        raise LookupError(f"no annotation set under {store.uri}/{prefix}; harvest one first")
    return latest.key


@task
def fine_tune(
    store_uri: str | None, annotation_set: str, base_data: str | None, workdir: str, epochs: int, guided_share: float,
    progress: bool = False, propagation: str = RECIPE.propagation,
) -> dict:
    from attnloop import annotation_set as sets
    from attnloop import registry
    from attnloop.marks import over_base
    from attnloop.training import data_hash, save_run, train
    from attnloop.trainset import BASE, materialize

    settings = current()
    client = registry.connect(settings.registry_uri)
    champion = registry.alias_version(client, settings.model_name, registry.CHAMPION)
    if champion is None:
        raise LookupError(f"{settings.model_name} has no champion to fine-tune; train and promote a first model")
    init = registry.checkpoint(client, settings.model_name, champion, Path(workdir) / "champion")
    store = settings.store(store_uri)
    root, annotations = materialize(store, annotation_set, out=Path(workdir) / "data", base=base_data)
    propagated = {}
    if propagation == "auto" and base_data:  # the marks people drew, spread over the base data's training images
        marked = over_base(store, sets.read_key(store, annotation_set), base_data)
        propagated = {f"{BASE}/{image}": note for image, note in marked.items()}
    annotations = {**propagated, **annotations}
    config = RECIPE.config(epochs=epochs, init_from=str(init), guided_share=guided_share, threads=settings.threads)
    result = train(root, config, annotations=annotations, progress=progress)
    run = save_run(Path(workdir) / "run", result, config, data=data_hash(root), source=root, boxes=annotation_set)
    return {
        "run": str(run), "parent": champion, "guided_images": result.metrics["guided_images"],
        "marked_images": result.metrics["marked_images"], "propagated": len(propagated),
    }


@task(retries=2, retry_delay_seconds=exponential_backoff(backoff_factor=5))
def register(run: str, parent: str, annotation_set: str, holdout: str | None) -> str:
    from attnloop import registry
    from attnloop.holdout import load_holdout
    from attnloop.publish import register_run

    settings = current()
    return register_run(
        registry.connect(settings.registry_uri), name=settings.model_name, run_dir=run, parent=parent,
        annotation_set=annotation_set, holdout=load_holdout(holdout) if holdout else None, artifact_root=settings.artifact_root,
    )


@flow(name="retrain", log_prints=True)
def retrain(
    base_data: str | None = None,
    holdout: str | None = None,
    store: str | None = None,
    epochs: int = RECIPE.epochs,
    guided_share: float = RECIPE.guided_share,
    progress: bool = False,
    propagation: str = RECIPE.propagation,
) -> str:
    """Returns the registered challenger's version. ``progress`` shows a training bar on the console (demos)."""
    annotation_set = latest_annotation_set(store)
    with tempfile.TemporaryDirectory(prefix="attnloop-retrain-") as workdir:
        trained = fine_tune(store, annotation_set, base_data, workdir, epochs, guided_share, progress, propagation)
        version = register(trained["run"], trained["parent"], annotation_set, holdout)
    create_markdown_artifact(
        f"# Retrained\n\nVersion **{version}** of `{current().model_name}`, fine-tuned from version "
        f"{trained['parent']} on `{annotation_set}` ({trained['guided_images']} annotated images; "
        f"{trained['propagated']} base images carry a propagated shortcut mark), registered as challenger.\n",
        key="retrain-summary",
    )
    get_run_logger().info("registered version %s from %s", version, annotation_set)
    return version
