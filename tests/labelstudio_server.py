"""A real Label Studio server for integration tests and benchmarks, on loopback.

The process management is the package's (:mod:`attnloop.apps.labelstudio_server`), shared with
``attnloop demo``: its own venv (``.venv-ls``), a fresh data folder, an admin user and a legacy
API token. A server that does not start raises with the tail of its log: a test using it errors,
it is never skipped. ``ATTNLOOP_LABEL_STUDIO_URL`` and ``ATTNLOOP_LABEL_STUDIO_TOKEN`` point the
fixtures at a running server instead.
"""

from __future__ import annotations

from attnloop.apps.labelstudio_server import LabelStudioServer, label_studio_server, new_server, wait_healthy

LabelStudioProcess = LabelStudioServer  # the name the tests and benchmarks know

__all__ = ["LabelStudioProcess", "LabelStudioServer", "label_studio_server", "new_server", "wait_healthy"]
