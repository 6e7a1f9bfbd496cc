"""Does the attention map show what the model uses? Training variants against faithfulness metrics.

For every family, shortcut rate (1.0: the shortcut on every training image; below 1: a
subgroup variant), seed, training variant and training (unguided / all boxes), train an ABN
and measure on the clean test split:

* wrong-reason of the map (share of its energy on the confounder) and its ratio to the
  confounder's area at the map's resolution (the value of a flat map);
* pointing game: share of images whose map maximum lies in the confounder box (unguided: over
  the images whose prediction blanking the confounder changes) or in the object box (all
  boxes), against the share a random cell would hit;
* deletion and insertion AUC (Petsiuk et al. 2018) of the class probability, removing /
  revealing cells in the map's order, in a random order and in an occlusion map's order;
* clean-test accuracy, attention-in-box, the box proposal's IoU with the confounder box
  (unguided) or the object box (all boxes), and the cost per image of each explanation.

Every run is appended to ``--runs`` (JSON lines) and skipped when it is there already, so an
interrupted benchmark resumes; the report is built from that file.

    .venv/bin/python benchmarks/faithfulness.py --jobs 2 --out docs/benchmarks/faithfulness.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import emit, run_resumable

VARIANTS = {
    "abn": dict(gate="residual", branch="last", mining_weight=0.0),
    "abn + mining": dict(gate="residual", branch="last", mining_weight=1.0),
    "gate + prior": dict(gate="multiply", branch="last", mining_weight=0.0),
    "gate + prior + mining": dict(gate="multiply", branch="last", mining_weight=1.0),
    "local gate + prior": dict(gate="multiply", branch="local", mining_weight=0.0),
    "local gate + prior + mining": dict(gate="multiply", branch="local", mining_weight=1.0),
}
MAIN = ("abn", "local gate + prior + mining")  # every seed, both trainings; the rest: an unguided ablation
TRAININGS = {
    "unguided": (dict(guidance="none"), None),
    "all boxes": (dict(guidance="match", guidance_weight=10.0, counterexamples="append"), "manifest"),
}
EXPLAINED = 48  # test images per run that get deletion / insertion curves and an occlusion map
OCCLUSION_GRID = (16, 16)  # the occlusion map's cells, whatever the attention map's resolution (its cost is one pass per cell)


def iou(a, b) -> float:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def measure(result, *, training: str, seed: int, sizes: dict[str, tuple[int, int]]) -> dict:
    """Every faithfulness figure of one trained model on its clean test split."""
    import torch
    import torch.nn.functional as F

    from attnloop import faithfulness
    from attnloop.evaluation import energy_share
    from attnloop.proposals import attention_box
    from attnloop.training import prediction_flips

    model, data = result.model.eval(), result.sets["test"]
    grid = tuple(result.card.attention_size)

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return F.softmax(model(torch.from_numpy(batch)).logits, dim=1).numpy()

    images = data.images.numpy()
    start = time.perf_counter()
    with torch.no_grad():
        out = model(data.images)
    map_seconds = (time.perf_counter() - start) / len(images)
    attention = out.attention[:, 0].numpy()
    predicted = out.logits.argmax(1).numpy()
    confounders, boxes = data.confounder_masks, data.box_masks
    flat = confounders.reshape(len(confounders), -1)
    has_confounder = flat.any(axis=1)
    area = float(flat[has_confounder].mean()) if has_confounder.any() else float("nan")
    wrong_reason = float(np.nanmean(energy_share(attention, confounders))) if has_confounder.any() else float("nan")

    flips = prediction_flips(model, data.images, confounders)

    target = boxes if training == "all boxes" else confounders
    hits = faithfulness.pointing(attention, target)
    chance = faithfulness.pointing_chance(target)
    row = {
        "accuracy": result.metrics["splits"]["test"]["accuracy"],
        "attention_in_box": result.metrics["splits"]["test"].get("attention_in_box"),
        "confounder_area": area,
        "wrong_reason": wrong_reason,
        "wrong_reason_ratio": wrong_reason / area if area else float("nan"),
        "confounder_reliance": float(flips[has_confounder].mean()) if has_confounder.any() else float("nan"),
        "pointing": float(np.nanmean(hits)),
        "pointing_chance": float(np.nanmean(chance)),
        "pointing_on_flips": float(np.nanmean(hits[flips])) if flips.any() else float("nan"),
        "map_seconds": map_seconds,
    }

    # box proposals against the box the map should point at
    ious = []
    for record, a in zip(data.records, attention):
        truth = record.boxes if training == "all boxes" else record.confounder_boxes
        if not truth:
            continue
        box = attention_box(a, sizes[record.image])
        ious.append(max(iou(box, t) for t in truth) if box is not None else 0.0)
    row["proposal_iou"] = float(np.mean(ious)) if ious else float("nan")

    # deletion / insertion on a fixed subset, in three orders
    pick = np.arange(min(EXPLAINED, len(images)))
    x, cls = images[pick], predicted[pick]
    start = time.perf_counter()
    occlusion = faithfulness.occlusion_map(predict, x, cls, grid=OCCLUSION_GRID)
    row["occlusion_seconds"] = (time.perf_counter() - start) / len(pick)
    occlusion = np.kron(occlusion, np.ones((grid[0] // OCCLUSION_GRID[0], grid[1] // OCCLUSION_GRID[1])))
    orders = {
        "map": faithfulness.saliency_order(attention[pick]),
        "random": faithfulness.random_order(len(pick), grid[0] * grid[1], seed=seed),
        "occlusion": faithfulness.saliency_order(occlusion),
    }
    for name, order in orders.items():
        curves = faithfulness.deletion_insertion(predict, x, cls, order, grid=grid)
        row[f"deletion_{name}"] = float(curves["deletion"].mean())
        row[f"insertion_{name}"] = float(curves["insertion"].mean())
    row["occlusion_pointing"] = float(np.nanmean(faithfulness.pointing(occlusion, target[pick])))
    row.update(signal_auroc(out, flips))
    return row


SIGNALS = ("background_attention", "attention_spread", "branch_disagreement", "margin")


def signal_auroc(out, flips: np.ndarray) -> dict[str, float]:
    """How well each priority signal ranks the images whose prediction the confounder decides first (ROC AUC;
    0.5: no better than random order)."""
    import torch.nn.functional as F
    from sklearn.metrics import roc_auc_score

    from attnloop.priority import signals

    attention = out.attention.numpy()
    p, q = F.softmax(out.logits, 1).numpy(), F.softmax(out.attention_logits, 1).numpy()
    scores = {
        "background_attention": signals.background_attention(attention, object_fraction=0.15),
        "attention_spread": signals.attention_spread(attention),
        "branch_disagreement": signals.branch_disagreement(p, q),
        "margin": signals.margin(p),
    }
    if flips.all() or not flips.any():
        return {f"auroc_{name}": float("nan") for name in scores}
    return {f"auroc_{name}": float(roc_auc_score(flips, score)) for name, score in scores.items()}


def run_one(task: dict) -> dict:
    """Generate the dataset, train one model and measure it (in a worker process, one thread)."""
    import torch

    from attnloop import imaging
    from attnloop.datasets import make_dataset
    from attnloop.training import TrainConfig, resolve_annotations, train

    torch.set_num_threads(1)
    options, boxes = TRAININGS[task["training"]]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        records = make_dataset(task["family"], root, seed=task["seed"], size=task["size"], shortcut_rate=task["rate"])
        sizes = {r.image: imaging.decode((root / r.image).read_bytes()).shape[:2] for r in records if r.split == "test"}
        start = time.perf_counter()
        result = train(
            root,
            TrainConfig(arch=task["arch"], epochs=task["epochs"], seed=task["seed"], **VARIANTS[task["variant"]], **options),
            annotations=resolve_annotations(root, boxes),
            progress=False,
        )
        seconds = time.perf_counter() - start
        row = measure(result, training=task["training"], seed=task["seed"], sizes=sizes)
    return {**task, **row, "train_seconds": seconds}


def key(task: dict) -> tuple:
    return tuple(task[k] for k in ("family", "rate", "variant", "training", "seed", "size", "epochs", "arch"))


def fmt(values: list[float], digits: int = 3) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "—"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.pstdev(values):.{digits}f}"


def report(rows: list[dict], args: argparse.Namespace, command: str) -> str:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["family"], row["rate"], row["training"], row["variant"]), []).append(row)
    order = {name: i for i, name in enumerate(VARIANTS)}
    keys = sorted(groups, key=lambda k: (k[0], -k[1], k[2] != "unguided", order[k[3]]))
    lines = [
        "# Faithfulness: does the attention map show what the model uses?",
        "",
        "Command (from the repository root):",
        "",
        "```",
        command,
        "```",
        "",
        f"`{args.arch}`, {args.size} training images, {args.epochs} epochs, seeds 0–{args.seeds - 1} (a new dataset and "
        "initialization per seed, the same seeds for every variant); mean ± std over seeds. Metrics on the clean test split. "
        "Variants, one change at a time: *abn* — the original gate `(1 + M) · g` with the BatchNorm map head; "
        "*abn + mining* — plus attention mining (GAIN: the image with its attended region erased must lose its class; "
        "weight 1); *gate + prior* — the perception branch sees `M · g` (annealed from `(1 + M) · g` over the first 30 % "
        "of training), the map head has a bias instead of BatchNorm, and the map's mean is pulled toward 0.15 (weight 10); "
        "*gate + prior + mining* — both; *local …* — the same with the map read off the first stage (a residual block "
        "and the class maps on its output, whose cells see a neighbourhood of the image, not all of it) and gating that "
        "stage's output, so the perception branch is every later stage. The main variants run on every seed with both "
        f"trainings, the ablation unguided on {args.ablation_seeds} seed(s) (the *seeds* column); the subgroup variants "
        f"({args.subgroup_families}, the shortcut on a share of the training images only) run the main variants, "
        f"{args.subgroup_trainings}. *All boxes*: the true boxes of every training image, map matching (λ = 10) and "
        "counterexamples.",
        "",
        "*Wrong-reason*: share of the map's energy (M − min M) on the confounder; *×area*: its ratio to the confounder's "
        "area at the map's resolution (a flat map scores 1×). *Pointing*: share of test images whose map maximum lies in "
        "the confounder box (unguided: over the images whose prediction blanking the confounder changes) or the object "
        "box (all boxes); *chance*: the share a random cell hits. *Deletion / insertion*: area under the probability of "
        f"the predicted class as the map's cells are removed / revealed (set to the training mean), on {EXPLAINED} test "
        "images per run, in the map's order, a random order and an occlusion map's order (2×2 cells set to the mean, the "
        "drop measured at every cell: faithful by construction); lower deletion and higher insertion are better. "
        "*Proposal IoU*: the attention box proposal against the confounder box (unguided) or the object box (all boxes).",
        "",
    ]
    for rate in sorted({k[1] for k in keys}, reverse=True):
        title = "shortcut on every training image" if rate == 1.0 else f"subgroup: shortcut on {rate:.0%} of the training images"
        lines += [
            f"## {title}",
            "",
            "| family | training | variant | seeds | clean acc | in-box | wrong-reason | ×area | pointing | chance | reliance "
            "| deletion map / random / occlusion | insertion map / random / occlusion | proposal IoU |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for k in (k for k in keys if k[1] == rate):
            g = groups[k]
            pointing = "pointing_on_flips" if k[2] == "unguided" else "pointing"
            col = lambda name, d=3: fmt([r[name] for r in g if r.get(name) is not None], d)  # noqa: E731
            lines.append(
                f"| {k[0]} | {k[2]} | {k[3]} | {len(g)} | {col('accuracy')} | {col('attention_in_box')} | {col('wrong_reason')} "
                f"| {col('wrong_reason_ratio', 2)} | {col(pointing, 2)} | {col('pointing_chance', 2)} "
                f"| {col('confounder_reliance', 2)} "
                f"| {col('deletion_map')} / {col('deletion_random')} / {col('deletion_occlusion')} "
                f"| {col('insertion_map')} / {col('insertion_random')} / {col('insertion_occlusion')} | {col('proposal_iou', 2)} |"
            )
        lines.append("")
        signal_rows = [k for k in keys if k[1] == rate and k[2] == "unguided" and all("auroc_margin" in r for r in groups[k])]
        if signal_rows:
            lines += [
                "Do the priority signals find the frames the shortcut decides? ROC AUC of each signal (higher = sooner) "
                "for the test images whose prediction blanking the confounder changes (0.5: a random order), unguided:",
                "",
                "| family | variant | seeds | " + " | ".join(name.replace("_", " ") for name in SIGNALS) + " |",
                "|---|---|---|" + "---|" * len(SIGNALS),
            ]
            for k in signal_rows:
                g = groups[k]
                lines.append(
                    f"| {k[0]} | {k[3]} | {len(g)} | " + " | ".join(fmt([r[f"auroc_{n}"] for r in g], 2) for n in SIGNALS) + " |"
                )
            lines.append("")
    seconds = [r["train_seconds"] for r in rows]
    map_ms = [1000 * r["map_seconds"] for r in rows]
    occlusion_ms = [1000 * r["occlusion_seconds"] for r in rows]
    lines += [
        "## Cost per image",
        "",
        f"One CPU thread per run: attention map (one forward pass, batched) {statistics.mean(map_ms):.2f} ms; occlusion map "
        f"({OCCLUSION_GRID[0] * OCCLUSION_GRID[1]} forward passes) {statistics.mean(occlusion_ms):.1f} ms "
        f"({statistics.mean(occlusion_ms) / max(statistics.mean(map_ms), 1e-9):.0f}× the map). Training: "
        + ", ".join(
            f"{name} {statistics.mean([r['train_seconds'] for r in rows if r['variant'] == name]):.0f} s"
            for name in VARIANTS
            if any(r["variant"] == name for r in rows)
        )
        + f" per run (mean over all runs {statistics.mean(seconds):.0f} s).",
        "",
    ]
    return "\n".join(lines)


def describe(row: dict) -> str:
    return (
        f"{row['family']:13} rate {row['rate']:.2f} seed {row['seed']} {row['training']:9} {row['variant']:22} "
        f"acc {row['accuracy']:.3f} in-box {row['attention_in_box'] or 0:.3f} ×area {row['wrong_reason_ratio']:.2f} "
        f"pointing {row['pointing_on_flips'] if row['training'] == 'unguided' else row['pointing']:.2f} "
        f"deletion {row['deletion_map']:.3f}/{row['deletion_random']:.3f}/{row['deletion_occlusion']:.3f} "
        f"{row['train_seconds']:.0f} s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--runs", type=Path, default=Path("docs/benchmarks/faithfulness/runs.jsonl"))
    parser.add_argument("--families", default="decoy-digits,moa,mill")
    parser.add_argument("--rates", default="1.0,0.8", help="shortcut rates; below 1 is a subgroup variant")
    parser.add_argument("--variants", default=",".join(MAIN), help="run on every seed with both trainings")
    parser.add_argument("--ablation", default=",".join(v for v in VARIANTS if v not in MAIN), help="run unguided on --ablation-seeds")
    parser.add_argument("--subgroup-families", default="mill", help="families that also run at the rates below 1")
    parser.add_argument("--subgroup-trainings", default="unguided", help="trainings of the main variants at rates below 1")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--ablation-seeds", type=int, default=1)
    parser.add_argument("--size", type=int, default=240)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--arch", default="abn_cifar")
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()
    main_variants, ablation = [v for v in args.variants.split(",") if v], [v for v in args.ablation.split(",") if v]
    for name in main_variants + ablation:
        if name not in VARIANTS:
            parser.error(f"unknown variant {name!r}; valid: {', '.join(VARIANTS)}")
    subgroup_trainings = [t for t in args.subgroup_trainings.split(",") if t]
    for name in subgroup_trainings:
        if name not in TRAININGS:
            parser.error(f"unknown training {name!r}; valid: {', '.join(TRAININGS)}")

    def plan(rate: float) -> list[tuple[str, str, int]]:
        if rate < 1.0:  # a subgroup variant: the main variants only
            return [(v, t, s) for s in range(args.seeds) for t in subgroup_trainings for v in main_variants]
        return [(v, t, s) for s in range(args.seeds) for t in TRAININGS for v in main_variants] + [
            (v, "unguided", s) for s in range(args.ablation_seeds) for v in ablation
        ]

    tasks = [
        dict(family=f, rate=float(rate), variant=v, training=t, seed=s, size=args.size, epochs=args.epochs, arch=args.arch)
        for rate in args.rates.split(",")
        for f in (args.families if float(rate) == 1.0 else args.subgroup_families).split(",")
        for v, t, s in plan(float(rate))
    ]
    rows = run_resumable(tasks, run_one, key=key, runs=args.runs, jobs=args.jobs, describe=describe)
    command = " ".join([".venv/bin/python benchmarks/faithfulness.py", *sys.argv[1:]])
    return emit(report(rows, args, command), args.out)


if __name__ == "__main__":
    sys.exit(main())
