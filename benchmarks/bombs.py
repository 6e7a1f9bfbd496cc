"""Peak memory of decompression bombs (and of real frames), before and after attnloop's header checks.

Every file is crafted byte by byte and is a real, decodable image. Each is decoded and
preprocessed for a 64 px model, as scoring and serving do, in a fresh child process, once alone
and once in two threads at the same time (two requests at once); the figure is the child's peak
resident memory (``VmHWM`` of the child itself: ``ru_maxrss`` would keep the forking parent's peak), which counts OpenCV's allocations that tracemalloc does not
see, minus the child's resident memory before the decode. *Before* is ``imaging.py`` as it was
at ``BEFORE`` (one pixel limit of 64 Mi px, first TIFF page only), *now* is the working tree's,
with ``Limits.for_card`` of the model.

    .venv/bin/python benchmarks/bombs.py --out docs/benchmarks/bombs.md
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from _common import cpu_name, emit
from bombfiles import jpeg_claiming, png_claiming, zero_png, zero_tiff

BEFORE = "92f5aaf168264f50bde837156b03654325172f3b"  # the last imaging.py with the old limits
ROOT = Path(__file__).resolve().parent.parent


def bomb_set() -> list[tuple[str, str, bytes]]:
    """(file name, what it is, bytes): the bombs first, then real frames that must still pass."""
    big_jpeg = cv2.imencode(".jpg", np.zeros((8000, 8000, 3), np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    return [
        ("png16-8000.png", "bomb: 16-bit RGB PNG, 8000×8000 px", zero_png(8000, 8000, depth=16, colour=2)),
        ("tiff-page2-20000.tif", "bomb: 2-page TIFF, page 1 8×8, page 2 20000×20000 px 8-bit", zero_tiff([(8, 8), (20000, 20000)])),
        ("tiff-40x2048-16bit.tif", "bomb: 40-page TIFF stack of 2048×2048 px 16-bit", zero_tiff([(2048, 2048)] * 40, bits=16)),
        ("jpeg-8000.jpg", "bomb: 8-bit RGB JPEG, 8000×8000 px", big_jpeg),
        ("png-claims-60000.png", "bomb: PNG header claiming 60000×60000 px RGB, no data", png_claiming(60000, 60000)),
        ("jpeg-claims-65000.jpg", "bomb: JPEG header claiming 65000×65000 px, no data", jpeg_claiming(65000, 65000)),
        ("mill-2448x2048.png", "frame: mill camera, 2448×2048 px 8-bit RGB PNG", zero_png(2448, 2048, colour=2)),
        ("microscope-4x2048-16bit.tif", "frame: microscope stack, 4 pages of 2048×2048 px 16-bit", zero_tiff([(2048, 2048)] * 4, bits=16)),
        ("largest-4096-16bit.png", "frame: the largest that passes, 4096×4096 px 16-bit RGB PNG", zero_png(4096, 4096, depth=16, colour=2)),
    ]


CHILD = r"""
import importlib.util, json, sys, threading, time
which, path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
if which == "now":
    from attnloop import imaging
    from attnloop.card import ModelCard
else:
    spec = importlib.util.spec_from_file_location("imaging_before", which)
    imaging = sys.modules["imaging_before"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(imaging)
    from attnloop.card import ModelCard
card = ModelCard("abn_cifar", ("a", "b"), (64, 64), 3, (0.5,) * 3, (0.25,) * 3, (8, 8))
limits = imaging.Limits.for_card(card) if which == "now" else imaging.Limits()
data = open(path, "rb").read()
rss = lambda: int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))  # this process's own peak (ru_maxrss keeps the forking parent's)
baseline, outcomes = rss(), [None] * threads
def work(i):
    try:
        image = imaging.decode(data, limits=limits, name=path.rsplit("/", 1)[-1])
        shape = "×".join(map(str, image.shape))
        imaging.preprocess(image, card)
        outcomes[i] = {"ok": True, "text": f"decoded {shape} {image.dtype}"}
    except imaging.ImageError as err:
        outcomes[i] = {"ok": False, "text": f"refused: {err.reason}", "message": str(err)}
started = time.perf_counter()
pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
for t in pool: t.start()
for t in pool: t.join()
print(json.dumps({"baseline_kb": baseline, "peak_kb": rss(), "seconds": time.perf_counter() - started, "outcome": outcomes[0]}))
"""


def measure(which: str, path: Path, threads: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, which, str(path), str(threads)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    if out.returncode != 0:
        return {"baseline_kb": 0, "peak_kb": 0, "seconds": 0, "outcome": {"ok": False, "text": f"child exited {out.returncode}: {out.stderr.strip().splitlines()[-1:]}"}}
    return json.loads(out.stdout)


def _mb(kb: int) -> str:
    return f"{kb / 1024:,.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the Markdown report here (default: print it)")
    args = parser.parse_args(argv)
    old = subprocess.run(["git", "show", f"{BEFORE}:platform/attnloop/imaging.py"], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    rows, messages, baselines = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "imaging_before.py"
        before.write_text(old)
        for name, what, data in bomb_set():
            path = Path(tmp) / name
            path.write_bytes(data)
            cells = [what, f"{len(data) / 1024:,.0f} KiB"]
            for which in (str(before), "now"):
                one, two = measure(which, path, 1), measure(which, path, 2)
                baselines.append(one["baseline_kb"])
                cells += [one["outcome"]["text"], _mb(one["peak_kb"] - one["baseline_kb"]), _mb(two["peak_kb"] - two["baseline_kb"]), f"{one['seconds']:.2f}"]
                if which == "now" and "message" in one["outcome"]:
                    messages.append(f"- `{one['outcome']['message']}`")
            rows.append("| " + " | ".join(cells) + " |")
            print(rows[-1], flush=True)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    low, high = _mb(min(baselines)), _mb(max(baselines))
    baseline = low if low == high else f"{low} to {high}"
    report = "\n".join([
        "# Decompression bombs: peak memory before and after the header checks",
        "",
        "Command (from the repository root):",
        "",
        "```",
        ".venv/bin/python benchmarks/bombs.py --out docs/benchmarks/bombs.md",
        "```",
        "",
        f"Measured {now} on {cpu_name()}, Python {platform.python_version()}, OpenCV {cv2.__version__}, numpy {np.__version__}.",
        "Each file is decoded and preprocessed for a 64 px, 3-channel model (decode → float → resize, as scoring",
        "and serving do) in a fresh child process: once alone, and once in two threads at the same time. A figure",
        "is the child's own peak resident memory (`VmHWM`) minus its resident memory just before the decode",
        f"({baseline} MB: Python, numpy, OpenCV and the file). *Before* is `imaging.py` at",
        f"`{BEFORE[:10]}` with its default limit (64 Mi px, first TIFF page only); *now* is `Limits.for_card(card)`:",
        "4096² px per page, 96 MiB decoded over all pages (width × height × channels × bytes per sample, read",
        "from every header), at most 64 pages, and large decodes waiting for room in a 256 MiB process-wide gate.",
        "Seconds are those of the decode alone, on a machine that ran other work at the same time: indicative only.",
        "",
        "| file | on disk | before | MB, alone | MB, two at once | s | now | MB, alone | MB, two at once | s |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "What *now* says for each file it refuses (the quarantine message; serving answers 413 with it):",
        "",
        *messages,
        "",
    ])
    return emit(report, args.out)


if __name__ == "__main__":
    sys.exit(main())
