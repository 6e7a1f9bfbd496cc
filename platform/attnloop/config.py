"""One typed settings object, read from the environment when a command starts (never at import)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from attnloop.gate import Policy

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def _float(env: dict[str, str], key: str, default: float) -> float:
    value = env.get(key)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{key} must be a number, got {value!r}") from None


def _flag(env: dict[str, str], key: str) -> bool:
    value = env.get(key, "").strip().lower()
    if value not in _TRUE + _FALSE:
        raise ValueError(f"{key} must be true or false, got {value!r}")
    return value in _TRUE


@dataclass(frozen=True)
class Settings:
    home: Path  # where embedded defaults keep their state (runs, local store, MLflow file, demo data)
    threads: int | None  # torch / ONNX Runtime intra-op threads; None lets them choose
    mlflow_tracking_uri: str | None = None  # training and benchmark runs are logged there when set
    model_name: str = "attnloop-abn"  # the registered model
    gate: Policy = field(default_factory=Policy)
    store_uri: str | None = None  # s3://bucket/prefix or file:///path; default: a folder under home
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    serving_token: str | None = field(default=None, repr=False)  # the token /ls and /admin require (ATTNLOOP_SERVING_TOKEN)

    def store(self, uri: str | None = None, *, create: bool = True):
        """The object store at ``uri``, else the configured one (a folder under ``home`` by default)."""
        from attnloop.storage import open_store

        uri = uri or self.store_uri or (self.home / "store").resolve().as_uri()
        return open_store(uri, endpoint=self.s3_endpoint, access_key=self.s3_access_key, secret_key=self.s3_secret_key, create=create)

    @property
    def registry_uri(self) -> str:
        """The MLflow server or store the registry uses: the configured one, else a SQLite file under ``home``."""
        return self.mlflow_tracking_uri or f"sqlite:///{(self.home / 'mlflow.db').resolve()}"

    @property
    def artifact_root(self) -> Path | None:
        """Where an embedded store keeps artifacts (a server decides for itself)."""
        return None if self.registry_uri.startswith(("http://", "https://")) else self.home / "mlartifacts"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        threads = env.get("ATTNLOOP_THREADS")
        if threads is not None and not threads.isdigit():
            raise ValueError(f"ATTNLOOP_THREADS must be a positive integer, got {threads!r}")
        defaults = Policy()
        gate = Policy(
            min_gain=_float(env, "ATTNLOOP_GATE_MIN_GAIN", defaults.min_gain),
            attention_tolerance=_float(env, "ATTNLOOP_GATE_ATTENTION_TOLERANCE", defaults.attention_tolerance),
            max_class_drop=_float(env, "ATTNLOOP_GATE_MAX_CLASS_DROP", defaults.max_class_drop),
            min_accuracy=_float(env, "ATTNLOOP_GATE_MIN_ACCURACY", defaults.min_accuracy),
            approval=_flag(env, "ATTNLOOP_GATE_APPROVAL"),
        )
        return cls(
            home=Path(env.get("ATTNLOOP_HOME", ".attnloop")),
            threads=int(threads) if threads else None,
            mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI") or None,
            model_name=env.get("ATTNLOOP_MODEL_NAME") or "attnloop-abn",
            gate=gate,
            store_uri=env.get("ATTNLOOP_STORE") or None,
            s3_endpoint=env.get("ATTNLOOP_S3_ENDPOINT") or env.get("MLFLOW_S3_ENDPOINT_URL") or None,
            s3_access_key=env.get("AWS_ACCESS_KEY_ID") or None,
            s3_secret_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            serving_token=env.get("ATTNLOOP_SERVING_TOKEN") or None,
        )
