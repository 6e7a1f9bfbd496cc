"""What people run: the command line (:mod:`attnloop.apps.cli`), the demo, the local stack, the
strategy benchmark and a local Label Studio server. Applications may run the flows; the library,
the flows and serving never import them (docs/architecture.md)."""
