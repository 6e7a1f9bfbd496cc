"""The promotion gate: is the challenger measurably better than the champion on the same holdout?

Pure numpy. Inputs are per-image results of both models on one fixed holdout (as production
runs them: ONNX Runtime on raw bytes). The challenger is promoted only when

1. the lower bound of a paired-bootstrap confidence interval of its accuracy gain exceeds
   ``min_gain`` (pairing by image removes the images' own difficulty from the noise; with the
   default 0 a challenger that is merely as good as the champion stays a challenger);
2. its mean attention-in-box does not fall by more than ``attention_tolerance``;
3. no class loses more than ``max_class_drop`` accuracy;
4. with no champion yet, its accuracy reaches ``min_accuracy`` instead of 1–3.

Every figure and every reason goes into the :class:`Decision`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

PROMOTE = "promote"
REFUSE = "refuse"
AWAIT = "awaiting-approval"


@dataclass(frozen=True)
class Policy:
    min_gain: float = 0.0  # lower bound of the accuracy-gain interval must exceed this
    confidence: float = 0.95  # two-sided interval; the gate reads its lower end
    attention_tolerance: float = 0.05  # largest allowed drop of mean attention-in-box
    max_class_drop: float = 0.10  # largest allowed drop of any class's accuracy
    min_accuracy: float = 0.5  # the bar for a first champion
    resamples: int = 2000
    seed: int = 0
    approval: bool = False  # a passing challenger waits for a person

    def __post_init__(self) -> None:
        if not 0.5 <= self.confidence < 1:
            raise ValueError(f"confidence must lie in [0.5, 1), got {self.confidence}")
        if self.resamples < 100:
            raise ValueError(f"resamples must be at least 100 for a usable interval, got {self.resamples}")


@dataclass(frozen=True)
class Outcome:
    """One model on the holdout: per image, was it right, and its attention-in-box (NaN: no box)."""

    correct: np.ndarray  # N bool
    in_box: np.ndarray  # N float, NaN where the image has no box
    labels: np.ndarray  # N class index

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())

    @property
    def attention_in_box(self) -> float | None:
        values = self.in_box[~np.isnan(self.in_box)]
        return float(values.mean()) if values.size else None

    def per_class(self, num_classes: int) -> list[float | None]:
        return [float(self.correct[self.labels == k].mean()) if (self.labels == k).any() else None for k in range(num_classes)]


@dataclass
class Decision:
    action: str  # promote | refuse | awaiting-approval
    reasons: list[str] = field(default_factory=list)
    figures: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.action in (PROMOTE, AWAIT)

    def to_dict(self) -> dict:
        return asdict(self)


def paired_bootstrap(
    champion: np.ndarray, challenger: np.ndarray, *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Accuracy gain (challenger − champion) and its confidence interval, resampling images in pairs."""
    a, b = np.asarray(champion, np.float64), np.asarray(challenger, np.float64)
    if a.shape != b.shape or a.ndim != 1 or not a.size:
        raise ValueError(f"paired results need two equal, non-empty 1-D arrays, got {a.shape} and {b.shape}")
    diff = b - a
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(resamples, diff.size))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(diff.mean()), float(low), float(high)


def decide(
    challenger: Outcome | None,
    champion: Outcome | None,
    *,
    class_names: Sequence[str],
    policy: Policy = Policy(),
    error: str | None = None,
) -> Decision:
    """The gate's decision; ``error`` (or a missing challenger result) means the evaluation failed."""
    if error is not None or challenger is None:
        return Decision(REFUSE, [f"evaluation failed: {error or 'no challenger result'}"], {})
    figures: dict = {
        "holdout_images": int(challenger.correct.size),
        "challenger_accuracy": challenger.accuracy,
        "challenger_attention_in_box": challenger.attention_in_box,
        "challenger_per_class": dict(zip(class_names, challenger.per_class(len(class_names)))),
    }
    reasons: list[str] = []
    if champion is None:
        figures["min_accuracy"] = policy.min_accuracy
        if challenger.accuracy < policy.min_accuracy:
            reasons.append(f"no champion yet and accuracy {challenger.accuracy:.3f} < the minimum {policy.min_accuracy:.3f}")
    else:
        if champion.correct.size != challenger.correct.size or not np.array_equal(champion.labels, challenger.labels):
            return Decision(REFUSE, ["evaluation failed: the two models were not scored on the same holdout images"], figures)
        gain, low, high = paired_bootstrap(
            champion.correct, challenger.correct, confidence=policy.confidence, resamples=policy.resamples, seed=policy.seed
        )
        figures.update(
            champion_accuracy=champion.accuracy,
            champion_attention_in_box=champion.attention_in_box,
            champion_per_class=dict(zip(class_names, champion.per_class(len(class_names)))),
            gain=gain,
            gain_low=low,
            gain_high=high,
            confidence=policy.confidence,
            min_gain=policy.min_gain,
        )
        if low <= policy.min_gain:
            reasons.append(
                f"accuracy gain {gain:+.3f} has a {policy.confidence:.0%} lower bound {low:+.3f}, not above the threshold {policy.min_gain:+.3f}"
            )
        ours, theirs = challenger.attention_in_box, champion.attention_in_box
        if ours is not None and theirs is not None:
            figures["attention_change"] = ours - theirs
            if ours < theirs - policy.attention_tolerance:
                reasons.append(
                    f"attention-in-box fell from {theirs:.3f} to {ours:.3f} (more than the tolerance {policy.attention_tolerance:.3f})"
                )
        drops = {}
        for name, new, old in zip(class_names, challenger.per_class(len(class_names)), champion.per_class(len(class_names))):
            if new is not None and old is not None:
                drops[name] = old - new
                if old - new > policy.max_class_drop:
                    reasons.append(f"class {name!r} fell from {old:.3f} to {new:.3f} (more than {policy.max_class_drop:.2f})")
        figures["class_drops"] = drops
    if reasons:
        return Decision(REFUSE, reasons, figures)
    return Decision(AWAIT if policy.approval else PROMOTE, [], figures)


def report(decision: Decision, *, name: str, challenger_version: str, champion_version: str | None) -> str:
    """The decision as markdown, for the version's run and the approver."""
    f = decision.figures
    lines = [
        f"# Promotion gate — {name} version {challenger_version}",
        "",
        f"**Decision: {decision.action}**" + (f" (champion: version {champion_version})" if champion_version else " (no champion yet)"),
        "",
    ]
    lines += [f"- {reason}" for reason in decision.reasons] or ["- every check passed"]
    if f.get("challenger_accuracy") is not None:  # nothing was scored when the evaluation failed or a rollback stood
        lines += ["", "| figure | challenger | champion |", "|---|---|---|"]

        def cell(value) -> str:
            return "—" if value is None else f"{value:.3f}"

        lines.append(f"| accuracy | {cell(f.get('challenger_accuracy'))} | {cell(f.get('champion_accuracy'))} |")
        lines.append(
            f"| attention-in-box | {cell(f.get('challenger_attention_in_box'))} | {cell(f.get('champion_attention_in_box'))} |"
        )
        theirs = f.get("champion_per_class", {})
        for cls, value in f.get("challenger_per_class", {}).items():
            lines.append(f"| class {cls} | {cell(value)} | {cell(theirs.get(cls))} |")
        if "gain" in f:
            lines += [
                "",
                f"Accuracy gain {f['gain']:+.3f}, {f['confidence']:.0%} paired-bootstrap interval "
                f"[{f['gain_low']:+.3f}, {f['gain_high']:+.3f}] on {f['holdout_images']} holdout images; "
                f"threshold for the lower bound {f['min_gain']:+.3f}.",
            ]
    return "\n".join(lines) + "\n"
