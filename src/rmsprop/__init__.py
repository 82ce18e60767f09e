"""rmsprop: every framework's RMSprop, exactly, in NumPy, PyTorch and JAX.

The core imports NumPy only; the framework backends live in submodules that
import their framework: `rmsprop.numpy` (the reference), `rmsprop.torch` (a
drop-in `torch.optim.RMSprop`) and `rmsprop.jax` (a drop-in `optax.rmsprop`).

Example:
    >>> import rmsprop
    >>> rmsprop.flavor("tensorflow").initial_square_avg
    1.0
"""

from rmsprop._config import Config
from rmsprop.flavors import FLAVORS, Flavor, flavor
from rmsprop.translation import TranslationError, translate

__all__ = ["FLAVORS", "Config", "Flavor", "TranslationError", "flavor", "translate"]
__version__ = "0.1.0"
