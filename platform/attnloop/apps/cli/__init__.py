"""The ``attnloop`` command line: one module per command group, each with ``add_commands(sub)``
(contracts: docs/architecture.md). Every handler takes ``(args, settings)``, the settings read from
the environment once when the command starts."""

from __future__ import annotations

import argparse
import logging
import sys

from attnloop.apps.cli import bench, data, demo, labelstudio, monitor, registry, stream, train
from attnloop.config import Settings
from attnloop.storage import StoreUnavailable

GROUPS = (data, train, bench, stream, monitor, labelstudio, registry, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attnloop", description="Correct image classifiers through their attention.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args, Settings.from_env())
    except (ValueError, FileNotFoundError, LookupError) as err:
        print(f"attnloop: error: {err}", file=sys.stderr)
        return 2
    except StoreUnavailable as err:  # the store's server is down: one line, a re-run is safe
        print(f"attnloop: error: {err}", file=sys.stderr)
        return 3
    except RuntimeError as err:
        from attnloop.registry import RegistryError  # imported late: the registry brings MLflow along

        if not isinstance(err, RegistryError):
            raise
        print(f"attnloop: error: {err}", file=sys.stderr)  # the registry failed: one line, nothing moved
        return 2


if __name__ == "__main__":
    sys.exit(main())
