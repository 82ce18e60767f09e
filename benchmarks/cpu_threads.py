"""Where the fused CPU step's time goes at a small size: each thread's share, and the hand-off.

Usage:
    python benchmarks/cpu_threads.py            # the DQN network's shapes, float32, plain rule

Times, on one address table of the DQN network's tensors (1.7M parameters in
10 tensors): the whole step on one thread; on two threads through the fused
path's two ways of spreading it, the Python thread pool (``RMSPROP_CPU_THREADS=pool``)
and Numba's TBB threading layer (`parallel_table_kernel`, the default where the
``tbb`` package is installed); one thread's share alone; and each way's round
trip with almost no work (what handing work to the second thread costs). Medians
of interleaved rounds, one process: quote ratios from one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from importlib import metadata

import numba
import numpy as np

from rmsprop.benchmark.cpu import DQN_NATURE, address_table
from rmsprop.kernels import numba_cpu as kernel


def median_ms(step: Callable[[], object], steps: int) -> float:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    numels = [int(np.prod(shape)) for shape in DQN_NATURE]
    table, _keep = address_table(numels)
    tiny, _keep_tiny = address_table([64, 64])
    shares = table.shares(2)

    def spread(by: str, what: kernel.Table) -> Callable[[], object]:
        def step() -> None:
            os.environ["RMSPROP_CPU_THREADS"] = by
            kernel.run((), [what], threads=2)

        return step

    cases: dict[str, Callable[[], object]] = {
        "one thread, whole step": lambda: kernel.table_kernel(
            table.addresses, table.shares(1)[0], table.coefficients, None, None
        ),
        "one thread's share alone": lambda: kernel.table_kernel(
            table.addresses, shares[0], table.coefficients, None, None
        ),
        "two threads, thread pool": spread("pool", table),
        "pool round trip, no work": spread("pool", tiny),
    }
    layer = kernel.threading_layer()  # (decided here, in the main thread)
    if layer == "tbb":
        cases["two threads, TBB"] = spread("auto", table)
        cases["TBB round trip, no work"] = spread("auto", tiny)
    results: dict[str, list[float]] = {name: [] for name in cases}
    thresholds = kernel.SERIAL_BELOW, kernel.SERIAL_BELOW_POOL
    for _ in range(args.rounds + 1):  # the first round warms up (and loads the kernels)
        for name, step in cases.items():
            # The no-work cases are split over two threads however small they are.
            no_work = name.endswith("no work")
            kernel.SERIAL_BELOW = 0 if no_work else thresholds[0]
            kernel.SERIAL_BELOW_POOL = 0 if no_work else thresholds[1]
            results[name].append(median_ms(step, args.steps))
    kernel.SERIAL_BELOW, kernel.SERIAL_BELOW_POOL = thresholds
    os.environ.pop("RMSPROP_CPU_THREADS")

    tbb = _version("tbb") if layer == "tbb" else "not used (pip install tbb)"
    print(f"DQN shapes, {sum(numels) / 1e6:.2f}M float32 parameters in {len(numels)} tensors; "
          f"numba {numba.__version__}, tbb {tbb}, fused path's layer {layer}")  # fmt: skip
    print("\n| what | median ms |\n|---|---|")
    for name, values in results.items():
        print(f"| {name} | {statistics.median(values[1:]):.3f} |")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


if __name__ == "__main__":
    main()
