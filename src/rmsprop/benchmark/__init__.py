"""The step benchmarks: timing RMSprop steps, ours beside everyone else's, in one process.

`rmsprop.benchmark.cpu` times the CPU (``rmsprop bench``), `rmsprop.benchmark.cuda`
one CUDA card (``rmsprop bench --device cuda``); what they share (the variants
timed, which implementations can run, host timing, rows and tables) lives in
``rmsprop.benchmark._common``. They are a command's engines, never timed tests.
Nothing here imports torch, JAX or optax until a run needs them.

The CPU engine's names are also importable from here, as they were when it
was the only engine, and so are the building blocks the scripts in
``benchmarks/`` time with (`available`, `unavailable`, `parameter_sets`,
`torch_step`, `time_host`).
"""

from rmsprop.benchmark import cpu, cuda
from rmsprop.benchmark._common import (
    VARIANTS,
    Variant,
    available,
    parameter_sets,
    time_host,
    torch_step,
    unavailable,
)
from rmsprop.benchmark.cpu import DQN_NATURE, IMPLEMENTATIONS, SHAPES, run_cpu
from rmsprop.benchmark.cuda import run_cuda, sweep_cuda

__all__ = [
    "DQN_NATURE",
    "IMPLEMENTATIONS",
    "SHAPES",
    "VARIANTS",
    "Variant",
    "available",
    "cpu",
    "cuda",
    "parameter_sets",
    "run_cpu",
    "run_cuda",
    "sweep_cuda",
    "time_host",
    "torch_step",
    "unavailable",
]
