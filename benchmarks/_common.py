"""What the benchmark scripts share: writing the report, the CPU's name, a free loopback port, and
runs in separate processes that a cut-short benchmark resumes."""

from __future__ import annotations

import json
import multiprocessing
import platform
import socket
from pathlib import Path
from typing import Callable, Hashable


def emit(report: str, out: Path | None) -> int:
    """Write the report to ``out`` (and say so), or print it; the script's exit status."""
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report)
        print(f"wrote {out}")
    else:
        print(report)
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, for the machine line of a report."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run_resumable(
    tasks: list[dict], run_one: Callable[[dict], dict], *, key: Callable[[dict], Hashable], runs: Path, jobs: int,
    describe: Callable[[dict], str],
) -> list[dict]:
    """Each task's result row, in the tasks' order: ``run_one`` in ``jobs`` spawned processes (a fresh
    one per task), each row appended to the JSONL ``runs`` as it comes and printed with ``describe``;
    tasks whose row ``runs`` already holds are not run again, so a benchmark cut short resumes."""
    runs.parent.mkdir(parents=True, exist_ok=True)
    done = {}
    if runs.exists():
        for line in runs.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done[key(row)] = row
    todo = [t for t in tasks if key(t) not in done]
    print(f"{len(tasks)} runs, {len(tasks) - len(todo)} already in {runs}", flush=True)
    context = multiprocessing.get_context("spawn")
    with context.Pool(max(1, jobs), maxtasksperchild=1) as pool, runs.open("a") as sink:
        for row in pool.imap_unordered(run_one, todo):
            sink.write(json.dumps(row) + "\n")
            sink.flush()
            done[key(row)] = row
            print(describe(row), flush=True)
    return [done[key(t)] for t in tasks]
