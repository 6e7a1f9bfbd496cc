"""One scoring run at a time: ``score`` and ``score-backlog`` share one slot.

Both list the frames the ledger lacks and score them, so two at once would score the same frames
twice: the ledger stays right, but the work and the scoring rows double. The slot is a Prefect
global concurrency limit, ``attnloop-scoring`` with one slot, created on first use (it shows in
the UI under Concurrency, where an operator can see who holds it). A scheduled ``score`` that
finds it taken skips its turn: the run holding it scores those frames, and the next turn picks up
what arrived since. ``score-backlog`` and the ``loop`` wait for it.
"""

from __future__ import annotations

from contextlib import ExitStack

from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists

LIMIT = "attnloop-scoring"


def ensure_limit() -> None:
    """Create the one-slot limit unless it exists (an operator may have raised or disabled it: left as it is)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(LIMIT)
        except ObjectNotFound:
            from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=LIMIT, limit=1))
            except ObjectAlreadyExists:
                pass  # a run that started at the same moment created it


def acquire(wait: float | None) -> ExitStack | None:
    """The held slot (release it by closing, or with ``with``), or None when it was not free within
    ``wait`` seconds (None: wait as long as it takes)."""
    ensure_limit()
    held = ExitStack()
    try:
        held.enter_context(concurrency(LIMIT, occupy=1, timeout_seconds=wait, strict=True))
    except TimeoutError:
        return None
    return held
