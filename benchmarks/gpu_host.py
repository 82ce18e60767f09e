"""Where the host's time goes in a fused step of a small model, on one CUDA GPU.

Usage:
    python benchmarks/gpu_host.py [--steps 500] [--profile]

A small model's step (``dqn-1m``: 20 tensors, 1M parameters) is launch-bound:
its kernel runs for microseconds, so what a step costs is the host's time to
issue it; at GPT-2's 148 tensors (timed here as 148 two-element tensors) the
host's time can exceed a bfloat16 kernel's. This prints, per model and
variant, the host microseconds of a step of torch foreach, of the fused step,
and of the fused step with its kernel launch replaced by a no-op (this
package's own Python; the difference from the full step is Triton's launch).
With ``--profile``, cProfile's heaviest functions of the fused step too. One
process, one card: quote ratios from one run.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import pstats
import sys
from collections.abc import Iterator
from typing import Any

import torch

from rmsprop.benchmark import _common, cuda
from rmsprop.torch import _triton

VARIANTS = ["plain", "momentum", "centered+momentum"]
# The DQN-sized model, and GPT-2's 148 tensors shrunk to 2 elements each: the host's cost at
# that tensor count, with GPU work too small to hide it or to hold the host back.
SHAPES = {"dqn-1m": cuda.SHAPES["dqn-1m"], "148 tiny": [(2,)] * len(cuda.SHAPES["gpt2-124m"])}


class _NoLaunch:
    """Stands in for the kernel: indexing by a grid gives a launcher that does nothing."""

    def __getitem__(self, grid: Any) -> Any:
        return lambda *args, **kwargs: None


@contextlib.contextmanager
def _kernel_stubbed() -> Iterator[None]:
    kernel = _triton._rmsprop_kernel
    _triton._rmsprop_kernel = _NoLaunch()
    try:
        yield
    finally:
        _triton._rmsprop_kernel = kernel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--profile", action="store_true", help="also profile the fused step")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit(
            "benchmarks/gpu_host.py times the host's side of CUDA steps and needs a CUDA GPU, "
            "but torch sees none here"
        )
    print("| model | variant | torch foreach µs | rmsprop fused µs | fused, launch stubbed µs |")
    print("|---|---|---|---|---|")
    for model, shape in SHAPES.items():
        for variant in VARIANTS:
            micros = []
            for name in ("torch foreach", "rmsprop fused", "stubbed"):
                [params] = _common.parameter_sets(shape, torch.float32, 1)
                implementation = "rmsprop fused" if name == "stubbed" else name
                step = _common.torch_step(implementation, params, cuda.VARIANTS[variant].options)
                step()  # state, and the plan, built outside the timing
                torch.cuda.synchronize()
                with _kernel_stubbed() if name == "stubbed" else contextlib.nullcontext():
                    timing = _common.time_host([step], args.steps, warmup=20)
                torch.cuda.synchronize()
                micros.append(timing["median_ms"] * 1e3)
            print(f"| {model} | {variant} | " + " | ".join(f"{m:.1f}" for m in micros) + " |")
    if args.profile:
        [params] = _common.parameter_sets(SHAPES["dqn-1m"], torch.float32, 1)
        step = _common.torch_step("rmsprop fused", params, cuda.VARIANTS["momentum"].options)
        step()
        profile = cProfile.Profile()
        profile.runcall(lambda: [step() for _ in range(args.steps)])
        pstats.Stats(profile).sort_stats("tottime").print_stats(18)


if __name__ == "__main__":
    main()
