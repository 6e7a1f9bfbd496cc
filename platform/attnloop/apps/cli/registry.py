"""``attnloop registry register | gate | approve | rollback | show``: the MLflow model registry."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from attnloop.config import Settings
from attnloop.redact import redact


def cmd_registry(args: argparse.Namespace, settings: Settings) -> int:
    """The registry commands; a registry that fails ends them with one line naming it (its
    credentials redacted), exit code 2. ``registry.connect`` keeps MLflow's retry warnings quiet."""
    from attnloop import registry

    try:
        return _registry_command(args, settings, registry.connect(settings.registry_uri))
    except registry.RegistryError as err:
        print(f"attnloop: error: {err}", file=sys.stderr)
        return 2


def _registry_command(args: argparse.Namespace, settings: Settings, client) -> int:
    import dataclasses
    import getpass

    from attnloop import registry
    from attnloop.gate import AWAIT, PROMOTE

    name = getattr(args, "name", None) or settings.model_name
    where = redact(settings.registry_uri)
    if args.registry_command == "register":
        from attnloop.holdout import load_holdout
        from attnloop.publish import register_run

        holdout = load_holdout(args.holdout, split=args.split) if args.holdout else None
        version = register_run(
            client, name=name, run_dir=args.run, holdout=holdout, annotation_set=args.annotation_set,
            parent=args.parent, artifact_root=settings.artifact_root,
        )
        print(f"registered {name} version {version} as challenger at {where}")
        print(f"next: `attnloop registry gate --holdout {args.holdout or 'DIR'}"
              + ("" if name == settings.model_name else f" --name {name}")
              + "` compares it with the champion on a fixed holdout and promotes it when the gain passes")
    elif args.registry_command == "gate":
        from attnloop.holdout import load_holdout

        policy = dataclasses.replace(settings.gate, approval=settings.gate.approval or args.approval)
        holdout = load_holdout(args.holdout, split=args.split)
        decision, version, text = registry.gate(
            client, name=name, holdout=holdout, policy=policy, holdout_path=args.holdout, split=args.split,
        )
        print(text)
        if decision.action == PROMOTE:
            _write_reference(client, settings, args, name=name, version=version, holdout=holdout, origin=f"holdout {args.holdout}")
            print(f"next: {_serving_follows(name, version)}")
        elif decision.action == AWAIT:
            print(f"next: a person decides; `attnloop registry approve {name} {version}` promotes it (the report above says why it passed)")
        elif "rolled_back_at" in decision.figures:
            print(f"next: the champion stays where it is; to reinstate version {version} anyway, a person runs "
                  f"`attnloop registry approve {name} {version}`")
        else:
            print("next: the champion stays where it is; act on the reasons above (more corrections, another recipe, "
                  "a whole holdout), then `attnloop registry register RUN` and gate again")
        return 0 if decision.passed else 3
    elif args.registry_command == "approve":
        from attnloop.holdout import load_holdout

        registry.approve(client, name, args.version, by=args.by or getpass.getuser())
        print(f"{name} version {args.version} approved and promoted to champion")
        try:
            if args.holdout:
                holdout, origin = load_holdout(args.holdout, split=args.split), f"holdout {args.holdout} (--holdout)"
            else:
                holdout, path, split = registry.gated_holdout(client, name, args.version)
                origin = f"holdout {path} ({split} split, recorded by the gate)"
        except (LookupError, ValueError, FileNotFoundError) as err:  # the approval stands; say how to finish
            print(f"attnloop: warning: no drift reference written: {err}", file=sys.stderr)
            print(f"next: `attnloop monitor reference --holdout DIR --model {registry.model_uri(name, version=args.version)}` "
                  f"writes its drift reference; {_serving_follows(name, args.version)}")
            return 0
        _write_reference(client, settings, args, name=name, version=args.version, holdout=holdout, origin=origin)
        print(f"next: {_serving_follows(name, args.version)}")
    elif args.registry_command == "rollback":
        current, previous = registry.rollback(client, name, by=getpass.getuser())
        print(f"{name}: champion moved back from version {current} to version {previous}; version {current} is marked "
              "rolled back, and the gate will not promote it again")
        print(f"next: serving follows models:/{name}@champion back to version {previous} within its reload interval and "
              f"the next `attnloop score` scores with it; `attnloop registry approve {name} {current}` would reinstate {current}")
    else:  # show
        with registry.guarded(client, doing=f"listing the versions of {name}", unchanged="nothing was changed (show only reads)"):
            versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
            by_alias = client.get_registered_model(name).aliases if versions else {}
        if not versions:
            print(f"{name}: no versions at {where}")
            print("next: `attnloop registry register RUN` (a training run folder) makes the first challenger")
        aliases_of: dict[str, list[str]] = {}
        for alias, version in by_alias.items():
            aliases_of.setdefault(str(version), []).append(alias)
        for v in versions:
            tags = {k[len(registry.TAG) :]: t for k, t in v.tags.items() if k.startswith(registry.TAG)}
            aliases = ",".join(sorted(aliases_of.get(str(v.version), []))) or "-"
            rolled = " (rolled back)" if registry.standing_rollback(tags) else ""
            print(
                f"version {v.version:>3}  aliases {aliases:20} gate {tags.get('gate', '-'):18} "
                f"holdout accuracy {tags.get('holdout_accuracy', '-'):7} parent {tags.get('parent_version') or '-'}{rolled}"
            )
    return 0


def _serving_follows(name: str, version: str) -> str:
    return (f"serving follows models:/{name}@champion to version {version} within its reload interval, "
            "and the next `attnloop score` scores with it")


def _write_reference(client, settings: Settings, args: argparse.Namespace, *, name: str, version: str, holdout, origin: str) -> None:
    """The new champion's drift reference, as the promote flow writes it: promotion starts a new one
    (in a store of its own making when no frames came in yet; the line says where)."""
    from attnloop import registry

    store = settings.store(getattr(args, "store", None), create=True)
    meta = registry.write_reference(client, store, name=name, version=version, holdout=holdout, threads=settings.threads)
    print(f"drift reference of version {version} written to {redact(store.uri)}/references/{version}/: "
          f"{meta['frames']} frames of {origin}")


STORE_HELP = "default: ATTNLOOP_STORE or a folder under ATTNLOOP_HOME"


def add_commands(sub) -> None:
    """Register ``attnloop registry register | gate | approve | rollback | show`` on the main parser's subcommands."""
    reg = sub.add_parser("registry", help="MLflow model registry: register, gate, approve, roll back")
    reg_cmd = reg.add_subparsers(dest="registry_command", required=True)
    rr = reg_cmd.add_parser("register", help="export a run to ONNX, log it and register it as the challenger")
    rr.add_argument("run", type=Path, help="training run folder")
    rr.add_argument("--name", default=None, help="registered model (default: ATTNLOOP_MODEL_NAME or attnloop-abn)")
    rr.add_argument("--holdout", type=Path, default=None, help="dataset folder whose split is scored into the version's tags")
    rr.add_argument("--split", default="test")
    rr.add_argument("--annotation-set", default=None, help="version of the annotation set the run was trained on")
    rr.add_argument("--parent", default=None, help="parent version (default: the current champion)")
    rg = reg_cmd.add_parser("gate", help="challenger vs champion on a fixed holdout; promote when the gain passes")
    rg.add_argument("--name", default=None)
    rg.add_argument("--holdout", type=Path, required=True, help="dataset folder with manifest.jsonl")
    rg.add_argument("--split", default="test")
    rg.add_argument("--approval", action="store_true", help="a passing challenger waits for `registry approve`")
    rg.add_argument("--store", default=None, help=f"where a promotion writes the drift reference ({STORE_HELP})")
    ra = reg_cmd.add_parser("approve", help="promote a version the gate passed in approval mode, or reinstate one rolled back")
    ra.add_argument("name")
    ra.add_argument("version")
    ra.add_argument("--by", default=None, help="who approves (default: the current user)")
    ra.add_argument("--holdout", type=Path, default=None,
                    help="the holdout the drift reference is scored on (default: the one the gate recorded)")
    ra.add_argument("--split", default="test", help="with --holdout: the split to use")
    ra.add_argument("--store", default=None, help=f"where the drift reference goes ({STORE_HELP})")
    rb = reg_cmd.add_parser("rollback", help="move the champion back to the version it replaced")
    rb.add_argument("name")
    rs = reg_cmd.add_parser("show", help="versions, aliases and gate decisions")
    rs.add_argument("--name", default=None)
    reg.set_defaults(func=cmd_registry)
