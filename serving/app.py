"""The ONNX Runtime prediction service: class, probabilities, attention map and box, priority signals.

Run it from the repository root::

    python -m uvicorn serving.app:create_app --factory --host 127.0.0.1 --port 8080

It serves ``ATTNLOOP_SERVING_MODEL`` — a path to an ``.onnx`` file, ``models:/NAME@ALIAS`` or
``models:/NAME/VERSION`` — and by default ``models:/{ATTNLOOP_MODEL_NAME}@champion`` from the
configured MLflow registry, following the alias as it moves. Preprocessing comes from the model
card inside the ONNX file. This module never imports torch.

Routes: ``GET /health`` (ready: 503 until a model is loaded), ``GET /live`` (the process answers:
for liveness probes, which must not restart a server that is only waiting for a champion), ``GET /model``, ``POST /predict`` (image bytes, or JSON ``{"key": ...}``
naming an object in the store), ``POST /admin/reload``, ``GET /metrics`` (Prometheus; :mod:`serving.metrics`) and the Label Studio ML backend under ``/ls``.

Registry errors on ``/health``, ``/model`` and in the log carry no credentials
(:func:`attnloop.redact.redact`).

``/ls`` and ``/admin`` need the serving token ``ATTNLOOP_SERVING_TOKEN`` (a bearer token, or basic
auth with the token as password, which is what Label Studio sends); without one configured they
are off and answer 503 saying so (:mod:`serving.auth`). Keys are read from the store with the byte
limit, and only regular files inside it: a folder, a link, a FIFO or an over-long key is a 4xx
with a message, never a hang or a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from attnloop import imaging
from attnloop.config import Settings
from attnloop.imaging import ImageError, Limits
from attnloop.priority import frame_signals
from attnloop.proposals import attention_box
from attnloop.redact import redact
from attnloop.registry import champion_uri, file_version, parse_source
from attnloop.runtime import OnnxModel
from attnloop.storage import ObjectTooLarge, StoreUnavailable
from serving import labelstudio, metrics
from serving.auth import require_token
from serving.batching import MicroBatcher, Runner
from serving.metrics import RequestMetrics, ServingMetrics

log = logging.getLogger(__name__)

SOURCE_ENV = "ATTNLOOP_SERVING_MODEL"
IMAGE_TYPES = ("image/png", "image/jpeg", "image/tiff", "image/bmp", "image/webp", "application/octet-stream")
JSON_LIMIT = 1 << 20  # a JSON request body (an object key, Label Studio tasks)
INLINE_BYTES = 64 << 10  # smaller images are decoded on the event loop: a thread hop costs more than the decode


def _small(data: bytes) -> bool:
    """Whether to decode on the event loop: few bytes that also decode to little (64 KiB of PNG can
    hold a large frame, whose decode may wait in imaging's gate and must not block the loop)."""
    if len(data) > INLINE_BYTES:
        return False
    header = imaging.read_header(data)
    return header is not None and header.decoded_bytes <= imaging.LARGE_BYTES


# --- which model, and following its alias -------------------------------------------------------


@dataclass(frozen=True)
class Served:
    """A loaded model and where it came from; requests hold on to the one they started with."""

    model: OnnxModel
    version: str
    source: str
    loaded_at: float


class Reloader:
    """Loads the model named by ``source`` and, for ``models:/NAME@ALIAS``, follows the alias.

    :meth:`check_now` loads the version the alias points to when it moved and swaps the served
    reference in one assignment; requests already running keep the model they hold.
    """

    def __init__(self, source: str, *, registry_uri: str, device: str = "auto", threads: int | None = None) -> None:
        self.source, self.registry_uri, self.device, self.threads = source, registry_uri, device, threads
        parsed = parse_source(source)
        self.name, self.alias, self.pinned, self.path = parsed.name, parsed.alias, parsed.version, parsed.path
        self.current: Served | None = None
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._client = None

    @property
    def follows_alias(self) -> bool:
        return self.alias is not None

    def _registry(self):
        if self._client is None:
            from attnloop import registry

            self._client = registry.connect(self.registry_uri)
        return self._client

    def _load_file(self) -> Served:
        assert self.path is not None
        if not self.path.is_file():
            raise FileNotFoundError(f"model file {self.path} does not exist; set {SOURCE_ENV} to an .onnx file or models:/NAME@ALIAS")
        data = self.path.read_bytes()
        version = file_version(self.path, data)  # the same id scoring records
        return Served(OnnxModel(data, device=self.device, threads=self.threads), version, self.source, time.time())

    def _load_version(self, version: str) -> Served:
        from attnloop import registry

        with tempfile.TemporaryDirectory(prefix="attnloop-serving-") as tmp:  # the session holds the model; the file can go
            path = registry.download(self._registry(), self.name, version, tmp)
            model = OnnxModel(path, device=self.device, threads=self.threads)
        return Served(model, version, self.source, time.time())

    def check_now(self) -> bool:
        """Load the model if none is loaded or the alias moved; True when the served model changed.

        Registry errors are kept in :attr:`last_error` and the current model goes on serving.
        """
        with self._lock:
            if self.path is not None:
                if self.current is None:
                    self.current = self._load_file()
                    return True
                return False
            from attnloop import registry

            try:
                version = self.pinned or registry.alias_version(self._registry(), self.name, self.alias)
                if version is None:
                    self.last_error = f"{self.name} has no version with the alias {self.alias!r}"
                    log.warning("%s; still serving %s", self.last_error, self.current.version if self.current else "nothing")
                    return False
                if self.current is not None and self.current.version == version:
                    self.last_error = None
                    return False
                served = self._load_version(version)
            except Exception as err:  # keep serving what we have; report why we could not move
                # unauthenticated /health and /model show it: MLflow's texts carry the URI, password included
                self.last_error = redact(f"{self.source}: {type(err).__name__}: {err}")
                log.warning("model check failed: %s", self.last_error)
                return False
            previous, self.current, self.last_error = self.current, served, None
            log.info("serving %s version %s (was %s)", self.name, version, previous.version if previous else "nothing")
            return True

    async def follow(self, interval: float) -> None:
        """Check the alias every ``interval`` seconds, forever (a background task)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.check_now)
            except Exception:  # the follower must outlive any one failed check
                log.exception("model check failed")


# --- image headers: refuse huge images before decoding allocates them ---------------------------


def _image_error(err: ImageError) -> HTTPException:
    return HTTPException(413 if err.reason == "too_large" else 422, str(err))


def respond(outputs: dict[str, np.ndarray], served: Served, image_size: tuple[int, int]) -> dict[str, Any]:
    """One image's outputs (leading axis 1) → the JSON answer."""
    names = served.model.card.class_names
    p = outputs["probabilities"]
    top = int(p[0].argmax())
    attention = outputs["attention"][0, 0]
    box = attention_box(attention, image_size)
    return {
        "class": names[top],
        "confidence": float(p[0, top]),
        "probabilities": {name: float(v) for name, v in zip(names, p[0])},
        "attention": attention.tolist(),
        "attention_box": None if box is None else list(box),
        "image_size": list(image_size),
        "signals": {name: float(v[0]) for name, v in frame_signals(p, outputs["attention_probabilities"]).items()},
        "model_version": served.version,
    }


class Service:
    """What the routes share: the reloader, the batcher, the limits, the object store, where Label Studio is and the metrics."""

    def __init__(self, *, reloader: Reloader, runner: Runner, limits: Limits | None, settings: Settings, metrics: ServingMetrics) -> None:
        self.reloader, self.runner, self.settings, self.metrics = reloader, runner, settings, metrics
        self.limits, self._card_limits = limits or Limits(), limits is None  # byte limits hold before a model is known
        self.label_studio = settings.label_studio
        self._store = None

    def current(self) -> Served:
        served = self.reloader.current
        if served is None:
            why = self.reloader.last_error or "the model is still loading"
            raise HTTPException(503, f"no model is loaded yet ({why}); try again shortly")
        return served

    def store(self):
        if self._store is None:
            try:
                self._store = self.settings.store()
            except ValueError as err:
                raise HTTPException(503, f"the object store is not available: {err}; set ATTNLOOP_STORE") from None
        return self._store

    async def read_body(self, request: Request, limit: int, *, hint: str = "send a smaller image") -> bytes:
        """The body, refused with 413 as soon as it is known to exceed ``limit`` (header or bytes read)."""
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise HTTPException(400, f"Content-Length {declared!r} is not a byte count")
            if int(declared) > limit:
                raise HTTPException(413, f"the request body is {int(declared)} bytes; the limit is {limit} bytes — {hint}")
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise HTTPException(413, f"the request body exceeds the limit of {limit} bytes — {hint}")
            chunks.append(chunk)
        return b"".join(chunks)

    async def read_json(self, request: Request) -> dict[str, Any]:
        body = await self.read_body(request, JSON_LIMIT, hint="send fewer tasks per request")
        try:
            payload = json.loads(body)
        except ValueError as err:
            raise HTTPException(422, f"the body is not valid JSON ({err})") from None
        except RecursionError:
            raise HTTPException(422, "the JSON body is nested too deeply; send a flat object") from None
        if not isinstance(payload, dict):
            raise HTTPException(422, f"expected a JSON object, got {type(payload).__name__}")
        return payload

    async def fetch_key(self, key: str) -> bytes:
        """The object's bytes, at most the byte limit; every store error is a 4xx/503 with its message."""
        store = self.store()
        try:
            return await asyncio.to_thread(store.get, key, max_bytes=self.limits.max_bytes)
        except KeyError as err:
            reason = err.args[0] if err.args else f"{store.uri}/{key} does not exist"
            raise HTTPException(404, f"no object: {reason}; check the key (it is relative to the store's prefix)") from None
        except ObjectTooLarge as err:
            raise HTTPException(413, str(err)) from None
        except ValueError as err:  # KeyRefused: a malformed key, a link, not a regular file
            raise HTTPException(422, str(err)) from None
        except StoreUnavailable as err:
            raise HTTPException(503, str(err)) from None

    def limits_for(self, served: Served) -> Limits:
        """The limits given to the service, else those the served model's input size calls for."""
        return Limits.for_card(served.model.card, max_bytes=self.limits.max_bytes) if self._card_limits else self.limits

    def _prepare(self, data: bytes, served: Served, name: str) -> tuple[tuple[int, int], np.ndarray]:
        try:
            image = imaging.decode(data, limits=self.limits_for(served), name=name)
            return image.shape[:2], imaging.preprocess(image, served.model.card, name=name)
        except ImageError as err:
            self.metrics.observe_rejection(err.reason)
            raise _image_error(err) from None

    async def predict(self, load: Callable[[], Awaitable[tuple[bytes, str]]]) -> dict[str, Any]:
        """Fetch the bytes (and a name for messages), decode and preprocess them for the current model,
        run them (batched with other requests) and answer."""
        with self.runner.arrival() as arrival:
            data, name = await load()
            served = self.current()
            if _small(data):
                size, x = self._prepare(data, served, name)
            else:
                size, x = await asyncio.to_thread(self._prepare, data, served, name)
            outputs = await arrival.submit(served.model, x)
        answer = respond(outputs, served, size)
        self.metrics.observe_prediction(label=answer["class"], confidence=answer["confidence"])
        return answer


def create_app(
    *,
    model_source: str | None = None,
    settings: Settings | None = None,
    reload_interval: float = 10.0,
    max_batch: int = 16,
    max_wait_ms: float = 5.0,
    micro_batching: bool = True,
    limits: Limits | None = None,
    device: str = "auto",
) -> FastAPI:
    """The service, configured from ``settings`` (the environment's by default)."""
    if reload_interval <= 0:
        raise ValueError(f"reload_interval is in seconds and must be positive, got {reload_interval}")
    settings = settings or Settings.from_env()
    source = model_source or settings.serving_model or champion_uri(settings.model_name)
    reloader = Reloader(source, registry_uri=settings.registry_uri, device=device, threads=settings.threads)
    runner: Runner = MicroBatcher(max_batch=max_batch, max_wait_ms=max_wait_ms) if micro_batching else Runner()

    def served_version() -> str | None:
        served = reloader.current
        return None if served is None else served.version

    telemetry = ServingMetrics(model_version=served_version)
    service = Service(reloader=reloader, runner=runner, limits=limits, settings=settings, metrics=telemetry)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runner.start()
        try:
            await asyncio.to_thread(reloader.check_now)  # a missing file fails here; a registry without a champion is retried
        except Exception:
            await runner.stop()
            raise
        follower = asyncio.create_task(reloader.follow(reload_interval)) if reloader.follows_alias else None
        try:
            yield
        finally:
            if follower is not None:
                follower.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follower
            await runner.stop()

    app = FastAPI(title="attnloop serving", lifespan=lifespan)
    app.state.service, app.state.reloader, app.state.metrics = service, reloader, telemetry
    app.add_middleware(RequestMetrics, metrics=telemetry)

    @app.get("/health")
    async def health() -> JSONResponse:
        served = reloader.current
        if served is None:
            return JSONResponse({"status": "unavailable", "detail": reloader.last_error or "the model is still loading"}, 503)
        return JSONResponse({"status": "ok", "model_version": served.version})

    @app.get("/live")
    async def live() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/model")
    async def model() -> dict[str, Any]:
        served = service.current()
        return {
            "version": served.version,
            "source": redact(served.source),
            "card": served.model.card.to_dict(),
            "provider": served.model.provider,
            "loaded_at": served.loaded_at,
            "last_error": reloader.last_error,
            "batching": {"micro_batching": micro_batching, "max_batch": max_batch, "max_wait_ms": max_wait_ms, **runner.stats.as_dict()},
        }

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        media = (request.headers.get("content-type") or "application/octet-stream").split(";")[0].strip().lower()
        if media == "application/json":

            async def load() -> tuple[bytes, str]:
                key = (await service.read_json(request)).get("key")
                if not isinstance(key, str) or not key:
                    raise HTTPException(422, 'expected a JSON body {"key": "<object key in the store>"}')
                return await service.fetch_key(key), key

        elif media in IMAGE_TYPES:

            async def load() -> tuple[bytes, str]:
                return await service.read_body(request, service.limits.max_bytes), "the uploaded image"

        else:
            raise HTTPException(
                415,
                f"Content-Type {media!r} is not accepted; send the image bytes as {', '.join(IMAGE_TYPES)}, "
                'or JSON {"key": "<object key>"} as application/json',
            )
        return JSONResponse(await service.predict(load))

    @app.post("/admin/reload", dependencies=[Depends(require_token)])
    async def reload() -> dict[str, Any]:
        """Check the registry now instead of waiting for the next interval."""
        changed = await asyncio.to_thread(reloader.check_now)
        served = reloader.current
        return {"changed": changed, "model_version": served.version if served else None, "last_error": reloader.last_error}

    app.include_router(labelstudio.router)
    app.include_router(metrics.router)
    return app
