"""The strategy benchmark's figures: summaries with paired comparisons against random, the report,
the curves, merging parts run apart, and logging to MLflow (:mod:`attnloop.apps.bench` makes the rows)."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Sequence

import numpy as np

from attnloop.options import ALL


def _mean(rows: list[dict], key: str) -> float:
    return statistics.mean(r[key] for r in rows)


def _count(row: dict) -> float:
    """How many images a row's budget bought (rows from before budgets as shares: the budget itself)."""
    return float(row.get("corrections", row["budget"]))


def _paired(differences: list[float], seed: int = 0) -> dict:
    """Mean of paired (same seed) differences with a 95 % bootstrap interval (scipy; None with one seed)."""
    out = {"mean": float(np.mean(differences)), "low": None, "high": None, "seeds": len(differences)}
    if len(differences) >= 2 and len(set(differences)) > 1:
        from scipy.stats import bootstrap

        ci = bootstrap((np.asarray(differences),), np.mean, n_resamples=2000, method="percentile", random_state=seed).confidence_interval
        out.update(low=float(ci.low), high=float(ci.high))
    elif len(differences) >= 2:
        out.update(low=out["mean"], high=out["mean"])
    return out


def _needs(xs: list[float], ys: list[float], level: float) -> float | None:
    """The smallest x at which the piecewise-linear curve (xs ascending) first reaches ``level``; None if it never does."""
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if y0 >= level:
            return x0
        if y1 >= level:
            return x0 + (x1 - x0) * (level - y0) / (y1 - y0)
    return xs[-1] if ys and ys[-1] >= level else None


def summarize(rows: list[dict]) -> dict:
    """Per strategy and budget: mean ± std over seeds, the share of the all-boxes gain, the paired
    difference from random (same seeds) with a bootstrap interval, and how many times the corrections
    random needs for the same accuracy; per strategy, the first budget that reaches 90 % of the gain
    and the area under the accuracy-budget curve."""
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    labels = list(dict.fromkeys(r["budget"] for r in rows))
    x = {b: float(np.mean([_count(r) for r in rows if r["budget"] == b])) for b in labels if b != ALL}
    numeric = sorted(x, key=lambda b: x[b])
    budgets = numeric + ([ALL] if ALL in labels else [])
    base = _mean([r for r in rows if r["budget"] == 0], "accuracy") if 0 in x else None
    ceiling = _mean([r for r in rows if r["budget"] == ALL], "accuracy") if ALL in labels else None
    out: dict = {"budgets": budgets, "corrections": {str(b): x[b] for b in numeric}, "baseline": base, "ceiling": ceiling, "strategies": {}}
    accuracy = {(r["strategy"], r["budget"], r["seed"]): r["accuracy"] for r in rows}
    random_curve = None
    if "random" in strategies:
        random_curve = [statistics.mean(v for (s, b, _), v in accuracy.items() if s == "random" and b == budget) for budget in numeric]
    for strategy in strategies:
        cells, gain, versus, factor = {}, {}, {}, {}
        for budget in budgets:
            values = [v for (s, b, _), v in accuracy.items() if s == strategy and b == budget]
            cells[str(budget)] = (statistics.mean(values), statistics.pstdev(values))
            if base is not None and ceiling is not None and ceiling > base:
                gain[str(budget)] = (cells[str(budget)][0] - base) / (ceiling - base)
            if random_curve is not None and strategy != "random" and budget in numeric and budget != 0:
                seeds = sorted(seed for (s, b, seed) in accuracy if s == strategy and b == budget and ("random", b, seed) in accuracy)
                versus[str(budget)] = _paired([accuracy[(strategy, budget, seed)] - accuracy[("random", budget, seed)] for seed in seeds])
                needed = _needs([x[b] for b in numeric], random_curve, cells[str(budget)][0])
                gained = base is None or cells[str(budget)][0] > base
                factor[str(budget)] = None if needed is None or not gained else needed / x[budget]
        reach = None
        if base is not None and ceiling is not None and ceiling > base:
            target = base + 0.9 * (ceiling - base)
            reach = next((b for b in numeric if cells[str(b)][0] >= target), None)
        auc = None
        if len(numeric) > 1:
            xs = np.array([x[b] for b in numeric]) / max(x[b] for b in numeric)
            ys = np.array([cells[str(b)][0] for b in numeric])
            auc = float(np.sum((ys[1:] + ys[:-1]) / 2 * np.diff(xs)))
        out["strategies"][strategy] = {
            "cells": cells, "gain_share": gain, "vs_random": versus, "random_factor": factor, "budget_for_90pct_gain": reach, "auc": auc,
        }
    return out


def _label(budget, summary: dict) -> str:
    count = summary.get("corrections", {}).get(str(budget))
    return f"{budget} ({count:g})" if isinstance(budget, str) and budget != ALL and count is not None else str(budget)


def report(summary: dict, *, command: str) -> str:
    budgets = summary["budgets"]
    lines = [
        "# Strategy benchmark",
        "",
        f"Command: `{command}`",
        "",
        "Clean-test accuracy, mean ± std over seeds (a share budget shows the corrections it buys). *90 % gain*: the "
        "smallest budget whose mean accuracy reaches the budget-0 accuracy plus 90 % of the gain of boxes on every pool "
        "image. *AUC*: area under the accuracy-budget curve over numeric budgets, budget axis scaled to [0, 1].",
        "",
        "| strategy | " + " | ".join(_label(b, summary) for b in budgets) + " | 90 % gain | AUC |",
        "|---|" + "---|" * (len(budgets) + 2),
    ]
    for strategy, s in summary["strategies"].items():
        cells = " | ".join(f"{m:.3f} ± {sd:.3f}" for m, sd in (s["cells"][str(b)] for b in budgets))
        reach = "not reached" if s["budget_for_90pct_gain"] is None else str(s["budget_for_90pct_gain"])
        auc = "—" if s["auc"] is None else f"{s['auc']:.3f}"
        lines.append(f"| {strategy} | {cells} | {reach} | {auc} |")
    compared = [b for b in budgets if b not in (0, ALL) and any(str(b) in s.get("vs_random", {}) for s in summary["strategies"].values())]
    if compared:
        lines += [
            "",
            "Against random on the same seeds: share of the all-boxes gain; difference in accuracy from random with its "
            "95 % bootstrap interval; how many times the corrections random needs for the same mean accuracy (> : random "
            "never gets there within the budgets run).",
            "",
            "| strategy | " + " | ".join(_label(b, summary) for b in compared) + " |",
            "|---|" + "---|" * len(compared),
        ]
        largest = max(summary["corrections"][str(b)] for b in compared)
        for strategy, s in summary["strategies"].items():
            if not s.get("vs_random"):
                continue
            parts = []
            for b in compared:
                v, k, g = s["vs_random"][str(b)], s["random_factor"][str(b)], s["gain_share"].get(str(b))
                interval = "" if v["low"] is None else f" [{v['low']:+.3f}, {v['high']:+.3f}]"
                no_gain = g is not None and g <= 0
                times = "—" if no_gain else (f"> {largest / summary['corrections'][str(b)]:.1f}×" if k is None else f"{k:.1f}×")
                share = "" if g is None else f"{g:.0%} · "
                parts.append(f"{share}{v['mean']:+.3f}{interval} · {times}")
            lines.append(f"| {strategy} | " + " | ".join(parts) + " |")
    return "\n".join(lines + ["", "![accuracy by budget](curves.png)", ""])


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    numeric = [b for b in summary["budgets"] if b != ALL]
    xs = [summary.get("corrections", {}).get(str(b), b) for b in numeric]
    fig, ax = plt.subplots(figsize=(6, 4))
    for strategy, s in summary["strategies"].items():
        means = [s["cells"][str(b)][0] for b in numeric]
        stds = [s["cells"][str(b)][1] for b in numeric]
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=strategy)
    if summary["ceiling"] is not None:
        ax.axhline(summary["ceiling"], color="black", linestyle="--", linewidth=1, label="all boxes")
    ax.set_xlabel("corrections (annotated images)")
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
