"""The ``attnloop`` command line: one module per command group, each with ``add_commands(sub)``
(contracts: docs/architecture.md). Every handler takes ``(args, settings)``, the settings read from
the environment once when the command starts."""

from __future__ import annotations

import argparse
import errno
import logging
import sys

from attnloop.apps.cli import bench, data, demo, labelstudio, monitor, registry, stream, train
from attnloop.config import Settings
from attnloop.redact import redact
from attnloop.storage import StoreUnavailable

GROUPS = (data, train, bench, stream, monitor, labelstudio, registry, demo)
# what the machine refused, not attnloop's fault: one line naming the file, never a traceback
ENVIRONMENT_ERRORS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up", errno.EROFS: "the file system is read-only",
                      errno.EACCES: "permission denied", errno.EPERM: "not permitted"}


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
        return _error(err, 2)
    except StoreUnavailable as err:  # the store's server is down: one line, a re-run is safe
        return _error(err, 3)
    except OSError as err:
        if err.errno not in ENVIRONMENT_ERRORS:
            raise
        where = f" writing {err.filename}" if err.filename else ""
        return _error(f"{ENVIRONMENT_ERRORS[err.errno]}{where} ({err.strerror}); the store's objects are written whole or not at all, "
                      "so make room (or fix the permission) and run the command again", 3)
    except RuntimeError as err:
        from attnloop.registry import RegistryError  # imported late: the registry brings MLflow along

        if not isinstance(err, RegistryError):
            raise
        return _error(err, 2)  # the registry failed: one line, nothing moved


def _error(err: object, code: int) -> int:
    """One line on stderr, credentials masked (attnloop.redact); the exit code."""
    print(f"attnloop: error: {redact(err)}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
