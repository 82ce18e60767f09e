"""Where the fused CPU step's time goes at a small size: each thread's share, and the hand-off.

Usage:
    python benchmarks/cpu_threads.py            # the DQN network's shapes, float32, plain rule

Times, on one address table of the DQN network's tensors (1.7M parameters in
10 tensors): the whole step on one thread; on two threads through the fused
path's thread pool; one thread's share alone; the pool's round trip with
almost no work (what handing work to the second thread costs); and, for
comparison, the same kernel spread by a Numba ``prange`` loop, whose threads
(OpenMP where available) spin waiting for work. Medians of interleaved
rounds, one process: quote ratios from one run.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

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

    @numba.njit(parallel=True, nogil=True)
    def spread(addresses, pieces, c):  # type: ignore[no-untyped-def]
        for i in numba.prange(len(pieces)):
            kernel.table_kernel(addresses, pieces[i], c, None, None)

    typed_shares = numba.typed.List(shares)
    # prange's unsigned index into the typed list: harmless here.
    warnings.filterwarnings("ignore", category=numba.NumbaTypeSafetyWarning)
    cases: dict[str, Callable[[], object]] = {
        "one thread, whole step": lambda: kernel.table_kernel(
            table.addresses, table.shares(1)[0], table.coefficients, None, None
        ),
        "one thread's share alone": lambda: kernel.table_kernel(
            table.addresses, shares[0], table.coefficients, None, None
        ),
        "two threads, thread pool": lambda: kernel.run((), [table]),
        "pool round trip, no work": lambda: kernel.run((), [tiny]),
        "two threads, numba prange": lambda: spread(
            table.addresses, typed_shares, table.coefficients
        ),
    }
    kernel.num_threads = lambda: 2  # type: ignore[assignment]
    serial_below = kernel.SERIAL_BELOW
    results: dict[str, list[float]] = {name: [] for name in cases}
    for step in cases.values():  # warm up, and compile `spread`
        step()
    for _ in range(args.rounds):
        for name, step in cases.items():
            # The no-work case is split over two threads however small it is.
            kernel.SERIAL_BELOW = 0 if name.startswith("pool") else serial_below
            results[name].append(median_ms(step, args.steps))
    kernel.SERIAL_BELOW = serial_below

    print(f"DQN shapes, {sum(numels) / 1e6:.2f}M float32 parameters in {len(numels)} tensors; "
          f"numba {numba.__version__}, threading layer {numba.threading_layer()}")  # fmt: skip
    print("\n| what | median ms |\n|---|---|")
    for name, values in results.items():
        print(f"| {name} | {statistics.median(values):.3f} |")


if __name__ == "__main__":
    main()
