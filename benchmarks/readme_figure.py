"""The README's picture: where an ABN looks on `mill` test images, and whether that is what it uses.

Generates `mill` (the shortcut on every training image: a marking whose place gives the class)
and draws the attention on the same defect images of the clean test split, captions
`true > predicted`, one row per model: the original ABN unguided (`(1 + M) · g`: its map is
flat over the marking it relies on), attnloop's default unguided (local branch, `M · g`, area
prior, attention mining: its map points at the marking), and the default with the true box of
every training image (map matching λ = 10 + counterexamples). Prints the clean-test accuracies.

    .venv/bin/python benchmarks/readme_figure.py --out docs/images/mill_attention.png
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from attnloop import imaging
from attnloop.datasets import by_split, from_manifest_boxes, make_dataset
from attnloop.figures import attention_grid
from attnloop.training import ORIGINAL_ABN, TrainConfig, predict, train


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int, default=240)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "mill"
        records = make_dataset("mill", root, seed=args.seed, size=args.size)
        test = [r for r in by_split(records)["test"] if r.boxes][: args.count]
        pictures = [imaging.decode((root / r.image).read_bytes()) for r in test]
        rows = []
        for name, config, boxes in (
            ("original ABN, unguided", TrainConfig(epochs=args.epochs, seed=args.seed, guidance="none", **ORIGINAL_ABN), None),
            ("default, unguided", TrainConfig(epochs=args.epochs, seed=args.seed, guidance="none"), None),
            ("boxes", TrainConfig(epochs=args.epochs, seed=args.seed, guidance="match", guidance_weight=10.0, counterexamples="append"),
             from_manifest_boxes(records)),
        ):
            result = train(root, config, annotations=boxes, progress=False)
            classes = result.card.class_names
            index = [r.image for r in result.sets["test"].records]
            images = result.sets["test"].images[[index.index(r.image) for r in test]]
            out = predict(result.model, images)
            captions = [f"{r.label}>{classes[p]}" for r, p in zip(test, out["probabilities"].argmax(1))]
            rows.append(cv2.imdecode(np.frombuffer(attention_grid(pictures, list(out["attention"]), captions, columns=args.count), np.uint8), cv2.IMREAD_COLOR))
            test_figures = result.metrics["splits"]["test"]
            print(
                f"{name}: clean test accuracy {test_figures['accuracy']:.3f}, map on the marking {test_figures['wrong_reason']:.3f}, "
                f"attention-in-box {test_figures['attention_in_box']:.3f}, predictions the marking decides "
                f"{test_figures['confounder_reliance']:.2f}"
            )
    gap = np.full((6, rows[0].shape[1], 3), 255, np.uint8)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), np.concatenate([part for row in rows for part in (row, gap)][:-1]))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
