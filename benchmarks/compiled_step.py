"""torch.compile of a step with this package's optimizer, against its eager fused step.

Usage:
    python benchmarks/compiled_step.py [--steps 100] [--device cpu|cuda]

For each variant, on the Nature-DQN network's tensors (1.7M parameters, 10
tensors), times in one process: the eager fused step (`rmsprop.torch.RMSprop`,
``fused=True``), the same optimizer's step under ``torch.compile`` (a tensor
learning rate driven by an ``ExponentialLR`` scheduler, as torch's docs advise
for compiled steps), and ``torch.compile(torch.optim.RMSprop(foreach=False).step)``
for reference. The compiled step runs ``--steps`` times with the scheduler
stepping after each; the table gives the medians after the first 10 steps
(compilation excluded) and how many graphs torch.compile built after the
first step (0: no recompiles). Quote ratios from one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from rmsprop import benchmark
from rmsprop.torch import RMSprop

WARMUP = 10


def _graphs() -> int:
    import torch._dynamo.utils

    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


def _timed(
    step: Callable[[], Any], schedule: Any, steps: int, wait: Callable[[], Any]
) -> tuple[float, int]:
    """(median ms after the warm-up, graphs built after the first step)."""
    times = []
    step()
    wait()
    if schedule is not None:
        schedule.step()
    built = _graphs()
    for i in range(steps - 1):
        start = time.perf_counter()
        step()
        wait()
        if i >= WARMUP:
            times.append(time.perf_counter() - start)
        if schedule is not None:
            schedule.step()
    return statistics.median(times) * 1e3, _graphs() - built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args()
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("benchmarks/compiled_step.py --device cuda needs a CUDA GPU, but torch sees none")
    wait = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    print("| variant | implementation | median ms | × eager fused | graphs built after step 1 |")
    print("|---|---|---|---|---|")
    for variant, spec in benchmark.VARIANTS.items():
        rows = []
        for name in ("eager fused", "compiled fused", "compiled torch.optim"):
            torch._dynamo.reset()
            [params] = benchmark.parameter_sets(benchmark.DQN_NATURE, torch.float32, 1, device)
            options = dict(spec.options)
            schedule = None
            if name == "compiled torch.optim":
                opt: Any = torch.optim.RMSprop(params, foreach=False, **options)
                opt.step()
                step = torch.compile(opt.step)
            else:
                lr = torch.tensor(0.01, device=device) if name == "compiled fused" else 0.01
                opt = RMSprop(params, fused=True, lr=lr, **options)
                if name == "compiled fused":
                    opt.step()
                    schedule = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.999)
                    step = torch.compile(opt.step)
                else:
                    step = opt.step
            median, rebuilt = _timed(step, schedule, args.steps, wait)
            rows.append((name, median, rebuilt))
        eager = rows[0][1]
        for name, median, rebuilt in rows:
            built = "—" if name == "eager fused" else str(rebuilt)
            print(f"| {variant} | {name} | {median:.3f} | {median / eager:.2f} | {built} |")


if __name__ == "__main__":
    main()
