"""``attnloop bench strategies``: which selection strategy buys the largest gain per correction.

Protocol, per seed: train an initial model without boxes (it learns the shortcut) and score the
pool once. The pool is the initial model's own training set (``pool="train"``), or a share of the
training split held out from the initial training (``pool="heldout"``, as the stream is in
production: class labels known, boxes not; every retraining then sees the pool's labels). For each
strategy and budget b (a count, or a share of the pool: ``2%``), select b images, let a simulated
annotator return their true evidence boxes and class — and, with ``marks``, mark the shortcut
(the record's confounder box) where it sees the model looking at it (the attention proposal
covers at least half of the box, :func:`attnloop.proposals.sees`) — optionally propagate the
marks over the pool (:mod:`attnloop.propagation`: ``auto`` applies every match as weak
supervision, ``confirm`` only those the annotator accepts, one click each), retrain, and measure
the clean test split. Budget 0 is the initial model (with ``pool="heldout"``: the model retrained
on the pool's labels without boxes); ``all`` boxes every pool image (the ceiling).

Retraining (``retrain``): ``finetune`` the initial model, train anew (``scratch``), or retrain its
perception classifier alone on frozen features (``head``, in the manner of DFR); the recipe is the
platform's (:data:`attnloop.recipe.RECIPE`) unless ``retrain_options`` say otherwise. Retraining
is deterministic given what the annotator returned, so strategies that pick the same images share
one. Figures: :mod:`attnloop.apps.bench_report`.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from attnloop import imaging
from attnloop.apps.bench_report import log_to_mlflow, merge, report, summarize, write
from attnloop.datasets import Annotation, Record, by_split, read_manifest
from attnloop.evaluation import confusion_matrix
from attnloop.options import ALL, POOLS, PROFILES, PROPAGATION, RETRAIN
from attnloop.priority.strategies import Context, Pool, select
from attnloop.proposals import attention_box, sees
from attnloop.recipe import RECIPE
from attnloop.training import ImageSet, TrainConfig, load_split, predict, save_run, train

__all__ = ["ALL", "PROFILES", "log_to_mlflow", "merge", "parse_budgets", "report", "run", "summarize", "write"]


def parse_budgets(text: str) -> tuple[int | str, ...]:
    """``0,10,2%,all``: counts, shares of the pool (a number and ``%``) and ``all``."""
    out: list[int | str] = []
    for part in text.split(","):
        part = part.strip()
        if part == ALL:
            out.append(ALL)
        elif part.isdigit():
            out.append(int(part))
        elif part.endswith("%") and _is_share(part[:-1]):
            out.append(part)
        else:
            raise ValueError(f"budgets are non-negative integers, shares of the pool such as 2% or 'all'; got {part!r}")
    return tuple(out)


def _is_share(text: str) -> bool:
    try:
        return 0.0 < float(text) <= 100.0
    except ValueError:
        return False


def corrections(budget: int | str, pool_size: int) -> int:
    """How many images a budget buys in a pool of ``pool_size`` (a share: at least one)."""
    if budget == ALL:
        return pool_size
    if isinstance(budget, str):
        return max(1, round(float(budget[:-1]) / 100.0 * pool_size))
    return int(budget)


def _pool(model, data: ImageSet) -> Pool:
    """One scoring pass over a decoded split."""
    out = predict(model, data.images)
    return Pool(
        ids=[r.image for r in data.records],
        probabilities=out["probabilities"],
        attention_probabilities=out["attention_probabilities"],
        attention=out["attention"],
        embeddings=out["embedding"],
        labels=data.labels.numpy(),
    )


def _object_fraction(data: ImageSet) -> float:
    """The median share of the map the true boxes cover: the 'typical object size' a user would give."""
    areas = [(mask > 0).mean() for mask in data.box_masks if mask.any()]
    return float(np.median(areas)) if areas else 0.05


@dataclass
class Scored:
    """The pool as one model scored it: the pool and the decoded set it came from (same order)."""

    pool: Pool
    data: ImageSet

    def seen_shortcuts(self, image: str) -> bool:
        """Whether a person sees this model looking at the image's confounder: its attention proposal covers half of it."""
        i = self.pool.ids.index(image)
        attention, region = self.pool.attention[i], self.data.confounder_masks[i]
        return bool(region.any()) and sees(attention_box(attention, attention.shape), region)


def _split_pool(train_records: list[Record], share: float, seed: int) -> tuple[list[Record], list[Record]]:
    """(initial training records, pool records): ``share`` of the training split held out, by seed."""
    rng = np.random.default_rng([seed, 18])
    order = rng.permutation(len(train_records))
    cut = int(round(share * len(train_records)))
    held = {int(i) for i in order[:cut]}
    return [r for i, r in enumerate(train_records) if i not in held], [r for i, r in enumerate(train_records) if i in held]


def run(
    root: str | Path,
    *,
    strategies: Sequence[str],
    budgets: Sequence[int | str],
    seeds: int,
    initial_epochs: int,
    retrain_epochs: int,
    arch: str = "abn_cifar",
    retrain: str = "finetune",
    replay: bool = True,
    retrain_options: dict | None = None,
    rounds: int = 1,
    first_seed: int = 0,
    device: str = "auto",
    pool: str = "train",
    pool_share: float = 0.5,
    marks: bool = False,
    propagation: str = "none",
    threshold: float | None = None,
    progress: bool = True,
    on_row: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Rows of ``{strategy, budget, seed, corrections, accuracy, attention_in_box, wrong_reason,
    confounder_reliance, marks, propagated, propagation_precision, propagation_recall,
    retrain_seconds}`` (see the module for the protocol). With ``rounds`` > 1 a budget is spent in
    that many rounds, each scoring the pool with the model retrained in the round before. Seeds
    ``first_seed … first_seed + seeds - 1`` run here; parts run apart are joined with :func:`merge`.
    ``on_row`` gets each row as soon as it is measured (a run stopped part-way keeps what it measured)."""
    from attnloop.propagation import THRESHOLD

    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    for name, value, valid in (("pool", pool, POOLS), ("propagation", propagation, PROPAGATION), ("retrain", retrain, RETRAIN)):
        if value not in valid:
            raise ValueError(f"unknown {name} {value!r}; valid names: {', '.join(valid)}")
    if propagation != "none" and not marks:
        raise ValueError("propagation spreads the annotator's shortcut marks: it needs marks")
    if not 0.0 < pool_share < 1.0:
        raise ValueError(f"pool_share is the share of the training split held out, in (0, 1); got {pool_share}")
    root = Path(root)
    records = read_manifest(root)
    train_records = by_split(records)["train"]
    truth = {r.image: r for r in train_records}
    raw: dict[str, np.ndarray] = {}  # decoded pool images, for propagation
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(first_seed, first_seed + seeds):
            if pool == "heldout":
                initial_records, pool_records = _split_pool(train_records, pool_share, seed)
                kept = {r.image for r in initial_records}
                used_initially = [r for r in records if r.split != "train" or r.image in kept]
            else:
                pool_records, used_initially = train_records, records
            initial_config = TrainConfig(arch=arch, epochs=initial_epochs, seed=seed, guidance="none", device=device)
            initial = train(root, initial_config, records=used_initially, progress=False)
            run_dir = save_run(Path(tmp) / f"initial-{seed}", initial, initial_config, data="bench")
            pool_set = initial.sets["train"] if pool == "train" else load_split(pool_records, root, initial.card)
            first = Scored(_pool(initial.model, pool_set), pool_set)
            context = Context(object_fraction=_object_fraction(pool_set), seed=seed)
            if "val" in initial.sets:
                val = _pool(initial.model, initial.sets["val"])
                context.confusion = confusion_matrix(val.labels, val.probabilities.argmax(axis=1), initial.card.num_classes)
            if propagation != "none" and not raw:
                raw.update({r.image: imaging.decode((root / r.image).read_bytes(), name=r.image) for r in train_records})
            retrain_config = TrainConfig(
                arch=arch, epochs=retrain_epochs, seed=seed,
                init_from=None if retrain == "scratch" else str(run_dir), trainable="head" if retrain == "head" else "all",
                device=device, **(retrain_options or RECIPE.options()),
            )
            retrained: dict[frozenset, tuple[object, float]] = {}

            def retrain_with(annotations: dict[str, Annotation]):
                """The model retrained on ``annotations`` (shared by every strategy that gets the same), and its wall time."""
                if not annotations and pool == "train":
                    return initial, 0.0
                key = frozenset((image, repr(note)) for image, note in annotations.items())
                if key not in retrained:
                    used = records if replay else [r for r in records if r.split != "train" or r.image in annotations]
                    started = time.perf_counter()
                    model = train(root, retrain_config, annotations=annotations, records=used, progress=False)
                    retrained[key] = (model, time.perf_counter() - started)
                return retrained[key]

            def annotate(chosen: Sequence[str], scored: dict[str, Scored]) -> tuple[dict[str, Annotation], dict]:
                """What the simulated annotator returns for ``chosen`` (each judged on the model that scored it), propagated."""
                notes = {}
                for image in chosen:
                    record = truth[image]
                    shortcut = [list(b) for b in record.confounder_boxes] if marks and scored[image].seen_shortcuts(image) else []
                    if record.boxes or shortcut:
                        notes[image] = Annotation(list(record.boxes), label=record.label, shortcut_boxes=shortcut)
                stats = {"marks": sum(bool(n.shortcut_boxes) for n in notes.values()), "propagated": 0}
                if propagation != "none":
                    stats.update(_propagate(notes, train_records, raw, truth, threshold=THRESHOLD if threshold is None else threshold, mode=propagation))
                return notes, stats

            def select_and_retrain(strategy: str, budget: int) -> tuple[dict, dict, float]:
                """``rounds`` × (score with the latest model → select → annotate → retrain from the initial one)."""
                chosen: list[str] = []
                judged: dict[str, Scored] = {}
                latest, seconds, scored = initial, 0.0, first
                notes, stats = {}, {"marks": 0, "propagated": 0}
                for step in (len(part) for part in np.array_split(np.arange(budget), rounds)):
                    if step == 0:
                        continue
                    if latest is not initial:  # a model trained anew may normalize differently
                        data = pool_set if latest.card == initial.card else load_split(pool_records, root, latest.card)
                        scored = Scored(_pool(latest.model, data), data)
                    picked = select(scored.pool, step, ranking=strategy, context=replace(context, exclude=set(chosen)))
                    judged.update({image: scored for image in picked})
                    chosen += picked
                    notes, stats = annotate(chosen, judged)
                    latest, seconds = retrain_with(notes)
                return latest.metrics["splits"]["test"], stats, seconds

            def shared(budget) -> tuple[dict, dict, float]:
                """Budgets 0 (the labels alone) and all (every pool image): the same for every strategy."""
                if budget == 0:
                    model, seconds = retrain_with({})
                    return model.metrics["splits"]["test"], {"marks": 0, "propagated": 0}, seconds
                notes, stats = annotate([r.image for r in pool_records], {r.image: first for r in pool_records})
                model, seconds = retrain_with(notes)
                return model.metrics["splits"]["test"], stats, seconds

            for budget in budgets:  # in the order given: a run stopped part-way has the first budgets
                count = corrections(budget, len(pool_records))
                fixed = shared(budget) if budget in (0, ALL) else None
                for strategy in strategies:
                    test, stats, seconds = fixed or select_and_retrain(strategy, count)
                    rows.append(
                        {
                            "strategy": strategy,
                            "budget": budget,
                            "seed": seed,
                            "corrections": count,
                            "pool": len(pool_records),
                            "accuracy": test["accuracy"],
                            "attention_in_box": test.get("attention_in_box"),
                            "wrong_reason": test.get("wrong_reason"),
                            "confounder_reliance": test.get("confounder_reliance"),
                            "marks": stats["marks"],
                            "propagated": stats["propagated"],
                            "propagation_precision": stats.get("precision"),
                            "propagation_recall": stats.get("recall"),
                            "retrain_seconds": round(seconds, 2),
                        }
                    )
                    if on_row is not None:
                        on_row(rows[-1])
                    if progress:
                        print(f"seed {seed} budget {budget!s:>4} ({count}) {strategy:22} accuracy {test['accuracy']:.3f}", flush=True)
    return rows


def _propagate(
    notes: dict[str, Annotation], pool: list[Record], raw: dict, truth: dict[str, Record], *, threshold: float, mode: str
) -> dict:
    """Spread the marks in ``notes`` over the training images (in place; their labels are known, as the
    base data's are when the platform retrains): ``auto`` adds every match as a
    shortcut mark, ``confirm`` only the matches on a true confounder (the annotator rejects the
    rest). Returns the counts and the matches' precision and recall against the confounder boxes."""
    from attnloop.propagation import Mark, agreement, iou, propagate

    marked = [Mark(image, box) for image, note in notes.items() for box in note.shortcut_boxes]
    if not marked:
        return {"propagated": 0, "precision": None, "recall": None}
    images = {r.image: raw[r.image] for r in pool}
    matches = propagate(marked, images, threshold=threshold, exclude=notes)
    quality = {k: (None if v != v else v) for k, v in agreement(matches, {r.image: r.confounder_boxes for r in pool if r.image not in notes}).items()}
    applied = 0
    for match in matches:
        if mode == "confirm" and not any(iou(match.box, t) >= 0.5 for t in truth[match.image].confounder_boxes):
            continue
        notes[match.image] = Annotation(shortcut_boxes=[list(match.box)])
        applied += 1
    return {"propagated": applied, "confirmations": len(matches) if mode == "confirm" else 0, **{k: quality[k] for k in ("precision", "recall")}}
