"""``rmsprop bench``: time the RMSprop step here, ours beside torch, torch.compile and optax."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rmsprop.cli._common import CommandError, positive_int

__all__ = ["add_parser", "run"]

# --size -> model shapes, per device (names in rmsprop.benchmark.cpu.SHAPES / cuda.SHAPES).
SIZES: dict[str, dict[str, list[str]]] = {
    "cpu": {
        "small": ["DQN (1.7M params, 10 tensors)"],
        "large": ["25M params in 100 tensors"],
        "all": ["25M params in 100 tensors", "DQN (1.7M params, 10 tensors)"],
    },
    "cuda": {
        "small": ["dqn-1m"],
        "large": ["gpt2-124m", "gpt-1.3b"],
        "all": ["gpt2-124m", "gpt-1.3b", "dqn-1m"],
    },
}
STEPS = {"cpu": 20, "cuda": 50}  # default timed steps per median
VARIANT_NAMES = ["plain", "momentum", "centered+momentum"]
DTYPE_NAMES = ["float32", "bfloat16"]

_DESCRIPTION = """\
Time one RMSprop step (median of --steps) for this project's fused and foreach
paths, torch.optim.RMSprop (foreach and for-loop), torch.compile and optax, in
one process, on the CPU or one CUDA card. Reports the bandwidth at the minimal
byte count and its ratio to a reference measured in the same run (CPU: an
in-place add; CUDA: a device-to-device copy). Quote medians and ratios from one
run."""

_EPILOG = """\
sizes:
  --device cpu   small: a Nature DQN (1.7M params, 10 tensors)
                 large: 25M params in 100 tensors
                 all:   both
  --device cuda  small: dqn-1m, a DQN-sized net (1.03M params, 20 tensors)
                 large: gpt2-124m (124.4M params, 148 tensors) and gpt-1.3b
                        (1.3B params, 292 tensors)
                 all:   all three

--device cuda times with CUDA events on the first card, float32 and bfloat16
parameters (--dtype), rotating over parameter sets so that L2 does not
flatter small models, and compares with a device-to-device copy measured in
the same run (TB/s); --compile there builds torch.compile only for models up
to 200M parameters (not gpt-1.3b). benchmarks/gpu_step.py in the source tree
runs the same engine with every option, the launch-setting sweep included."""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="time the optimizer step: fused and foreach beside torch, torch.compile and optax",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--device", default="cpu", choices=list(SIZES), help="where to run (default: cpu)"
    )
    parser.add_argument(
        "--size", default="small", choices=["small", "large", "all"],
        help="which models to time (default: small; see 'sizes' below)",
    )  # fmt: skip
    parser.add_argument(
        "--steps", type=positive_int,
        help=f"timed steps per median (default: {STEPS['cpu']} on cpu, {STEPS['cuda']} on cuda)",
    )  # fmt: skip
    parser.add_argument(
        "--variant", action="append", choices=VARIANT_NAMES,
        help="which rule to time (repeatable; default: all three)",
    )  # fmt: skip
    parser.add_argument(
        "--dtype", action="append", choices=DTYPE_NAMES,
        help="parameter dtype, cuda only (repeatable; default: both; the CPU times float32)",
    )  # fmt: skip
    parser.add_argument(
        "--compile", action="store_true", help="also time torch.compile (slow to build)"
    )
    parser.add_argument(
        "--json", action="store_true",
        help="print the rows as JSON (cuda: with the card, date and versions)",
    )  # fmt: skip
    parser.set_defaults(run=run)


def engine_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The engine's arguments for these command-line arguments (what each flag means)."""
    from rmsprop.benchmark import cpu, cuda

    engine = cuda if args.device == "cuda" else cpu
    shapes = SIZES[args.device][args.size]
    implementations = [
        name for name in engine.IMPLEMENTATIONS if args.compile or name != "torch.compile"
    ]
    chosen: dict[str, Any] = {
        "variants": args.variant or list(engine.VARIANTS),
        "implementations": implementations,
        "steps": args.steps or STEPS[args.device],
    }
    if args.device == "cuda":
        return {"shapes": shapes, "dtypes": args.dtype or list(cuda.DTYPES), **chosen}
    if args.dtype and set(args.dtype) != {"float32"}:
        raise CommandError("--dtype bfloat16 is for --device cuda; the CPU benchmark is float32")
    return {"shapes": {name: cpu.SHAPES[name] for name in shapes}, **chosen}


def run(args: argparse.Namespace) -> int:
    chosen = engine_arguments(args)
    try:
        import torch
    except ImportError:
        raise CommandError(
            "rmsprop bench times the torch optimizers, and torch is not installed here; "
            "install it with: pip install 'rmsprop[torch]'"
        ) from None
    if args.device == "cuda" and not torch.cuda.is_available():
        raise CommandError("--device cuda, but torch sees no CUDA device here")
    from rich.progress import Progress

    from rmsprop.benchmark import _common, cpu, cuda
    from rmsprop.cli._common import format_table

    names, skipped = _common.available(chosen["implementations"], args.device)
    for name, why in skipped.items():
        print(f"rmsprop bench: skipping {name}: {why}", file=sys.stderr)
    chosen["implementations"] = names
    if args.device == "cuda":
        models = {name: cuda.SHAPES[name] for name in chosen["shapes"]}
        groups = cuda.plan(models, chosen["dtypes"], chosen["variants"], names)
        total = sum(len(group[3]) for group in groups)
    else:
        total = len(chosen["shapes"]) * len(chosen["variants"]) * len(names)
    notes: list[str] = []  # the CUDA engine's copy-bandwidth lines
    with Progress(transient=True, disable=args.json) as progress:
        task = progress.add_task("timing", total=total)

        def advance(what: str) -> None:
            progress.update(task, description=what, advance=1)

        if args.device == "cuda":
            rows = cuda.run_cuda(**chosen, progress=advance, log=notes.append)
        else:
            rows = cpu.run_cpu(**chosen, progress=advance)

    engine = cuda if args.device == "cuda" else cpu
    if args.device == "cuda":
        about = cuda.environment()
        if args.json:
            print(json.dumps({**about, "rows": rows}, indent=1))
            return 0
        print(f"{about['card']}, {about['date']}; {about['versions']}", *notes, sep="\n")
    elif args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for group in _common.by_shape(rows).values():
        print(engine.title(group[0]))
        print(format_table(*_common.terminal_table(engine.COLUMNS, group), indent="  "))
    if args.device == "cuda":
        measured = [v for v in cuda.verdicts(rows) if v["met"] is not None]
        if measured:
            print("The fused kernel's targets (cuda.TARGETS), on these rows")
            print(
                format_table(*_common.terminal_table(cuda.VERDICT_COLUMNS, measured), indent="  ")
            )
    return 0
