"""The Label Studio ML-backend protocol, mounted under ``/ls``.

Label Studio calls ``{backend_url}/health``, ``/setup`` and ``/predict`` (label-studio-ml-backend's
``label_studio_ml/api.py``); a prediction is the class as a ``choices`` result and the attention box
as a ``rectanglelabels`` result in percent of the image, for the annotator to correct — the same
pre-annotation ``attnloop.labelstudio.push`` writes. The tag names come from the project's labeling
config when it is sent (those of ``labelstudio_templates/`` preferred), else ``class``,
``evidence`` and ``image``.

Task images are read only from where attnloop put them: the store's objects (``data.key``, the
store's ``file://``, ``s3://`` and presigned URLs, Label Studio local-files URLs
``/data/local-files/?d=...`` that map into the store) and URLs on the Label Studio host named by
``ATTNLOOP_LABEL_STUDIO_URL`` (fetched with its token, redirects checked again). A request naming
any other URL (a host file, another server, a loopback service) is refused whole with 422, before
anything is read. Every route here needs the serving token (:mod:`serving.auth`).
"""

from __future__ import annotations

import asyncio
import logging
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

from fastapi import APIRouter, Depends, HTTPException, Request

from attnloop.config import LabelStudioSettings
from attnloop.labelstudio.results import CLASS, EVIDENCE, IMAGE, choices_result, rectangle_result
from attnloop.storage import LocalStore, Store
from serving.auth import require_token

log = logging.getLogger(__name__)

MODEL_CLASS = "attnloop"
FETCH_TIMEOUT = 30.0


@dataclass(frozen=True)
class Tags:
    """Names of the labeling config's tags that predictions refer to."""

    choices: str | None = CLASS
    rectangles: str | None = EVIDENCE
    image: str = IMAGE
    image_field: str = IMAGE  # the task data field the <Image> tag shows


def _pick(elements: list[ET.Element], preferred: str) -> ET.Element | None:
    """The element named ``preferred`` if there is one, else the first."""
    return next((e for e in elements if e.get("name") == preferred), elements[0] if elements else None)


def tags(label_config: str | None) -> Tags:
    """Read the tag names from a labeling config; the defaults when none is given."""
    if not label_config:
        return Tags()
    try:
        root = ET.fromstring(label_config)
    except ET.ParseError as err:
        raise HTTPException(422, f"the labeling config is not valid XML ({err}); send the project's label_config as Label Studio stores it") from None
    image = _pick([t for t in root.iter("Image") if t.get("name")], IMAGE)
    if image is None:
        raise HTTPException(422, 'the labeling config has no <Image name="..." value="$..."/> tag; attnloop predicts on images')
    name = image.get("name")
    choices = _pick([t for t in root.iter("Choices") if t.get("toName") == name], CLASS)
    rectangles = _pick([t for t in root.iter("RectangleLabels") if t.get("toName") == name], EVIDENCE)
    if choices is None and rectangles is None:
        raise HTTPException(
            422,
            f"the labeling config has neither <Choices> nor <RectangleLabels> with toName=\"{image.get('name')}\"; "
            f'add <Choices name="class" toName="{image.get("name")}"> for the class and '
            f'<RectangleLabels name="evidence" toName="{image.get("name")}"> for the evidence box',
        )
    return Tags(
        choices=None if choices is None else choices.get("name"),
        rectangles=None if rectangles is None else rectangles.get("name"),
        image=image.get("name"),
        image_field=(image.get("value") or "$image").lstrip("$"),
    )


def to_result(prediction: dict[str, Any], names: Tags) -> dict[str, Any]:
    """One task's prediction in Label Studio's format; ``score`` is the confidence."""
    cls = prediction["class"]
    height, width = prediction["image_size"]
    result: list[dict[str, Any]] = []
    if names.choices:
        result.append(choices_result([cls], from_name=names.choices, to_name=names.image))
    if names.rectangles and prediction["attention_box"] is not None:
        result.append(rectangle_result(prediction["attention_box"], cls, width, height, from_name=names.rectangles, to_name=names.image))
    return {"model_version": prediction["model_version"], "score": prediction["confidence"], "result": result}


def _short(text: str, limit: int = 120) -> str:
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}… ({len(text)} characters)"


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL, for comparing hosts; None for anything else."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80)


@dataclass(frozen=True)
class Sources:
    """Where task images may come from: the store (None when none is configured) and Label Studio."""

    store: Store | None
    label_studio: LabelStudioSettings

    def allowed(self) -> str:
        store = (
            "no store (set ATTNLOOP_STORE)"
            if self.store is None
            else f"objects of the store {self.store.uri} (data.key, its {'file://' if isinstance(self.store, LocalStore) else 's3:// and presigned'} "
            "URLs, Label Studio's /data/local-files/?d=... inside it)"
        )
        host = (
            f"URLs on Label Studio at {self.label_studio.url} (ATTNLOOP_LABEL_STUDIO_URL)"
            if self.label_studio.url
            else "no other host (set ATTNLOOP_LABEL_STUDIO_URL to read images from Label Studio)"
        )
        return f"/ls/predict reads only {store} and {host}"

    def refuse(self, url: str, task_id: Any) -> HTTPException:
        return HTTPException(422, f"task {task_id}: image URL {_short(url)} is refused: {self.allowed()}")

    def _local_file(self, d: str) -> str | None:
        """The store key of Label Studio's local file ``d`` (relative to its document root)."""
        if not isinstance(self.store, LocalStore):
            return None
        root = Path(self.label_studio.document_root) if self.label_studio.document_root else self.store.root
        return self.store.key_of((root / d).as_uri())

    def locate(self, url: str, task_id: Any) -> tuple[str, str]:
        """``("key", key)`` for an image in the store, ``("http", url)`` for one on Label Studio's host.

        Pure: nothing is read here, so a refused URL learns nothing about what exists."""
        parts = urlsplit(url)
        label_studio = _origin(self.label_studio.url) if self.label_studio.url else None
        on_label_studio = label_studio is not None and _origin(url) == label_studio
        relative = not parts.scheme and not parts.netloc and url.startswith("/") and not url.startswith("//")
        if (on_label_studio or relative) and parts.path.rstrip("/") == "/data/local-files":
            d = parse_qs(parts.query).get("d")
            key = self._local_file(d[0]) if d and len(d) == 1 else None
            if key is None:  # never through Label Studio: its document root may be far wider than the store
                raise self.refuse(url, task_id)
            return "key", key
        key = self.store.key_of(url) if self.store is not None else None
        if key is not None:
            return "key", key
        if on_label_studio:
            return "http", url
        if relative and label_studio is not None:
            return "http", urljoin(self.label_studio.url + "/", url)
        raise self.refuse(url, task_id)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001
        return None  # a redirect is answered as an HTTPError and its target checked like any task URL


_OPENER = urllib.request.build_opener(_NoRedirect)
REDIRECTS = 3


def fetch_url(url: str, *, token: str | None, max_bytes: int) -> tuple[bytes | None, str | None]:
    """``(bytes, None)`` for an image on Label Studio's host, or ``(None, location)`` when it redirects;
    more than ``max_bytes`` is refused. Sends Label Studio's token (its legacy ``Token`` scheme)."""
    request = urllib.request.Request(url, headers={"Authorization": f"Token {token}"} if token else {})
    try:
        with _OPENER.open(request, timeout=FETCH_TIMEOUT) as response:
            data = response.read(max_bytes + 1)
    except urllib.error.HTTPError as err:
        if err.code in (301, 302, 303, 307, 308) and err.headers.get("Location"):
            return None, urljoin(url, err.headers["Location"])
        raise HTTPException(404 if err.code == 404 else 502, f"{url}: Label Studio answered {err.code} {err.reason}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        raise HTTPException(502, f"{url} could not be fetched from Label Studio: {getattr(err, 'reason', err)}") from None
    if len(data) > max_bytes:
        raise HTTPException(413, f"{url} is over the limit of {max_bytes} bytes")
    return data, None


router = APIRouter(prefix="/ls", tags=["label-studio"], dependencies=[Depends(require_token)])


@router.get("/")
@router.api_route("/health", methods=["GET", "POST"])
async def health() -> dict[str, str]:
    return {"status": "UP", "model_class": MODEL_CLASS}


@router.post("/setup")
async def setup(request: Request) -> dict[str, str]:
    return {"model_version": request.app.state.service.current().version}


@router.post("/predict")
async def predict(request: Request) -> dict[str, Any]:
    """Predictions for Label Studio tasks; one bad task gets an ``error`` instead of sinking the others,
    but a task naming a URL outside the store and Label Studio refuses the whole request (422)."""
    service = request.app.state.service
    payload = await service.read_json(request)
    tasks = payload.get("tasks")
    if not isinstance(tasks, list):
        raise HTTPException(422, 'expected {"tasks": [{"id": ..., "data": {"image": URL, "key": optional object key}}], ...}')
    names = tags(payload.get("label_config"))
    try:
        store = service.store()
    except HTTPException:
        store = None  # tasks naming keys are answered with why; URLs on Label Studio still work
    sources = Sources(store, service.label_studio)

    def plan(task: Any) -> tuple[str, str]:
        data = task.get("data") if isinstance(task, dict) else None
        if not isinstance(data, dict):
            return "bad", f"task {_short(repr(task))} has no 'data' object"
        key, url = data.get("key"), data.get(names.image_field)
        if isinstance(key, str) and key:
            return "key", key
        if isinstance(url, str) and url:
            return sources.locate(url, task.get("id"))
        return "bad", f"task {task.get('id')} has neither data.key nor data.{names.image_field}"

    plans = [plan(task) for task in tasks]  # every URL is checked before anything is read

    async def load_url(url: str) -> tuple[bytes, str]:
        start = url
        task_id = f"(redirected from {_short(start)})"
        for _ in range(REDIRECTS + 1):
            data, location = await asyncio.to_thread(
                fetch_url, url, token=service.label_studio.token, max_bytes=service.limits.max_bytes
            )
            if location is None:
                return data, start
            kind, where = sources.locate(location, task_id)  # a redirect goes only where a task could
            if kind == "key":
                return await service.fetch_key(where), start
            url = where
        raise HTTPException(502, f"{start}: Label Studio redirected more than {REDIRECTS} times")

    async def one(kind: str, where: str) -> dict[str, Any]:
        if kind == "bad":
            raise HTTPException(422, where)

        async def load() -> tuple[bytes, str]:
            return (await service.fetch_key(where), where) if kind == "key" else await load_url(where)

        return to_result(await service.predict(load), names)

    async def guarded(task: Any, kind: str, where: str) -> dict[str, Any]:
        try:
            return await one(kind, where)
        except HTTPException as err:  # Label Studio shows no prediction for this task
            task_id = task.get("id") if isinstance(task, dict) else None
            log.warning("Label Studio task %s: %s", task_id, err.detail)
            version = service.current().version
            return {"model_version": version, "score": 0.0, "result": [], "error": err.detail}

    return {"results": list(await asyncio.gather(*(guarded(task, *p) for task, p in zip(tasks, plans))))}


@router.post("/webhook")
async def webhook() -> dict[str, str]:
    return {"status": "ignored", "detail": "attnloop retrains through its harvest and retrain flows, not from Label Studio webhooks"}


@router.get("/metrics")
async def metrics() -> dict[str, Any]:
    return {}
