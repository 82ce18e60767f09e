"""Where the host's time goes in a fused step of a small model, on one CUDA GPU.

Usage:
    python benchmarks/gpu_host.py [--steps 500] [--profile]
    TRITON_INTERPRET=1 python benchmarks/gpu_host.py --cpu    # this package's Python only

A small model's step (``dqn-1m``: 20 tensors, 1M parameters) is launch-bound:
its kernel runs for microseconds, so what a step costs is the host's time to
issue it; at GPT-2's 148 tensors (timed here as 148 two-element tensors) the
host's time may exceed a bfloat16 kernel's. This prints, per model and
variant, the host microseconds of a step of torch foreach, of torch's fused
AdamW (the same tensors; its per-step work is C++), of the fused step, and of
the fused step with its kernel launch replaced by a no-op (this
package's own Python; the difference from the full step is Triton's launch).
With ``--profile``, cProfile's heaviest functions of the fused step too. With
``--cpu`` (no GPU needed), only the stubbed column, on CPU tensors the fused
path takes through Triton's interpreter. One process, one card: quote ratios
from one run.
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

from rmsprop import benchmark
from rmsprop.benchmark import cuda
from rmsprop.kernels import triton as kernel

VARIANTS = ["plain", "momentum", "centered+momentum"]
COLUMNS = ["torch foreach", "torch fused AdamW", "rmsprop fused", "stubbed"]
# The DQN-sized model, and GPT-2's 148 tensors shrunk to 2 elements each: the host's cost at
# that tensor count, with GPU work too small to hide it or to hold the host back.
SHAPES = {"dqn-1m": cuda.SHAPES["dqn-1m"], "148 tiny": [(2,)] * len(cuda.SHAPES["gpt2-124m"])}


class _NoLaunch:
    """Stands in for the kernel: indexing by a grid gives a launcher that does nothing."""

    def __getitem__(self, grid: Any) -> Any:
        return lambda *args, **kwargs: None


@contextlib.contextmanager
def _kernel_stubbed() -> Iterator[None]:
    launched = kernel.rmsprop_kernel
    kernel.rmsprop_kernel = _NoLaunch()
    try:
        yield
    finally:
        kernel.rmsprop_kernel = launched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--profile", action="store_true", help="also profile the fused step")
    parser.add_argument(
        "--cpu", action="store_true",
        help="only the fused step with its launch stubbed, on CPU tensors (TRITON_INTERPRET=1)",
    )  # fmt: skip
    args = parser.parse_args()
    # The kernel registry's answer, as the optimizer gets it.
    why_not = benchmark.unavailable("rmsprop fused", "cpu") if args.cpu else ""
    if why_not:
        sys.exit(f"benchmarks/gpu_host.py --cpu: {why_not}")
    if not args.cpu and not torch.cuda.is_available():
        sys.exit(
            "benchmarks/gpu_host.py times the host's side of CUDA steps and needs a CUDA GPU, "
            "but torch sees none here (--cpu times this package's Python alone, on the CPU)"
        )
    device = "cpu" if args.cpu else "cuda"
    wait = (lambda: None) if args.cpu else torch.cuda.synchronize
    names = ["stubbed"] if args.cpu else [*COLUMNS[:-1], "stubbed"]
    print(
        "| model | variant | torch foreach µs | torch fused AdamW µs | rmsprop fused µs "
        "| fused, launch stubbed µs |"
    )
    print("|---|---|---|---|---|---|")
    for model, shape in SHAPES.items():
        for variant in VARIANTS:
            cells = ["—"] * (len(COLUMNS) - len(names))
            for name in names:
                [params] = benchmark.parameter_sets(shape, torch.float32, 1, device)
                options = cuda.VARIANTS[variant].options
                if name == "torch fused AdamW":  # torch's own fused step: its host work in C++
                    step = torch.optim.AdamW(params, fused=True).step
                else:
                    implementation = "rmsprop fused" if name == "stubbed" else name
                    step = benchmark.torch_step(implementation, params, options)
                with _kernel_stubbed() if name == "stubbed" else contextlib.nullcontext():
                    step()  # state, and the plan, built outside the timing
                    wait()
                    timing = benchmark.time_host([step], args.steps, warmup=20)
                wait()
                cells.append(f"{timing['median_ms'] * 1e3:.1f}")
            print(f"| {model} | {variant} | " + " | ".join(cells) + " |")
    if args.profile:
        [params] = benchmark.parameter_sets(SHAPES["dqn-1m"], torch.float32, 1, device)
        step = benchmark.torch_step("rmsprop fused", params, cuda.VARIANTS["momentum"].options)
        with _kernel_stubbed() if args.cpu else contextlib.nullcontext():
            step()
            profile = cProfile.Profile()
            profile.runcall(lambda: [step() for _ in range(args.steps)])
        pstats.Stats(profile).sort_stats("tottime").print_stats(18)


if __name__ == "__main__":
    main()
