"""``retrain``: fine-tune the champion on the latest annotation set (plus the base data), then
export, track and register the result as the ``challenger``."""

from __future__ import annotations

import tempfile
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.tasks import exponential_backoff

from attnloop.config import Settings


@task(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=5))
def latest_annotation_set(store_uri: str | None, prefix: str = "annotations/") -> str:
    from attnloop.labelstudio.harvest import latest_version, read_version, set_key

    store = Settings.from_env().store(store_uri)
    version = latest_version(store, prefix)
    if version is None:
        raise LookupError(f"no annotation set under {store.uri}/{prefix}; harvest one first")
    read_version(store, version, prefix)  # refuses a set whose content no longer matches its recorded hash
    return set_key(version, prefix)


@task
def fine_tune(
    store_uri: str | None, annotation_set: str, base_data: str | None, workdir: str, epochs: int, guided_share: float, progress: bool = False
) -> dict:
    from attnloop import registry
    from attnloop.training import TrainConfig, data_hash, save_run, train
    from attnloop.trainset import materialize

    settings = Settings.from_env()
    client = registry.connect(settings.registry_uri)
    champion = registry.alias_version(client, settings.model_name, registry.CHAMPION)
    if champion is None:
        raise LookupError(f"{settings.model_name} has no champion to fine-tune; train and promote a first model")
    init = registry.checkpoint(client, settings.model_name, champion, Path(workdir) / "champion")
    root, annotations = materialize(settings.store(store_uri), annotation_set, out=Path(workdir) / "data", base=base_data)
    config = TrainConfig(
        epochs=epochs, init_from=str(init), guidance="match", guidance_weight=10.0, counterexamples="append", guided_share=guided_share,
        threads=settings.threads,
    )
    result = train(root, config, annotations=annotations, progress=progress)
    run = save_run(Path(workdir) / "run", result, config, data=data_hash(root))
    return {"run": str(run), "parent": champion, "guided_images": result.metrics["guided_images"]}


@task(retries=2, retry_delay_seconds=exponential_backoff(backoff_factor=5))
def register(run: str, parent: str, annotation_set: str, holdout: str | None) -> str:
    from attnloop import registry
    from attnloop.holdout import load_holdout
    from attnloop.publish import register_run

    settings = Settings.from_env()
    return register_run(
        registry.connect(settings.registry_uri), name=settings.model_name, run_dir=run, parent=parent,
        annotation_set=annotation_set, holdout=load_holdout(holdout) if holdout else None, artifact_root=settings.artifact_root,
    )


@flow(name="retrain", log_prints=True)
def retrain(
    base_data: str | None = None,
    holdout: str | None = None,
    store: str | None = None,
    epochs: int = 30,  # fine-tuning away from a shortcut needs about as many epochs as the first training
    guided_share: float = 0.5,
    progress: bool = False,
) -> str:
    """Returns the registered challenger's version. ``progress`` shows a training bar on the console (demos)."""
    annotation_set = latest_annotation_set(store)
    with tempfile.TemporaryDirectory(prefix="attnloop-retrain-") as workdir:
        trained = fine_tune(store, annotation_set, base_data, workdir, epochs, guided_share, progress)
        version = register(trained["run"], trained["parent"], annotation_set, holdout)
    create_markdown_artifact(
        f"# Retrained\n\nVersion **{version}** of `{Settings.from_env().model_name}`, fine-tuned from version "
        f"{trained['parent']} on `{annotation_set}` ({trained['guided_images']} annotated images), registered as challenger.\n",
        key="retrain-summary",
    )
    get_run_logger().info("registered version %s from %s", version, annotation_set)
    return version
