"""The names training and the strategy benchmark accept, importable without torch.

The command line offers them as choices when it builds its parser, which must not load PyTorch
(``attnloop --help`` answers in well under a second); training and the benchmark check their
options against the same names. ``tests/test_cli.py`` holds that the guidance losses named here
are those :mod:`attnloop.guidance` defines.
"""

from __future__ import annotations

from dataclasses import dataclass

# training (attnloop.training.TrainConfig)
GUIDANCE_LOSSES = ("outside", "match", "share")  # attnloop.guidance.LOSSES
GUIDANCE = ("none", *GUIDANCE_LOSSES)
COUNTEREXAMPLES = ("none", "append", "replace")
TRAINABLE = ("all", "head")  # head: only the perception classifier learns, on frozen features (in the manner of DFR)
ORIGINAL_ABN = dict(gate="residual", branch="last", mining_weight=0.0)  # TrainConfig options of the original ABN
ATTENTION_FORMS = {"faithful": {}, "original": ORIGINAL_ABN}  # the command line's --attention

# the strategy benchmark (attnloop.apps.bench)
ALL = "all"  # the budget that boxes every pool image
POOLS = ("train", "heldout")
PROPAGATION = ("none", "auto", "confirm")
RETRAIN = ("finetune", "scratch", "head")


@dataclass(frozen=True)
class Profile:
    strategies: tuple[str, ...]
    budgets: tuple[int | str, ...]
    seeds: int
    initial_epochs: int
    retrain_epochs: int


PROFILES = {
    "quick": Profile(("random", "least_confidence", "hybrid"), (0, 10, ALL), 1, 10, 10),
    "full": Profile(
        (
            "random", "least_confidence", "margin", "entropy", "branch_disagreement",
            "background_attention", "confusion", "wrong_first", "simsearch", "hybrid",
        ),
        (0, 5, 10, 25, 50, ALL),
        3,
        30,
        10,
    ),
    # the issue-18 protocol: a held-out pool, budgets as shares of it, coverage and error-set strategies
    "pool": Profile(
        ("random", "margin", "coverage", "jtt", "hybrid"),
        (0, "0.5%", "1%", "2%", "5%", ALL),
        3,
        30,
        10,
    ),
}
