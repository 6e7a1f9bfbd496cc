"""Training on the CPU vs a GPU: the same runs, one after the other, in one process.

Generates a family's dataset, then trains the benchmark's two kinds of run on it — the initial
unguided model (30 epochs) and a guided retraining with boxes on every training image
(10 epochs, map matching + counterexamples) — once per device, with the same seed. Reports
seconds per run, the GPU ÷ CPU ratio and the clean-test accuracy each reached (GPU kernels
are not bit-identical to CPU ones, so accuracies may differ slightly).

    python benchmarks/training_device.py --family mill --size 240 --out docs/benchmarks/training-device.md
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from attnloop.datasets import from_manifest_boxes, make_dataset
from attnloop.training import TrainConfig, train

sys.path.insert(0, str(Path(__file__).parent))
from _common import cpu_name, emit  # noqa: E402

RUNS = {
    "initial, unguided (30 epochs)": (dict(epochs=30, guidance="none"), False),
    "retraining, all boxes (10 epochs)": (
        dict(epochs=10, guidance="match", guidance_weight=10.0, counterexamples="append", guided_share=0.5),
        True,
    ),
}


def timed(root: Path, config: TrainConfig, annotations) -> tuple[float, float]:
    start = time.perf_counter()
    result = train(root, config, annotations=annotations, progress=False)
    if config.device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, result.metrics["splits"]["test"]["accuracy"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="mill")
    parser.add_argument("--size", type=int, default=240)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / args.family
        boxes = from_manifest_boxes(make_dataset(args.family, root, seed=args.seed, size=args.size))
        # one warm-up on each device (CUDA context, cuDNN autotuning, first-call allocations)
        for device in devices:
            train(root, TrainConfig(epochs=1, device=device, guidance="none"), progress=False)
        rows = []
        for name, (options, guided) in RUNS.items():
            cells = {device: timed(root, TrainConfig(seed=args.seed, device=device, **options), boxes if guided else None) for device in devices}
            rows.append((name, cells))
    lines = [
        "# Training: CPU vs GPU",
        "",
        f"Command: `python benchmarks/training_device.py --family {args.family} --size {args.size}"
        + (f" --out {args.out}`" if args.out else "`"),
        "",
        f"Machine: {os.cpu_count()} CPU cores ({cpu_name()}, "
        f"{torch.get_num_threads()} PyTorch threads), GPU: {gpu}; PyTorch {torch.__version__}. "
        f"Data: `{args.family}`, {args.size} training images, `abn_cifar`, batch 32. Both devices in one process, one after the other.",
        "",
        "| run | " + " | ".join(f"{d} s | {d} clean acc" for d in devices) + (" | GPU ÷ CPU time |" if len(devices) > 1 else " |"),
        "|---|" + "---|---|" * len(devices) + ("---|" if len(devices) > 1 else ""),
    ]
    for name, cells in rows:
        line = f"| {name} | " + " | ".join(f"{cells[d][0]:.1f} | {cells[d][1]:.3f}" for d in devices)
        if len(devices) > 1:
            line += f" | {cells['cuda'][0] / cells['cpu'][0]:.2f}×"
        lines.append(line + " |")
    return emit("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    sys.exit(main())
