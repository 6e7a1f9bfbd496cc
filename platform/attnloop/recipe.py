"""The retraining recipe: how a model is fine-tuned on people's corrections.

One definition for the retrain flow, the strategy benchmark and the command line's defaults, so
the benchmark measures what the platform runs: box guidance that matches the map to the boxes
(λ = 10), counterexamples appended for every boxed image (the region outside its boxes taken from
another image), the boxed images oversampled to half of each batch, and as many epochs as the
first training (fine-tuning away from a shortcut needs about as many), and the shortcut marks people
drew propagated over the base data, whose labels are known (erased there as counterexamples and
penalized, :mod:`attnloop.marks`). The figures behind it:
docs/benchmarks/retraining.md and docs/benchmarks/strategies.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Recipe:
    guidance: str = "match"  # the attention-guidance loss (attnloop.guidance)
    guidance_weight: float = 10.0  # λ
    counterexamples: str = "append"  # none | append | replace
    guided_share: float = 0.5  # the boxed (and marked) images' expected share of every batch
    mark_weight: float = 1.0  # the attention inside shortcut marks
    reliance_weight: float = 1.0  # the input gradient inside shortcut marks (right for the right reasons)
    epochs: int = 30
    propagation: str = "auto"  # none | auto: the marks people drew, spread over the base data as weak supervision (attnloop.marks)

    def options(self) -> dict[str, Any]:
        """The training options of the recipe (:class:`attnloop.training.TrainConfig` keywords), epochs and propagation aside."""
        out = asdict(self)
        del out["epochs"], out["propagation"]
        return out

    def config(self, *, epochs: int | None = None, **options: Any):
        """The :class:`attnloop.training.TrainConfig` of a retraining (``init_from``, ``seed``, ``threads``… in ``options``)."""
        from attnloop.training import TrainConfig

        return TrainConfig(epochs=self.epochs if epochs is None else epochs, **{**self.options(), **options})


RECIPE = Recipe()
