"""``attnloop demo``: a shortcut dataset, ABN trained with and without box guidance, ONNX export.

The loop of the platform (score → annotate → harvest → retrain → promote) comes with the flows;
until then the demo shows the core effect it relies on: a few human boxes with the right
retraining remove a shortcut that attention supervision alone does not.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from attnloop.datasets import from_manifest_boxes, make_dataset, read_manifest
from attnloop.export import export_onnx, parity
from attnloop.training import TrainConfig, data_hash, save_run, train


@dataclass
class Variant:
    name: str
    config: TrainConfig
    box_share: float  # share of training images that get their true boxes


def variants(epochs: int, seed: int) -> list[Variant]:
    def cfg(**kw) -> TrainConfig:
        return TrainConfig(arch="abn_cifar", epochs=epochs, seed=seed, **kw)

    return [
        Variant("unguided", cfg(guidance="none"), 0.0),
        Variant("outside-box penalty (λ=10)", cfg(guidance="outside", guidance_weight=10.0), 1.0),
        Variant("map matching (λ=10) + counterex.", cfg(guidance="match", guidance_weight=10.0, counterexamples="append"), 1.0),
        Variant("map matching (λ=10) + counterex.", cfg(guidance="match", guidance_weight=10.0, counterexamples="append"), 0.1),
    ]


def run_demo(workdir: str | Path, *, size: int = 400, epochs: int = 30, seed: int = 0, progress: bool = True) -> list[dict]:
    workdir = Path(workdir)
    data = workdir / "data"
    make_dataset("shortcut", data, seed=seed, size=size)
    train_records = [r for r in read_manifest(data) if r.split == "train"]
    rows = []
    for i, variant in enumerate(variants(epochs, seed)):
        chosen = random.Random(seed).sample(train_records, round(variant.box_share * len(train_records)))
        annotations = from_manifest_boxes(chosen) or None
        print(f"[{i + 1}/4] {variant.name}, boxes on {len(chosen)} of {len(train_records)} training images", flush=True)
        result = train(data, variant.config, annotations=annotations, progress=progress)
        run = save_run(workdir / "runs" / f"{i + 1}", result, variant.config, data=data_hash(data))
        test = result.metrics["splits"]["test"]
        rows.append(
            {
                "variant": variant.name,
                "boxes": len(chosen),
                "test_accuracy": test["accuracy"],
                "attention_in_box": test["attention_in_box"],
                "wrong_reason": test["wrong_reason"],
                "run": run,
                "result": result,
            }
        )
    best = max(rows[1:], key=lambda r: r["test_accuracy"])
    onnx_path = export_onnx(best["result"].model, best["result"].card, best["run"] / "model.onnx")
    test_images = [(data / r.image).read_bytes() for r in read_manifest(data) if r.split == "test"][:16]
    diff = parity(best["result"].model, best["result"].card, onnx_path, test_images)
    print()
    print(format_table(rows))
    print(f"\nclean test = the test split, where the corner patch no longer tells the class (chance {1 / len(best['result'].card.class_names):.2f}).")
    print(f"ONNX export of '{best['variant']}' ({best['boxes']} boxes): {onnx_path}")
    print(f"parity on {len(test_images)} test images (max |Δ|): logits {diff['logits']:.2e}, attention {diff['attention']:.2e}")
    return rows


def format_table(rows: list[dict]) -> str:
    head = f"{'training':34} {'boxes':>6} {'clean test acc':>15} {'attention-in-box':>17} {'wrong-reason':>13}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['variant']:34} {r['boxes']:>6} {r['test_accuracy']:>15.3f} {r['attention_in_box']:>17.3f} {r['wrong_reason']:>13.3f}"
        )
    return "\n".join(lines)
