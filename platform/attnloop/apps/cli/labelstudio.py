"""``attnloop ls bootstrap | push | harvest | simulate``: the Label Studio commands.

``add_commands(subparsers)`` registers them on the main parser's subcommands; every handler
takes ``(args, settings)`` like the other commands. Label Studio's address comes from
``ATTNLOOP_LABEL_STUDIO_URL``/``_TOKEN``/``_PROJECT`` (``settings.label_studio``); a server that
does not answer or refuses the token is one line naming the URL and what to check (exit 2,
:mod:`attnloop.labelstudio.client`). Each command's last line says what comes next.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from attnloop.config import LabelStudioSettings, Settings
from attnloop.labelstudio.project import TEMPLATES
from attnloop.layout import ANNOTATIONS
from attnloop.priority import RANKINGS


def _connect(args: argparse.Namespace, settings: Settings):
    from attnloop.labelstudio.client import connect

    ls_settings = settings.label_studio
    title = args.title or ls_settings.project
    return ls_settings, connect(ls_settings), title


def _title_option(args: argparse.Namespace) -> str:
    """`` --title T`` when the command was given one (so the next command names the same project)."""
    return f" --title {shlex.quote(args.title)}" if args.title else ""


def _store_option(args: argparse.Namespace) -> str:
    return f" --store {shlex.quote(args.store)}" if getattr(args, "store", None) else ""


def _project(ls, ls_settings: LabelStudioSettings, title: str):
    from attnloop.labelstudio.project import find_project

    project = find_project(ls, title)
    if project is None:
        raise LookupError(f"no Label Studio project titled {title!r} at {ls_settings.url}; create it with `attnloop ls bootstrap --card RUN/card.json`")
    return project


def cmd_bootstrap(args: argparse.Namespace, settings: Settings) -> int:
    from attnloop.labelstudio.project import bootstrap

    if bool(args.card) == bool(args.classes):
        raise ValueError("give the classes with exactly one of --card RUN/card.json or --classes A,B,...")
    if args.card:
        from attnloop.card import ModelCard

        classes = list(ModelCard.load(args.card).class_names)
    else:
        classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    ls_settings, ls, title = _connect(args, settings)
    project = bootstrap(ls, title=title, classes=classes, template=args.template)
    print(f"project {project.id} {title!r} at {ls_settings.url}/projects/{project.id} with classes {', '.join(classes)}")
    print(f"next: send the highest-priority scored frames (`attnloop score` first) as tasks with `attnloop ls push{_title_option(args)}`")
    return 0


def cmd_push(args: argparse.Namespace, settings: Settings) -> int:
    from attnloop import lease
    from attnloop.labelstudio.push import PushInterrupted, push_scored
    from attnloop.scores import latest_version

    store = settings.store(args.store)
    ls_settings, ls, title = _connect(args, settings)
    project = _project(ls, ls_settings, title)
    version = args.model_version or latest_version(store)
    try:
        result = push_scored(
            ls, project, store=store, model_version=version, limit=args.limit, ranking=args.ranking, max_open=args.max_open,
            batch_size=args.batch_size, document_root=ls_settings.document_root,
        )
    except (PushInterrupted, lease.Busy, lease.Lost) as err:
        print(f"attnloop: error: {err}", file=sys.stderr)
        return 1
    held = f"{result.skipped_backpressure} held back (max open {args.max_open})" if args.max_open is not None else ""
    print(
        f"project {project.id} (model version {version}): {result.created} tasks created, {result.skipped_existing} already queued"
        + (f", {held}" if held else "")
    )
    print(
        f"next: annotate at {ls_settings.url}/projects/{project.id}, then bring the boxes back with "
        f"`attnloop ls harvest{_title_option(args)}{_store_option(args)}`"
    )
    return 0


def cmd_harvest(args: argparse.Namespace, settings: Settings) -> int:
    from attnloop import lease
    from attnloop.labelstudio.harvest import harvest
    from attnloop.labelstudio.project import project_classes

    store = settings.store(args.store)
    ls_settings, ls, title = _connect(args, settings)
    project = _project(ls, ls_settings, title)
    try:
        result = harvest(ls, project, store=store, classes=project_classes(project), prefix=args.prefix, rebuild=args.rebuild)
    except (lease.Busy, lease.Lost) as err:  # another harvest of the project: nothing was written by this one
        print(f"attnloop: error: {err}", file=sys.stderr)
        return 1
    for problem in result.problems:
        print(f"problem ({problem.reason}): {problem.detail}", file=sys.stderr)
    if result.written:
        rebuilt = (
            f" (rebuilt from Label Studio; altered version{'s' if len(result.altered) > 1 else ''} "
            f"{', '.join(f'v{v}' for v in result.altered)} passed over)" if result.altered else (" (rebuilt from Label Studio)" if args.rebuild else "")
        )
        print(
            f"annotation set v{result.version} at {store.uri}/{result.key}: {result.added} added, {result.updated} updated, "
            f"{result.removed} removed{rebuilt}"
        )
    else:
        where = f"v{result.version} ({result.key})" if result.version else "none yet"
        print(f"nothing new; the latest annotation set is {where}")
    if result.key:
        print(
            f"next: retrain on it with `attnloop train --data BASE_DATA --boxes {result.key} --store {shlex.quote(store.uri)} --out RUN` "
            "(or the retrain flow, which takes the latest set)"
        )
    else:
        print(f"next: annotate at {ls_settings.url}/projects/{project.id}, then harvest again")
    return 0


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from attnloop.labelstudio.annotator import read_truth, simulate_annotator

    truth = read_truth(args.truth)
    ls_settings, ls, title = _connect(args, settings)
    project = _project(ls, ls_settings, title)
    counts = simulate_annotator(
        ls, project, truth, box_jitter=args.box_jitter, miss_rate=args.miss_rate, wrong_class_rate=args.wrong_class_rate,
        skip_rate=args.skip_rate, seed=args.seed, limit=args.limit, mark_shortcuts=not args.no_shortcut_marks,
    )
    print(f"project {project.id}: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items()))
    print(f"next: bring the annotations back with `attnloop ls harvest{_title_option(args)}`")
    return 0


def add_commands(subparsers) -> None:
    """Register ``ls bootstrap | push | harvest | simulate`` on the main parser's subcommands."""
    ls = subparsers.add_parser("ls", help="Label Studio: project, tasks out, annotations back").add_subparsers(dest="ls_command", required=True)
    title_help = "project title (default: ATTNLOOP_LABEL_STUDIO_PROJECT or 'attnloop box correction')"
    store_help = "store URI (default: ATTNLOOP_STORE or a folder under ATTNLOOP_HOME)"

    bs = ls.add_parser("bootstrap", help="create (or update) the box-correction project with the model's classes")
    bs.add_argument("--card", type=Path, default=None, help="a model card (RUN/card.json) whose classes become the labels")
    bs.add_argument("--classes", default=None, help="comma-separated class names (instead of --card)")
    bs.add_argument("--template", default="box_correction", help=f"{' or '.join(TEMPLATES)}, or an .xml file")
    bs.add_argument("--title", default=None, help=title_help)
    bs.set_defaults(func=cmd_bootstrap)

    ps = ls.add_parser("push", help="send the highest-priority scored frames as tasks with pre-annotations (each key once)")
    ps.add_argument(
        "--model-version", default=None,
        help="the scores to read and the version recorded on predictions (default: the version of the store's newest scores, "
        "as `attnloop score` recorded it)",
    )
    ps.add_argument("--store", default=None, help=store_help)
    ps.add_argument(
        "--limit", type=int, default=None,
        help="create at most this many NEW tasks in this push (frames already queued neither count nor come again; default: all)",
    )
    ps.add_argument(
        "--ranking", choices=RANKINGS, default=RANKINGS[0],
        help="coverage (default): spread over predicted classes and embedding clusters; priority: by margin; hybrid: a diverse batch of --limit frames",
    )
    ps.add_argument("--max-open", type=int, default=None, help="keep at most this many tasks waiting for an annotator")
    ps.add_argument("--batch-size", type=int, default=100)
    ps.add_argument("--title", default=None, help=title_help)
    ps.set_defaults(func=cmd_push)

    hv = ls.add_parser("harvest", help="write the next annotation-set version from new or edited annotations")
    hv.add_argument("--store", default=None, help=store_help)
    hv.add_argument("--prefix", default=ANNOTATIONS, help="where the versions live in the store")
    hv.add_argument("--title", default=None, help=title_help)
    hv.add_argument(
        "--rebuild", action="store_true",
        help="read every completed annotation again and write the next version afresh: the recovery when the latest "
        "set was altered (its metadata names the altered version)",
    )
    hv.set_defaults(func=cmd_harvest)

    sm = ls.add_parser("simulate", help="complete open tasks from ground truth (a simulated annotator)")
    sm.add_argument("--truth", type=Path, required=True, help="JSONL of manifest records whose 'image' is the object key")
    sm.add_argument("--box-jitter", type=float, default=0.0, help="edge noise, a share of the box size")
    sm.add_argument("--miss-rate", type=float, default=0.0)
    sm.add_argument("--wrong-class-rate", type=float, default=0.0)
    sm.add_argument("--skip-rate", type=float, default=0.0)
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--limit", type=int, default=None, help="at most this many tasks")
    sm.add_argument(
        "--no-shortcut-marks", action="store_true",
        help="never mark a record's confounder (by default it is marked where the task's attention proposal covers half of it)",
    )
    sm.add_argument("--title", default=None, help=title_help)
    sm.set_defaults(func=cmd_simulate)
