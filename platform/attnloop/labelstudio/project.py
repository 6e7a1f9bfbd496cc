"""The Label Studio project that box corrections go to: bootstrap, lookup, paging (its address: :class:`attnloop.config.LabelStudioSettings`)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator, Sequence

from attnloop.config import DEFAULT_PROJECT
from attnloop.labelstudio.results import config_labels, insert_labels

TEMPLATES_DIR = Path(__file__).resolve().parents[3] / "labelstudio_templates"
TEMPLATES = {"box_correction": "box_correction.xml", "box_correction_overlay": "box_correction_overlay.xml"}
PRIORITY_VIEW = "by priority"


def template_config(template: str, classes: Sequence[str]) -> str:
    """A labeling config from a template name (see TEMPLATES) or an XML file, with the classes filled in."""
    if template in TEMPLATES:
        path = TEMPLATES_DIR / TEMPLATES[template]
    elif template.endswith(".xml"):
        path = Path(template)
    else:
        raise ValueError(f"unknown template {template!r}; valid names: {', '.join(TEMPLATES)} (or a path to an .xml file)")
    if not path.is_file():
        raise FileNotFoundError(f"labeling config {path} is missing; it ships in labelstudio_templates/ at the repository root")
    return insert_labels(path.read_text(), classes)


def find_project(ls, title: str) -> Any | None:
    """The project with exactly this title (the oldest, if several), or None."""
    # one page only: the SDK's pager asks for the page after the last, which Label Studio answers with 404
    page = ls.projects.list(title=title, page_size=1000)
    matches = [p for p in page.items or [] if p.title == title]
    return min(matches, key=lambda p: p.id) if matches else None


def _same_config(a: str, b: str) -> bool:
    squash = lambda s: re.sub(r"\s+", " ", re.sub(r">\s+<", "><", s)).strip()  # noqa: E731
    return squash(a) == squash(b)


def bootstrap(ls, *, title: str = DEFAULT_PROJECT, classes: Sequence[str], template: str = "box_correction") -> Any:
    """Create the box-correction project, or reuse the one with this title (idempotent).

    A reused project whose labeling config differs (other classes, other template) gets the new
    config; Label Studio refuses, with its own message, to drop a label that annotations use.
    A Data Manager tab "by priority" sorts tasks by prediction score, which push sets to the
    task's priority.
    """
    config = template_config(template, classes)
    project = find_project(ls, title)
    if project is None:
        project = ls.projects.create(
            title=title,
            label_config=config,
            description="attnloop: correct where the model looked. Move the proposed box onto the evidence, fix the class, submit.",
            show_skip_button=True,
            maximum_annotations=1,
        )
    elif not _same_config(project.label_config or "", config):
        ls.projects.update(id=project.id, label_config=config)
    _ensure_priority_view(ls, project.id)
    return ls.projects.get(id=project.id)


def _ensure_priority_view(ls, project_id: int) -> None:
    for view in ls.views.list(project=project_id):
        data = view.data if isinstance(view.data, dict) else {}
        if data.get("title") == PRIORITY_VIEW:
            return
    ls.views.create(project=project_id, data={"title": PRIORITY_VIEW, "ordering": ["-tasks:predictions_score"]})


def project_classes(project) -> list[str]:
    """The classes a project's labeling config offers for evidence boxes."""
    return config_labels(project.label_config)


# --- paging ----------------------------------------------------------------------------------


def iter_tasks(ls, project_id: int, *, filters: dict | None = None, page_size: int = 500, **params) -> Iterator[Any]:
    """Every task of a project, page by page (Label Studio answers 404 past the last page; that
    ends the listing, as does a short page or reaching the reported total)."""
    from label_studio_sdk.core.api_error import ApiError

    query = json.dumps({"filters": filters}) if filters else None
    page, seen = 1, 0
    while True:
        try:
            pager = ls.tasks.list(project=project_id, page=page, page_size=page_size, query=query, **params)
        except ApiError as err:
            if err.status_code == 404 and page > 1:
                return
            raise
        items = pager.items or []
        yield from items
        seen += len(items)
        total = getattr(pager.response, "total", None)
        if len(items) < page_size or (total is not None and seen >= total):
            return
        page += 1


def count_tasks(ls, project_id: int, *, filters: dict | None = None) -> int:
    query = json.dumps({"filters": filters}) if filters else None
    return int(ls.tasks.list(project=project_id, page=1, page_size=1, query=query, include="id").response.total)


def _number_filter(field: str, operator: str, value: int) -> dict:
    return {"filter": f"filter:tasks:{field}", "operator": operator, "type": "Number", "value": value}


OPEN = {"conjunction": "and", "items": [_number_filter("total_annotations", "equal", 0), _number_filter("cancelled_annotations", "equal", 0)]}
COMPLETED = {"conjunction": "and", "items": [_number_filter("total_annotations", "greater", 0)]}
