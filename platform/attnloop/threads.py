"""How many threads attnloop's engines use, and how idle threads wait: one knob, ``ATTNLOOP_THREADS``.

On a machine shared with other work, the engines' defaults collapse: PyTorch's OpenMP threads and
ONNX Runtime's pool busy-wait between parallel regions, so a thread whose core another process
holds keeps every other thread spinning at the next barrier (one training epoch took 6.7× longer
with the default threads than with one, docs/benchmarks/threads.md). attnloop therefore

- counts the CPUs this process may run on (its affinity mask and its cgroup's CPU quota), not the
  machine's cores, for PyTorch's intra-op threads, ONNX Runtime's and DuckDB's;
- lets idle threads sleep: ``OMP_WAIT_POLICY=PASSIVE`` for OpenMP, which reads it once when PyTorch
  loads it, and ONNX Runtime's ``allow_spinning`` off;
- takes ``ATTNLOOP_THREADS`` (a positive integer) over the count where it is set; variables the
  environment already sets (``OMP_WAIT_POLICY``, ``OMP_NUM_THREADS``) are left alone.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

WAIT_POLICY = "PASSIVE"


def usable_cpus() -> int:
    """The CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (containers)."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(count, quota) if quota else count)


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The cgroup's CPU quota in whole CPUs (rounded up), or None without one."""
    try:
        fields = (root / "cpu.max").read_text().split()  # cgroup v2: "<quota|max> <period>"
        if fields and fields[0] != "max":
            return math.ceil(int(fields[0]) / int(fields[1]))
    except (OSError, ValueError, IndexError, ZeroDivisionError):
        pass
    try:  # cgroup v1
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return math.ceil(quota / period)
    except (OSError, ValueError):
        pass
    return None


def resolve(threads: int | None) -> int:
    """The thread count an engine uses: ``threads`` (the setting, ``ATTNLOOP_THREADS``) when given,
    else ``OMP_NUM_THREADS`` where the environment sets it, else :func:`usable_cpus`."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads}")
        return threads
    preset = os.environ.get("OMP_NUM_THREADS", "")
    return int(preset) if preset.isdigit() and int(preset) > 0 else usable_cpus()


def prepare_environment(environ: dict[str, str] | None = None) -> None:
    """Let OpenMP's idle threads sleep instead of spinning, unless the environment says otherwise.

    OpenMP reads the policy once, when PyTorch first loads it, so this must run before ``import
    torch``: the package's ``__init__`` calls it (every path to the torch layer passes there)."""
    environ = os.environ if environ is None else environ
    environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)


def onnx_options(options, threads: int | None) -> None:
    """ONNX Runtime session options: :func:`resolve` (``threads``) intra-op threads that sleep when idle."""
    options.intra_op_num_threads = resolve(threads)
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
