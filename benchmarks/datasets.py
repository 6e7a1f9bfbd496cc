"""Does each dataset family show its shortcut, and do boxes remove it?

For every family and seed: generate the dataset, train an ABN without guidance and one with the
true boxes on every training image (map matching λ=10 + counterexamples), and report train and
clean-test accuracy, attention-in-box and wrong-reason of the attention map, the wrong-reason
of the input gradients, and the reliance on the object and on the confounder (share of
predictions that change when that region is blanked) (mean ± std over seeds). "Confounder
area" is the share of the image the confounder boxes cover: the wrong-reason a flat map would
get.

    .venv/bin/python benchmarks/datasets.py --out docs/benchmarks/datasets.md
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from attnloop import imaging
from attnloop.datasets import FAMILIES, make_dataset
from attnloop.masks import box_mask
from attnloop.training import ImageSet, TrainConfig, resolve_annotations, train

from _common import emit

TRAININGS = {
    "unguided": (dict(guidance="none"), None),
    "all boxes": (dict(guidance="match", guidance_weight=10.0, counterexamples="append"), "manifest"),
}


def fmt(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f}"


def confounder_area(root: Path, records) -> float:
    shares = []
    for r in records:
        if r.split == "test" and r.confounder_boxes:
            size = imaging.decode((root / r.image).read_bytes()).shape[:2]
            shares.append(float(box_mask(r.confounder_boxes, image_size=size, out_size=size).mean()))
    return statistics.mean(shares)


def gradient_wrong_reason(model: torch.nn.Module, data: ImageSet, batch_size: int = 64) -> float:
    """Share of |∂ logit(predicted class) / ∂ input| (summed over channels) inside the confounder boxes.

    The input-gradient explanation of Ross et al. (2017): where a small change of the image moves
    the decision. Unlike the attention map it follows what the model uses at full resolution.
    Mean over the images that have confounder boxes.
    """
    model.eval()
    has = data.confounder_masks.reshape(len(data.confounder_masks), -1).any(axis=1)
    shares = []
    for start in range(0, len(data.images), batch_size):
        keep = has[start : start + batch_size]
        if not keep.any():
            continue
        x = data.images[start : start + batch_size][torch.from_numpy(keep)].clone().requires_grad_(True)
        logits = model(x).logits
        logits.gather(1, logits.argmax(1, keepdim=True)).sum().backward()
        gradient = x.grad.abs().sum(dim=1)
        mask = torch.from_numpy(data.confounder_masks[start : start + batch_size][keep]).float()[:, None]
        mask = (F.interpolate(mask, size=gradient.shape[-2:], mode="nearest")[:, 0] > 0).float()
        shares.append(((gradient * mask).sum(dim=(1, 2)) / gradient.sum(dim=(1, 2)).clamp_min(1e-12)).numpy())
    return float(np.concatenate(shares).mean())


METRICS = ("train", "test", "attention_in_box", "wrong_reason", "gradient_wrong_reason", "object_reliance", "confounder_reliance")


def run_one(task: tuple[str, int, str, int, int]) -> dict:
    """One family, seed and training, in a worker process on one thread."""
    family, seed, name, size, epochs = task
    torch.set_num_threads(1)
    options, boxes = TRAININGS[name]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / f"{family}-{seed}"
        records = make_dataset(family, root, seed=seed, size=size)
        start = time.perf_counter()
        result = train(
            root,
            TrainConfig(arch="abn_cifar", epochs=epochs, seed=seed, **options),
            annotations=resolve_annotations(root, boxes),
            progress=False,
        )
        splits = result.metrics["splits"]
        return {
            "family": family, "seed": seed, "training": name, "seconds": time.perf_counter() - start,
            "area": confounder_area(root, records),
            "train": splits["train"]["accuracy"],
            "test": splits["test"]["accuracy"],
            "attention_in_box": splits["test"]["attention_in_box"] or 0.0,
            "wrong_reason": splits["test"]["wrong_reason"],
            "gradient_wrong_reason": gradient_wrong_reason(result.model, result.sets["test"]),
            "object_reliance": splits["test"]["object_reliance"] or 0.0,
            "confounder_reliance": splits["test"]["confounder_reliance"],
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--families", default=",".join(f for f in FAMILIES if f != "shortcut"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--size", type=int, default=240)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=1, help="worker processes, one thread each")
    args = parser.parse_args()
    families = args.families.split(",")
    tasks = [(f, seed, name, args.size, args.epochs) for f in families for seed in range(args.seeds) for name in TRAININGS]
    done = []
    with multiprocessing.get_context("spawn").Pool(max(1, args.jobs), maxtasksperchild=1) as pool:
        for r in pool.imap_unordered(run_one, tasks):
            done.append(r)
            print(
                f"{r['family']:13} seed {r['seed']} {r['training']:9} train {r['train']:.3f} test {r['test']:.3f} "
                f"in-box {r['attention_in_box']:.3f} wrong-reason map {r['wrong_reason']:.3f} "
                f"gradients {r['gradient_wrong_reason']:.3f} "
                f"reliance object {r['object_reliance']:.3f} confounder {r['confounder_reliance']:.3f} {r['seconds']:.0f} s",
                flush=True,
            )
    rows = []
    for family in families:
        chance = 1 / len(FAMILIES[family].classes)
        area = statistics.mean(r["area"] for r in done if r["family"] == family and r["training"] == "unguided")
        for name in TRAININGS:
            b = {k: [r[k] for r in done if r["family"] == family and r["training"] == name] for k in METRICS}
            rows.append(
                f"| {family} | {chance:.2f} | {area:.3f} | {name} | {fmt(b['train'])} | {fmt(b['test'])} "
                f"| {fmt(b['attention_in_box'])} | {fmt(b['wrong_reason'])} | {fmt([w / area for w in b['wrong_reason']])} "
                f"| {fmt(b['gradient_wrong_reason'])} | {fmt(b['object_reliance'])} | {fmt(b['confounder_reliance'])} |"
            )
    report = "\n".join(
        [
            "# Dataset families: the shortcut, without and with boxes",
            "",
            "Command (from the repository root):",
            "",
            "```",
            f".venv/bin/python benchmarks/datasets.py --families {args.families} --seeds {args.seeds} --size {args.size} "
            f"--epochs {args.epochs} --jobs {args.jobs}" + (f" --out {args.out}" if args.out else ""),
            "```",
            "",
            f"ABN (`abn_cifar`) in attnloop's default form (the map gates perception, `M · g`, from a local branch, with "
            f"an area prior and attention mining; [faithfulness.md](faithfulness.md)), {args.size} training images, "
            f"{args.epochs} epochs; mean ± std over {args.seeds} seeds "
            "(a new dataset and initialization per seed). *Unguided*: no boxes. *All boxes*: the true boxes of every "
            "training image, map-matching loss (λ = 10) and counterexamples. Test = the clean split, where the shortcut is "
            "broken. Attention-in-box on test images with boxes (none for classes without an object, e.g. `ok`). "
            "*Wrong-reason*: the share of an explanation inside the confounder boxes, of the attention map (what the "
            "model shows) and of the input gradients |∂ logit / ∂ x| (Ross et al. 2017). "
            "*Confounder area*: share of the image inside the confounder boxes, the wrong-reason of a flat map; "
            "*×area*: the map's wrong-reason over it. "
            "*Reliance*: share of test predictions that change when the object boxes, or the confounder boxes, are "
            "blanked (set to the training mean): what the model uses, where the map shows where it looks.",
            "",
            "| family | chance | confounder area | training | train acc | clean test acc | attention-in-box | wrong-reason "
            "(map) | ×area | wrong-reason (gradients) | object reliance | confounder reliance |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    return emit(report, args.out)


if __name__ == "__main__":
    sys.exit(main())
