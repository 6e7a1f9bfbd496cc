"""attnloop: correct image classifiers through their attention.

The library: pure cores (imaging, priority signals and selection, metrics, the gate), the torch
layer that trains and exports models, and the glue to one service each (store, MLflow registry,
Label Studio). The applications live in :mod:`attnloop.apps`, the flows in ``flows/``, the service
in ``serving/``. What each part may import, and the contracts between the stages with their
owners: docs/architecture.md.

The one thing importing it does: OpenMP's idle threads sleep instead of spinning
(``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets it), which OpenMP reads only once, when
PyTorch loads it; on a machine shared with other work spinning threads made training several times
slower (:mod:`attnloop.threads`).
"""

from attnloop.threads import prepare_environment as _prepare_environment

_prepare_environment()
