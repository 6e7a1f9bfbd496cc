"""What the benchmark scripts share: writing the report, a free loopback port."""

from __future__ import annotations

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
