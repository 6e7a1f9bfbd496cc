"""A simulated annotator: completes open Label Studio tasks from ground truth, with optional noise.

It goes through the same API a browser uses (one ``annotations.create`` per task, the result in
percent of the image), so push, Label Studio and harvest are exercised end to end without a person.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from attnloop.datasets.manifest import Record, parse_record
from attnloop.labelstudio.project import OPEN, iter_tasks, project_classes
from attnloop.labelstudio.push import project_id
from attnloop.labelstudio.results import (
    NO_OBJECT,
    SHORTCUT,
    SHORTCUT_LABEL,
    choices_result,
    clip_box,
    has_area,
    percent_to_pixels,
    rectangle_result,
)
from attnloop.masks import box_mask
from attnloop.proposals import sees
from attnloop.storage import Store


def _rate(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} is a probability in [0, 1], got {value}")
    return float(value)


def simulate_annotator(
    ls,
    project: Any,
    truth: Mapping[str, Record],
    *,
    box_jitter: float = 0.0,
    miss_rate: float = 0.0,
    wrong_class_rate: float = 0.0,
    skip_rate: float = 0.0,
    seed: int = 0,
    limit: int | None = None,
    mark_shortcuts: bool = True,
) -> dict[str, int]:
    """Annotate every open task (up to ``limit``) whose object key has a ground-truth record.

    Shortcut marks (``mark_shortcuts``): the annotator marks a record's confounder box, as
    "model used this", where it sees the model looking at it: the task's pre-annotated attention
    proposal covers at least half of the box (:func:`attnloop.proposals.sees`).

    Noise: each box edge moves by a normal draw with ``box_jitter`` × the box's width/height as
    standard deviation; each box is left out with ``miss_rate`` (no box at all: the annotator
    flags 'no relevant object'); the class is another one with ``wrong_class_rate``; the task is
    skipped with ``skip_rate``. Draws are seeded by (seed, task id), so runs repeat exactly.

    Returns counts: annotated, skipped, boxes, missed_boxes, wrong_class, shortcut_marks, no_truth.
    """
    for name, value in (("miss_rate", miss_rate), ("wrong_class_rate", wrong_class_rate), ("skip_rate", skip_rate)):
        _rate(name, value)
    if box_jitter < 0:
        raise ValueError(f"box_jitter is a share of the box size, zero or more; got {box_jitter}")
    pid = project_id(project)
    classes = project_classes(ls.projects.get(id=pid))
    # list first: annotating moves tasks out of the "open" filter, which would shift later pages
    listing = {"fields": "all"} if mark_shortcuts else {"include": "id,data"}  # marking reads the tasks' predictions
    tasks = list(iter_tasks(ls, pid, filters=OPEN, page_size=1000, **listing))
    counts = Counter({k: 0 for k in ("annotated", "skipped", "boxes", "missed_boxes", "wrong_class", "shortcut_marks", "no_truth")})
    for task in tasks:
        if limit is not None and counts["annotated"] + counts["skipped"] >= limit:
            break
        data = task.data if isinstance(task.data, dict) else {}
        record = truth.get(data.get("key"))
        if record is None:
            counts["no_truth"] += 1
            continue
        rng = np.random.default_rng([seed, int(task.id)])
        if rng.random() < skip_rate:
            ls.annotations.create(id=task.id, result=[], was_cancelled=True, lead_time=float(rng.uniform(1, 5)))
            counts["skipped"] += 1
            continue
        width, height = int(data["width"]), int(data["height"])
        label = record.label
        if rng.random() < wrong_class_rate and len(classes) > 1:
            label = str(rng.choice([c for c in classes if c != record.label]))
            counts["wrong_class"] += 1
        result = [choices_result([label])]
        for box in record.boxes:
            if rng.random() < miss_rate:
                counts["missed_boxes"] += 1
                continue
            drawn = _jitter(box, box_jitter, rng, width, height)
            if drawn is None:  # jittered off the image: as good as missed
                counts["missed_boxes"] += 1
                continue
            result.append(rectangle_result(drawn, label, width, height))
            counts["boxes"] += 1
        if mark_shortcuts:
            for box in _seen_shortcuts(task, record, width, height):
                result.append(rectangle_result(box, SHORTCUT_LABEL, width, height, from_name=SHORTCUT))
                counts["shortcut_marks"] += 1
        if not record.boxes:  # nothing to box (e.g. an "ok" board): the class alone is the correction
            result.append(choices_result([NO_OBJECT], from_name="flag"))
        ls.annotations.create(id=task.id, result=result, lead_time=float(rng.uniform(2, 20)))
        counts["annotated"] += 1
    return dict(counts)


def _seen_shortcuts(task: Any, record: Record, width: int, height: int) -> list[list[float]]:
    """The record's confounder boxes that the task's pre-annotated attention proposal shows the model looking at."""
    if not record.confounder_boxes:
        return []
    proposals = [
        percent_to_pixels(item["value"], width, height)
        for prediction in getattr(task, "predictions", None) or []
        for item in (_as_dict(prediction).get("result") or [])
        if isinstance(item, dict) and item.get("type") == "rectanglelabels" and isinstance(item.get("value"), dict)
    ]
    return [
        list(box) for box in record.confounder_boxes
        if any(sees(p, box_mask([box], image_size=(height, width), out_size=(height, width))) for p in proposals)
    ]


def _as_dict(value: Any) -> dict:
    if isinstance(value, dict):
        return value
    return value.model_dump() if hasattr(value, "model_dump") else {}


def _jitter(box, share: float, rng: np.random.Generator, width: int, height: int) -> list[float] | None:
    x0, y0, x1, y1 = (float(v) for v in box)
    if share > 0:
        w, h = x1 - x0, y1 - y0
        dx0, dx1 = rng.normal(0, share * w, size=2)
        dy0, dy1 = rng.normal(0, share * h, size=2)
        x0, x1, y0, y1 = x0 + dx0, x1 + dx1, y0 + dy0, y1 + dy1
        x0, x1 = min(x0, x1), max(x0, x1)
        y0, y1 = min(y0, y1), max(y0, y1)
    drawn = clip_box([x0, y0, x1, y1], width, height)
    return drawn if has_area(drawn) else None


# --- ground truth for simulated streams ------------------------------------------------------


def put_frames(
    store: Store, family: str, *, count: int, seed: int = 0, source: str | None = None, day: date | None = None
) -> dict[str, Record]:
    """Write ``count`` frames of a family's stream split to the store and return their ground truth
    by object key (:func:`attnloop.stream.write_stream`)."""
    from attnloop.stream import write_stream

    return write_stream(store, family, count=count, seed=seed, source=source, day=day)


def write_truth(path: str | Path, truth: Mapping[str, Record]) -> Path:
    """Ground truth as manifest-style JSONL whose ``image`` is the object key."""
    path = Path(path)
    path.write_text("".join(Record(key, r.split, r.label, r.boxes, r.confounder_boxes).to_json() + "\n" for key, r in truth.items()))
    return path


def read_truth(path: str | Path) -> dict[str, Record]:
    path = Path(path)
    out = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            record = parse_record(json.loads(line), f"{path}:{number}")
            out[record.image] = record
    return out
