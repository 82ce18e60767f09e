"""``python -m rmsprop``: the ``rmsprop`` command-line program."""

import sys

from rmsprop.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
