"""Makes this folder's helper module (``worlds``: the multi-process launcher) importable."""

import pathlib
import sys

_HERE = str(pathlib.Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
