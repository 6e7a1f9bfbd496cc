"""One typed settings object, read from the environment when a command starts (never at import)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    home: Path  # where embedded defaults keep their state (runs, local store, demo data)
    threads: int | None  # torch / ONNX Runtime intra-op threads; None lets them choose
    mlflow_tracking_uri: str | None = None  # benchmarks and runs are logged there when set

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        threads = env.get("ATTNLOOP_THREADS")
        if threads is not None and not threads.isdigit():
            raise ValueError(f"ATTNLOOP_THREADS must be a positive integer, got {threads!r}")
        return cls(
            home=Path(env.get("ATTNLOOP_HOME", ".attnloop")),
            threads=int(threads) if threads else None,
            mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI") or None,
        )
