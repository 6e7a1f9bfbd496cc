"""The off-object flag: which attention signal separates the frames a shortcut decides, and where to cut it.

For every family with a known shortcut (``confounder_boxes`` on every image), shortcut rate and
seed: generate the family, train the platform's default model form (local gate + prior + mining,
unguided: the demo's first model) on its first ``--train`` training images, and on its frames:

* the frames the shortcut decides: blanking the confounder changes the prediction
  (:func:`attnloop.training.prediction_flips`, as ``benchmarks/faithfulness.py``);
* the drift reference: the first half of the test split (promotion scores the holdout's test
  split); the evaluated frames: the rest of the test split and the stream split;
* each candidate signal's ROC AUC for the shortcut frames among the evaluated frames (0.5: no
  better than a random order), including two that read the true boxes, as bounds;
* the share of frames flagged off object — before: background attention (object size 0.1, the
  score flow's default) above 0.5; after: attention focus above a quantile of the reference's —
  among all evaluated frames, among the shortcut frames and among the others.

Every run is appended to ``--runs`` (JSON lines) and skipped when it is there already, so an
interrupted benchmark resumes; the report is built from that file. Each run uses one thread
(``torch.set_num_threads(1)``); ``--jobs`` runs that many at once.

    .venv/bin/python benchmarks/off_object.py --jobs 2 --out docs/benchmarks/off-object.md
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

# name → (what it is, higher = "off object"); the first is the flag's signal before, the chosen one after
CANDIDATES = {
    "background_attention": "background attention, object size 0.1 (the score flow's default): energy outside the strongest 10 % of cells",
    "background_prior": "background attention with k from the card's area prior (15 %) instead of an object size",
    "attention_focus": "attention focus: energy inside the strongest cells, as many as the area prior opens (15 %)",
    "attention_spread": "attention spread: entropy of the energy over the map (size-free)",
    "unusual_place": "1 − overlap (histogram intersection) of the map's energy with the reference's mean map: attention where the model does not usually look",
    "off_object_box": "bound, reads the truth: energy outside the true object box (frames that have one)",
    "on_confounder_box": "bound, reads the truth: energy on the true confounder box",
}
BEFORE, AFTER = "background_attention", "attention_focus"
QUANTILES = (0.8, 0.9, 0.95)  # reference quantiles tried as the off-object threshold


def energy_shares(attention: np.ndarray) -> np.ndarray:
    """Each map's energy (above its floor) as a distribution over its cells."""
    from attnloop.evaluation import attention_energy

    e = attention_energy(attention)
    total = e.sum(axis=1, keepdims=True)
    return np.where(total > 1e-12, e / np.maximum(total, 1e-12), 1.0 / e.shape[1])


def candidates(attention: np.ndarray, reference: np.ndarray, *, area: float, boxes: np.ndarray, confounders: np.ndarray) -> dict[str, np.ndarray]:
    """Every candidate's value per frame (NaN where it is undefined)."""
    from attnloop.evaluation import energy_share
    from attnloop.priority import signals

    usual = energy_shares(reference).mean(axis=0)
    return {
        "background_attention": signals.background_attention(attention, object_fraction=0.1),
        "background_prior": signals.background_attention(attention, object_fraction=area),
        "attention_focus": signals.attention_focus(attention, area=area),
        "attention_spread": signals.attention_spread(attention),
        "unusual_place": 1.0 - np.minimum(energy_shares(attention), usual[None]).sum(axis=1),
        "off_object_box": 1.0 - energy_share(attention, boxes),
        "on_confounder_box": energy_share(attention, confounders),
    }


def auroc(flips: np.ndarray, values: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    keep = np.isfinite(values)
    y = flips[keep]
    return float(roc_auc_score(y, values[keep])) if 0 < y.sum() < len(y) else float("nan")


def flagged(flags: np.ndarray, flips: np.ndarray) -> dict[str, float]:
    """Share of frames flagged: all, the shortcut's (true positive rate), the others' (false positive rate)."""
    return {
        "all": float(flags.mean()),
        "shortcut": float(flags[flips].mean()) if flips.any() else float("nan"),
        "others": float(flags[~flips].mean()) if (~flips).any() else float("nan"),
    }


def run_one(task: dict) -> dict:
    """Generate the family, train one model and measure every candidate (in a worker process, one thread)."""
    import torch

    torch.set_num_threads(1)
    from attnloop.datasets import by_split, make_dataset
    from attnloop.priority import signals
    from attnloop.training import TrainConfig, predict, prediction_flips, train

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        split = by_split(make_dataset(task["family"], root, seed=task["seed"], size=task["size"], shortcut_rate=task["rate"]))
        records = split["train"][: task["train"]] + split["val"][: task["train"] // 4] + split["test"] + split["stream"]
        start = time.perf_counter()
        result = train(root, TrainConfig(epochs=task["epochs"], seed=task["seed"], guidance="none", threads=1), records=records, progress=False)
        seconds = time.perf_counter() - start
        model, area = result.model, signals.area_target(result.card)
        half = len(split["test"]) // 2
        frames = {}
        for name in ("test", "stream"):
            data = result.sets[name]
            out = predict(model, data.images)
            frames[name] = dict(attention=out["attention"], flips=prediction_flips(model, data.images, data.confounder_masks),
                                boxes=data.box_masks, confounders=data.confounder_masks)
    reference = frames["test"]["attention"][:half]
    evaluated = {k: np.concatenate([frames["test"][k][half:], frames["stream"][k]]) for k in frames["test"]}
    flips = evaluated["flips"]
    values = candidates(evaluated["attention"], reference, area=area, boxes=evaluated["boxes"], confounders=evaluated["confounders"])
    reference_focus = signals.attention_focus(reference, area=area)
    row = {
        **task,
        "accuracy": result.metrics["splits"]["test"]["accuracy"],
        "area": area,
        "reference_frames": len(reference),
        "frames": len(flips),
        "shortcut_share": float(flips.mean()),
        "train_seconds": seconds,
        "auroc": {name: auroc(flips, v) for name, v in values.items()},
        "before": {
            "threshold": 0.5,
            "reference": float((signals.background_attention(reference, object_fraction=0.1) > 0.5).mean()),
            **flagged(values[BEFORE] > 0.5, flips),
        },
    }
    for q in QUANTILES:
        cut = signals.focus_threshold(reference_focus, quantile=q)
        row[f"after_{q}"] = {"threshold": cut, "reference": float((reference_focus > cut).mean()), **flagged(values[AFTER] > cut, flips)}
    return row


def key(task: dict) -> tuple:
    return tuple(task[k] for k in ("family", "rate", "seed", "size", "train", "epochs"))


def fmt(values: list[float], digits: int = 2) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "—"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.pstdev(values):.{digits}f}"


def pct(values: list[float]) -> str:
    values = [v for v in values if v == v]
    return f"{100 * statistics.mean(values):.0f} % ± {100 * statistics.pstdev(values):.0f}" if values else "—"


def precision(row: dict, flags: dict) -> float:
    """Share of the flagged frames that the shortcut decides (NaN when none is flagged)."""
    hit = row["shortcut_share"] * flags["shortcut"]
    return hit / flags["all"] if flags["all"] > 0 else float("nan")


def label(row: dict) -> str:
    return row["family"] if row["rate"] == 1.0 else f"{row['family']} (shortcut on {row['rate']:.0%})"


def report(rows: list[dict], args: argparse.Namespace, command: str) -> str:
    groups: dict[str, list[dict]] = {}
    for row in sorted(rows, key=lambda r: (r["family"], -r["rate"], r["seed"])):
        groups.setdefault(label(row), []).append(row)
    names = list(CANDIDATES)
    lines = [
        "# The off-object flag: which attention signal finds the frames a shortcut decides",
        "",
        "Command (from the repository root):",
        "",
        "```",
        command,
        "```",
        "",
        f"The platform's default model form (`abn_cifar`, local gate + prior + mining, area prior {rows[0]['area']:.2f}), "
        f"unguided, {args.epochs} epochs on the first {args.train} training images of each family (the demo's first model), "
        f"seeds 0–{args.seeds - 1} (a new dataset and initialization per seed, the same for every signal: paired). "
        "*Frames the shortcut decides*: blanking the confounder changes the prediction (as in "
        "[faithfulness.md](faithfulness.md)). *Reference*: the first half of the test split "
        f"({rows[0]['reference_frames']} frames; promotion scores the holdout's test split); *evaluated*: the rest of the test "
        f"split and the stream split ({rows[0]['frames']} frames; the stream split of `mill` drifts). One thread per run "
        f"(`torch.set_num_threads(1)`), {args.jobs} run(s) at once; training took "
        f"{statistics.mean(r['train_seconds'] for r in rows):.0f} s per run on average.",
        "",
        "## ROC AUC per family and seed, before and after",
        "",
        "How well the signal ranks the frames the shortcut decides first among the evaluated frames "
        "(0.5: a random order; below 0.5: it ranks them last). *Before*: background attention at the score flow's object "
        "size (0.1), the flag's signal until now; *after*: attention focus; Δ: after − before on the same run.",
        "",
        "| family | seed | clean acc | decided by the shortcut | before | after | Δ |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, g in groups.items():
        for r in g:
            a, b = r["auroc"][BEFORE], r["auroc"][AFTER]
            lines.append(f"| {name} | {r['seed']} | {r['accuracy']:.2f} | {r['shortcut_share']:.0%} | {a:.2f} | {b:.2f} | {b - a:+.2f} |")
    lines += [
        "",
        "## Every candidate (mean ± std over seeds)",
        "",
        "| family | " + " | ".join(n.replace("_", " ") for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for name, g in groups.items():
        lines.append(f"| {name} | " + " | ".join(fmt([r["auroc"][n] for r in g]) for n in names) + " |")
    families = [name for name in groups if "(" not in name]
    lines.append(
        "| **mean of the families** | "
        + " | ".join(f"**{np.nanmean([np.nanmean([r['auroc'][n] for r in groups[f]]) for f in families]):.2f}**" for n in names)
        + " |"
    )
    lines += [""] + [f"- *{n.replace('_', ' ')}*: {text}." for n, text in CANDIDATES.items()]
    lines += [
        "",
        "## Share of frames flagged off object, before and after",
        "",
        "Before: background attention (object size 0.1) above 0.5. After: attention focus above its 90th percentile on the "
        "reference. Shares of the evaluated frames (mean ± std over seeds): all of them, those the shortcut decides (the true "
        "positive rate) and the others (the false positive rate); *reference*: the share of the reference's own frames; "
        "*precision*: the share of the flagged frames that the shortcut decides, against the share of all evaluated frames it "
        "decides (a flag that knows nothing has the second as its first).",
        "",
        "| family | before: all | before: reference | after: threshold | after: all | after: shortcut's | after: others' "
        "| after: reference | after: precision / decided by the shortcut |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, g in groups.items():
        after = [r["after_0.9"] for r in g]
        lines.append(
            f"| {name} | {pct([r['before']['all'] for r in g])} | {pct([r['before']['reference'] for r in g])} "
            f"| {fmt([a['threshold'] for a in after])} | {pct([a['all'] for a in after])} | {pct([a['shortcut'] for a in after])} "
            f"| {pct([a['others'] for a in after])} | {pct([a['reference'] for a in after])} "
            f"| {pct([precision(r, r['after_0.9']) for r in g])} / {pct([r['shortcut_share'] for r in g])} |"
        )
    lines += [
        "",
        "The quantile, pooled over every run (mean over runs):",
        "",
        "| reference quantile | reference flagged | evaluated flagged | shortcut's flagged | others' flagged | precision |",
        "|---|---|---|---|---|---|",
    ]
    for q in QUANTILES:
        a = [r[f"after_{q}"] for r in rows]
        lines.append(
            f"| {q:.2f} | {pct([x['reference'] for x in a])} | {pct([x['all'] for x in a])} | {pct([x['shortcut'] for x in a])} "
            f"| {pct([x['others'] for x in a])} | {pct([precision(r, r[f'after_{q}']) for r in rows])} |"
        )
    lines.append("")
    return "\n".join(lines)


def describe(row: dict) -> str:
    return (
        f"{label(row):28} seed {row['seed']} acc {row['accuracy']:.2f} shortcut {row['shortcut_share']:.0%} "
        f"AUC {row['auroc'][BEFORE]:.2f} → {row['auroc'][AFTER]:.2f}; flagged {row['before']['all']:.0%} → "
        f"{row['after_0.9']['all']:.0%} ({row['train_seconds']:.0f} s)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--runs", type=Path, default=Path("docs/benchmarks/off-object/runs.jsonl"))
    parser.add_argument("--families", default="decoy-digits,mill,moa,scenes", help="at shortcut rate 1")
    parser.add_argument("--subgroups", default="mill:0.8", help="FAMILY:RATE pairs: the shortcut on a share of the training images only")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--size", type=int, default=480, help="the generated size: its test and stream splits are the frames")
    parser.add_argument("--train", type=int, default=240, help="training images used (the first ones)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()
    pairs = [(f, 1.0) for f in args.families.split(",") if f]
    pairs += [(p.split(":")[0], float(p.split(":")[1])) for p in args.subgroups.split(",") if p]
    tasks = [
        dict(family=f, rate=rate, seed=s, size=args.size, train=args.train, epochs=args.epochs)
        for f, rate in pairs
        for s in range(args.seeds)
    ]
    rows = run_resumable(tasks, run_one, key=key, runs=args.runs, jobs=args.jobs, describe=describe)
    command = " ".join([".venv/bin/python benchmarks/off_object.py", *sys.argv[1:]])
    return emit(report(rows, args, command), args.out)


if __name__ == "__main__":
    sys.exit(main())
