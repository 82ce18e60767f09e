"""Benchmark the RMSprop step on one CUDA GPU: the fused Triton kernel beside torch and optax.

Usage:
    python benchmarks/gpu_step.py                      # everything (torch.compile takes minutes)
    python benchmarks/gpu_step.py --shapes gpt2-124m --dtypes float32 --no-compile
    python benchmarks/gpu_step.py --sweep --json sweep.json   # the kernel's launch settings
    python benchmarks/gpu_step.py --launch-from sweep.json     # ...timed with the best of them
    python benchmarks/gpu_step.py --json out.json

The engine is ``rmsprop.benchmark.cuda`` (its docstring says what is timed and
how); ``rmsprop bench --device cuda`` runs it too, with fewer options. Prints a
Markdown table per model shape. One process, one card: quote ratios from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable

from rmsprop.benchmark import cuda
from rmsprop.benchmark._common import Row, available, markdown_header, markdown_row
from rmsprop.torch import LaunchSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", choices=list(cuda.SHAPES), default=list(cuda.SHAPES))
    parser.add_argument("--dtypes", nargs="+", choices=list(cuda.DTYPES), default=list(cuda.DTYPES))
    parser.add_argument(
        "--variants", nargs="+", choices=list(cuda.VARIANTS), default=list(cuda.VARIANTS)
    )
    parser.add_argument(
        "--implementations", nargs="+", choices=cuda.IMPLEMENTATIONS,
        default=cuda.IMPLEMENTATIONS,
    )  # fmt: skip
    parser.add_argument("--steps", type=int, default=50, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument(
        "--compile-max", type=float, default=cuda.COMPILE_MAX,
        help="compile torch's step only for models up to this many parameters",
    )  # fmt: skip
    parser.add_argument("--sweep", action="store_true", help="time fused launch settings only")
    settings = parser.add_mutually_exclusive_group()
    settings.add_argument(
        "--launch", nargs=2, type=int, metavar=("BLOCK", "NUM_WARPS"),
        help="launch the fused kernel with these settings instead of its own",
    )  # fmt: skip
    settings.add_argument(
        "--launch-from", metavar="SWEEP_JSON",
        help="launch the fused kernel with the fastest settings of a --sweep --json file",
    )  # fmt: skip
    parser.add_argument("--print-each", action="store_true", help="print each table as it ends")
    parser.add_argument(
        "--json", help="also write the rows to this JSON file (after every comparison)"
    )
    args = parser.parse_args()

    launch: LaunchSettings | None = None  # the kernel's own settings
    try:
        if args.launch_from:
            with open(args.launch_from) as f:
                launch = cuda.launch_settings(*cuda.best_launch(json.load(f)["rows"]))
        elif args.launch:
            launch = cuda.launch_settings(*args.launch)
    except (OSError, KeyError, ValueError) as error:
        parser.error(f"no launch settings from {args.launch_from or args.launch}: {error!r}")

    import torch

    if not torch.cuda.is_available():
        sys.exit(
            "benchmarks/gpu_step.py times the CUDA step and needs a CUDA GPU, but "
            "torch.cuda.is_available() is False (benchmarks/cpu_step.py times the CPU)"
        )
    about = cuda.environment(launch)
    print(f"{about['card']}, {about['date']}; {about['versions']}; {about['launch']}")
    measured: list[Row] = []

    def keep(rows: list[Row]) -> None:
        # Saved after every row or comparison: a run cut short keeps what it measured.
        measured.extend(rows)
        if args.json:
            with open(f"{args.json}.partial", "w") as f:
                json.dump({**about, "rows": measured}, f, indent=1)
            os.replace(f"{args.json}.partial", args.json)

    if args.sweep:
        sweep(args, keep)
    else:
        compare(args, keep, launch)


def sweep(args: argparse.Namespace, keep: Callable[[list[Row]], None]) -> None:
    copy_tb_s = cuda.copy_bandwidth()
    print(f"{args.shapes[0]}, copy {copy_tb_s:.2f} TB/s")
    print(*markdown_header(cuda.SWEEP_COLUMNS), sep="\n", flush=True)

    def on_row(row: Row) -> None:
        print(markdown_row(cuda.SWEEP_COLUMNS, row), flush=True)
        keep([row])

    rows = cuda.sweep_cuda(
        args.shapes[0], args.dtypes, args.variants, steps=args.steps, warmup=args.warmup,
        copy_tb_s=copy_tb_s, on_row=on_row,
    )  # fmt: skip
    print("fastest (BLOCK, NUM_WARPS): {}, {}".format(*cuda.best_launch(rows)))


def compare(
    args: argparse.Namespace, keep: Callable[[list[Row]], None], launch: LaunchSettings | None
) -> None:
    wanted = [i for i in args.implementations if not (args.no_compile and i == "torch.compile")]
    names, skipped = available(wanted, "cuda")
    for name, why in skipped.items():
        print(f"  skipping {name}: {why}", file=sys.stderr)

    def each_group(group: list[Row]) -> None:
        if args.print_each:
            print(cuda.markdown(group), flush=True)
        keep(group)

    rows = cuda.run_cuda(
        args.shapes, args.dtypes, args.variants, names,
        steps=args.steps, warmup=args.warmup, compile_max=args.compile_max,
        progress=lambda what: print(f"  {what}", file=sys.stderr, flush=True),
        log=lambda line: print(line, flush=True), each_group=each_group, launch=launch,
    )  # fmt: skip
    print(cuda.markdown(rows))
    print("\nThe fused kernel's targets, judged on this run's rows:\n")
    print(cuda.verdicts_markdown(rows))


if __name__ == "__main__":
    main()
