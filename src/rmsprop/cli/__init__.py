"""The ``rmsprop`` command-line program: ``rmsprop demo``, ``rmsprop flavors``, ``rmsprop info``.

Each command is one module of this package, listed in `rmsprop.cli.main.COMMANDS`.
Command modules import only the standard library at import time, so
``rmsprop --help`` is instant; each imports what it needs when it runs.
"""

from rmsprop.cli.main import main

__all__ = ["main"]
