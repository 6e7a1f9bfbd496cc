"""Pull completed annotations out of Label Studio into the next version of the annotation set.

The set, its versions and their format belong to :mod:`attnloop.annotation_set`; a harvest adds
to its metadata the watermark and the problems met.

The watermark holds, per task, the id and ``updated_at`` of the annotation last taken, so each
harvest reads only annotations that are new or were edited since; an edited annotation replaces
the earlier entry for its image in the next version. Skipped (cancelled) annotations are never
taken. An annotation deleted in Label Studio, which leaves its task without a completed one,
takes its image out of the next version; a task deleted from Label Studio keeps its entry, since the set, not
the annotation tool, is the record. Nothing new: no new version.

A harvest holds the store's lease ``harvest-<project id>`` (:mod:`attnloop.lease`) from reading the
latest version to publishing the next, so two harvests of one project run one after the other; a
version is published create-only (:func:`attnloop.annotation_set.write`), so a writer outside the
lease (another project's harvest into the same set) can never rewrite it: the harvest that finds
its number taken harvests again from the version now latest.

``rebuild``: when the latest version was altered (:class:`attnloop.annotation_set.SetAltered`),
the next version is taken from Label Studio afresh: every completed annotation of the project is
read again; entries of other projects come from the newest version that is still intact; the new
version's ``parent`` is the altered one and ``rebuilt`` records which versions were skipped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from attnloop import annotation_set, layout
from attnloop.annotation_set import AnnotationSet, Entry, SetAltered, VersionTaken
from attnloop.labelstudio.project import COMPLETED, iter_tasks
from attnloop.labelstudio.push import project_id
from attnloop.labelstudio.results import NO_OBJECT, Problem, parse_annotation
from attnloop.storage import Store

log = logging.getLogger(__name__)

LEASE_TTL, LEASE_WAIT = 60.0, 600.0  # seconds: the project's harvest lease, and how long a harvest waits for another
ATTEMPTS = 3  # publishing tries when another writer takes the version number first
RETRY_PAUSE = 1.0  # seconds before the second try (twice that before the third)


@dataclass(frozen=True)
class HarvestResult:
    version: int | None  # the set's version after this harvest (the new one, or the latest if nothing changed)
    key: str | None  # the JSONL object of that version
    added: int  # images that entered the set
    updated: int  # images whose entry an edited (or newer) annotation replaced
    problems: list[Problem] = field(default_factory=list)
    removed: int = 0  # images whose latest annotation no longer yields a usable box
    written: bool = False  # a new version was written
    altered: tuple[int, ...] = ()  # with rebuild: the versions found altered and passed over


def _as_dict(value: Any) -> dict:
    if isinstance(value, dict):
        return value
    for method in ("model_dump", "dict"):
        if hasattr(value, method):
            return getattr(value, method)()
    return {}


def _latest_completed(annotations: Iterable[Any]) -> dict | None:
    done = [a for a in map(_as_dict, annotations or []) if not a.get("was_cancelled") and a.get("id") is not None]
    return max(done, key=lambda a: (str(a.get("updated_at") or ""), int(a["id"]))) if done else None


def harvest(
    ls,
    project: Any,
    *,
    store: Store,
    classes: Iterable[str],
    prefix: str = layout.ANNOTATIONS,
    rebuild: bool = False,
    lease_wait: float = LEASE_WAIT,
) -> HarvestResult:
    """Take the completed annotations that are new or edited since the last version and, if there
    are any, write the next version of the set. Unusable regions are reported as problems (task
    id and reason), never dropped silently and never stopping the rest.

    ``rebuild``: read every completed annotation again and always write a version (the recovery
    from an altered set, see the module's doc). Raises :class:`attnloop.annotation_set.SetAltered`
    when the latest version was altered and ``rebuild`` is off, ``attnloop.lease.Busy`` when another
    harvest of the project holds the lease past ``lease_wait`` seconds."""
    from attnloop import lease

    prefix = layout.annotation_prefix(prefix)
    classes = list(classes)
    pid = project_id(project)
    with lease.hold(store, f"harvest-{pid}", ttl=LEASE_TTL, wait=lease_wait) as held:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return _harvest(ls, str(pid), store=store, classes=classes, prefix=prefix, rebuild=rebuild, check=held.check)
            except VersionTaken as err:
                if attempt == ATTEMPTS:
                    raise
                log.warning("%s; harvesting again on the version now latest", err)
                time.sleep(RETRY_PAUSE * attempt)  # a writer in flight completes its version meanwhile
    raise AssertionError("unreachable")


def _base(store: Store, prefix: str, pid: str, *, rebuild: bool) -> tuple[AnnotationSet | None, int | None, tuple[int, ...]]:
    """The version a harvest builds on, the latest version's number (the parent) and the versions
    passed over as altered. Rebuilding: the newest intact version, without this project's entries
    and watermark."""
    latest = annotation_set.latest_version(store, prefix)
    if not rebuild:
        last = None if latest is None else annotation_set.read(store, latest, prefix)
        return last, latest, ()
    altered = []
    for version in range(latest or 0, 0, -1):
        try:
            intact = annotation_set.read(store, version, prefix)
        except SetAltered:
            altered.append(version)
            continue
        except LookupError:
            continue  # a number without metadata: never published
        mine = lambda e: e.project is None or str(e.project) == pid  # noqa: E731
        watermark = {k: v for k, v in intact.meta.get("watermark", {}).items() if k != pid}
        kept = {image: e for image, e in intact.entries.items() if not mine(e)}
        return AnnotationSet(intact.version, intact.key, kept, {**intact.meta, "watermark": watermark}), latest, tuple(altered)
    return None, latest, tuple(altered)


def _harvest(ls, pid: str, *, store: Store, classes: list[str], prefix: str, rebuild: bool, check: Callable[[], None]) -> HarvestResult:
    last, previous, altered = _base(store, prefix, pid, rebuild=rebuild)
    entries, meta = (dict(last.entries), last.meta) if last is not None else ({}, {})
    watermarks: dict[str, dict[str, list]] = meta.get("watermark", {})
    marks = dict(watermarks.get(pid, {}))
    problems: list[Problem] = []
    added = updated = removed = 0
    changed = rebuild

    answered: set[str] = set()
    for task in iter_tasks(ls, int(pid), filters=COMPLETED, fields="all", page_size=500):
        annotation = _latest_completed(getattr(task, "annotations", None))
        if annotation is None:
            continue  # only skipped annotations
        answered.add(str(task.id))
        mark = [annotation["id"], str(annotation.get("updated_at") or "")]
        if marks.get(str(task.id)) == mark:
            continue
        marks[str(task.id)] = mark
        changed = True
        data = task.data if isinstance(task.data, dict) else {}
        image = data.get("key")
        if not isinstance(image, str) or not image:
            problems.append(Problem(task.id, "malformed", f"task {task.id}: data has no 'key' (object key); was it created by attnloop push?"))
            continue
        correction = parse_annotation(
            annotation.get("result"), classes=classes, width=data.get("width"), height=data.get("height"), task=task.id
        )
        problems.extend(correction.problems)
        if correction.label is None:
            labels = {label for box_labels in _box_labels(annotation.get("result")) for label in box_labels if label in classes}
            correction.label = labels.pop() if len(labels) == 1 else None
        class_only = NO_OBJECT in correction.flags and correction.label is not None
        marked = bool(correction.shortcut_boxes) and correction.label is not None  # what the model used, and the class
        if not correction.boxes and not class_only and not marked:
            # no box, and not a "nothing to box here" answer: a box that was meant but is unusable or missing
            reason = (
                f"flagged '{NO_OBJECT}' without a class"
                if NO_OBJECT in correction.flags
                else "no usable evidence box" + (" (see the problems above)" if correction.problems else " was drawn")
            )
            problems.append(Problem(task.id, "no_box", f"task {task.id}: {reason}; {image} gets no entry in the annotation set"))
            if entries.pop(image, None) is not None:
                removed += 1
            continue
        entry = Entry(
            image=image,
            boxes=correction.boxes,
            label=correction.label,
            shortcut_boxes=correction.shortcut_boxes,
            hash=data.get("hash"),
            predicted=data.get("predicted"),
            flags=correction.flags,
            comment=correction.comment,
            task=task.id,
            annotation=annotation["id"],
            updated_at=mark[1],
            project=int(pid),
        )
        if image in entries:
            updated += 1
        else:
            added += 1
        entries[image] = entry

    withdrawn = _withdrawn(ls, int(pid), [task for task in marks if task not in answered])
    for task_id in withdrawn:
        del marks[task_id]
        changed = True
        image = next((k for k, e in entries.items() if str(e.task) == task_id and e.project == int(pid)), None)
        if image is not None:
            del entries[image]
            removed += 1

    if not changed:
        return HarvestResult(previous, None if last is None else last.key, 0, 0, problems)
    check()  # this harvest still holds the project's lease
    notes = {"rebuilt": {"from": None if last is None else last.version, "altered": list(altered)}} if rebuild else {}
    written = annotation_set.write(
        store, entries, version=annotation_set.next_version(store, prefix, after=previous), parent=previous, prefix=prefix,
        project=int(pid), added=added, updated=updated, removed=removed, problems=[p.to_dict() for p in problems],
        watermark={**watermarks, pid: marks}, **notes,
    )
    return HarvestResult(written.version, written.key, added, updated, problems, removed, True, altered)


def _withdrawn(ls, project: int, unanswered: list[str]) -> list[str]:
    """Of the tasks harvested before that no longer have a completed annotation, those still in the
    project: their annotation was deleted. Tasks deleted outright are left out."""
    if not unanswered:
        return []
    existing = {str(task.id) for task in iter_tasks(ls, project, include="id", page_size=1000)}
    return [task for task in unanswered if task in existing]


def _box_labels(result: Any) -> list[list[str]]:
    if not isinstance(result, list):
        return []
    out = []
    for item in result:
        if isinstance(item, dict) and item.get("type") == "rectanglelabels" and isinstance(item.get("value"), dict):
            labels = item["value"].get("rectanglelabels")
            if isinstance(labels, list):
                out.append([label for label in labels if isinstance(label, str)])
    return out
