"""``python -m attnloop …`` runs the command line, where the ``attnloop`` script is not on the PATH."""

import sys

from attnloop.apps.cli import main

sys.exit(main())
