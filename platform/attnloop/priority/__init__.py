"""Choosing which images to correct first: priority signals, strategies and :func:`select`, the
similarity search. Pure numpy over one scoring pass; where to add a strategy: docs/architecture.md."""

from attnloop.priority.signals import (
    PRIORITY,
    ROW_SIGNALS,
    attention_focus,
    attention_spread,
    background_attention,
    branch_disagreement,
    confusion_driven,
    entropy,
    frame_signals,
    least_confidence,
    margin,
    outside_box,
    priority,
    wrong_first,
)
from attnloop.priority.strategies import DEFAULT_RANKING, RANKINGS, STRATEGIES, Context, Pool, check_ranking, ranks, select

__all__ = [
    "PRIORITY",
    "DEFAULT_RANKING",
    "RANKINGS",
    "ROW_SIGNALS",
    "STRATEGIES",
    "Context",
    "Pool",
    "attention_focus",
    "attention_spread",
    "background_attention",
    "branch_disagreement",
    "check_ranking",
    "confusion_driven",
    "entropy",
    "frame_signals",
    "least_confidence",
    "margin",
    "outside_box",
    "priority",
    "ranks",
    "select",
    "wrong_first",
]
