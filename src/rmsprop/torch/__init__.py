"""PyTorch backend: `RMSprop`, a drop-in for `torch.optim.RMSprop`, and its functional form.

Importing this module imports torch; ``import rmsprop`` alone does not.
"""

from rmsprop.torch import _custom_op  # registers rmsprop::fused_step  # noqa: F401
from rmsprop.torch._functional import rmsprop
from rmsprop.torch._optimizer import RMSprop

__all__ = ["RMSprop", "rmsprop"]
