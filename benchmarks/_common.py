"""What the benchmark scripts share: writing the report, the CPU's name, a free loopback port."""

from __future__ import annotations

import platform
import socket
from pathlib import Path


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
