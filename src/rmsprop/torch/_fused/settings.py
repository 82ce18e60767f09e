"""The Triton kernel's launch settings: arguments of a step, not globals to patch."""

from __future__ import annotations

import dataclasses

__all__ = ["DEFAULT_LAUNCH", "LaunchSettings"]


@dataclasses.dataclass(frozen=True)
class LaunchSettings:
    """How the kernel is launched: ``block`` elements and ``num_warps`` warps per program.

    Fixed rather than autotuned: autotuning runs the kernel repeatedly, which
    would update live state each time.

    Raises:
        ValueError: either is not a power of two.
    """

    block: int
    num_warps: int

    def __post_init__(self) -> None:
        for name in ("block", "num_warps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0 or value & (value - 1):
                raise ValueError(f"LaunchSettings.{name} must be a power of two, got {value!r}")


# The least total time of `rmsprop bench --sweep` at 1.3B parameters on an H200 over
# float32 and bfloat16, plain and centered+momentum (BENCHMARKS.md).
DEFAULT_LAUNCH = LaunchSettings(block=1024, num_warps=4)
