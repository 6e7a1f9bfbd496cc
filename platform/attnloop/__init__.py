"""attnloop: correct image classifiers through their attention.

The library: pure cores (imaging, priority signals and selection, metrics, the gate), the torch
layer that trains and exports models, and the glue to one service each (store, MLflow registry,
Label Studio). The applications live in :mod:`attnloop.apps`, the flows in ``flows/``, the service
in ``serving/``. What each part may import, and the contracts between the stages with their
owners: docs/architecture.md.
"""
