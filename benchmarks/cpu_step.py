"""Benchmark the RMSprop step on the CPU: ours beside torch, torch.compile, optax and NumPy.

Usage:
    python benchmarks/cpu_step.py                 # everything (several minutes: torch.compile)
    python benchmarks/cpu_step.py --no-compile    # without torch.compile
    python benchmarks/cpu_step.py --json out.json

Prints a Markdown table per model shape (medians of --steps steps, one process,
one run) and the fused kernel's first-call cost in fresh processes. Quote
medians and ratios from one run: these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

from rmsprop import benchmark
from rmsprop.benchmark import _common

FIRST_CALL = """
import time, torch
from rmsprop.torch import RMSprop
p = torch.nn.Parameter(torch.randn(1000)); p.grad = torch.randn(1000)
opt = RMSprop([p], fused=True, momentum=0.9)
start = time.perf_counter(); opt.step(); print(time.perf_counter() - start)
"""


def first_call_seconds() -> tuple[float, float]:
    """The fused step's first call in a fresh process: empty kernel cache, then warm cache."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        runs = [
            float(subprocess.run([sys.executable, "-c", FIRST_CALL], env=env, check=True,
                                 capture_output=True, text=True).stdout)
            for _ in range(2)
        ]  # fmt: skip
    return runs[0], runs[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument(
        "--no-compile", action="store_true", help="skip torch.compile (slow to build)"
    )
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()

    implementations = [i for i in benchmark.IMPLEMENTATIONS
                       if not (args.no_compile and i == "torch.compile")]  # fmt: skip
    installed = _common.versions(["numpy", "torch", "numba", "jax", "optax"])
    print(f"{platform.machine()}, {os.cpu_count()} CPUs; {', '.join(installed)}", flush=True)
    cold, warm = first_call_seconds()
    print(f"fused kernel, first step in a fresh process: {cold:.2f} s with an empty cache, "
          f"{warm:.2f} s with a warm one", flush=True)  # fmt: skip
    rows = benchmark.run_cpu(
        implementations=implementations,
        steps=args.steps,
        progress=lambda what: print(f"  timing {what}", file=sys.stderr, flush=True),
    )
    print(benchmark.cpu.markdown(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"first_call_s": {"cold": cold, "warm": warm}, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
