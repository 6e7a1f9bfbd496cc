"""How well shortcut marks propagate: precision and recall of the propagated marks against the true
confounder boxes, by family, number of marks and similarity threshold.

For each family and seed, ``--marks`` training images chosen at random (seeded) carry a person's
mark on their confounder box; :func:`attnloop.propagation.propagate` looks for that region on every
other training image; a propagated mark is right when its box overlaps the image's confounder box
with IoU ≥ 0.5. Precision: the share of propagated marks that are right; recall: the share of the
other images that get a right one. Model-free: no training involved.

    .venv/bin/python benchmarks/propagation.py --out docs/benchmarks/propagation.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from attnloop.datasets import make_dataset, read_manifest
from attnloop.imaging import decode
from attnloop.propagation import THRESHOLD, Mark, agreement, propagate

from _common import cpu_name, emit

FAMILIES = (("mill", 1.0), ("mill", 0.8), ("decoy-digits", 1.0), ("moa", 1.0))
THRESHOLDS = (0.7, 0.8, 0.85, 0.9, 0.95)


def measure(root: Path, *, marks: int, seed: int) -> list[dict]:
    records = [r for r in read_manifest(root) if r.split == "train"]
    images = {r.image: decode((root / r.image).read_bytes(), name=r.image) for r in records}
    rng = np.random.default_rng(seed)
    chosen = [records[int(i)] for i in rng.choice(len(records), size=marks, replace=False)]
    started = time.perf_counter()
    matches = propagate([Mark(r.image, r.confounder_boxes[0]) for r in chosen], images, threshold=min(THRESHOLDS))
    seconds = time.perf_counter() - started
    truth = {r.image: r.confounder_boxes for r in records if r not in chosen}
    rows = []
    for threshold in THRESHOLDS:
        kept = [m for m in matches if m.similarity >= threshold]
        rows.append({"threshold": threshold, "seed": seed, "marks": marks, "seconds": seconds, "images": len(records), **agreement(kept, truth)})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1000, help="training images per family")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--marks", default="1,3,5")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    counts = [int(k) for k in args.marks.split(",")]
    lines = [
        "# Propagation of shortcut marks",
        "",
        f"Command: `python benchmarks/propagation.py --size {args.size} --seeds {args.seeds} --marks {args.marks}"
        + (f" --out {args.out}" if args.out else "") + "`",
        "",
        f"Machine: {cpu_name()}. {args.size} training images per family (data seed 0); marks on randomly chosen images "
        f"(seeds 0–{args.seeds - 1}); a propagated mark is right at IoU ≥ 0.5 with the image's confounder box. Precision / "
        f"recall, mean over seeds (min precision in brackets). The platform's threshold: **{THRESHOLD}**.",
        "",
        "| family | marks | " + " | ".join(f"≥ {t}" for t in THRESHOLDS) + " | seconds |",
        "|---|---|" + "---|" * (len(THRESHOLDS) + 1),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for family, rate in FAMILIES:
            name = family if rate == 1.0 else f"{family}-sub{round(100 * rate)}"
            root = Path(tmp) / name
            make_dataset(family, root, seed=0, size=args.size, shortcut_rate=rate)
            for k in counts:
                rows = [row for seed in range(args.seeds) for row in measure(root, marks=k, seed=seed)]
                cells = []
                for threshold in THRESHOLDS:
                    at = [r for r in rows if r["threshold"] == threshold]
                    precision = [r["precision"] for r in at if r["matches"]]
                    p = f"{statistics.mean(precision):.2f} ({min(precision):.2f})" if precision else "—"
                    cells.append(f"{p} / {statistics.mean(r['recall'] for r in at):.2f}")
                seconds = statistics.mean(r["seconds"] for r in rows)
                lines.append(f"| {name} | {k} | " + " | ".join(cells) + f" | {seconds:.1f} |")
                print(lines[-1], flush=True)
    lines += [
        "",
        "Reading: see docs/benchmarks/strategies.md for what the propagated marks buy in accuracy.",
        "",
    ]
    return emit("\n".join(lines), args.out)


if __name__ == "__main__":
    sys.exit(main())
