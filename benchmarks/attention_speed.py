"""ONNX Runtime throughput of the faithful attention (local branch, ``M · g``) against the original ABN's.

Both forms of each architecture are exported and run on the same batch with the same threads,
in alternating rounds of one process, so the ratio is measured under the same machine load.

    .venv/bin/python benchmarks/attention_speed.py --out docs/benchmarks/attention-speed.md
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnxruntime as ort

from attnloop.export import export_onnx
from attnloop.models import build_model, make_card
from attnloop.models.abn import LEGACY_ATTENTION
from attnloop.models.checkpoint import default_attention
from attnloop.runtime import OnnxModel

from _common import cpu_name, emit
from inference import throughput

CASES = (("abn_cifar", 64), ("msabn_cifar", 64), ("abn_resnet18", 224), ("msabn_resnet18", 224))
BATCHES = (1, 32)


def measure(arch: str, side: int, batch: int, *, threads: int, seconds: float, rounds: int, workdir: Path) -> dict:
    runtimes = {}
    for name, attention in (("original", LEGACY_ATTENTION), ("faithful", default_attention(arch))):
        card = make_card(arch, class_names=[f"c{i}" for i in range(10)], input_size=(side, side), channels=3, attention=attention)
        path = export_onnx(build_model(card).eval(), card, workdir / f"{arch}_{side}_{name}.onnx")
        runtimes[name] = (OnnxModel(path, device="cpu", threads=threads), card)
    x = np.random.default_rng(0).normal(size=(batch, 3, side, side)).astype(np.float32)
    rates: dict[str, list[float]] = {name: [] for name in runtimes}
    for _ in range(rounds):
        for name, (runtime, _) in runtimes.items():
            rates[name].append(throughput(lambda: runtime.run(x), batch, seconds))
    original, faithful = statistics.median(rates["original"]), statistics.median(rates["faithful"])
    return {
        "arch": arch,
        "input": side,
        "batch": batch,
        "original": original,
        "faithful": faithful,
        "ratio": faithful / original,
        "maps": (runtimes["original"][1].attention_size, runtimes["faithful"][1].attention_size),
        "attention": runtimes["faithful"][1].extra["attention"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="markdown report to write")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch, side in CASES:
            for batch in BATCHES:
                row = measure(arch, side, batch, threads=args.threads, seconds=args.seconds, rounds=args.rounds, workdir=Path(tmp))
                rows.append(row)
                print(f"{arch:14} {side:>4}px batch {batch:>3}: original {row['original']:8.1f} img/s, faithful {row['faithful']:8.1f} img/s, {row['ratio']:.2f}×", flush=True)
    table = [
        "| model | input | batch | faithful attention | map (original → faithful) | original ABN (img/s) | faithful (img/s) | faithful / original |",
        "|---|---|---|---|---|---|---|---|",
        *[
            f"| {r['arch']} | {r['input']} px | {r['batch']} | {r['attention']['gate']}, {r['attention']['branch']} branch "
            f"| {r['maps'][0][0]}×{r['maps'][0][1]} → {r['maps'][1][0]}×{r['maps'][1][1]} | {r['original']:.1f} | {r['faithful']:.1f} | {r['ratio']:.2f}× |"
            for r in rows
        ],
    ]
    report = "\n".join(
        [
            "# Inference speed: the faithful attention against the original ABN",
            "",
            "Command (from the repository root):",
            "",
            "```",
            f".venv/bin/python benchmarks/attention_speed.py --threads {args.threads} --seconds {args.seconds:g} --rounds {args.rounds}"
            + (f" --out {args.out}" if args.out else ""),
            "```",
            "",
            f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {cpu_name()} ({args.threads} threads), Python "
            f"{platform.python_version()}, onnxruntime {ort.__version__} (CPU provider). *Original*: Fukui et al.'s ABN "
            "(`(1 + M) · g`, the map from a stride-1 copy of the last stage), the form of models made before the gate was a "
            "choice; *faithful*: attnloop's default for new models (docs/benchmarks/faithfulness.md). 3-channel inputs, 10 "
            f"classes, random weights. Each figure is the median of {args.rounds} alternating rounds of {args.seconds:g} s per "
            "model in one process; ratios compare figures of the same run.",
            "",
            *table,
            "",
        ]
    )
    return emit(report, args.out) if args.out else 0


if __name__ == "__main__":
    sys.exit(main())
