"""``attnloop data make | import``: benchmark datasets and manifests for real folders."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from attnloop.config import Settings


def _split_counts(records) -> str:
    from attnloop.datasets import SPLITS

    counts = Counter(r.split for r in records)
    return ", ".join(f"{split} {counts[split]}" for split in SPLITS if counts[split])


def cmd_data_make(args: argparse.Namespace, settings: Settings) -> int:
    from attnloop.datasets import make_dataset

    records = make_dataset(args.family, args.out, seed=args.seed, size=args.size, shortcut_rate=args.shortcut_rate)
    print(f"{args.family}: {len(records)} images in {args.out} ({_split_counts(records)})")
    print(f"next: `attnloop train --data {args.out} --out RUN` trains a model on it (its dataset card: {args.out}/README.md)")
    return 0


def cmd_data_import(args: argparse.Namespace, settings: Settings) -> int:
    from attnloop.datasets import write_manifest, write_origin
    from attnloop.datasets.folders import import_folder

    result = import_folder(args.root, boxes=args.boxes, val=args.val, test=args.test, seed=args.seed)
    path = write_manifest(args.root, result.records)
    boxed = sum(bool(r.boxes) for r in result.records)
    write_origin(args.root, origin="imported", boxes="people" if boxed else "none", box_file=str(args.boxes) if args.boxes else None)
    print(f"wrote {path}: {len(result.records)} images ({_split_counts(result.records)}), {boxed} with boxes")
    if result.problems:
        print(f"left out {len(result.problems)}:")
        for problem in result.problems:
            print(f"  {problem.reason:16} {problem.message}")
    guided = f", guided by its {boxed} boxes" if boxed else ""
    print(f"next: `attnloop train --data {args.root} --out RUN` trains on it{guided}")
    return 0


def add_commands(sub) -> None:
    """Register ``attnloop data make | import`` on the main parser's subcommands."""
    from attnloop.datasets import FAMILIES

    data = sub.add_parser("data", help="benchmark datasets").add_subparsers(dest="data_command", required=True)
    make = data.add_parser("make", help="generate a dataset family with its manifest")
    make.add_argument("family", choices=sorted(FAMILIES))
    make.add_argument("--out", required=True, type=Path)
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--size", type=int, default=None, help="number of training images")
    make.add_argument(
        "--shortcut-rate", type=float, default=1.0,
        help="share of train/val images on which the confounder follows the class (below 1: the subgroup variant)",
    )
    make.set_defaults(func=cmd_data_make)
    imp = data.add_parser("import", help="write a manifest for a class-subfolder tree (ROOT/<class>/… or ROOT/<split>/<class>/…)")
    imp.add_argument("root", type=Path)
    imp.add_argument("--boxes", type=Path, default=None, help="a Label Studio JSON export or a COCO file")
    imp.add_argument("--val", type=float, default=0.1, help="share for val when there are no split folders")
    imp.add_argument("--test", type=float, default=0.2, help="share for test when there are no split folders")
    imp.add_argument("--seed", type=int, default=0)
    imp.set_defaults(func=cmd_data_import)
