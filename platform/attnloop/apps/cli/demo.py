"""``attnloop demo``: one turn of the loop on embedded defaults, or the offline comparison."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from attnloop.config import Settings


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from attnloop.apps.demo import DemoConfig, run_comparison, run_demo

    workdir = args.workdir or settings.home / "demo"
    if args.offline:
        run_comparison(workdir, size=args.size or 400, epochs=args.epochs or 30, seed=args.seed)
        return 0
    defaults = DemoConfig()
    config = DemoConfig(
        size=args.size or defaults.size,
        frames=args.frames or defaults.frames,
        top_k=args.top_k or defaults.top_k,
        initial_epochs=args.epochs or defaults.initial_epochs,
        retrain_epochs=args.retrain_epochs or defaults.retrain_epochs,
        seed=args.seed,
        annotator=args.annotator,
    )
    try:
        result = run_demo(workdir, config=config, settings=settings)
    except (RuntimeError, KeyboardInterrupt) as err:
        print(f"attnloop: demo stopped: {str(err) or 'interrupted'}", file=sys.stderr)
        return 130 if isinstance(err, KeyboardInterrupt) else 1
    return 0 if result["promoted"] else 1


def add_commands(sub) -> None:
    """Register ``attnloop demo`` on the main parser's subcommands."""
    demo = sub.add_parser(
        "demo", help="one turn of the loop on embedded defaults: Label Studio, a mill stream, MLflow, Prefect",
        description="Starts the local Label Studio (unless ATTNLOOP_LABEL_STUDIO_URL is set), streams mill frames, trains and "
        "registers a first model, runs the loop flow (score → push → annotator → harvest → retrain → gate) and prints the "
        "champion before and after. --offline: the earlier guided-vs-unguided comparison, without services.",
    )
    demo.add_argument("--workdir", type=Path, default=None, help="the demo's folder, replaced on each run (default: $ATTNLOOP_HOME/demo)")
    demo.add_argument("--annotator", choices=("simulated", "human"), default="simulated", help="human: you complete the tasks in Label Studio")
    demo.add_argument("--size", type=int, default=None, help="training images of the generated set (default 400, also --offline)")
    demo.add_argument("--frames", type=int, default=None, help="frames streamed into the store (default 240)")
    demo.add_argument("--top-k", type=int, default=None, help="frames pushed to Label Studio (default 40)")
    demo.add_argument("--epochs", type=int, default=None, help="epochs of the first model (default 30)")
    demo.add_argument("--retrain-epochs", type=int, default=None, help="epochs of the retraining (default 30)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--offline", action="store_true", help="the guided-vs-unguided comparison on a shortcut set, without services")
    demo.set_defaults(func=cmd_demo)
