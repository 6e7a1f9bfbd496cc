"""Processes attnloop starts and may have to end later, from another run: each is known by its pid
and its kernel start time, so a pid the system has since given to another process is never touched."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def start_time(pid: int) -> float | None:
    """Field 22 of /proc/PID/stat, or None when no such process runs (an exited one not yet reaped included)."""
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child that exited
    except ChildProcessError:
        pass
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else float(fields[19])


def running(pid: int, started: float) -> bool:
    return start_time(pid) == started


def end_group(pid: int, started: float, *, timeout: float = 10.0) -> bool:
    """SIGTERM to the process group ``pid`` leads (a process started in its own session), SIGKILL if
    it lingers past ``timeout`` seconds; only while ``pid`` still has start time ``started``.
    Returns whether it was running."""
    if not running(pid, started):
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while running(pid, started) and time.monotonic() < deadline:
        time.sleep(0.2)
    if running(pid, started):
        os.killpg(pid, signal.SIGKILL)
    return True
