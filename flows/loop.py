"""``loop``: score → annotate → (a person, or the simulated annotator) → harvest → retrain → promote."""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from attnloop.recipe import RECIPE
from flows.annotate import annotate
from flows.harvest import harvest
from flows.promote import promote
from flows.propagate import propagate
from flows.retrain import retrain
from flows.score import score

ANNOTATORS = ("human", "simulated")


@task
def simulated_annotator(truth: str) -> dict:
    """Completes the open tasks from ground truth, through the same API a browser uses (demos, tests)."""
    from attnloop.config import current
    from attnloop.labelstudio import find_project, read_truth, simulate_annotator

    ls_settings = current().label_studio
    ls = ls_settings.client()
    return dict(simulate_annotator(ls, find_project(ls, ls_settings.project), read_truth(truth)))


@flow(name="loop", log_prints=True)
def loop(
    base_data: str,
    holdout: str,
    top_k: int = 50,
    annotator: str = "human",
    truth: str | None = None,
    epochs: int = RECIPE.epochs,
    approval: bool = False,
    progress: bool = False,
    confirm: bool = True,
) -> dict:
    """One turn of the loop. With ``annotator="human"`` the turn harvests what people completed so
    far; with ``"simulated"`` the annotator completes the new tasks from ``truth`` first.
    ``progress`` shows the retraining's progress bar on the console (demos). Returns what each step
    did: ``scored``, ``pushed``, ``annotated``, the harvested ``annotation_set`` (its key) and its
    ``annotation_version``, ``confirmations`` (look-alikes of the marked shortcuts sent for a click,
    with ``confirm``), and where a new version was trained, the ``challenger`` and the ``gate``'s action."""
    if annotator not in ANNOTATORS:
        raise ValueError(f"unknown annotator {annotator!r}; valid names: {', '.join(ANNOTATORS)}")
    if annotator == "simulated" and not truth:
        raise ValueError("the simulated annotator needs truth: a JSONL of {image: object key, label, boxes}")
    logger = get_run_logger()
    out: dict = {"scored": score(wait_for_slot=None)["scored"], "pushed": annotate(top_k=top_k)["created"]}
    if annotator == "simulated":
        out["annotated"] = simulated_annotator(truth)["annotated"]
    harvested = harvest()
    out["annotation_set"], out["annotation_version"] = harvested["key"], harvested["version"]
    if not harvested["written"]:
        logger.info("no new annotations; nothing to retrain on")
        return out
    if confirm:
        out["confirmations"] = propagate()["created"]
    out["challenger"] = retrain(base_data=base_data, holdout=holdout, epochs=epochs, progress=progress)
    out["gate"] = promote(holdout=holdout, approval=approval)["action"]
    return out
