"""``rmsprop bench``: time the RMSprop step here, ours beside torch, torch.compile and optax."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rmsprop.cli._common import CommandError, positive_int

__all__ = ["add_parser", "run"]

SIZES = {
    "small": ["DQN (1.7M params, 10 tensors)"],
    "large": ["25M params in 100 tensors"],
    "all": ["25M params in 100 tensors", "DQN (1.7M params, 10 tensors)"],
}


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="time the optimizer step: fused and foreach beside torch, torch.compile and optax",
        description=(
            "Time one RMSprop step (median of --steps) for this project's fused and foreach "
            "paths, torch.optim.RMSprop (foreach and for-loop), torch.compile and optax, in "
            "one process. Reports GB/s at the minimal byte count and the ratio to an in-place "
            "add measured in the same run. Quote medians and ratios from one run."
        ),
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to run")
    parser.add_argument(
        "--size", default="small", choices=list(SIZES),
        help="small: a DQN network (1.7M params); large: 25M params in 100 tensors; all: both",
    )  # fmt: skip
    parser.add_argument("--steps", type=positive_int, default=20, help="timed steps per median")
    parser.add_argument(
        "--variant", action="append", choices=["plain", "momentum", "centered+momentum"],
        help="which rule to time (repeatable; default: all three)",
    )  # fmt: skip
    parser.add_argument(
        "--compile", action="store_true", help="also time torch.compile (tens of seconds to build)"
    )
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise CommandError("--device cuda, but torch sees no CUDA device here")
        raise CommandError(
            "the CUDA step benchmark is benchmarks/gpu_step.py in the source tree; "
            "rmsprop bench times the CPU"
        )
    from rich.progress import Progress

    from rmsprop import benchmark
    from rmsprop.cli._common import format_table

    shapes = {name: benchmark.SHAPES[name] for name in SIZES[args.size]}
    variants = args.variant or list(benchmark.VARIANTS)
    implementations = [
        name for name in benchmark.IMPLEMENTATIONS if args.compile or name != "torch.compile"
    ]
    total = len(shapes) * len(variants) * len(implementations)
    with Progress(transient=True, disable=args.json) as progress:
        task = progress.add_task("timing", total=total)

        def advance(what: str) -> None:
            progress.update(task, description=what, advance=1)

        rows = benchmark.run_cpu(shapes, variants, implementations, args.steps, advance)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for shape in shapes:
        print(shape)
        table = [
            [
                row["variant"],
                row["implementation"],
                f"{row['median_ms']:.2f}",
                f"{row['gb_per_s']:.1f}",
                f"{row['vs_add']:.0%}",
                _ratio(row["vs_torch_foreach"]),
                _ratio(row["vs_torch_forloop"]),
            ]
            for row in rows
            if row["shape"] == shape
        ]
        headers = [
            "variant",
            "implementation",
            "median ms",
            "GB/s",
            "vs add",
            "× foreach",
            "× loop",
        ]
        print(format_table(headers, table, indent="  "))
    return 0


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"
