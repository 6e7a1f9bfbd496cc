"""Send ranked candidates to Label Studio as tasks with pre-annotations, each object key once.

Which frames to send is :func:`attnloop.priority.select`'s choice over the scoring rows
(:mod:`attnloop.scores`); this module only turns the chosen frames into tasks. A task's ``data``
carries the image URL, the attention overlay URL, the object key and content hash (the
idempotency key, docs/architecture.md), the priority signals and the model version. Its prediction holds the predicted class and the attention box proposal, with
``score`` = priority so the Data Manager sorts by it.

Every task shows where the model looked: push attaches the frame's attention overlay (scoring
writes those of its highest-priority frames under ``overlays/``, :func:`attnloop.layout.overlay_key`;
push draws the missing ones from the scoring row's map, so every task with a map has one), and
``question`` says what the annotator is asked, which the templates show above the image.

Before creating anything, push lists every task of the project (all pages) and leaves out
keys that already have one; tasks go in batches, so a Label Studio that stops mid-push costs
at most the batch in flight, and a re-run creates exactly what is missing. The listing and the
creation run under the store's lease ``push-<project id>`` (attnloop.lease), so two pushes at
once, from the command line, a flow or both, still create one task per key.

Every task also carries ``rank`` (1: correct first) and ``percentile`` (100: the highest
priority) among the model version's scored frames: raw priorities of the top frames all read
0.999 or 1.000, a rank reads and sorts at a glance.

Image URLs: an S3 store's objects are presigned (7 days). A local store's files are served by
Label Studio itself, as ``/data/local-files/?d=<path under its document root>``, which needs a
server on the same machine with local-files serving on, its document root at (or above) the
store folder, and a local-files storage of the project covering the files: push creates one per
top folder of the store (``frames/``, ``overlays/``), once; they import nothing. Before creating a
task, push fetches the first image the way an annotator's browser will, and stops with the
setting to fix when Label Studio does not serve it.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Iterator, Mapping
from urllib.parse import quote

import numpy as np

from attnloop import layout, scores
from attnloop.labelstudio.project import iter_tasks
from attnloop.labelstudio.results import SHORTCUT, SHORTCUT_LABEL, choices_result, rectangle_result
from attnloop.priority import DEFAULT_RANKING, check_ranking, priority, ranks, select
from attnloop.scores import ScoreRow
from attnloop.storage import LocalStore, Store

log = logging.getLogger(__name__)

URL_LIFETIME = timedelta(days=7)  # the longest an S3 presigned URL may live
LEASE_TTL, LEASE_WAIT = 60.0, 120.0  # seconds: the project lease's lifetime, and how long a push waits for another


@dataclass(frozen=True)
class Candidate:
    """One frame proposed for correction (what a scoring row holds, reduced to what a task needs)."""

    key: str  # object key of the frame
    hash: str  # content hash of the frame
    width: int
    height: int
    predicted: str  # the model's class
    priority: float  # higher: correct sooner
    confidence: float | None = None
    attention: np.ndarray | None = None  # h×w map in [0, 1]; None: no box proposal
    signals: dict[str, float] = field(default_factory=dict)
    rank: int | None = None  # 1: the highest priority among the model version's scored frames
    percentile: float | None = None  # share of those frames with a lower priority, in percent
    ranked: int | None = None  # how many frames the rank is among
    shortcut_boxes: tuple = ()  # proposed shortcut marks (pixel boxes): a propagated mark to confirm
    confirms: str | None = None  # the frame whose mark this one repeats (a confirmation task)

    @classmethod
    def from_row(cls, row: ScoreRow | Mapping[str, Any]) -> "Candidate":
        """From a scoring row (:class:`attnloop.scores.ScoreRow`, or its columns), ranked by
        :func:`attnloop.priority.priority` of its signals."""
        if not isinstance(row, ScoreRow):
            row = ScoreRow.from_record(row)
        return cls(
            key=row.key,
            hash=row.hash,
            width=row.width,
            height=row.height,
            predicted=row.predicted,
            priority=float(priority(row.signals)),
            confidence=row.confidence,
            attention=row.attention,
            signals=dict(row.signals),
        )


@dataclass(frozen=True)
class PushResult:
    created: int
    skipped_existing: int  # the key already has a task (or came twice in this push)
    skipped_backpressure: int  # left out because max_open open tasks were reached
    candidates: tuple[Candidate, ...] = ()  # what was offered, best first (push_scored)


class NotServed(ValueError):
    """Label Studio does not serve the images of a push to an annotator's browser; nothing was created."""


class PushInterrupted(RuntimeError):
    """Label Studio stopped answering (or refused a batch) part-way through a push."""

    def __init__(self, message: str, *, created: int, remaining: int) -> None:
        super().__init__(message)
        self.created, self.remaining = created, remaining


def ranked_candidates(
    store: Store, model_version: str, *, limit: int | None = None, exclude: Collection[str] = (), ranking: str = DEFAULT_RANKING
) -> list[Candidate]:
    """The scored frames of a model version not in ``exclude`` (already queued), best first, as
    :func:`attnloop.priority.select` chooses them (``ranking``: one of :data:`attnloop.priority.RANKINGS`).

    ``priority``: by :func:`attnloop.priority.priority` (margin), the best order for a few
    corrections. ``hybrid``: a batch of ``limit`` frames that covers the embedding space, chosen by
    k-center greedy among the ``4 × limit`` best by the mean rank of least confidence, branch
    disagreement and background attention; on `mill` it led from 50 corrections
    (docs/benchmarks/strategies.md). It needs ``limit``, the batch size.
    """
    check_ranking(ranking)
    return _ranked(store, scores.read_rows(store, model_version), limit=limit, exclude=exclude, ranking=ranking)


def _ranked(store: Store, rows: list[ScoreRow], *, limit: int | None, exclude: Collection[str], ranking: str) -> list[Candidate]:
    """:func:`ranked_candidates` over rows already read."""
    by_key = {c.key: c for c in with_ranks([Candidate.from_row(row) for row in rows])}
    chosen = select(scores.selection_pool(store, rows), limit, ranking=ranking, exclude=exclude)
    return [by_key[key] for key in chosen]


def with_ranks(candidates: list[Candidate]) -> list[Candidate]:
    """The candidates (same order) with ``rank`` and ``percentile`` by priority among them
    (:func:`attnloop.priority.ranks`)."""
    from dataclasses import replace

    rank, percentile = ranks(np.array([c.priority for c in candidates], np.float64))
    return [replace(c, rank=int(r), percentile=float(q), ranked=len(candidates)) for c, r, q in zip(candidates, rank, percentile)]


def project_id(project: Any) -> int:
    return int(project if isinstance(project, int) else project.id)


def existing_tasks(ls, project: Any) -> tuple[set[str], int]:
    """Object keys that already have a task in the project (every page), and how many tasks are open
    (no annotation yet, not skipped)."""
    keys, open_count = set(), 0
    for task in iter_tasks(ls, project_id(project), page_size=1000, include="id,data,total_annotations,cancelled_annotations"):
        data = task.data if isinstance(task.data, dict) else {}
        if data.get("key"):
            keys.add(data["key"])
        if not (getattr(task, "total_annotations", 0) or getattr(task, "cancelled_annotations", 0)):
            open_count += 1
    return keys, open_count


def _round(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def task_for(candidate: Candidate, *, image_url: str, overlay_url: str | None, model_version: str) -> dict[str, Any]:
    """The Label Studio task (data + prediction) for one candidate."""
    from attnloop.proposals import attention_box

    c = candidate
    confidence = f" ({c.confidence:.0%} sure)" if c.confidence is not None else ""
    question = (
        f"Same mistake as {c.confirms}? Keep the red mark if the model used it here too, delete it if not."
        if c.confirms
        else f"The model says {c.predicted}{confidence}. Box what shows the class, fix the class if it is wrong, "
        "and mark in red what the model used instead."
    )
    data = {
        "image": image_url,
        "overlay": overlay_url or image_url,  # every template shows it: the image alone where there is no map
        "has_overlay": overlay_url is not None,
        "key": c.key,
        "hash": c.hash,
        "width": c.width,
        "height": c.height,
        "model_version": model_version,
        "predicted": c.predicted,
        "confidence": _round(c.confidence),
        "priority": _round(c.priority),
        "rank": c.rank,
        "percentile": c.percentile,
        **{name: _round(value) for name, value in c.signals.items()},
        **({"confirms": c.confirms} if c.confirms else {}),
        "question": question,
        "summary": " · ".join(
            part
            for part in (
                f"rank {c.rank} of {c.ranked} (percentile {c.percentile:g})" if c.rank is not None else "",
                f"priority {c.priority:.4g}",
                f"predicted {c.predicted}" + (f" ({c.confidence:.0%})" if c.confidence is not None else ""),
                f"model {model_version}",
                c.key,
            )
            if part
        ),
    }
    result = [choices_result([c.predicted])]
    box = attention_box(c.attention, (c.height, c.width)) if c.attention is not None and not c.shortcut_boxes else None
    if box is not None:  # a confirmation task proposes the mark, not the attention box (which would lie on it)
        result.append(rectangle_result(box, c.predicted, c.width, c.height))
    result += [rectangle_result(mark, SHORTCUT_LABEL, c.width, c.height, from_name=SHORTCUT) for mark in c.shortcut_boxes]
    return {"data": data, "predictions": [{"model_version": model_version, "score": _round(c.priority), "result": result}]}


def push(
    ls,
    project: Any,
    candidates: Iterable[Candidate | Mapping[str, Any]],
    *,
    store: Store,
    model_version: str,
    max_open: int | None = None,
    batch_size: int = 100,
    image_url: Callable[[str], str] | None = None,
    document_root: str | Path | None = None,
    lease_wait: float = LEASE_WAIT,
) -> PushResult:
    """Create a task with pre-annotations for every candidate whose key has none yet, highest
    priority first, keeping at most ``max_open`` tasks open (backpressure).

    ``image_url(key)`` makes the URL an annotator's browser loads; the default presigns an S3
    object for 7 days and, for a local store, is :func:`local_files_urls` under Label Studio's
    ``document_root`` (its ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``; default: the store folder).
    Candidates without a rank are ranked among themselves. Raises :class:`NotServed` (nothing
    created) when Label Studio does not serve the first image, :class:`PushInterrupted` (how many
    were created; re-running is safe) when it stops answering part-way, ``attnloop.lease.Busy``
    when another push into the project holds the lease for longer than ``lease_wait`` seconds, and
    ``attnloop.lease.Lost`` when this push stalled so long that another took the lease over.
    """
    given = [item if isinstance(item, Candidate) else Candidate.from_row(item) for item in candidates]
    if any(c.rank is None for c in given):
        given = with_ranks(given)
    pid = project_id(project)
    with _project_lease(store, pid, wait=lease_wait) as held:
        existing, open_count = existing_tasks(ls, pid)
        return _create(
            ls, pid, given, existing, open_count, store=store, model_version=model_version, max_open=max_open,
            batch_size=batch_size, image_url=image_url, document_root=document_root, check=held.check,
        )


def push_scored(
    ls,
    project: Any,
    *,
    store: Store,
    model_version: str,
    limit: int | None = None,
    ranking: str = DEFAULT_RANKING,
    max_open: int | None = None,
    batch_size: int = 100,
    document_root: str | Path | None = None,
    lease_wait: float = LEASE_WAIT,
) -> PushResult:
    """Push the model version's best scored frames not queued yet: at most ``limit`` new tasks,
    chosen by ``ranking`` (:func:`ranked_candidates`). Listing, ranking and creating hold the
    project's lease, so two pushes at once never choose the same frames. ``skipped_existing``
    counts the scored frames that already have a task."""
    check_ranking(ranking)
    pid = project_id(project)
    with _project_lease(store, pid, wait=lease_wait) as held:
        existing, open_count = existing_tasks(ls, pid)
        rows = scores.read_rows(store, model_version)  # read once: for the ranking and the count of frames already queued
        candidates = _ranked(store, rows, limit=limit, exclude=existing, ranking=ranking)
        queued = len({row.key for row in rows} & existing)
        result = _create(
            ls, pid, candidates, existing, open_count, store=store, model_version=model_version, max_open=max_open,
            batch_size=batch_size, image_url=None, document_root=document_root, check=held.check,
        )
    return PushResult(result.created, queued + result.skipped_existing, result.skipped_backpressure, tuple(candidates))


def confirmation_candidates(rows: Iterable[ScoreRow], matches: Iterable[Any]) -> list[Candidate]:
    """The matched frames (:class:`attnloop.propagation.Match`) as tasks to confirm, most similar first:
    the frame with its propagated mark pre-filled, ranked by the match's similarity."""
    from dataclasses import replace

    by_key = {row.key: row for row in rows}
    found = [m for m in matches if m.image in by_key]
    return with_ranks(
        [
            replace(Candidate.from_row(by_key[m.image]), priority=float(m.similarity), shortcut_boxes=(list(m.box),), confirms=str(m.source))
            for m in found
        ]
    )


@contextmanager
def _project_lease(store: Store, project: int, *, wait: float) -> Iterator[Any]:
    """The store's lease on pushes into one project: two pushes at once would both list the
    project before either created a task, and create every task twice."""
    from attnloop import lease

    with lease.hold(store, f"push-{project}", ttl=LEASE_TTL, wait=wait) as held:
        yield held


def _create(
    ls,
    pid: int,
    candidates: list[Candidate],
    existing: set[str],
    open_count: int,
    *,
    store: Store,
    model_version: str,
    max_open: int | None,
    batch_size: int,
    image_url: Callable[[str], str] | None,
    document_root: str | Path | None,
    check: Callable[[], None],
) -> PushResult:
    """The tasks of the candidates whose key is not in ``existing``. The caller holds the lease;
    ``check`` raises before a batch if the lease was lost (another push took it over)."""
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    from attnloop.labelstudio.client import LabelStudioUnavailable

    service_errors = (httpx.HTTPError, ApiError, ConnectionError, TimeoutError, LabelStudioUnavailable)

    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if max_open is not None and max_open < 0:
        raise ValueError(f"max_open must be zero or more, got {max_open}")
    existing = set(existing)
    fresh, skipped_existing = [], 0
    for candidate in candidates:
        if candidate.key in existing:
            skipped_existing += 1
            continue
        existing.add(candidate.key)
        fresh.append(candidate)
    fresh.sort(key=lambda c: -c.priority)  # stable: equal priorities keep their order
    room = len(fresh) if max_open is None else max(0, max_open - open_count)
    todo, skipped_backpressure = fresh[:room], len(fresh) - min(room, len(fresh))
    if skipped_backpressure:
        log.info("project %s has %d open tasks (cap %s): %d candidates wait for the next push", pid, open_count, max_open, skipped_backpressure)
    if not todo:
        return PushResult(0, skipped_existing, skipped_backpressure)

    overlays = {info.key for info in store.list(layout.overlay_prefix(model_version))}
    try:
        if image_url is not None:
            url = image_url
        elif isinstance(store, LocalStore):
            url = local_files_urls(ls, pid, store, document_root)
            check_served(ls, store, todo[0].key, url(todo[0].key), document_root=document_root)
        else:
            url = presigner(store)
    except service_errors as err:
        raise PushInterrupted(
            f"push to Label Studio project {pid} stopped before any of {len(todo)} new tasks was created: {_describe(err)}. "
            "Re-running the push is safe.",
            created=0,
            remaining=len(todo),
        ) from err
    created = 0
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        tasks = []
        for c in batch:
            overlay = ensure_overlay(store, c, model_version=model_version, stored=overlays)
            tasks.append(task_for(c, image_url=url(c.key), overlay_url=url(overlay) if overlay else None, model_version=model_version))
        check()
        try:
            response = ls.projects.import_tasks(id=pid, request=tasks, return_task_ids=True)
        except service_errors as err:
            raise PushInterrupted(
                f"push to Label Studio project {pid} stopped after {created} of {len(todo)} new tasks were created "
                f"({len(todo) - created} not sent): {_describe(err)}. Re-running the push is safe: tasks already "
                "created are found by their object key and are not created again.",
                created=created,
                remaining=len(todo) - created,
            ) from err
        created += int(response.task_count if response.task_count is not None else len(batch))
    return PushResult(created, skipped_existing, skipped_backpressure)


def ensure_overlay(store: Store, candidate: Candidate, *, model_version: str, stored: Collection[str]) -> str | None:
    """The key of the frame's attention overlay: the one scoring stored (``stored``: the keys under
    the version's overlay prefix), else one drawn now from the candidate's map. None when the
    candidate has no map or its frame cannot be read (the task then shows the image alone)."""
    key = layout.overlay_key(model_version, candidate.key)
    if key in stored:
        return key
    if candidate.attention is None:
        return None
    from attnloop.imaging import ImageError
    from attnloop.scoring import write_overlay

    try:
        return write_overlay(store, candidate.key, candidate.attention, model_version=model_version)
    except (ImageError, KeyError) as err:
        log.warning("no attention overlay for %s: %s; its task shows the image alone", candidate.key, err)
        return None


def local_files_urls(ls, project: int, store: LocalStore, document_root: str | Path | None = None) -> Callable[[str], str]:
    """``key → /data/local-files/?d=…``: the URLs Label Studio serves a local store's files under.

    Label Studio serves a file only to users of a project with a local-files storage covering it,
    and refuses a storage at its document root itself; so the project gets one storage per top
    folder of the store that a URL names (``frames/``, ``overlays/``), created on first use and never
    synced, so it imports nothing. The store must lie at or under ``document_root`` (default: the
    store folder, the root Label Studio gets when attnloop starts it).
    """
    root = store.root
    document_root = Path(document_root).resolve() if document_root else root
    try:
        under = root.relative_to(document_root)
    except ValueError:
        raise NotServed(
            f"the local store {root} is outside Label Studio's document root {document_root} (ATTNLOOP_LABEL_STUDIO_DOCUMENT_ROOT), "
            "so it cannot show its images; no task was created: start Label Studio with LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT "
            "at the store folder (or above it) and set ATTNLOOP_LABEL_STUDIO_DOCUMENT_ROOT to the same folder, or use an S3 store"
        ) from None
    from label_studio_sdk.core.api_error import ApiError

    covered = [Path(s.path).resolve() for s in ls.import_storage.local.list(project=project) if s.path]

    def ensure(folder: Path) -> None:
        if any(folder == c or c in folder.parents for c in covered):
            return
        top = root / folder.relative_to(root).parts[0] if folder != root else root
        try:
            ls.import_storage.local.create(project=project, path=str(top), title=f"attnloop {top.name}", use_blob_urls=False)
        except ApiError as err:
            raise NotServed(
                f"Label Studio refused a local-files storage for {top} ({_describe(err)}), so it cannot show the store's images; "
                f"no task was created: start it with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and "
                f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={document_root}, or use an S3 store"
            ) from err
        covered.append(top)

    def url(key: str) -> str:
        ensure((root / key).parent)
        return "/data/local-files/?d=" + quote((under / key).as_posix())

    return url


def check_served(ls, store: Store, key: str, url: str, *, document_root: str | Path | None) -> None:
    """Fetch ``url`` from Label Studio with the client's credentials, as an annotator's browser
    will, and raise :class:`NotServed` (with the setting to fix) unless it answers ``key``'s bytes."""
    import httpx

    wrapper = getattr(ls, "_client_wrapper", None)  # the SDK's base URL and auth headers (legacy token or access token)
    if wrapper is None:
        log.warning("cannot check that Label Studio serves %s: the client is not a label_studio_sdk client", url)
        return
    base = str(wrapper.get_base_url()).rstrip("/")
    answer = httpx.get(base + url, headers=wrapper.get_headers(), timeout=30.0)
    if answer.status_code == 200 and answer.content == store.get(key):
        return
    assumed = f"{Path(document_root).resolve()} (ATTNLOOP_LABEL_STUDIO_DOCUMENT_ROOT)" if document_root else (
        f"the store folder {getattr(store, 'root', '')} (ATTNLOOP_LABEL_STUDIO_DOCUMENT_ROOT is unset)"
    )
    what = "a different file" if answer.status_code == 200 else f"{answer.status_code}"
    hint = (
        "local-files serving is off there: start it with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true"
        if answer.status_code == 403
        else "set ATTNLOOP_LABEL_STUDIO_DOCUMENT_ROOT to the LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT that Label Studio runs with "
        "(best: start it with that root at the store folder)"
    )
    raise NotServed(
        f"Label Studio at {base} answered {what} for {url}, the image of {key}, so annotators would see an error box; "
        f"no task was created. attnloop took its document root to be {assumed}: {hint}, or use an S3 store"
    )


def presigner(store: Store) -> Callable[[str], str]:
    def url(key: str) -> str:
        return store.presign(key, expires=URL_LIFETIME)

    return url


def _describe(err: BaseException) -> str:
    from label_studio_sdk.core.api_error import ApiError

    if isinstance(err, ApiError):
        return f"Label Studio answered {err.status_code}: {str(err.body)[:300]}"
    return f"{type(err).__name__}: {err}"
