"""``attnloop registry register | gate | approve | rollback | show``: the MLflow model registry."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from attnloop.config import Settings


def cmd_registry(args: argparse.Namespace, settings: Settings) -> int:
    """The registry commands; a registry that fails ends them with one line naming it, exit code 2."""
    from attnloop import registry

    if not getattr(args, "verbose", False):  # MLflow's retries log one warning each; the error line says it all
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    try:
        return _registry_command(args, settings, registry.connect(settings.registry_uri))
    except registry.RegistryError as err:
        print(f"attnloop: error: {err}", file=sys.stderr)
        return 2


def _registry_command(args: argparse.Namespace, settings: Settings, client) -> int:
    import dataclasses
    import getpass

    from attnloop import registry

    name = getattr(args, "name", None) or settings.model_name
    if args.registry_command == "register":
        from attnloop.holdout import load_holdout
        from attnloop.publish import register_run

        holdout = load_holdout(args.holdout, split=args.split) if args.holdout else None
        version = register_run(
            client, name=name, run_dir=args.run, holdout=holdout, annotation_set=args.annotation_set,
            parent=args.parent, artifact_root=settings.artifact_root,
        )
        print(f"registered {name} version {version} as challenger at {settings.registry_uri}")
    elif args.registry_command == "gate":
        from attnloop.holdout import load_holdout

        policy = dataclasses.replace(settings.gate, approval=settings.gate.approval or args.approval)
        decision, version, text = registry.gate(client, name=name, holdout=load_holdout(args.holdout, split=args.split), policy=policy)
        print(text)
        return 0 if decision.passed else 3
    elif args.registry_command == "approve":
        registry.approve(client, name, args.version, by=args.by or getpass.getuser())
        print(f"{name} version {args.version} approved and promoted to champion")
    elif args.registry_command == "rollback":
        current, previous = registry.rollback(client, name)
        print(f"{name}: champion moved back from version {current} to version {previous}")
    else:  # show
        with registry.guarded(client, doing=f"listing the versions of {name}", unchanged="nothing was changed (show only reads)"):
            versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
            by_alias = client.get_registered_model(name).aliases if versions else {}
        if not versions:
            print(f"{name}: no versions at {settings.registry_uri}")
        aliases_of: dict[str, list[str]] = {}
        for alias, version in by_alias.items():
            aliases_of.setdefault(str(version), []).append(alias)
        for v in versions:
            tags = {k[len(registry.TAG) :]: t for k, t in v.tags.items() if k.startswith(registry.TAG)}
            aliases = ",".join(sorted(aliases_of.get(str(v.version), []))) or "-"
            print(
                f"version {v.version:>3}  aliases {aliases:20} gate {tags.get('gate', '-'):18} "
                f"holdout accuracy {tags.get('holdout_accuracy', '-'):7} parent {tags.get('parent_version') or '-'}"
            )
    return 0


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
    ra = reg_cmd.add_parser("approve", help="promote a version the gate passed in approval mode")
    ra.add_argument("name")
    ra.add_argument("version")
    ra.add_argument("--by", default=None, help="who approves (default: the current user)")
    rb = reg_cmd.add_parser("rollback", help="move the champion back to the version it replaced")
    rb.add_argument("name")
    rs = reg_cmd.add_parser("show", help="versions, aliases and gate decisions")
    rs.add_argument("--name", default=None)
    reg.set_defaults(func=cmd_registry)
