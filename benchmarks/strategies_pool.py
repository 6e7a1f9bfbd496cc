"""The strategy benchmark on held-out pools, run as many processes side by side (a GPU machine's
way), then reported per family and condition.

Run: one process per (family, condition, seed), each :func:`attnloop.apps.bench.run` with a held-out
pool; every row is appended to ``OUT/rows.jsonl`` as soon as it is measured, so a run stopped at its
deadline keeps what it measured. Report: the rows, split by family and condition, through the
benchmark's own report (``bench.write``: tables, paired comparisons against random, curves).

    python benchmarks/strategies_pool.py run --out /tmp/pool --device cuda --jobs 18 --deadline 480
    python benchmarks/strategies_pool.py report --rows /tmp/pool/rows.jsonl --out docs/benchmarks/strategies/pool

Conditions: ``boxes`` (the annotator returns evidence boxes and the class, as before) and ``marks``
(it also marks the shortcut where it sees the model looking at it, and the marks are propagated
over the training images as weak supervision: the platform's recipe).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

FAMILIES = {"mill": ("mill", 1.0), "mill-sub80": ("mill", 0.8), "decoy-digits": ("decoy-digits", 1.0)}
CONDITIONS = {
    "boxes": dict(strategies=("random", "margin"), marks=False, propagation="none"),
    "marks": dict(strategies=("random", "margin", "coverage"), marks=True, propagation="auto"),
}
BUDGETS = (0, "0.5%", "1%", "2%", "5%", "all")
_GPU = dict(
    families=",".join(FAMILIES), conditions=",".join(CONDITIONS), strategies=None, budgets=",".join(map(str, BUDGETS)), size=1250,
    pool_share=0.8, seeds=3, initial_epochs=30, retrain_epochs=10, retrain="finetune", rounds="1", variant_budgets=None, split=False, deadline=3600.0,
)
PROFILES = {
    "gpu": _GPU,
    # `mill` with marks, 500 images (a pool of 400): the platform's ranking against random at 2 % and 5 %, and head-only
    # retraining and two rounds at 2 % with the platform's ranking; 49 minutes on two CPU cores
    "cpu": {**_GPU, "families": "mill", "conditions": "marks", "strategies": "coverage,random", "budgets": "2%,0,all,5%", "size": 500,
            "retrain": "finetune,head", "rounds": "1,2", "variant_budgets": "2%,0,all", "split": True, "deadline": 3300.0},
}


def _strategies(args: argparse.Namespace, condition: str) -> dict:
    return {"strategies": tuple(args.strategies.split(","))} if args.strategies else {}


def _parts(strategies: tuple[str, ...], budgets: tuple, split: bool) -> list[dict]:
    """One job's strategies and budgets each: all of them, or (``split``, for many processes) one job per
    strategy over the selection budgets plus one for the budgets every strategy shares (0 and all),
    whose rows :func:`report` gives every strategy. Each job trains its own initial model (same seed:
    the same model)."""
    if not split:
        return [dict(strategies=strategies, budgets=budgets)]
    fixed = tuple(b for b in budgets if b in (0, "all"))
    chosen = tuple(b for b in budgets if b not in fixed)
    return ([dict(strategies=strategies[:1], budgets=fixed)] if fixed else []) + [dict(strategies=(s,), budgets=chosen) for s in strategies if chosen]


def variants(retrains: str, rounds: str, initial_epochs: int) -> list[tuple[str, dict]]:
    """The retraining variants compared, one change at a time from the platform's (fine-tuning, one
    round): each named by its change (``+head``, ``+scratch``, ``+rounds2``) for the condition's label,
    with its options. From scratch trains as many epochs as the initial model."""
    out = []
    for retrain in retrains.split(","):
        for count in (int(r) for r in rounds.split(",")):
            if retrain != "finetune" and count != 1:
                continue  # one change at a time
            name = "".join(([f"+{retrain}"] if retrain != "finetune" else []) + ([f"+rounds{count}"] if count != 1 else []))
            out.append((name, {"retrain": retrain, "rounds": count} | ({"retrain_epochs": initial_epochs} if retrain == "scratch" else {})))
    return out


def _budgets(budgets: tuple, change: dict) -> tuple:
    """Rounds change only how a budget is chosen: budgets 0 and all are the single round's (the report borrows them)."""
    return tuple(b for b in budgets if b not in (0, "all")) if change["rounds"] != 1 else budgets


def _variant_part(args: argparse.Namespace, condition: str, variant: str, change: dict, budgets: tuple) -> tuple[tuple, tuple]:
    """A variant's strategies and budgets: the condition's (the platform's recipe), or for another
    recipe or round count the first strategy only and ``--variant-budgets`` where given."""
    from attnloop.apps.bench import parse_budgets

    strategies = tuple(_strategies(args, condition).get("strategies", CONDITIONS[condition]["strategies"]))
    if not variant:
        return strategies, budgets
    return strategies[:1], _budgets(parse_budgets(args.variant_budgets) if args.variant_budgets else budgets, change)


def _job(data: str, family: str, condition: str, seed: int, rows_path: str, options: dict) -> str:
    import torch

    from attnloop.apps import bench

    torch.set_num_threads(1)

    options = dict(options)
    label = condition + options.pop("variant", "")

    def keep(row: dict) -> None:
        with open(rows_path, "a") as f:
            f.write(json.dumps({"family": family, "condition": label, **row}) + "\n")

    started = time.perf_counter()
    bench.run(data, seeds=1, first_seed=seed, on_row=keep, progress=False, **{**CONDITIONS[condition], **options})
    return f"{family} {label} seed {seed}: {time.perf_counter() - started:.0f} s"


def run(args: argparse.Namespace) -> int:
    from attnloop.datasets import make_dataset

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = out / "rows.jsonl"
    data_root = Path(tempfile.mkdtemp(prefix="attnloop-pool-"))
    for name in args.families.split(","):
        family, rate = FAMILIES[name]
        make_dataset(family, data_root / name, seed=0, size=args.size, shortcut_rate=rate)
    from attnloop.apps.bench import parse_budgets

    conditions = args.conditions.split(",")
    budgets = parse_budgets(args.budgets)
    options = dict(
        initial_epochs=args.initial_epochs, retrain_epochs=args.retrain_epochs, device=args.device, pool="heldout", pool_share=args.pool_share,
    )
    # the platform's condition first: a run stopped at its deadline has measured it on every seed
    jobs = [
        (name, condition, seed, {**options, **part, **change, "variant": variant})
        for condition in reversed(conditions)
        for variant, change in variants(args.retrain, args.rounds, args.initial_epochs)
        for seed in range(args.seeds)
        for name in args.families.split(",")
        for part in _parts(*_variant_part(args, condition, variant, change, budgets), args.split)
        if part["budgets"]
    ]
    os.environ["OMP_NUM_THREADS"] = "1"
    deadline = time.monotonic() + args.deadline
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_job, str(data_root / name), name, condition, seed, str(rows), part) for name, condition, seed, part in jobs]
        try:
            for future in as_completed(futures, timeout=max(1.0, deadline - time.monotonic())):
                print(future.result(), flush=True)
        except TimeoutError:
            print(f"deadline of {args.deadline} s reached: the rows measured so far are in {rows}", flush=True)
            for process in list(pool._processes.values()):
                process.kill()
    return 0


def report(args: argparse.Namespace) -> int:
    from attnloop.apps import bench

    rows = [json.loads(line) for line in Path(args.rows).read_text().splitlines() if line.strip()]
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row.pop("family"), row.pop("condition")), []).append(row)
    for (family, condition), part in groups.items():  # the iterative mode's budgets 0 and all are the single round's
        if "+rounds" in condition and (family, condition.split("+rounds")[0]) in groups:
            single = {(r["budget"], r["seed"]): r for r in groups[(family, condition.split("+rounds")[0])] if r["budget"] in (0, "all")}
            part += [{**r, "strategy": s} for r in single.values() for s in dict.fromkeys(q["strategy"] for q in part)]
    for part in groups.values():  # rows of a split run: budgets 0 and all were measured once, for every strategy
        strategies = list(dict.fromkeys(r["strategy"] for r in part))
        shared = [r for r in part if r["budget"] in (0, "all")]
        part += [
            {**r, "strategy": s}
            for r in shared
            for s in strategies
            if not any(q["strategy"] == s and q["budget"] == r["budget"] and q["seed"] == r["seed"] for q in part)
        ]
    for (family, condition), part in sorted(groups.items()):
        complete = {(r["strategy"], r["budget"]) for r in part}
        seeds = sorted({r["seed"] for r in part})
        kept = [r for r in part if all(any(q["seed"] == s and (q["strategy"], q["budget"]) == (r["strategy"], r["budget"]) for q in part) for s in seeds)]
        command = f"{args.command} (rows of {family}, {condition}: {len(seeds)} seeds, {len(complete)} cells)"
        bench.write(Path(args.out) / f"{family}-{condition}", kept, command=command)
        print(f"{family} {condition}: {len(kept)} rows of {len(part)}, seeds {seeds}")
    plot(groups, Path(args.out) / "curves.png")
    return 0


def plot(groups: dict, path: Path) -> None:
    """Every family's curves, one panel each: accuracy by corrections, a line per condition and strategy (mean ± std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    families = sorted({family for family, _ in groups})
    fig, axes = plt.subplots(1, len(families), figsize=(5 * len(families), 3.8), squeeze=False)
    for ax, family in zip(axes[0], families):
        for (name, condition), rows in sorted(groups.items()):
            if name != family:
                continue
            for strategy in dict.fromkeys(r["strategy"] for r in rows):
                mine = [r for r in rows if r["strategy"] == strategy and r["budget"] != "all"]
                xs = sorted({r["corrections"] for r in mine})
                means = [np.mean([r["accuracy"] for r in mine if r["corrections"] == x]) for x in xs]
                stds = [np.std([r["accuracy"] for r in mine if r["corrections"] == x]) for x in xs]
                ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=f"{condition}: {strategy}", linestyle="-" if condition == "marks" else "--")
            ceiling = [r["accuracy"] for r in rows if r["budget"] == "all"]
            if ceiling:
                ax.axhline(float(np.mean(ceiling)), linewidth=1, color="grey", linestyle="-" if condition == "marks" else "--")
        ax.set_title(family)
        ax.set_xlabel("corrections (pool images annotated)")
        ax.set_ylabel("clean test accuracy")
        ax.legend(fontsize=7)
    fig.suptitle("grey lines: every pool image annotated", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", required=True)
    r.add_argument("--profile", choices=sorted(PROFILES), default="gpu", help="defaults for the options below (an option given wins): "
                   "gpu, the full comparison for a GPU machine; cpu, the platform's recipe against head-only retraining and two rounds "
                   "on one family, under an hour on two CPU cores")
    r.add_argument("--families")
    r.add_argument("--conditions")
    r.add_argument("--strategies", help="comma-separated (default: each condition's)")
    r.add_argument("--budgets")
    r.add_argument("--size", type=int, help="training images per family")
    r.add_argument("--pool-share", type=float, help="the share of the training split held out as the pool")
    r.add_argument("--seeds", type=int)
    r.add_argument("--initial-epochs", type=int)
    r.add_argument("--retrain-epochs", type=int)
    r.add_argument("--retrain", help="comma-separated retraining recipes compared: finetune, head (the perception head only, DFR-style), scratch")
    r.add_argument("--rounds", help="comma-separated round counts compared (the iterative mode), with fine-tuning")
    r.add_argument("--variant-budgets", help="the budgets of the other recipes and round counts, measured with the first strategy only (default: --budgets)")
    r.add_argument("--device", default="auto")
    r.add_argument("--jobs", type=int, default=os.cpu_count())
    r.add_argument("--split", action="store_true", default=None, help="one process per strategy (and one for budgets 0 and all): more, shorter jobs")
    r.add_argument("--deadline", type=float, help="seconds; the rows measured by then are kept")
    r.set_defaults(func=run)
    p = sub.add_parser("report")
    p.add_argument("--rows", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--command", required=True, help="the run command that made the rows, for the reports")
    p.set_defaults(func=report)
    args = parser.parse_args()
    if args.command == "run":
        for name, value in PROFILES[args.profile].items():
            if getattr(args, name) is None:
                setattr(args, name, value)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
