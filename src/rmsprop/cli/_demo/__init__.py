"""The parts of ``rmsprop demo``; `rmsprop.cli._demo.run.run_demo` runs them in order.

These modules import torch, matplotlib, scikit-learn and rich (the ``demo``
extra) at import time; only ``rmsprop demo`` imports them, once it has checked
that they are installed.
"""
