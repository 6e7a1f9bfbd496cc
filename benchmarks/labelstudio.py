"""Label Studio round trip rates: push, simulated annotation and harvest of ``--count`` tasks.

Label Studio 1.23 runs as the tests start it (``tests/labelstudio_server.py``: its own venv
``.venv-ls``, SQLite, a fresh data folder); the store is moto's S3 server in a separate process
(``.venv/bin/moto_server``), reached over HTTP. Frames: the ``mill`` stream split written with
``put_frames``; candidates carry a synthetic attention map around the ground-truth box, so every
task gets a box proposal. Measured, each once, on a fresh project:

* *push*: ``push`` of every candidate (task data with presigned URLs, prediction with class and
  box, import in batches), for two batch sizes;
* *re-push*: the same candidates again (all pages listed, every key found, nothing created);
* *annotate*: ``simulate_annotator`` without noise (one ``annotations.create`` per task);
* *harvest*: ``harvest`` of all completed tasks into version 1 of the set, then a harvest with
  nothing new (the cost of the scan alone).

    .venv/bin/python benchmarks/labelstudio.py --count 1000 --out docs/benchmarks/labelstudio.md
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from labelstudio_server import new_server  # noqa: E402
from services import S3_KEY, S3_SECRET, free_port, make_bucket, wait_for  # noqa: E402

from attnloop.labelstudio import Candidate, bootstrap, harvest, push, put_frames, simulate_annotator  # noqa: E402
from attnloop.storage import open_store  # noqa: E402

CLASSES_FAMILY = "mill"
MODEL = "bench-1"


def candidates_for(truth, store, *, seed: int) -> list[Candidate]:
    """Scoring-like candidates: attention 8×8 with a blob over the first ground-truth box."""
    from attnloop.imaging import decode

    from attnloop.scoring import content_hash

    rng = np.random.default_rng(seed)
    out = []
    for key, record in truth.items():
        data = store.get(key)
        height, width = decode(data, name=key).shape[:2]
        attention = rng.uniform(0, 0.1, size=(8, 8)).astype(np.float32)
        if record.boxes:
            x0, y0, x1, y1 = record.boxes[0]
            attention[int(y0 * 8 // height) : int(-(-y1 * 8 // height)), int(x0 * 8 // width) : int(-(-x1 * 8 // width))] = 1.0
        out.append(
            Candidate(key=key, hash=content_hash(data), width=width, height=height, predicted=record.label,
                      priority=float(rng.uniform()), confidence=float(rng.uniform(0.3, 1.0)), attention=attention)
        )
    return out


def timed(call):
    start = time.perf_counter()
    value = call()
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--batch-sizes", default="100,500")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    command = " ".join(["python", "benchmarks/labelstudio.py", *sys.argv[1:]]).replace("python", ".venv/bin/python", 1)

    with tempfile.TemporaryDirectory(prefix="attnloop-ls-bench-") as tmp:
        tmp = Path(tmp)
        port = free_port()
        moto_log = (tmp / "moto.log").open("w")
        moto = subprocess.Popen(
            [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
            stdout=moto_log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        server = new_server(tmp / "label-studio")
        try:
            endpoint = f"http://127.0.0.1:{port}"
            wait_for(f"{endpoint}/moto-api/", timeout=60, process=moto, log=tmp / "moto.log")
            make_bucket(endpoint, "bench")
            os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
            store = open_store("s3://bench/run", endpoint=endpoint, access_key=S3_KEY, secret_key=S3_SECRET)
            _, start_s = timed(server.start)
            ls = _client(server)
            truth, put_s = timed(lambda: put_frames(store, CLASSES_FAMILY, count=args.count, seed=0))
            candidates = candidates_for(truth, store, seed=0)
            from attnloop.datasets import FAMILIES

            classes = list(FAMILIES[CLASSES_FAMILY].classes)
            rows = []
            first_project = None
            for batch_size in batch_sizes:
                project = bootstrap(ls, title=f"bench batch {batch_size}", classes=classes)
                first_project = first_project or project
                result, push_s = timed(lambda: push(ls, project, candidates, store=store, model_version=MODEL, batch_size=batch_size))
                assert result.created == args.count, result
                again, repush_s = timed(lambda: push(ls, project, candidates, store=store, model_version=MODEL, batch_size=batch_size))
                assert again.created == 0 and again.skipped_existing == args.count, again
                rows.append((f"push (batch {batch_size})", args.count, push_s))
                rows.append((f"re-push, all {args.count} already queued (batch {batch_size})", args.count, repush_s))
            counts, annotate_s = timed(lambda: simulate_annotator(ls, first_project, truth))
            assert counts["annotated"] == args.count, counts
            harvested, harvest_s = timed(lambda: harvest(ls, first_project, store=store, classes=classes))
            assert harvested.version == 1 and harvested.added + len([p for p in harvested.problems if p.reason == "no_box"]) == args.count, harvested
            nothing, rescan_s = timed(lambda: harvest(ls, first_project, store=store, classes=classes))
            assert not nothing.written
            rows.append(("simulated annotator (annotations.create, one per task)", args.count, annotate_s))
            rows.append(("harvest into version 1", args.count, harvest_s))
            rows.append(("harvest with nothing new (scan only)", args.count, rescan_s))
        finally:
            server.stop()
            if moto.poll() is None:
                moto.terminate()
                moto.wait(timeout=20)
            moto_log.close()

    cores = os.cpu_count()
    load = os.getloadavg()[0]
    lines = [
        "# Label Studio push and harvest rates",
        "",
        "Command (from the repository root):",
        "",
        "```",
        command,
        "```",
        "",
        f"Label Studio 1.23 (`label-studio start`, Django development server, SQLite) and moto's S3 server, both local "
        f"processes on loopback; {args.count} `mill` stream frames ({candidates[0].width}×{candidates[0].height} PNG); "
        f"{cores} CPU cores (load average {load:.1f} at the end, shared with other jobs). Each step once, on a fresh project; "
        f"Label Studio started in {start_s:.0f} s, the frames took {put_s:.1f} s to write.",
        "",
        "| step | tasks | seconds | tasks/s |",
        "|---|---|---|---|",
        *(f"| {name} | {n} | {s:.1f} | {n / s:.0f} |" for name, n, s in rows),
        "",
        "*push* lists the project's tasks (all pages), presigns the image and overlay URLs, builds the prediction "
        "(class and attention box) and imports the tasks with their predictions in batches. *harvest* lists the "
        "completed tasks with their annotations, converts every box, writes the JSONL set and its metadata to the "
        "store. The simulated annotator is bound by Label Studio's per-annotation request, as a browser is.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


def _client(server):
    from label_studio_sdk import LabelStudio

    return LabelStudio(base_url=server.url, api_key=server.token)


if __name__ == "__main__":
    main()
