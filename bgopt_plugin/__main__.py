"""``python -m bgopt_plugin`` runs the ``bgopt`` command line."""

import sys

from .cli import main

sys.exit(main())
