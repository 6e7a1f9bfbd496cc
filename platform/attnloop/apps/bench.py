"""``attnloop bench strategies``: which selection strategy buys the largest gain per correction.

Protocol, per seed: train an initial model without boxes (it learns the shortcut); score the
training set (the pool) once; for each strategy and budget b, select b images, let a simulated
annotator return their true boxes, fine-tune the initial model with box guidance on them, and
evaluate on the clean test split. Budget 0 is the initial model; ``all`` boxes every training
image (the ceiling the strategies are measured against).
"""

from __future__ import annotations

import json
import re
import statistics
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from attnloop.datasets import Annotation, by_split, read_manifest
from attnloop.evaluation import confusion_matrix
from attnloop.priority.strategies import Context, Pool, select
from attnloop.recipe import RECIPE
from attnloop.training import ImageSet, TrainConfig, load_split, predict, save_run, train

ALL = "all"


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
}



def parse_budgets(text: str) -> tuple[int | str, ...]:
    out: list[int | str] = []
    for part in text.split(","):
        part = part.strip()
        if part == ALL:
            out.append(ALL)
        elif part.isdigit():
            out.append(int(part))
        else:
            raise ValueError(f"budgets are non-negative integers or 'all', got {part!r}")
    return tuple(out)


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


def run(
    root: str | Path,
    *,
    strategies: Sequence[str],
    budgets: Sequence[int | str],
    seeds: int,
    initial_epochs: int,
    retrain_epochs: int,
    arch: str = "abn_cifar",
    finetune: bool = True,
    replay: bool = True,
    retrain_options: dict | None = None,
    rounds: int = 1,
    first_seed: int = 0,
    device: str = "auto",
    progress: bool = True,
) -> list[dict]:
    """Rows of ``{strategy, budget, seed, accuracy, attention_in_box, wrong_reason, confounder_reliance}``.

    Retraining fine-tunes the initial model (``finetune``) or starts from scratch, on the whole
    labeled training set with the new boxes (``replay``) or on the boxed images alone, with
    ``retrain_options`` (guidance loss, λ, counterexamples; default: the platform's recipe, :data:`attnloop.recipe.RECIPE`). With
    ``rounds`` > 1 a budget is spent in that many rounds, each scoring the pool with the model
    retrained in the round before (the iterative mode). Seeds ``first_seed … first_seed + seeds - 1``
    run here; parts run apart (other processes or machines) are joined with :func:`merge`.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    root = Path(root)
    records = read_manifest(root)
    splits = by_split(records)
    train_records = splits["train"]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(first_seed, first_seed + seeds):
            initial_config = TrainConfig(arch=arch, epochs=initial_epochs, seed=seed, guidance="none", device=device)
            initial = train(root, initial_config, records=records, progress=False)
            run_dir = save_run(Path(tmp) / f"initial-{seed}", initial, initial_config, data="bench")
            train_set = initial.sets["train"]
            pool = _pool(initial.model, train_set)
            context = Context(object_fraction=_object_fraction(train_set), seed=seed)
            if "val" in initial.sets:
                val = _pool(initial.model, initial.sets["val"])
                context.confusion = confusion_matrix(val.labels, val.probabilities.argmax(axis=1), initial.card.num_classes)
            truth = {r.image: r for r in train_records}
            retrain = TrainConfig(
                arch=arch, epochs=retrain_epochs, seed=seed, init_from=str(run_dir) if finetune else None, device=device,
                **(retrain_options or RECIPE.options()),
            )

            retrained: dict[frozenset, object] = {}

            def retrain_with(chosen: Sequence[str]):
                """Retraining is deterministic given the boxed set, so strategies that pick the same images share it."""
                annotations = {i: Annotation(list(truth[i].boxes), label=truth[i].label) for i in chosen if truth[i].boxes}
                if not annotations:
                    return initial
                key = frozenset(annotations)
                if key not in retrained:
                    used = records if replay else [r for r in records if r.split != "train" or r.image in annotations]
                    retrained[key] = train(root, retrain, annotations=annotations, records=used, progress=False)
                return retrained[key]

            def select_and_retrain(strategy: str, budget: int) -> dict:
                """``rounds`` × (score with the latest model → select → annotate → retrain from the initial one)."""
                chosen: list[str] = []
                latest, scored = initial, pool
                for step in (len(part) for part in np.array_split(np.arange(budget), rounds)):
                    if step == 0:
                        continue
                    if latest is not initial:  # a model trained anew may normalize differently
                        data = train_set if latest.card == initial.card else load_split(train_records, root, latest.card)
                        scored = _pool(latest.model, data)
                    chosen += select(scored, step, ranking=strategy, context=replace(context, exclude=set(chosen)))
                    latest = retrain_with(chosen)
                return latest.metrics["splits"]["test"]

            fixed = {0: initial.metrics["splits"]["test"]} if 0 in budgets else {}
            if ALL in budgets:
                fixed[ALL] = retrain_with(list(truth)).metrics["splits"]["test"]
            for budget in budgets:
                for strategy in strategies:
                    if budget in fixed:
                        test = fixed[budget]
                    else:
                        test = select_and_retrain(strategy, int(budget))
                    rows.append(
                        {
                            "strategy": strategy,
                            "budget": budget,
                            "seed": seed,
                            "accuracy": test["accuracy"],
                            "attention_in_box": test.get("attention_in_box"),
                            "wrong_reason": test.get("wrong_reason"),
                            "confounder_reliance": test.get("confounder_reliance"),
                        }
                    )
                    if progress:
                        print(f"seed {seed} budget {budget!s:>4} {strategy:22} accuracy {test['accuracy']:.3f}", flush=True)
    return rows


def _mean(rows: list[dict], key: str) -> float:
    return statistics.mean(r[key] for r in rows)


def summarize(rows: list[dict]) -> dict:
    """Per strategy: mean ± std per budget, budget to reach 90 % of the all-boxes gain, area under the curve."""
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    budgets = list(dict.fromkeys(r["budget"] for r in rows))
    numeric = sorted(b for b in budgets if b != ALL)
    base = _mean([r for r in rows if r["budget"] == 0], "accuracy") if 0 in budgets else None
    ceiling = _mean([r for r in rows if r["budget"] == ALL], "accuracy") if ALL in budgets else None
    out: dict = {"budgets": budgets, "baseline": base, "ceiling": ceiling, "strategies": {}}
    for strategy in strategies:
        cells = {}
        for budget in budgets:
            values = [r["accuracy"] for r in rows if r["strategy"] == strategy and r["budget"] == budget]
            cells[str(budget)] = (statistics.mean(values), statistics.pstdev(values))
        reach = None
        if base is not None and ceiling is not None and ceiling > base:
            target = base + 0.9 * (ceiling - base)
            reach = next((b for b in numeric if cells[str(b)][0] >= target), None)
        auc = None
        if len(numeric) > 1:
            xs = np.array(numeric, float) / max(numeric)
            ys = np.array([cells[str(b)][0] for b in numeric])
            auc = float(np.sum((ys[1:] + ys[:-1]) / 2 * np.diff(xs)))
        out["strategies"][strategy] = {"cells": cells, "budget_for_90pct_gain": reach, "auc": auc}
    return out


def report(summary: dict, *, command: str) -> str:
    budgets = summary["budgets"]
    lines = [
        "# Strategy benchmark",
        "",
        f"Command: `{command}`",
        "",
        "Clean-test accuracy, mean ± std over seeds. *90 % gain*: the smallest budget whose mean accuracy reaches the "
        "budget-0 accuracy plus 90 % of the gain of boxes on every training image. *AUC*: area under the accuracy-budget "
        "curve over numeric budgets, budget axis scaled to [0, 1].",
        "",
        "| strategy | " + " | ".join(str(b) for b in budgets) + " | 90 % gain | AUC |",
        "|---|" + "---|" * (len(budgets) + 2),
    ]
    for strategy, s in summary["strategies"].items():
        cells = " | ".join(f"{m:.3f} ± {sd:.3f}" for m, sd in (s["cells"][str(b)] for b in budgets))
        reach = "not reached" if s["budget_for_90pct_gain"] is None else str(s["budget_for_90pct_gain"])
        auc = "—" if s["auc"] is None else f"{s['auc']:.3f}"
        lines.append(f"| {strategy} | {cells} | {reach} | {auc} |")
    return "\n".join(lines + ["", "![accuracy by budget](curves.png)", ""])


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    numeric = [b for b in summary["budgets"] if b != ALL]
    fig, ax = plt.subplots(figsize=(6, 4))
    for strategy, s in summary["strategies"].items():
        means = [s["cells"][str(b)][0] for b in numeric]
        stds = [s["cells"][str(b)][1] for b in numeric]
        ax.errorbar(numeric, means, yerr=stds, marker="o", capsize=3, label=strategy)
    if summary["ceiling"] is not None:
        ax.axhline(summary["ceiling"], color="black", linestyle="--", linewidth=1, label="all boxes")
    ax.set_xlabel("corrections (boxed images)")
    ax.set_ylabel("clean test accuracy")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(out: str | Path, rows: list[dict], *, command: str) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    summary = summarize(rows)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "report.md").write_text(report(summary, command=command))
    plot(summary, out / "curves.png")
    return summary


def merge(parts: Sequence[str | Path], out: str | Path) -> dict:
    """Join benchmark outputs run apart (e.g. one seed each, ``--first-seed``) into one ``out``.

    The parts must have run the same strategies and budgets on distinct seeds; the report names
    each part's command.
    """
    rows: list[dict] = []
    commands: list[str] = []
    for part in map(Path, parts):
        results = part / "results.json"
        if not results.is_file():
            raise FileNotFoundError(f"{part} holds no results.json")
        rows += json.loads(results.read_text())
        match = re.search(r"^Command: `(.+)`$", (part / "report.md").read_text(), flags=re.M) if (part / "report.md").is_file() else None
        commands.append(match.group(1) if match else str(part))
    cells = [(r["strategy"], r["budget"], r["seed"]) for r in rows]
    if len(cells) != len(set(cells)):
        raise ValueError("the parts overlap: a (strategy, budget, seed) appears twice; give each part its own seeds")
    grid = {(r["strategy"], r["budget"]) for r in rows}
    for seed in {r["seed"] for r in rows}:
        if {(r["strategy"], r["budget"]) for r in rows if r["seed"] == seed} != grid:
            raise ValueError(f"seed {seed} did not run every strategy and budget the other parts ran")
    return write(out, rows, command="` + `".join(commands))


def log_to_mlflow(tracking_uri: str, out: str | Path, summary: dict, params: dict) -> str:
    """Log one benchmark as an MLflow run (params, per-strategy AUC and 90 %-gain budget, the output files)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("attnloop-bench-strategies")
    with mlflow.start_run(run_name="bench strategies") as run:
        mlflow.log_params({k: str(v) for k, v in params.items()})
        metrics = {}
        for strategy, s in summary["strategies"].items():
            if s["auc"] is not None:
                metrics[f"auc.{strategy}"] = s["auc"]
            if s["budget_for_90pct_gain"] is not None:
                metrics[f"budget_for_90pct_gain.{strategy}"] = float(s["budget_for_90pct_gain"])
        for key in ("baseline", "ceiling"):
            if summary[key] is not None:
                metrics[f"accuracy.{key}"] = summary[key]
        mlflow.log_metrics(metrics)
        mlflow.log_artifacts(str(out))
        return run.info.run_id
