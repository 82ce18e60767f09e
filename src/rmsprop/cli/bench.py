"""``rmsprop bench``: time the RMSprop step here, ours beside torch, torch.compile and optax.

The one command line of the step benchmarks (`rmsprop.benchmark.cpu` and
`rmsprop.benchmark.cuda`): what to time (device, models, rules, dtypes,
implementations), how (steps, warm-up, the fused kernel's launch settings or
a sweep over them, the CPU kernel's first call in a fresh process) and what to
keep (tables, Markdown, JSON on stdout or saved after every comparison).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from rmsprop.cli._common import CommandError, positive_int

__all__ = ["add_parser", "engine_arguments", "run"]

# --size -> model shapes, per device (names in rmsprop.benchmark.cpu.SHAPES / cuda.SHAPES);
# "all" is every model of the device, what --shape chooses from.
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
WARMUP = {"cpu": 3, "cuda": 5}  # default untimed steps before them
SWEEP_SHAPE = "gpt2-124m"  # the model --sweep times unless --shape names another
VARIANT_NAMES = ["plain", "momentum", "centered+momentum"]
DTYPE_NAMES = ["float32", "bfloat16"]
# rmsprop.benchmark._common.STATE_DTYPES: how our optimizer stores its state, for --state-dtype.
STATE_DTYPE_NAMES = ["float32", "bfloat16", "bfloat16-stochastic", "8bit"]
# rmsprop.benchmark.cpu.IMPLEMENTATIONS; the CUDA engine times all but "numpy fused".
IMPLEMENTATION_NAMES = [
    "rmsprop fused",
    "rmsprop foreach",
    "torch foreach",
    "torch for-loop",
    "torch.compile",
    "optax jit",
    "numpy fused",
]

_DESCRIPTION = """\
Time one RMSprop step (median of --steps) for this project's fused and foreach
paths, torch.optim.RMSprop (foreach and for-loop), torch.compile and optax, in
one process, on the CPU or one CUDA card. Reports the bandwidth at the minimal
byte count and its ratio to a reference measured in the same run (CPU: an
in-place add; CUDA: a device-to-device copy). Quote medians and ratios from one
run."""

_EPILOG = """\
sizes (--shape NAME names models instead, repeatable):
  --device cpu   small: a Nature DQN, "DQN (1.7M params, 10 tensors)"
                 large: "25M params in 100 tensors"
                 all:   both
  --device cuda  small: dqn-1m, a DQN-sized net (1.03M params, 20 tensors)
                 large: gpt2-124m (124.4M params, 148 tensors) and gpt-1.3b
                        (1.3B params, 292 tensors)
                 all:   all three

--device cuda times with CUDA events on the first card, float32 and bfloat16
parameters (--dtype), rotating over parameter sets so that L2 does not
flatter small models, and compares with a device-to-device copy measured in
the same run (TB/s); --compile there builds torch.compile only for models up
to 200M parameters (not gpt-1.3b; --compile-max moves the bound). The fused
kernel launches with its own settings unless --launch or --launch-from gives
others; --sweep times it under each of several settings instead, on one model
(--shape; default gpt2-124m), and names the fastest.

--state-dtype NAME (repeatable) times "rmsprop fused" and "rmsprop foreach" once
per way of storing the optimizer state (RMSprop(state_dtype=...)): float32,
bfloat16, bfloat16-stochastic (bfloat16 with stochastic_rounding=True, beside
float32 parameters) or 8bit. A column whose state is not the parameters' dtype
is named for it ("rmsprop fused 8bit"), and the tables then add the state's
bytes per parameter (measured from each optimizer after its first step), the
speed-up over the same implementation with state_dtype=None, and count the
state's own bytes in the bandwidth. torch, optax and NumPy keep their state
in the parameters' dtype. Default: the parameters' dtype, as torch does.

--out FILE saves the rows, with the machine, date and versions, after every
comparison, so a run cut short keeps what it measured; on CUDA,
benchmarks/gpu_report.py in the source tree turns such files into
BENCHMARKS.md's tables, and benchmarks/gpu_check.sh runs a GPU session's
tests and timings in one go."""


class _Launch(argparse.Action):
    """``--launch BLOCK NUM_WARPS``, checked as it is parsed (a bad pair is a usage error)."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
        values: Any, option_string: str | None = None,
    ) -> None:  # fmt: skip
        from rmsprop.benchmark.cuda import check_launch

        block, warps = values
        try:
            setattr(namespace, self.dest, check_launch(block, warps))
        except ValueError as error:
            parser.error(f"{option_string} {block} {warps}: {error}")


class _LaunchFrom(argparse.Action):
    """``--launch-from SWEEP_JSON``: the fastest settings of a ``--sweep --out`` file."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
        values: Any, option_string: str | None = None,
    ) -> None:  # fmt: skip
        from rmsprop.benchmark.cuda import best_launch

        try:
            with open(values) as f:
                fastest = best_launch(json.load(f)["rows"])
        except (OSError, KeyError, TypeError, ValueError) as error:
            parser.error(f"no launch settings from {values}: {error!r}")
        setattr(namespace, self.dest, values)
        namespace.launch = fastest


def _parameter_count(text: str) -> float:
    """An argparse type: a number of parameters ≥ 0 (``2e9`` is fine)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {text}")
    return value


def _non_negative(text: str) -> int:
    """An argparse type: a whole number ≥ 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="time the optimizer step: fused and foreach beside torch, torch.compile and optax",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = parser.add_argument_group("what to time")
    what.add_argument(
        "--device", default="cpu", choices=list(SIZES), help="where to run (default: cpu)"
    )
    what.add_argument(
        "--size", choices=["small", "large", "all"],
        help="which models to time (default: small; see 'sizes' below)",
    )  # fmt: skip
    what.add_argument(
        "--shape", action="append", metavar="NAME",
        choices=list(dict.fromkeys(name for sizes in SIZES.values() for name in sizes["all"])),
        help="time this model (repeatable; overrides --size; names below)",
    )  # fmt: skip
    what.add_argument(
        "--variant", action="append", choices=VARIANT_NAMES,
        help="which rule to time (repeatable; default: all three)",
    )  # fmt: skip
    what.add_argument(
        "--dtype", action="append", choices=DTYPE_NAMES,
        help="parameter dtype, cuda only (repeatable; default: both; the CPU times float32)",
    )  # fmt: skip
    what.add_argument(
        "--state-dtype", action="append", choices=STATE_DTYPE_NAMES,
        help="how rmsprop fused and rmsprop foreach store their state (repeatable: a column "
        "each, e.g. 'rmsprop fused 8bit', with its bytes per parameter; default: the "
        "parameters' dtype)",
    )  # fmt: skip
    what.add_argument(
        "--implementation", action="append", metavar="NAME", choices=IMPLEMENTATION_NAMES,
        help="time this implementation (repeatable; default: all but torch.compile): "
        + ", ".join(IMPLEMENTATION_NAMES) + " (cpu only)",
    )  # fmt: skip
    what.add_argument(
        "--compile", action="store_true", help="also time torch.compile (slow to build)"
    )
    what.add_argument(
        "--compile-max", type=_parameter_count, metavar="PARAMS",
        help="cuda: build torch.compile only for models of at most this many parameters "
        "(default: 2e8)",
    )  # fmt: skip
    how = parser.add_argument_group("how to time")
    how.add_argument(
        "--steps", type=positive_int,
        help=f"timed steps per median (default: {STEPS['cpu']} on cpu, {STEPS['cuda']} on cuda)",
    )  # fmt: skip
    how.add_argument(
        "--warmup", type=_non_negative, metavar="STEPS",
        help="untimed steps first, at least one per parameter set "
        f"(default: {WARMUP['cpu']} on cpu, {WARMUP['cuda']} on cuda)",
    )  # fmt: skip
    how.add_argument(
        "--first-call", action="store_true",
        help="cpu: also time the fused step's first call in a fresh process, with an empty "
        "and with a warm kernel cache",
    )  # fmt: skip
    how.add_argument(
        "--sweep", action="store_true",
        help="cuda: time the fused kernel under each of several launch settings (BLOCK, "
        "NUM_WARPS) on one model, and name the fastest",
    )  # fmt: skip
    settings = how.add_mutually_exclusive_group()
    settings.add_argument(
        "--launch", nargs=2, type=int, action=_Launch, metavar=("BLOCK", "NUM_WARPS"),
        help="cuda: launch the fused kernel with these settings instead of its own",
    )  # fmt: skip
    settings.add_argument(
        "--launch-from", action=_LaunchFrom, metavar="SWEEP_JSON",
        help="cuda: launch the fused kernel with the fastest settings of a --sweep --out file",
    )  # fmt: skip
    output = parser.add_argument_group("output")
    output.add_argument(
        "--json", action="store_true",
        help="print the rows as JSON (cuda, and cpu with --first-call: with the machine, "
        "date and versions, as --out saves them)",
    )  # fmt: skip
    output.add_argument(
        "--markdown", action="store_true", help="print the tables as Markdown (as BENCHMARKS.md)"
    )
    output.add_argument(
        "--print-each", action="store_true",
        help="print each comparison's table as it ends, and what is timed next on stderr "
        "(no progress bar: for logs)",
    )  # fmt: skip
    output.add_argument(
        "--out", metavar="FILE",
        help="save the rows, with the machine, date and versions, as JSON to FILE after every "
        "comparison (through FILE.partial)",
    )  # fmt: skip
    parser.set_defaults(run=run)


def engine_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The engine's arguments for these command-line arguments (what each flag means):
    `rmsprop.benchmark.cpu.run_cpu`'s, `rmsprop.benchmark.cuda.run_cuda`'s, or with
    ``--sweep`` those of `rmsprop.benchmark.cuda.sweep_cuda`. Raises `CommandError` for
    flags that don't go together (the fused kernel's launch settings are not among them:
    they need torch)."""
    from rmsprop.benchmark import _common, cpu, cuda

    device = args.device
    engine = cuda if device == "cuda" else cpu
    _check_the_device_s_flags(args)
    if args.json and (args.markdown or args.print_each):
        flag = "--markdown" if args.markdown else "--print-each"
        raise CommandError(f"--json prints JSON alone, not {flag}'s tables; --out FILE saves it")
    for name in args.shape or []:
        if name not in SIZES[device]["all"]:
            models = ", ".join(repr(model) for model in SIZES[device]["all"])
            raise CommandError(f"{name!r} is no --device {device} model; choose from {models}")
    timing: dict[str, Any] = {
        "variants": args.variant or list(engine.VARIANTS),
        "steps": args.steps or STEPS[device],
        "warmup": WARMUP[device] if args.warmup is None else args.warmup,
    }
    dtypes = {"dtypes": args.dtype or list(cuda.DTYPES)}
    if args.sweep:
        return {"shape": _sweep_shape(args), **dtypes, **timing}
    states = _state_dtypes(args, dtypes["dtypes"] if device == "cuda" else ["float32"])

    wanted = args.implementation or [n for n in engine.IMPLEMENTATIONS if n != "torch.compile"]
    wanted = [*wanted, "torch.compile"] if args.compile else wanted
    for name in wanted:
        if name not in engine.IMPLEMENTATIONS:
            raise CommandError(f"{name} is for --device cpu; --device {device} can't time it")
    implementations = [name for name in engine.IMPLEMENTATIONS if name in wanted]
    names = list(dict.fromkeys(args.shape or SIZES[device][args.size or "small"]))
    chosen = {"variants": timing["variants"], "implementations": implementations, **timing}
    if states is not None:
        if not set(implementations) & set(_common.STATEFUL):
            raise CommandError(
                "--state-dtype sets how rmsprop fused and rmsprop foreach store their state; "
                "--implementation chose neither"
            )
        chosen["state_dtypes"] = states
    if device == "cuda":
        compile_max = cuda.COMPILE_MAX if args.compile_max is None else args.compile_max
        return {"shapes": names, **dtypes, **chosen, "compile_max": compile_max}
    return {"shapes": {name: cpu.SHAPES[name] for name in names}, **chosen}


def _check_the_device_s_flags(args: argparse.Namespace) -> None:
    if args.device == "cpu":
        if args.dtype and set(args.dtype) != {"float32"}:
            raise CommandError(
                "--dtype bfloat16 is for --device cuda; the CPU benchmark is float32"
            )
        for flag, given in [
            ("--sweep", args.sweep), ("--launch", args.launch and not args.launch_from),
            ("--launch-from", args.launch_from), ("--compile-max", args.compile_max is not None),
        ]:  # fmt: skip
            if given:
                raise CommandError(f"{flag} is for --device cuda (the fused CUDA kernel's)")
    elif args.first_call:
        raise CommandError(
            "--first-call is for --device cpu; on cuda every row has its first step (first_s)"
        )


def _state_dtypes(args: argparse.Namespace, param_dtypes: list[str]) -> list[str] | None:
    """--state-dtype's names in the engine's order, once each (None: not given)."""
    from rmsprop.benchmark import _common

    if not args.state_dtype:
        return None
    try:
        _common.check_state_dtypes(args.state_dtype, param_dtypes)
    except ValueError as error:
        raise CommandError(f"--state-dtype: {error}: add --dtype float32") from None
    return [name for name in _common.STATE_DTYPES if name in args.state_dtype]


def _sweep_shape(args: argparse.Namespace) -> str:
    for flag, given in [
        ("--state-dtype", args.state_dtype),
        ("--launch", args.launch and not args.launch_from), ("--launch-from", args.launch_from),
        ("--implementation", args.implementation), ("--compile", args.compile),
        ("--compile-max", args.compile_max is not None), ("--size", args.size),
    ]:  # fmt: skip
        if given:
            raise CommandError(
                f"--sweep times the fused kernel under its own list of launch settings on one "
                f"model (--shape NAME); {flag} has no say in it"
            )
    if args.shape and len(args.shape) > 1:
        raise CommandError(f"--sweep times one model, not {len(args.shape)}: one --shape")
    return str(args.shape[0]) if args.shape else SWEEP_SHAPE


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
    if args.device == "cuda" and args.sweep:
        return _sweep(args, chosen)
    from rmsprop.benchmark import _common, cpu, cuda

    engine = cuda if args.device == "cuda" else cpu
    names, skipped = _common.available(chosen["implementations"], args.device)
    for name, why in skipped.items():
        print(f"rmsprop bench: skipping {name}: {why}", file=sys.stderr)
    chosen["implementations"] = names
    launch = None  # the fused CUDA kernel's own settings
    if args.device == "cuda":
        launch = cuda.launch_settings(*args.launch) if args.launch else None
        about = cuda.environment(launch)
        models = {name: cuda.SHAPES[name] for name in chosen["shapes"]}
        groups = cuda.plan(models, chosen["dtypes"], chosen["variants"], names)
        states = chosen.get("state_dtypes")
        total = sum(len(_common.timed(group[3], states, group[1])) for group in groups)
    else:
        about = cpu.environment()
        columns = _common.timed(names, chosen.get("state_dtypes"), "float32")
        total = len(chosen["shapes"]) * len(chosen["variants"]) * len(columns)
    report = _Report(args, about)
    if args.first_call:
        report.first_call_s = _first_call()
        report.say(
            "fused kernel, first step in a fresh process: {cold:.2f} s with an empty cache, "
            "{warm:.2f} s with a warm one".format(**report.first_call_s)
        )

    def each_group(group: list[Any]) -> None:
        report.keep(group)
        if args.print_each:
            print(_tables(engine, group, args.markdown), flush=True)

    with _progress(args, total) as progress:
        if args.device == "cuda":
            rows = cuda.run_cuda(
                **chosen, progress=progress, log=report.say, each_group=each_group, launch=launch
            )
        else:
            rows = cpu.run_cpu(**chosen, progress=progress, each_group=each_group, log=report.say)
    report.save(rows)
    if args.json:
        print(json.dumps(rows if report.rows_alone else report.record(rows), indent=1))
        return 0
    print(_tables(engine, rows, args.markdown))
    if args.device == "cuda":
        _print_verdicts(rows, args.markdown)
    return 0


def _sweep(args: argparse.Namespace, chosen: dict[str, Any]) -> int:
    from rmsprop.benchmark import _common, cuda
    from rmsprop.cli._common import format_table

    report = _Report(args, cuda.environment())
    copy_tb_s = cuda.copy_bandwidth()
    report.say(f"device-to-device copy: {copy_tb_s:.2f} TB/s (read + write)")
    if args.print_each and args.markdown:
        print(*_common.markdown_header(cuda.SWEEP_COLUMNS), sep="\n", flush=True)

    def on_row(row: dict[str, Any]) -> None:
        report.keep([row])
        if args.print_each:
            print(_sweep_line(row, args.markdown), flush=True)

    settings = cuda.LAUNCH_SETTINGS
    total = len(chosen["dtypes"]) * len(chosen["variants"]) * len(settings)
    with _progress(args, total) as progress:
        rows = cuda.sweep_cuda(
            **chosen, settings=settings, copy_tb_s=copy_tb_s, on_row=on_row, progress=progress
        )
    report.save(rows)
    if args.json:
        print(json.dumps(report.record(rows), indent=1))
        return 0
    fastest = "BLOCK={}, NUM_WARPS={}".format(*cuda.best_launch(rows))
    print(f"{chosen['shape']} launch settings (fastest: {fastest})")
    if args.markdown:
        print(cuda.sweep_markdown(rows))
    else:
        print(format_table(*_common.terminal_table(cuda.SWEEP_COLUMNS, rows), indent="  "))
    return 0


class _Report:
    """What a run keeps: the header lines it prints, and the rows it saves to ``--out``."""

    def __init__(self, args: argparse.Namespace, about: dict[str, str]) -> None:
        self.args, self.about = args, about
        self.first_call_s: dict[str, float] | None = None
        self.measured: list[Any] = []
        # --json on the CPU prints the rows alone, as it always has, unless it has more to say.
        self.rows_alone = args.device == "cpu" and not args.first_call
        if not args.json:  # the card (or the machine), the date, versions, launch settings
            where = about["card"] if "card" in about else about["machine"]
            launch = [about["launch"]] if "launch" in about else []
            print("; ".join([f"{where}, {about['date']}", about["versions"], *launch]))

    def say(self, line: str) -> None:
        """A note for the reader (a column that failed, say): on stderr with --json, whose
        stdout is the JSON alone."""
        print(line, file=sys.stderr if self.args.json else sys.stdout, flush=True)

    def record(self, rows: list[Any]) -> dict[str, Any]:
        """The rows with the machine, date and versions (and the first call, if timed)."""
        first = {} if self.first_call_s is None else {"first_call_s": self.first_call_s}
        return {**self.about, **first, "rows": rows}

    def keep(self, rows: list[Any]) -> None:
        """Rows just measured: saved at once, so a run cut short keeps what it measured."""
        self.measured += rows
        self.save(self.measured)

    def save(self, rows: list[Any]) -> None:
        if self.args.out:
            partial = f"{self.args.out}.partial"
            with open(partial, "w") as f:
                json.dump(self.record(rows), f, indent=1)
            os.replace(partial, self.args.out)


@contextlib.contextmanager
def _progress(args: argparse.Namespace, total: int) -> Iterator[Callable[[str], None]]:
    """What to call with each thing about to be timed: a progress bar on a terminal, a line
    on stderr with --print-each, nothing with --json."""
    if args.json:
        yield lambda what: None
        return
    if args.print_each:
        yield lambda what: print(f"  timing {what}", file=sys.stderr, flush=True)
        return
    try:
        from rich.progress import Progress
    except ImportError:  # rich comes with the demo extra: no bar without it
        yield lambda what: None
        return
    bar = Progress(transient=True)
    if not bar.console.is_terminal:  # piped: the tables alone
        yield lambda what: None
        return
    with bar:
        task = bar.add_task("timing", total=total)
        yield lambda what: bar.update(task, description=what, advance=1)


def _first_call() -> dict[str, float]:
    import subprocess

    from rmsprop.benchmark import _common, cpu

    why_not = _common.unavailable("rmsprop fused", "cpu")
    if why_not:
        raise CommandError(
            f"--first-call times the fused CPU step, which can't run here: {why_not}"
        )
    try:
        return cpu.first_call_in_fresh_processes()
    except subprocess.CalledProcessError as error:
        last = (error.stderr or "").strip().splitlines()[-1:] or [f"exit {error.returncode}"]
        raise CommandError(f"--first-call: the fresh process failed: {last[0]}") from None


def _tables(engine: Any, rows: Sequence[Any], markdown: bool) -> str:
    """A table per model shape, under its title: Markdown or aligned text."""
    from rmsprop.benchmark import _common
    from rmsprop.cli._common import format_table

    if markdown:
        return str(engine.markdown(rows))
    out = []
    columns = engine.columns(rows)  # the same for every shape
    for group in _common.by_shape(rows).values():
        out.append(engine.title(group[0]))
        out.append(format_table(*_common.terminal_table(columns, group), indent="  "))
    return "\n".join(out)


def _print_verdicts(rows: Sequence[Any], markdown: bool) -> None:
    from rmsprop.benchmark import _common, cuda
    from rmsprop.cli._common import format_table

    measured = [v for v in cuda.verdicts(rows) if v["met"] is not None]
    if not measured:
        return
    print("The fused kernel's targets (cuda.TARGETS), on these rows")
    if markdown:
        lines = _common.markdown_header(cuda.VERDICT_COLUMNS)
        print(
            "\n".join([*lines, *(_common.markdown_row(cuda.VERDICT_COLUMNS, v) for v in measured)])
        )
    else:
        print(format_table(*_common.terminal_table(cuda.VERDICT_COLUMNS, measured), indent="  "))


def _sweep_line(row: dict[str, Any], markdown: bool) -> str:
    from rmsprop.benchmark import _common, cuda

    if markdown:
        return _common.markdown_row(cuda.SWEEP_COLUMNS, row)
    return (
        f"  {row['dtype']} {row['variant']} BLOCK={row['block']} NUM_WARPS={row['warps']}: "
        f"{row['median_ms']:.3f} ms, {row['tb_per_s']:.2f} TB/s ({row['of_copy']:.0%} of copy)"
    )
