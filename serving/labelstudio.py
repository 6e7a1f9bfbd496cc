"""The Label Studio ML-backend protocol, mounted under ``/ls``.

Label Studio calls ``{backend_url}/health``, ``/setup`` and ``/predict`` (label-studio-ml-backend's
``label_studio_ml/api.py``); a prediction is the class as a ``choices`` result and the attention box
as a ``rectanglelabels`` result in percent of the image, for the annotator to correct — the same
pre-annotation ``attnloop.labelstudio.push`` writes. The tag names come from the project's labeling
config when it is sent (those of ``labelstudio_templates/`` preferred), else ``class``,
``evidence`` and ``image``.
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
from urllib.parse import urlparse
from urllib.request import url2pathname

from fastapi import APIRouter, HTTPException, Request

from attnloop.labelstudio.results import CLASS, EVIDENCE, IMAGE, choices_result, rectangle_result

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


def fetch_url(url: str, *, max_bytes: int) -> bytes:
    """A task's image from an http(s) or file:// URL, refusing more than ``max_bytes``."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        path = Path(url2pathname(parsed.path))
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise HTTPException(404, f"{url}: no such file") from None
        if size > max_bytes:
            raise HTTPException(413, f"{url} is {size} bytes; the limit is {max_bytes}")
        return path.read_bytes()
    if parsed.scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as response:
                data = response.read(max_bytes + 1)
        except urllib.error.HTTPError as err:
            raise HTTPException(404 if err.code == 404 else 502, f"{url}: the server answered {err.code} {err.reason}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            raise HTTPException(502, f"{url} could not be fetched: {getattr(err, 'reason', err)}") from None
        if len(data) > max_bytes:
            raise HTTPException(413, f"{url} is over the limit of {max_bytes} bytes")
        return data
    raise HTTPException(
        422,
        f"task image {url!r} is not an http(s) or file:// URL; put the image's object key in the task's data.key "
        "(attnloop's annotate flow does) or serve the images over http(s)",
    )


router = APIRouter(prefix="/ls", tags=["label-studio"])


@router.get("/")
@router.api_route("/health", methods=["GET", "POST"])
async def health() -> dict[str, str]:
    return {"status": "UP", "model_class": MODEL_CLASS}


@router.post("/setup")
async def setup(request: Request) -> dict[str, str]:
    return {"model_version": request.app.state.service.current().version}


@router.post("/predict")
async def predict(request: Request) -> dict[str, Any]:
    service = request.app.state.service
    payload = await service.read_json(request)
    tasks = payload.get("tasks")
    if not isinstance(tasks, list):
        raise HTTPException(422, 'expected {"tasks": [{"id": ..., "data": {"image": URL, "key": optional object key}}], ...}')
    names = tags(payload.get("label_config"))

    async def one(task: Any) -> dict[str, Any]:
        data = task.get("data") if isinstance(task, dict) else None
        if not isinstance(data, dict):
            raise HTTPException(422, f"task {task!r} has no 'data' object")
        key, url = data.get("key"), data.get(names.image_field)
        if isinstance(key, str) and key:

            async def load() -> tuple[bytes, str]:
                return await service.fetch_key(key), key

        elif isinstance(url, str) and url:

            async def load() -> tuple[bytes, str]:
                return await asyncio.to_thread(fetch_url, url, max_bytes=service.limits.max_bytes), url

        else:
            raise HTTPException(422, f"task {task.get('id')} has neither data.key nor data.{names.image_field}")
        return to_result(await service.predict(load), names)

    async def guarded(task: Any) -> dict[str, Any]:
        try:
            return await one(task)
        except HTTPException as err:  # one bad task does not sink the others; Label Studio shows no prediction for it
            task_id = task.get("id") if isinstance(task, dict) else None
            log.warning("Label Studio task %s: %s", task_id, err.detail)
            version = service.current().version
            return {"model_version": version, "score": 0.0, "result": [], "error": err.detail}

    return {"results": list(await asyncio.gather(*(guarded(task) for task in tasks)))}


@router.post("/webhook")
async def webhook() -> dict[str, str]:
    return {"status": "ignored", "detail": "attnloop retrains through its harvest and retrain flows, not from Label Studio webhooks"}


@router.get("/metrics")
async def metrics() -> dict[str, Any]:
    return {}
