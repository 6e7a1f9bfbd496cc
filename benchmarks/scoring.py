"""Scoring throughput from the object store vs raw ONNX Runtime on the same decoded images.

Frames: ``--count`` frames of the ``mill`` stream split written by the simulator into an S3
server on loopback (moto's, reached over HTTP through the minio client) and into a folder
store. Model: ``abn_cifar`` (64 px) trained one epoch on a small ``mill`` set and exported.
*Raw*: ``session.run`` on batches of the already decoded and preprocessed frames (nothing
else). *Scoring*: the whole pipeline (list, get, hash, decode, preprocess, batched inference,
signals, Parquet parts, ledger, report), one run per store. The ratio is the target (≥ 0.8).

    .venv/bin/python benchmarks/scoring.py --out docs/benchmarks/scoring.md
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from attnloop import imaging
from attnloop.datasets import make_dataset
from attnloop.export import export_onnx
from attnloop.runtime import OnnxModel
from attnloop.scoring import score_store
from attnloop.storage import open_store
from attnloop.stream import iter_frames, simulate
from attnloop.training import TrainConfig, train

from _common import emit, free_port


def wait_for_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the S3 server did not listen on port {port} within {timeout:.0f} s")


def raw_throughput(model: OnnxModel, images: list[bytes], batch_size: int, repeats: int) -> float:
    batch = np.stack([imaging.preprocess_bytes(data, model.card) for data in images])
    model.run(batch[:batch_size])  # warm-up
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(batch), batch_size):
            model.run(batch[i : i + batch_size])
        best = max(best, len(batch) / (time.perf_counter() - start))
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    port = free_port()
    # moto's S3 server in its own process, as a real object store would be (in-process it would share our GIL)
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    rows = []
    try:
        wait_for_port(port)
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "mill"
            make_dataset("mill", data, size=60)
            result = train(data, TrainConfig(epochs=1, guidance="none"), progress=False)
            model = OnnxModel(export_onnx(result.model, result.card, Path(tmp) / "model.onnx"), device="auto")
            stores = {
                "S3 server (moto process, HTTP)": open_store(
                    "s3://frames", endpoint=f"http://127.0.0.1:{port}", access_key="bench", secret_key="bench-secret", create=True
                ),
                "folder": open_store((Path(tmp) / "store").as_uri(), create=True),
            }
            for name, store in stores.items():
                simulate(store, "mill", count=args.count, progress=False)
                keys = [key for key, _ in iter_frames(store)]
                start = time.perf_counter()
                with ThreadPoolExecutor(4) as pool:
                    images = list(pool.map(store.get, keys))
                fetch = len(keys) / (time.perf_counter() - start)
                raw = raw_throughput(model, images, args.batch_size, args.repeats)
                best = 0.0
                for repeat in range(args.repeats):
                    start = time.perf_counter()
                    summary = score_store(store, model, model_version=f"bench-{repeat}", batch_size=args.batch_size, overlays=0, progress=False)
                    best = max(best, summary.scored / (time.perf_counter() - start))
                rows.append((name, raw, best, fetch))
                print(f"{name}: raw {raw:.0f} img/s, scoring {best:.0f} img/s, ratio {best / raw:.2f}, GET alone {fetch:.0f}/s", flush=True)
            provider = model.provider
    finally:
        server.terminate()
        server.wait(timeout=30)
    report = "\n".join(
        [
            "# Scoring throughput",
            "",
            "Command (from the repository root):",
            "",
            "```",
            f".venv/bin/python benchmarks/scoring.py --count {args.count} --batch-size {args.batch_size} --repeats {args.repeats}"
            + (f" --out {args.out}" if args.out else ""),
            "```",
            "",
            f"{args.count} `mill` stream frames (64×64 PNG), `abn_cifar` on ONNX Runtime ({provider}), batch {args.batch_size}, "
            f"{os.cpu_count()} CPU cores; best of {args.repeats} runs, raw and scoring measured in the same run. *Raw*: "
            "`session.run` on frames already decoded and preprocessed. *Scoring*: `score_store` end to end — list, get, hash, "
            "decode, preprocess (4 reader threads overlapping inference), batched inference, priority signals, Parquet parts, "
            "embeddings, ledger entries, run report.",
            "",
            "| store | raw ONNX Runtime (img/s) | scoring pipeline (img/s) | scoring / raw | GET alone, 4 threads (objects/s) |",
            "|---|---|---|---|---|",
            *[f"| {name} | {raw:.0f} | {score:.0f} | {score / raw:.2f} | {fetch:.0f} |" for name, raw, score, fetch in rows],
            "",
        ]
    )
    return emit(report, args.out)


if __name__ == "__main__":
    sys.exit(main())
