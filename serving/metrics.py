"""Prometheus metrics of the serving service, exposed at ``GET /metrics`` without a token, like ``/health``.

Each app counts into its own :class:`~prometheus_client.CollectorRegistry`, so several apps in one
process (the tests) never share or collide. What is exported:

- ``attnloop_requests_total{endpoint, method, status}`` and ``attnloop_request_duration_seconds{endpoint}``
  (a histogram, from the first byte read to the last byte sent): every HTTP request except the
  scrapes of ``/metrics`` itself, which would otherwise be most of an idle service's traffic
  (Prometheus records its own scrapes as ``up`` and ``scrape_duration_seconds``). ``endpoint`` is
  the route template (``/predict``, ``/ls/predict``), ``unmatched`` for a path no route serves, and
  an unknown method is ``other``: no client can grow the label sets.
- ``attnloop_model_info{version}``: the served model, read from the reloader at each scrape, so a
  move of the alias or ``/admin/reload`` shows at the next one.
- ``attnloop_predictions_total{class}`` and ``attnloop_prediction_confidence`` (a histogram over
  [0, 1]): every answered prediction, from ``/predict`` and Label Studio's ``/ls/predict`` alike.
- ``attnloop_rejected_images_total{reason}``: images the decoder refused, by
  :data:`attnloop.imaging.REASONS`; other refusals (a body over the byte limit, a missing key)
  show in ``attnloop_requests_total`` by their status.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from attnloop.imaging import REASONS
from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import InfoMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# an image through ONNX Runtime takes milliseconds on a GPU, up to seconds for a large frame on a busy CPU
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# finer near 1, where a trained model's confidences gather; 1/k is the floor for k classes
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 1.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # the endpoint of a request no route serves (404)
UNCOUNTED = frozenset({"/metrics"})


class _ModelInfo(Collector):
    """``attnloop_model_info{version}`` of the model served at scrape time (no sample before one is loaded)."""

    def __init__(self, version: Callable[[], str | None]) -> None:
        self._version = version

    def collect(self) -> Iterator[Metric]:
        family = InfoMetricFamily("attnloop_model", "The model the service answers with.", labels=["version"])
        version = self._version()
        if version is not None:
            family.add_metric([version], {})
        yield family


class ServingMetrics:
    """The service's counters and histograms, in a registry of their own; ``model_version`` says what is served now."""

    def __init__(self, *, model_version: Callable[[], str | None]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "attnloop_requests", "HTTP requests by route template, method and status code.",
            ["endpoint", "method", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "attnloop_request_duration_seconds", "Time to answer an HTTP request, by route template.",
            ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.predictions = Counter("attnloop_predictions", "Answered predictions by predicted class.", ["class"], registry=self.registry)
        self.confidence = Histogram(
            "attnloop_prediction_confidence", "Probability of the predicted class.", buckets=CONFIDENCE_BUCKETS, registry=self.registry
        )
        self.rejected = Counter("attnloop_rejected_images", "Images the decoder refused, by reason.", ["reason"], registry=self.registry)
        for reason in REASONS:  # every reason reads 0 from the start, so a dashboard's rate shows no gap
            self.rejected.labels(reason)
        self.registry.register(_ModelInfo(model_version))

    def observe_request(self, *, endpoint: str, method: str, status: int, seconds: float) -> None:
        method = method if method in METHODS else "other"
        self.requests.labels(endpoint, method, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def observe_prediction(self, *, label: str, confidence: float) -> None:
        self.predictions.labels(label).inc()
        self.confidence.observe(confidence)

    def observe_rejection(self, reason: str) -> None:
        self.rejected.labels(reason).inc()

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The registry in the format the ``Accept`` header asks for (OpenMetrics or the text format) and its content type."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type


class RequestMetrics:
    """ASGI middleware: counts and times every HTTP request by its route template, method and status."""

    def __init__(self, app: ASGIApp, *, metrics: ServingMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500  # what the server answers when the app raises

        async def noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        finally:
            route = scope.get("route")  # set on this scope by the router once a route matched
            endpoint = getattr(route, "path", None) or UNMATCHED
            if endpoint not in UNCOUNTED:
                self.metrics.observe_request(endpoint=endpoint, method=scope["method"], status=status, seconds=time.perf_counter() - start)


router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """The app's metrics for Prometheus; no token, like ``/health``."""
    body, content_type = request.app.state.metrics.exposition(request.headers.get("accept"))
    return Response(body, headers={"content-type": content_type})
