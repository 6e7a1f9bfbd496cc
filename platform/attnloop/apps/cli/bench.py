"""``attnloop bench strategies | merge``: the strategy benchmark under a simulated annotator."""

from __future__ import annotations

import argparse
from pathlib import Path

from attnloop.config import Settings
from attnloop.redact import redact
from attnloop.recipe import RECIPE


def cmd_bench_strategies(args: argparse.Namespace, settings: Settings) -> int:
    from attnloop.apps import bench

    profile = bench.PROFILES[args.profile]
    strategies = tuple(args.strategies.split(",")) if args.strategies else profile.strategies
    budgets = bench.parse_budgets(args.budgets) if args.budgets else profile.budgets
    initial_epochs = args.initial_epochs or profile.initial_epochs
    # a model trained anew gets as many epochs as the initial one; fine-tuning continues for fewer
    retrain_epochs = args.retrain_epochs or (initial_epochs if args.retrain == "scratch" else profile.retrain_epochs)
    rows = bench.run(
        args.data,
        strategies=strategies,
        budgets=budgets,
        seeds=args.seeds or profile.seeds,
        initial_epochs=initial_epochs,
        retrain_epochs=retrain_epochs,
        arch=args.arch,
        retrain=args.retrain,
        replay=not args.no_replay,
        retrain_options=dict(
            guidance=args.guidance,
            guidance_weight=args.guidance_weight,
            counterexamples=args.counterexamples,
            guided_share=args.guided_share,
            mark_weight=args.mark_weight,
            reliance_weight=args.reliance_weight,
        ),
        rounds=args.rounds,
        first_seed=args.first_seed,
        device=args.device,
        pool=args.pool,
        pool_share=args.pool_share,
        marks=args.marks,
        propagation=args.propagation,
        threshold=args.threshold,
    )
    options = {
        "--arch": args.arch if args.arch != "abn_cifar" else None,
        "--retrain": args.retrain if args.retrain != "finetune" else None,
        "--guidance": args.guidance,
        "--lambda": args.guidance_weight,
        "--counterexamples": args.counterexamples,
        "--guided-share": args.guided_share,
        "--mark-weight": args.mark_weight,
        "--reliance-weight": args.reliance_weight,
        "--budgets": args.budgets,
        "--seeds": args.seeds,
        "--strategies": args.strategies,
        "--initial-epochs": args.initial_epochs,
        "--retrain-epochs": args.retrain_epochs,
        "--rounds": args.rounds if args.rounds != 1 else None,
        "--first-seed": args.first_seed or None,
        "--device": args.device if args.device != "auto" else None,
        "--pool": args.pool if args.pool != "train" else None,
        "--pool-share": args.pool_share if args.pool == "heldout" and args.pool_share != 0.5 else None,
        "--propagation": args.propagation if args.propagation != "none" else None,
        "--threshold": args.threshold,
    }
    command = f"attnloop bench strategies --data {args.data} --out {args.out} --profile {args.profile}" + "".join(
        f" {flag} {value}" for flag, value in options.items() if value is not None
    ) + (" --no-replay" if args.no_replay else "") + (" --marks" if args.marks else "")
    summary = bench.write(args.out, rows, command=command)
    if settings.mlflow_tracking_uri:
        params = {"data": args.data, "strategies": ",".join(strategies), "budgets": ",".join(map(str, budgets)), "command": command}
        run_id = bench.log_to_mlflow(settings.mlflow_tracking_uri, args.out, summary, params)
        print(f"logged to MLflow at {redact(settings.mlflow_tracking_uri)} (run {run_id})")
    _print_summary(summary, args.out)
    return 0


def _print_summary(summary: dict, out: Path) -> None:
    for strategy, s in summary["strategies"].items():
        print(f"{strategy:22} 90 % of the gain at budget {s['budget_for_90pct_gain']}, AUC {s['auc']}")
    print(f"wrote {out}/results.json, report.md, curves.png; open {out}/report.md for the comparison")


def cmd_bench_merge(args: argparse.Namespace, settings: Settings) -> int:
    from attnloop.apps import bench

    _print_summary(bench.merge(args.parts, args.out), args.out)
    return 0


def add_commands(sub) -> None:
    """Register ``attnloop bench strategies | merge`` on the main parser's subcommands."""
    from attnloop.options import COUNTEREXAMPLES, GUIDANCE, POOLS, PROFILES, PROPAGATION, RETRAIN

    bench_cmd = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench_command", required=True)
    st = bench_cmd.add_parser("strategies", help="compare selection strategies under a simulated annotator")
    st.add_argument("--data", required=True, type=Path, help="dataset folder with manifest.jsonl")
    st.add_argument("--out", required=True, type=Path)
    st.add_argument("--profile", choices=tuple(PROFILES), default="quick")
    st.add_argument("--budgets", default=None, help="comma-separated counts, shares of the pool and all, e.g. 0,10,2%%,all (default: the profile's)")
    st.add_argument("--seeds", type=int, default=None)
    st.add_argument("--strategies", default=None, help="comma-separated names (default: the profile's)")
    st.add_argument("--initial-epochs", type=int, default=None)
    st.add_argument("--retrain-epochs", type=int, default=None, help="default: the profile's for finetune, the initial epochs for scratch")
    st.add_argument("--arch", default="abn_cifar")
    st.add_argument(
        "--retrain", choices=RETRAIN, default="finetune",
        help="fine-tune the initial model, train anew, or retrain its perception classifier alone on frozen features (head)",
    )
    st.add_argument("--pool", choices=POOLS, default="train", help="train: the initial model's own training set; heldout: a share held out from it")
    st.add_argument("--pool-share", type=float, default=0.5, help="the share of the training split held out as the pool (--pool heldout)")
    st.add_argument("--marks", action="store_true", help="the simulated annotator marks the shortcut where it sees the model looking at it")
    st.add_argument("--propagation", choices=PROPAGATION, default="none", help="spread the marks over the pool: every match (auto) or the confirmed ones")
    st.add_argument("--threshold", type=float, default=None, help="similarity a propagated mark needs (default: attnloop.propagation.THRESHOLD)")
    st.add_argument("--no-replay", action="store_true", help="retrain on the boxed images alone, not the whole labeled set")
    st.add_argument("--rounds", type=int, default=1, help="spend each budget in this many score → select → annotate → retrain rounds")
    st.add_argument("--guidance", choices=GUIDANCE, default=RECIPE.guidance, help="the retraining recipe's by default (attnloop.recipe)")
    st.add_argument("--lambda", dest="guidance_weight", type=float, default=RECIPE.guidance_weight)
    st.add_argument("--counterexamples", choices=COUNTEREXAMPLES, default=RECIPE.counterexamples)
    st.add_argument(
        "--guided-share", type=float, default=RECIPE.guided_share,
        help="oversample the boxed images to this expected share of every batch (0: as often as any other image)",
    )
    st.add_argument("--mark-weight", type=float, default=RECIPE.mark_weight, help="weight of the attention inside shortcut marks")
    st.add_argument("--reliance-weight", type=float, default=RECIPE.reliance_weight, help="weight of the input gradient inside shortcut marks")
    st.add_argument("--first-seed", type=int, default=0, help="run seeds first-seed … first-seed + seeds - 1 (parts joined by `bench merge`)")
    st.add_argument("--device", default="auto", help="auto (a GPU when PyTorch sees one) | cpu | cuda | cuda:N")
    st.set_defaults(func=cmd_bench_strategies)
    mg = bench_cmd.add_parser("merge", help="join strategy benchmarks run apart (distinct seeds) into one report")
    mg.add_argument("parts", nargs="+", type=Path, help="output folders of `bench strategies`")
    mg.add_argument("--out", required=True, type=Path)
    mg.set_defaults(func=cmd_bench_merge)
