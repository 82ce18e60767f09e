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

import numpy as np

from rmsprop import benchmark

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


def versions() -> str:
    import numba
    import torch

    parts = [f"Python {platform.python_version()}", f"numpy {np.__version__}",
             f"torch {torch.__version__}", f"numba {numba.__version__}"]  # fmt: skip
    try:
        import jax
        import optax

        parts += [f"jax {jax.__version__}", f"optax {optax.__version__}"]
    except ImportError:
        pass
    return ", ".join(parts)


def markdown(rows: list[dict]) -> str:
    out = []
    for shape in dict.fromkeys(r["shape"] for r in rows):
        out += [f"\n**{shape}**\n",
                "| variant | implementation | median ms | GB/s at minimal bytes | vs in-place add "
                "| × torch foreach | × torch for-loop | first step s |",
                "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in (r for r in rows if r["shape"] == shape):
            fmt = lambda x: "—" if x is None else f"{x:.2f}"  # noqa: E731
            out.append(
                f"| {r['variant']} | {r['implementation']} | {r['median_ms']:.2f} | "
                f"{r['gb_per_s']:.1f} | {r['vs_add']:.0%} | {fmt(r['vs_torch_foreach'])} | "
                f"{fmt(r['vs_torch_forloop'])} | {r['compile_s']:.2f} |"
            )
    return "\n".join(out)


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
    print(f"{platform.machine()}, {os.cpu_count()} CPUs; {versions()}", flush=True)
    cold, warm = first_call_seconds()
    print(f"fused kernel, first step in a fresh process: {cold:.2f} s with an empty cache, "
          f"{warm:.2f} s with a warm one", flush=True)  # fmt: skip
    rows = benchmark.run_cpu(
        implementations=implementations,
        steps=args.steps,
        progress=lambda what: print(f"  timing {what}", file=sys.stderr, flush=True),
    )
    print(markdown(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"first_call_s": {"cold": cold, "warm": warm}, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
