"""Reinforcement learning's worker processes: how fast one starts, and a DQN step beside others.

Usage:
    python benchmarks/rl_workers.py [--repeats 5] [--steps 200] [--json out.json]

1. **Worker start**: the first fused CPU step in a fresh process (``python -c``), with
   Numba's on-disk cache empty and then warm, right after the optimizer is built and after
   0.25 s and 1 s of other set-up (an environment, a first forward pass): the optimizer
   starts loading the kernel in the background when it is built. The foreach path's first
   step beside it.
2. **Concurrent workers**: the median step of a Nature-DQN network (1.7M parameters, 10
   tensors) in each of 1, 2 and 4 spawned workers at once (each one torch thread, as A3C
   workers set), for the fused step, our foreach path and torch.optim.RMSprop.

Medians from one run; these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

FIRST_STEP = """
import sys, time
import torch
from rmsprop.torch import RMSprop
p = torch.nn.Parameter(torch.randn(1000)); p.grad = torch.randn(1000)
opt = RMSprop([p], momentum=0.9, **{options})
time.sleep({delay})  # the worker's other set-up
start = time.perf_counter(); opt.step(); print(time.perf_counter() - start)
"""

PATHS = {"fused": "dict(fused=True)", "foreach": "dict(fused=False, foreach=True)"}


def first_step_s(path: str, delay: float, cache: str) -> float:
    code = FIRST_STEP.format(options=PATHS[path], delay=delay)
    env = {**os.environ, "NUMBA_CACHE_DIR": cache}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
    )
    return float(done.stdout)


def worker_start(repeats: int) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        cold = first_step_s("fused", 0.0, cache)  # fills the cache
        rows.append({"path": "fused", "cache": "empty", "set-up s": 0.0, "first step s": cold})
        for delay in (0.0, 0.25, 1.0):
            for path in ("fused", "foreach"):
                times = [first_step_s(path, delay, cache) for _ in range(repeats)]
                rows.append(
                    {
                        "path": path,
                        "cache": "warm",
                        "set-up s": delay,
                        "first step s": statistics.median(times),
                    }
                )
    return rows


def dqn_worker(path: str, steps: int, start: Any, results: Any) -> None:
    import torch

    from rmsprop.benchmark.cpu import DQN_NATURE
    from rmsprop.torch import RMSprop

    torch.set_num_threads(1)
    params = [torch.nn.Parameter(torch.randn(shape)) for shape in DQN_NATURE]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-2
    if path == "torch.optim.RMSprop":
        # The nearest torch rule (centered; torch has ε outside the root only): the same work.
        optimizer: Any = torch.optim.RMSprop(params, lr=2.5e-4, alpha=0.95, eps=0.01, centered=True)
    else:
        fused = path == "rmsprop fused"
        optimizer = RMSprop(params, flavor="dqn", fused=fused, foreach=None if fused else True)
    for _ in range(10):
        optimizer.step()
    start.wait()  # every worker times at once
    times = []
    for _ in range(steps):
        begin = time.perf_counter()
        optimizer.step()
        times.append(time.perf_counter() - begin)
    results.put(statistics.median(times) * 1e3)


def concurrent_workers(steps: int) -> list[dict[str, Any]]:
    context = mp.get_context("spawn")
    rows = []
    for workers in (1, 2, 4):
        for path in ("rmsprop fused", "rmsprop foreach", "torch.optim.RMSprop"):
            start, results = context.Barrier(workers), context.Queue()
            children = [
                context.Process(target=dqn_worker, args=(path, steps, start, results))
                for _ in range(workers)
            ]
            for child in children:
                child.start()
            medians = [results.get(timeout=300) for _ in children]
            for child in children:
                child.join(30)
            rows.append(
                {"workers": workers, "path": path, "median step ms": statistics.median(medians)}
            )
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per start cell")
    parser.add_argument("--steps", type=int, default=200, help="timed steps per worker")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    from importlib import metadata

    versions = {name: metadata.version(name) for name in ("torch", "numba", "numpy")}
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          + ", ".join(f"{k} {v}" for k, v in versions.items()))  # fmt: skip
    start = worker_start(args.repeats)
    print("\nWorker start (median of fresh processes):\n")
    print(markdown(start))
    workers = concurrent_workers(args.steps)
    print("\nNature-DQN step in concurrent spawned workers (one torch thread each):\n")
    print(markdown(workers))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"versions": versions, "start": start, "workers": workers}, f, indent=1)


if __name__ == "__main__":
    main()
