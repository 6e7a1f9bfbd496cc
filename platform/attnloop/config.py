"""One typed settings object, read from the environment when a command starts (never at import).

:class:`Settings` holds every setting attnloop reads: where its state lives (home, store,
MLflow), the gate's policy, Label Studio's address, serving's model and token, the Dask
scheduler. :func:`current` is what a step uses: the settings an application put in force with
:func:`using` (the demo runs the flows on its own folder that way), else those of the
environment (a flow run started by a Prefect worker, a command). Which variable sets what:
docs/architecture.md.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from attnloop.gate import Policy
from attnloop.monitoring.thresholds import Thresholds

DEFAULT_PROJECT = "attnloop box correction"  # the Label Studio project's title
DASK_ADDRESS_ENV = "ATTNLOOP_DASK_ADDRESS"  # the Dask scheduler score-backlog sends its partitions to

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
class LabelStudioSettings:
    """Where Label Studio is: ``ATTNLOOP_LABEL_STUDIO_URL``, ``_TOKEN`` (a legacy API token),
    ``_PROJECT`` (the project title) and ``_DOCUMENT_ROOT`` (the server's
    ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``: where it serves a local store from; unset: the
    store folder itself, the root a Label Studio started by attnloop gets)."""

    url: str | None = None
    token: str | None = field(default=None, repr=False)
    project: str = DEFAULT_PROJECT
    document_root: str | None = None

    def client(self):
        """A ``label_studio_sdk.LabelStudio`` client for these settings, whose failures to reach the
        server or to authenticate are one-line errors (:func:`attnloop.labelstudio.client.connect`)."""
        from attnloop.labelstudio.client import connect

        return connect(self)


@dataclass(frozen=True)
class Settings:
    home: Path  # where embedded defaults keep their state (runs, local store, MLflow file, demo data)
    threads: int | None  # PyTorch / ONNX Runtime threads (ATTNLOOP_THREADS); None: the CPUs this process may use (attnloop.threads)
    mlflow_tracking_uri: str | None = field(default=None, repr=False)  # training and benchmark runs are logged there when set (it may hold a password)
    model_name: str = "attnloop-abn"  # the registered model
    gate: Policy = field(default_factory=Policy)
    monitor: Thresholds = field(default_factory=Thresholds)  # when a monitor run alerts (ATTNLOOP_MONITOR_*)
    monitor_url: str | None = None  # the monitoring page's address, for the links in alerts (ATTNLOOP_MONITOR_URL)
    store_uri: str | None = None  # s3://bucket/prefix or file:///path; default: a folder under home
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = field(default=None, repr=False)
    serving_token: str | None = field(default=None, repr=False)  # the token /ls and /admin require (ATTNLOOP_SERVING_TOKEN)
    serving_model: str | None = None  # what serving serves (ATTNLOOP_SERVING_MODEL); default: the registry's champion
    dask_address: str | None = None  # an existing Dask scheduler for score-backlog (ATTNLOOP_DASK_ADDRESS); default: a local cluster
    label_studio: LabelStudioSettings = field(default_factory=LabelStudioSettings)

    def store(self, uri: str | None = None, *, create: bool = False):
        """The object store at ``uri``, else the configured one (a folder under ``home`` by default).

        Only what brings frames in creates a store (``create``); every other step finds a missing
        one an error, so a typo in a store's path never reads as an empty store."""
        from attnloop.storage import open_store

        uri = uri or self.store_uri or (self.home / "store").resolve().as_uri()
        store = open_store(uri, endpoint=self.s3_endpoint, access_key=self.s3_access_key, secret_key=self.s3_secret_key, create=create)
        if not create:
            store.check()  # a bucket that is not there, or an endpoint that does not answer, fails here, before any work
        return store

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
        if threads is not None and (not threads.isdigit() or int(threads) < 1):
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
            monitor=Thresholds.from_env(env),
            monitor_url=(env.get("ATTNLOOP_MONITOR_URL") or "").rstrip("/") or None,
            store_uri=env.get("ATTNLOOP_STORE") or None,
            s3_endpoint=env.get("ATTNLOOP_S3_ENDPOINT") or env.get("MLFLOW_S3_ENDPOINT_URL") or None,
            s3_access_key=env.get("AWS_ACCESS_KEY_ID") or None,
            s3_secret_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            serving_token=env.get("ATTNLOOP_SERVING_TOKEN") or None,
            serving_model=env.get("ATTNLOOP_SERVING_MODEL") or None,
            dask_address=env.get(DASK_ADDRESS_ENV) or None,
            label_studio=LabelStudioSettings(
                url=(env.get("ATTNLOOP_LABEL_STUDIO_URL") or "").rstrip("/") or None,
                token=env.get("ATTNLOOP_LABEL_STUDIO_TOKEN") or None,
                project=env.get("ATTNLOOP_LABEL_STUDIO_PROJECT") or DEFAULT_PROJECT,
                document_root=env.get("ATTNLOOP_LABEL_STUDIO_DOCUMENT_ROOT") or None,
            ),
        )


_ACTIVE: ContextVar[Settings | None] = ContextVar("attnloop_settings", default=None)


def current() -> Settings:
    """The settings in force: those :func:`using` put in force here, else the environment's (read now)."""
    return _ACTIVE.get() or Settings.from_env()


@contextmanager
def using(settings: Settings) -> Iterator[Settings]:
    """Put ``settings`` in force for the steps run inside (threads and tasks they start included)."""
    token = _ACTIVE.set(settings)
    try:
        yield settings
    finally:
        _ACTIVE.reset(token)
