"""Choosing which images to correct first: priority signals (strategies and search follow)."""

from attnloop.priority.signals import (
    attention_spread,
    background_attention,
    branch_disagreement,
    confusion_driven,
    entropy,
    least_confidence,
    margin,
    outside_box,
    wrong_first,
)

__all__ = [
    "attention_spread",
    "background_attention",
    "branch_disagreement",
    "confusion_driven",
    "entropy",
    "least_confidence",
    "margin",
    "outside_box",
    "wrong_first",
]
