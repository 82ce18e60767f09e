"""Training tasks the accuracy benchmarks share with ``rmsprop demo``: its digits, its network.

Importing this module imports torch and scikit-learn (the ``demo`` extra).
"""

from rmsprop.cli._demo.training import load_split_digits
from rmsprop.cli._demo.training import make_model as digits_model

__all__ = ["digits_model", "load_split_digits"]
