"""``python -m bgopt_plugin`` runs the ``bgopt`` command line."""

from .cli import console_main

console_main()
