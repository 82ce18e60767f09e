"""PyTorch backend: `RMSprop`, a drop-in for `torch.optim.RMSprop`, and its functional form.

Importing this module imports torch; ``import rmsprop`` alone does not. It
registers the custom op ``rmsprop::fused_step`` (a compiled step calls it).
"""

from rmsprop.torch._functional import rmsprop
from rmsprop.torch._fused.settings import LaunchSettings
from rmsprop.torch._optimizer import RMSprop

__all__ = ["LaunchSettings", "RMSprop", "rmsprop"]
