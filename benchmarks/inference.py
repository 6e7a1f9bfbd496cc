"""ONNX Runtime vs PyTorch eager throughput (images/s) for attnloop's attention models.

Both engines run the same model on the same batch with the same number of threads, in
alternating rounds of one process, so the ratio is measured under the same machine load.

    .venv/bin/python benchmarks/inference.py --out docs/benchmarks/inference.md
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from attnloop.export import export_onnx
from attnloop.models import build_model, make_card
from attnloop.runtime import OnnxModel

from _common import cpu_name, emit

CASES = (("abn_cifar", 64), ("msabn_cifar", 64), ("abn_resnet18", 224), ("msabn_resnet18", 224))
BATCHES = (1, 32)


def throughput(run, batch: int, seconds: float) -> float:
    run()  # warm-up
    done, start = 0, time.perf_counter()
    while True:
        run()
        done += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and done >= 3:
            return done * batch / elapsed


def measure(arch: str, side: int, batch: int, *, threads: int, seconds: float, rounds: int, workdir: Path) -> dict:
    card = make_card(arch, class_names=[f"c{i}" for i in range(10)], input_size=(side, side), channels=3)
    model = build_model(card).eval()
    path = export_onnx(model, card, workdir / f"{arch}_{side}.onnx")
    runtime = OnnxModel(path, device="cpu", threads=threads)
    x = np.random.default_rng(0).normal(size=(batch, 3, side, side)).astype(np.float32)
    tx = torch.from_numpy(x)

    def torch_run() -> None:
        with torch.inference_mode():
            model(tx)

    def onnx_run() -> None:
        runtime.run(x)

    torch_rates, onnx_rates = [], []
    for _ in range(rounds):
        torch_rates.append(throughput(torch_run, batch, seconds))
        onnx_rates.append(throughput(onnx_run, batch, seconds))
    t, o = statistics.median(torch_rates), statistics.median(onnx_rates)
    return {"arch": arch, "input": side, "batch": batch, "torch": t, "onnx": o, "ratio": o / t}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="markdown report to write")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch, side in CASES:
            for batch in BATCHES:
                row = measure(arch, side, batch, threads=args.threads, seconds=args.seconds, rounds=args.rounds, workdir=Path(tmp))
                rows.append(row)
                print(f"{arch:14} {side:>4}px batch {batch:>3}: torch {row['torch']:8.1f} img/s, onnx {row['onnx']:8.1f} img/s, ratio {row['ratio']:.2f}×", flush=True)
    table = [
        "| model | input | batch | PyTorch eager (img/s) | ONNX Runtime (img/s) | ONNX / PyTorch |",
        "|---|---|---|---|---|---|",
        *[f"| {r['arch']} | {r['input']} px | {r['batch']} | {r['torch']:.1f} | {r['onnx']:.1f} | {r['ratio']:.2f}× |" for r in rows],
    ]
    report = "\n".join(
        [
            "# Inference throughput: ONNX Runtime vs PyTorch eager",
            "",
            "Command (from the repository root):",
            "",
            "```",
            f".venv/bin/python benchmarks/inference.py --threads {args.threads} --seconds {args.seconds:g} --rounds {args.rounds}"
            + (f" --out {args.out}" if args.out else ""),
            "```",
            "",
            f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {cpu_name()} ({args.threads} threads for both engines), "
            f"Python {platform.python_version()}, torch {torch.__version__}, onnxruntime {ort.__version__} (CPU provider). "
            "3-channel inputs, 10 classes, random weights (throughput does not depend on them). Each figure is the median of "
            f"{args.rounds} alternating rounds of {args.seconds:g} s per engine in one process; ratios compare figures of the "
            "same run.",
            "",
            *table,
            "",
        ]
    )
    return emit(report, args.out) if args.out else 0


if __name__ == "__main__":
    sys.exit(main())
