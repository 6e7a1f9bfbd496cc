"""``promote``: the gate, challenger vs champion on the fixed holdout; in approval mode the flow
pauses for a person's decision (Prefect's run input), or ``attnloop registry approve`` decides."""

from __future__ import annotations

import dataclasses

from prefect import flow, get_run_logger, pause_flow_run, task
from prefect.artifacts import create_markdown_artifact
from prefect.input import RunInput

from attnloop.config import current
from attnloop.gate import AWAIT, PROMOTE


class Approval(RunInput):
    approve: bool
    by: str = "prefect"


@task
def run_gate(holdout: str, split: str, approval: bool) -> dict:
    from attnloop import registry
    from attnloop.holdout import load_holdout

    settings = current()
    policy = dataclasses.replace(settings.gate, approval=settings.gate.approval or approval)
    decision, version, text = registry.gate(
        registry.connect(settings.registry_uri), name=settings.model_name, holdout=load_holdout(holdout, split=split), policy=policy,
        holdout_path=holdout, split=split,
    )
    create_markdown_artifact(text, key="gate-decision", description=f"gate on version {version}")
    return {"action": decision.action, "version": version, "reasons": decision.reasons}


@task
def store_reference(holdout: str, split: str, version: str) -> dict:
    """The new champion's drift reference (a model change starts a new one): its holdout, scored once.
    A promotion may come before the first frames, so it makes the store if there is none yet."""
    from attnloop import registry
    from attnloop.holdout import load_holdout

    settings = current()
    return registry.write_reference(
        registry.connect(settings.registry_uri), settings.store(create=True), name=settings.model_name, version=version,
        holdout=load_holdout(holdout, split=split), threads=settings.threads,
    )


@task
def approve(version: str, by: str) -> None:
    from attnloop import registry

    settings = current()
    registry.approve(registry.connect(settings.registry_uri), settings.model_name, version, by=by)


@flow(name="promote", log_prints=True)
def promote(holdout: str, split: str = "test", approval: bool = False, approval_timeout: int = 24 * 3600) -> dict:
    """Returns the gate's action (promote, refuse, awaiting-approval, approved, rejected) and the version."""
    outcome = run_gate(holdout, split, approval)
    logger = get_run_logger()
    if outcome["action"] == AWAIT and approval:
        logger.info("version %s passed the gate and waits for approval", outcome["version"])
        answer = pause_flow_run(wait_for_input=Approval, timeout=approval_timeout, key=f"approve-{outcome['version']}")
        if answer.approve:
            approve(outcome["version"], answer.by)
            outcome["action"] = "approved"
            store_reference(holdout, split, outcome["version"])
        else:
            outcome["action"] = "rejected"
    if outcome["action"] == PROMOTE:
        store_reference(holdout, split, outcome["version"])
    logger.info("gate: %s for version %s %s", outcome["action"], outcome["version"], "; ".join(outcome["reasons"]))
    return outcome
