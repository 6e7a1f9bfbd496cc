"""ABN vs MS-ABN, unguided vs box-guided, on the shortcut dataset (clean test split).

For each seed a fresh dataset is generated; every (architecture, training) pair is trained on it
and evaluated on the test split, where the shortcut is broken. Reported: mean ± std over seeds
of clean accuracy, attention-in-box and wrong-reason, and an attention grid for seed 0.

    .venv/bin/python benchmarks/guidance.py --out docs/benchmarks/guidance.md
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from attnloop.datasets import from_manifest_boxes, make_dataset, read_manifest  # noqa: E402
from attnloop.training import TrainConfig, load_split, predict, train  # noqa: E402

ARCHS = ("abn_cifar", "msabn_cifar")
TRAININGS = {
    "unguided": (dict(guidance="none"), 0.0),
    "outside-box λ=10, all boxes": (dict(guidance="outside", guidance_weight=10.0), 1.0),
    "match λ=10 + counterexamples, all boxes": (dict(guidance="match", guidance_weight=10.0, counterexamples="append"), 1.0),
    "match λ=10 + counterexamples, 10 % boxes": (dict(guidance="match", guidance_weight=10.0, counterexamples="append"), 0.1),
}
METRICS = ("accuracy", "attention_in_box", "wrong_reason")


def fmt(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f}"


def attention_grid(models: dict[str, object], data: Path, out: Path, count: int = 6) -> None:
    records = [r for r in read_manifest(data) if r.split == "test"][:count]
    first = next(iter(models.values()))
    split = load_split(records, data, first.card)
    images = [plt.imread(data / r.image) for r in records]
    fig, axes = plt.subplots(len(models) + 1, count, figsize=(1.6 * count, 1.7 * (len(models) + 1)))
    for j, (record, image) in enumerate(zip(records, images)):
        axes[0, j].imshow(image, cmap="gray")
        axes[0, j].set_title(record.label, fontsize=8)
    for i, (name, result) in enumerate(models.items(), start=1):
        attention = predict(result.model, split.images)["attention"]
        for j, image in enumerate(images):
            axes[i, j].imshow(image, cmap="gray")
            axes[i, j].imshow(attention[j], cmap="jet", alpha=0.45, extent=(0, image.shape[1], image.shape[0], 0))
        axes[i, 0].set_ylabel(name, fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="markdown report to write (a PNG grid is written beside it)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--size", type=int, default=240, help="training images per dataset")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    results: dict[tuple[str, str], dict[str, list[float]]] = {}
    seconds: dict[str, list[float]] = {arch: [] for arch in ARCHS}
    grid_models = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            data = Path(tmp) / f"seed{seed}"
            make_dataset("shortcut", data, seed=seed, size=args.size)
            train_records = [r for r in read_manifest(data) if r.split == "train"]
            for arch in ARCHS:
                for name, (options, share) in TRAININGS.items():
                    chosen = random.Random(seed).sample(train_records, round(share * len(train_records)))
                    start = time.perf_counter()
                    result = train(
                        data,
                        TrainConfig(arch=arch, epochs=args.epochs, seed=seed, **options),
                        annotations=from_manifest_boxes(chosen) or None,
                        progress=False,
                    )
                    seconds[arch].append(time.perf_counter() - start)
                    test = result.metrics["splits"]["test"]
                    bucket = results.setdefault((arch, name), {m: [] for m in METRICS})
                    for metric in METRICS:
                        bucket[metric].append(test[metric])
                    print(f"seed {seed} {arch:12} {name:42} " + " ".join(f"{m} {test[m]:.3f}" for m in METRICS), flush=True)
                    if seed == 0 and arch == "abn_cifar" and name in ("unguided", "match λ=10 + counterexamples, all boxes"):
                        grid_models[f"ABN {name.split(',')[0]}"] = result
            if seed == 0 and args.out:
                attention_grid(grid_models, data, args.out.with_name(args.out.stem + "_attention.png"))
    lines = [
        "# Box guidance: ABN vs MS-ABN on the shortcut dataset",
        "",
        "Command (from the repository root):",
        "",
        "```",
        f".venv/bin/python benchmarks/guidance.py --seeds {args.seeds} --size {args.size} --epochs {args.epochs}"
        + (f" --out {args.out}" if args.out else ""),
        "```",
        "",
        f"`shortcut` dataset, {args.size} training images per seed (a corner patch's grey level gives the class on every "
        "training image and is random in test); metrics on the clean test split; chance accuracy 0.25. "
        f"{args.epochs} epochs, mean ± std over {args.seeds} seeds (a new dataset and initialization per seed). "
        "Boxes are the true object boxes of the chosen training images (a perfect simulated annotator).",
        "",
        "| model | training | clean accuracy | attention-in-box | wrong-reason |",
        "|---|---|---|---|---|",
    ]
    for (arch, name), bucket in results.items():
        lines.append(f"| {arch} | {name} | " + " | ".join(fmt(bucket[m]) for m in METRICS) + " |")
    lines += [
        "",
        "Mean training time per run: " + ", ".join(f"{arch} {statistics.mean(s):.0f} s" for arch, s in seconds.items()) + " (2 CPU threads).",
        "",
    ]
    if args.out:
        lines += [f"![attention on test images, seed 0]({args.out.stem}_attention.png)", ""]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines))
        print(f"wrote {args.out}")
    else:
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
