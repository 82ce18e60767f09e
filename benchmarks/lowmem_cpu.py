"""The fused CPU step's speed with low-memory state (bfloat16, 8-bit) against float32 state.

Usage:
    python benchmarks/lowmem_cpu.py            # 25M parameters in 100 tensors, 15 steps each
    python benchmarks/lowmem_cpu.py --quick    # 1M parameters: checks that it runs

Steps `rmsprop.torch.RMSprop` (``fused=True``) on float32 CPU parameters, plain and
centered with momentum, with float32 state, bfloat16 state (rounded to nearest, and
stochastically: "bf16 sr") and ``state_dtype="8bit"`` (and, for comparison, 8-bit state
through the single-tensor path, "8bit loop"), and prints
the median step time of each side by side, the speed-up of 8-bit over float32 (the
target: at least 1.15), and the state's bytes per parameter summed from the optimizer's
state tensors (`RMSprop.state_nbytes`). Gradients are fixed: a step
reads and writes the same memory whatever their values.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Any

import numba
import torch

from rmsprop.kernels import numba_cpu
from rmsprop.torch import RMSprop

RULES: dict[str, dict[str, Any]] = {
    "plain": {},
    "centered+momentum": {"centered": True, "momentum": 0.9},
}
STATE_DTYPES: dict[str, dict[str, Any]] = {
    "float32": {},
    "bf16": {"state_dtype": torch.bfloat16},
    "bf16 sr": {"state_dtype": torch.bfloat16, "stochastic_rounding": True},
    "8bit": {"state_dtype": "8bit"},
    # The same state through the single-tensor path (torch ops), which steps it elsewhere.
    "8bit loop": {"state_dtype": "8bit", "fused": False, "foreach": False},
}


def median_step_ms(
    tensors: int, numel: int, options: dict[str, Any], steps: int
) -> tuple[float, float]:
    """(median ms a step, state bytes a parameter) of one optimizer over fresh tensors."""
    generator = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(numel, generator=generator)) for _ in range(tensors)]
    for p in params:
        p.grad = torch.randn(numel, generator=generator) * 1e-2
    opt = RMSprop(params, lr=1e-4, **{"fused": True, **options})
    for _ in range(3):  # compile or load the kernels, build and keep the plan
        opt.step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, opt.state_nbytes() / (tensors * numel)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1M parameters, 5 steps")
    args = parser.parse_args()
    tensors, numel, steps = (10, 100_000, 5) if args.quick else (100, 250_000, 15)
    print(
        f"{tensors} float32 tensors of {numel} ({tensors * numel / 1e6:g}M parameters), "
        f"median of {steps} steps; {platform.processor() or platform.machine()}, "
        f"{numba_cpu.num_threads(limit=torch.get_num_threads())} threads "
        f"({numba_cpu.threading_layer()}); torch {torch.__version__}, numba {numba.__version__}"
    )
    print(f"{'rule':<20}{'state':>9}{'ms/step':>10}{'bytes/param':>13}{'vs float32':>12}")
    for rule, rule_options in RULES.items():
        baseline = 0.0
        for state, state_options in STATE_DTYPES.items():
            ms, nbytes = median_step_ms(tensors, numel, {**rule_options, **state_options}, steps)
            baseline = baseline or ms
            print(f"{rule:<20}{state:>9}{ms:>10.2f}{nbytes:>13.3f}{baseline / ms:>11.2f}x")


if __name__ == "__main__":
    main()
