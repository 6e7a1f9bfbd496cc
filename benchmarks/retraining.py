"""How to retrain from a few boxes: the retraining-strategy comparison of the strategy benchmark.

One initial model per seed (no boxes: it learns the shortcut); the same randomly chosen boxed
images (``--budget`` of the pool) and then every image's boxes; each variant retrains from
them and is evaluated on the clean test split. Variants change one thing at a time against the
default recipe (fine-tune 10 epochs, map matching λ=10, counterexamples appended, the whole
labeled set replayed, boxed images drawn as half of every batch). MS-ABN gets its own initial
model.

    .venv/bin/python benchmarks/retraining.py --family mill --out docs/benchmarks/retraining.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from attnloop.apps.bench import _object_fraction, _pool
from attnloop.datasets import Annotation, by_split, make_dataset, read_manifest
from attnloop.priority.strategies import Context, select
from attnloop.training import TrainConfig, save_run, train

from _common import emit

DEFAULT = dict(guidance="match", guidance_weight=10.0, counterexamples="append", guided_share=0.5)
VARIANTS = {
    "default (fine-tune, match λ=10, counterex., replay, oversampled)": dict(),
    "from scratch (the initial model's epochs)": dict(scratch=True),
    "outside-box loss λ=10": dict(guidance="outside"),
    "map matching λ=1": dict(guidance_weight=1.0),
    "no counterexamples": dict(counterexamples="none"),
    "no replay (boxed images only)": dict(replay=False),
    "no oversampling of boxed images": dict(guided_share=0.0),
    "MS-ABN": dict(arch="msabn_cifar"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="mill")
    parser.add_argument("--size", type=int, default=240)
    parser.add_argument("--budget", type=int, default=24)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--initial-epochs", type=int, default=30)
    parser.add_argument("--retrain-epochs", type=int, default=10)
    parser.add_argument("--variants", default=None, help="comma-separated indices into the variant list (default: all)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    names = list(VARIANTS)
    if args.variants:
        names = [names[int(i)] for i in args.variants.split(",")]
    results: dict[str, dict[str, list[float]]] = {n: {"budget": [], "all": []} for n in names}
    initial_acc: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        make_dataset(args.family, root, seed=0, size=args.size)
        records = read_manifest(root)
        train_records = by_split(records)["train"]
        truth = {r.image: r for r in train_records}
        for seed in range(args.seeds):
            initials = {}
            for name in names:
                arch = VARIANTS[name].get("arch", "abn_cifar")
                if arch not in initials:
                    config = TrainConfig(arch=arch, epochs=args.initial_epochs, seed=seed, guidance="none")
                    result = train(root, config, records=records, progress=False)
                    initials[arch] = (result, save_run(Path(tmp) / f"initial-{arch}-{seed}", result, config, data="bench"))
                    initial_acc.setdefault(arch, []).append(result.metrics["splits"]["test"]["accuracy"])
                    print(f"seed {seed} initial {arch}: test {initial_acc[arch][-1]:.3f}", flush=True)
            base, _ = initials["abn_cifar"] if "abn_cifar" in initials else next(iter(initials.values()))
            pool = _pool(base.model, base.sets["train"])
            chosen = select(pool, args.budget, ranking="random", context=Context(object_fraction=_object_fraction(base.sets["train"]), seed=seed))
            for name in names:
                v = {**DEFAULT, **VARIANTS[name]}
                arch, scratch, replay = v.pop("arch", "abn_cifar"), v.pop("scratch", False), v.pop("replay", True)
                _, run_dir = initials[arch]
                config = TrainConfig(
                    arch=arch, seed=seed, epochs=args.initial_epochs if scratch else args.retrain_epochs,
                    init_from=None if scratch else str(run_dir), **v,
                )
                for label, images in (("budget", chosen), ("all", list(truth))):
                    notes = {i: Annotation(list(truth[i].boxes), label=truth[i].label) for i in images if truth[i].boxes}
                    used = records if replay else [r for r in records if r.split != "train" or r.image in notes]
                    acc = train(root, config, annotations=notes, records=used, progress=False).metrics["splits"]["test"]["accuracy"]
                    results[name][label].append(acc)
                    print(f"seed {seed} {name:64} {label:6} test {acc:.3f}", flush=True)

    def fmt(values: list[float]) -> str:
        return f"{statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f}"

    lines = [
        f"# Retraining from few boxes — `{args.family}`",
        "",
        "Command (from the repository root):",
        "",
        "```",
        f".venv/bin/python benchmarks/retraining.py --family {args.family} --size {args.size} --budget {args.budget} "
        f"--seeds {args.seeds} --initial-epochs {args.initial_epochs} --retrain-epochs {args.retrain_epochs}"
        + (f" --variants {args.variants}" if args.variants else "") + (f" --out {args.out}" if args.out else ""),
        "```",
        "",
        f"Data: `attnloop data make {args.family} --size {args.size} --seed 0` (shortcut on every training image). "
        f"Initial model without boxes, {args.initial_epochs} epochs, clean-test accuracy "
        + ", ".join(f"{arch} {fmt(v)}" for arch, v in initial_acc.items())
        + f". *{args.budget} boxes*: the same {args.budget} randomly chosen training images "
        f"({args.budget / args.size:.0%} of the pool) per seed; *all boxes*: every training image. "
        f"Clean-test accuracy, mean ± std over {args.seeds} seeds.",
        "",
        f"| retraining | {args.budget} boxes | all boxes |",
        "|---|---|---|",
        *[f"| {name} | {fmt(r['budget'])} | {fmt(r['all'])} |" for name, r in results.items()],
        "",
    ]
    report = "\n".join(lines)
    return emit(report, args.out)


if __name__ == "__main__":
    sys.exit(main())
