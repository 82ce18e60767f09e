"""The CUDA step benchmark: the fused Triton kernel beside torch, torch.compile and optax.

For each model shape (GPT-2 124M: 148 tensors; a 1.3B GPT: 292 tensors; a
small DQN-sized network: 1M parameters in 20 tensors), variant (plain,
momentum, centered+momentum) and parameter dtype (float32, bfloat16; the state
takes the parameters' dtype, as in torch), `run_cuda` times one optimizer step
of: this project's fused kernel and foreach path, ``torch.optim.RMSprop``'s
foreach and for-loop paths, a ``torch.compile``d ``torch.optim.RMSprop`` step,
and ``optax.rmsprop`` under ``jax.jit`` when jax and optax are installed.

Each row gives the median step time from CUDA events (optax: host time to
``block_until_ready``, as JAX owns its streams), the wall time per step of
back-to-back steps (what a host-bound step costs a training loop), the
bandwidth the minimal byte count implies (20 bytes per float32 parameter, 28
with momentum, 36 centered with momentum; 2 bytes per access in bfloat16) and
its ratio to a device-to-device copy measured in the same run. Steps rotate
over several independent parameter sets until they overflow the L2 cache
several times, so the cache can't flatter small models. One process, one card:
quote ratios from one run. `sweep_cuda` times the fused kernel under fixed
launch settings (to pick one; the kernel never autotunes).

This module is what ``rmsprop bench --device cuda`` runs (``--sweep``: `sweep_cuda`).
Everything but the timing itself is plain Python:

    >>> from rmsprop.benchmark import cuda
    >>> cuda.minimal_bytes(cuda.SHAPES["dqn-1m"], "bfloat16", "momentum") == 14 * 1_027_200
    True
    >>> cuda.rotation(set_bytes=20 * 2**20, spare_bytes=2**40, l2_bytes=50 * 2**20)
    10
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import math
import os
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import astuple
from typing import TYPE_CHECKING, NamedTuple

from rmsprop.benchmark import _common
from rmsprop.benchmark._common import STATE_DTYPES, VARIANTS, Column, Row, Shape, Step

if TYPE_CHECKING:
    from rmsprop.torch import LaunchSettings

__all__ = [
    "COLUMNS",
    "COMPILE_MAX",
    "DTYPES",
    "IMPLEMENTATIONS",
    "LAUNCH_SETTINGS",
    "REFERENCES",
    "SHAPES",
    "STATE_COLUMNS",
    "STATE_DTYPES",
    "SWEEP_COLUMNS",
    "TARGETS",
    "VARIANTS",
    "VERDICT_COLUMNS",
    "Target",
    "best_launch",
    "check_launch",
    "columns",
    "copy_bandwidth",
    "environment",
    "gpt_shapes",
    "launch_settings",
    "make_row",
    "make_steps",
    "markdown",
    "minimal_bytes",
    "plan",
    "rotation",
    "run_cuda",
    "sweep_cuda",
    "sweep_markdown",
    "time_cuda",
    "title",
    "verdicts",
    "verdicts_markdown",
]


def gpt_shapes(layers: int, width: int, vocab: int = 50257, context: int = 1024) -> Shape:
    """A GPT-2-style model's parameter shapes (tied embeddings, Conv1D layout)."""
    shapes: Shape = [(vocab, width), (context, width)]
    for _ in range(layers):
        shapes += [
            (width,), (width,),  # ln_1
            (width, 3 * width), (3 * width,),  # attention in
            (width, width), (width,),  # attention out
            (width,), (width,),  # ln_2
            (width, 4 * width), (4 * width,),  # MLP in
            (4 * width, width), (width,),  # MLP out
        ]  # fmt: skip
    return [*shapes, (width,), (width,)]  # ln_f


SHAPES: dict[str, Shape] = {
    "gpt2-124m": gpt_shapes(12, 768),  # 148 tensors, 124.4M parameters
    "gpt-1.3b": gpt_shapes(24, 2048, context=2048),  # 292 tensors, 1.316B parameters
    "dqn-1m": [(320, 320), (320,)] * 10,  # 20 tensors, 1.03M parameters
}
DTYPES: dict[str, int] = {"float32": 4, "bfloat16": 2}  # parameter dtype -> bytes per element
IMPLEMENTATIONS = list(_common.IMPLEMENTATIONS)
# Row key -> the implementation each row's median is compared with.
REFERENCES = {
    "vs_torch_foreach": "torch foreach",
    "vs_torch_compile": "torch.compile",
    "vs_optax": "optax jit",
}
# torch.compile builds for minutes on the largest models: by default only up to this many.
COMPILE_MAX = 200_000_000
# (BLOCK, NUM_WARPS) pairs `sweep_cuda` tries.
LAUNCH_SETTINGS: tuple[tuple[int, int], ...] = (
    (1024, 4), (2048, 4), (2048, 8), (4096, 4), (4096, 8), (8192, 8), (8192, 16),
)  # fmt: skip
_L2_OVERFLOWS = 4  # rotate until the sets span L2 this many times over...
_MOST_SETS = 16  # ...but over no more than this many sets


def minimal_bytes(shape: Shape, dtype: str, variant: str) -> int:
    """The fewest bytes one step over this model can move."""
    return VARIANTS[variant].bytes_per_param(DTYPES[dtype]) * _common.parameter_count(shape)


def rotation(set_bytes: int, spare_bytes: float, l2_bytes: int) -> int:
    """Parameter sets to rotate over: enough to overflow L2 four times, as memory allows."""
    wanted = max(1, math.ceil(_L2_OVERFLOWS * l2_bytes / set_bytes))
    fits = max(1, int(spare_bytes // (set_bytes * 1.5)))  # foreach paths allocate temporaries
    return min(wanted, fits, _MOST_SETS)


def plan(
    shapes: Mapping[str, Shape],
    dtypes: Iterable[str],
    variants: Iterable[str],
    implementations: Iterable[str],
    compile_max: float = COMPILE_MAX,
) -> list[tuple[str, str, str, list[str]]]:
    """What `run_cuda` times, in order: (shape, dtype, variant, implementations) per
    comparison; torch.compile only for models of at most ``compile_max`` parameters."""
    implementations, dtypes, variants = list(implementations), list(dtypes), list(variants)
    groups = []
    for shape_name, shape in shapes.items():
        small = _common.parameter_count(shape) <= compile_max
        names = [n for n in implementations if small or n != "torch.compile"]
        groups += [(shape_name, d, v, names) for d in dtypes for v in variants]
    return groups


def make_steps(
    name: str, shape: Shape, dtype: str, variant: str, count: int, device: str = "cuda",
    launch: LaunchSettings | None = None, state: str | None = None,
) -> list[Step]:  # fmt: skip
    """``count`` independent steps of implementation ``name``, to rotate over; ``state`` (a
    `STATE_DTYPES` name; None: the parameters' dtype) is how this project's keep their state."""
    options = VARIANTS[variant].options
    state_options = _common.state_options(state or dtype, dtype)
    if state_options and name not in _common.STATEFUL:
        raise ValueError(f"{name} keeps its state in the parameters' dtype, not {state}")
    if name == "optax jit":
        return list(_common.optax_steps(shape, options, dtype, count))
    import torch

    sets = _common.parameter_sets(shape, getattr(torch, dtype), count, device)
    if name == "torch.compile":
        # PyTorch's recipe: a tensor lr (no recompiles), the step compiled.
        optimizers = [
            torch.optim.RMSprop(params, lr=torch.tensor(0.01), foreach=False, **options)
            for params in sets
        ]
        return [torch.compile(opt.step) for opt in optimizers]
    return [_common.torch_step(name, params, options, launch, state_options) for params in sets]


def time_cuda(steps: Sequence[Step], repeats: int, warmup: int) -> dict[str, float]:
    """CUDA-event timing of ``repeats`` steps, rotating over ``steps``: the median step
    (median_ms), host time per back-to-back step (wall_ms), and the first call (first_s)."""
    import torch

    first = _common.first_call_s(steps[0], torch.cuda.synchronize)
    _common.warm_up(steps, warmup)
    torch.cuda.synchronize()
    start = time.perf_counter()
    times = _event_times(steps, repeats)
    wall = (time.perf_counter() - start) / repeats * 1e3
    return {"median_ms": statistics.median(times), "wall_ms": wall, "first_s": first}


def copy_bandwidth(gib: float = 2.0, repeats: int = 20) -> float:
    """Device-to-device copy, in TB/s counting bytes read plus bytes written."""
    import torch

    n = int(gib * 2**30) // 4
    src, dst = torch.randn(n, device="cuda"), torch.empty(n, device="cuda")
    copy = functools.partial(dst.copy_, src)
    for _ in range(3):
        copy()
    ms = statistics.median(_event_times([copy], repeats))
    del copy, src, dst
    torch.cuda.empty_cache()
    return 2 * n * 4 / ms / 1e9


def _event_times(calls: Sequence[Step], repeats: int) -> list[float]:
    """Milliseconds on the device per call, rotating over ``calls``; waits for the last."""
    import torch

    event = functools.partial(torch.cuda.Event, enable_timing=True)
    begin, end = [event() for _ in range(repeats)], [event() for _ in range(repeats)]
    for i in range(repeats):
        begin[i].record()
        calls[i % len(calls)]()
        end[i].record()
    torch.cuda.synchronize()
    return [float(b.elapsed_time(e)) for b, e in zip(begin, end)]


def make_row(
    shape: str, dtype: str, variant: str, implementation: str, timing: Mapping[str, float],
    copy_tb_s: float, rotated: int = 1, *, state_dtype: str | None = None,
    state_bytes: int | None = None,
) -> Row:  # fmt: skip
    """One measurement as a row (speed-ups come later, from its comparison's other rows):
    its state in ``state_dtype`` (None: the parameters' dtype), ``state_bytes`` measured
    from one of its optimizers (None: not known). State of another dtype than the
    parameters' counts as measured in the minimal bytes: read and written once."""
    model = SHAPES[shape]
    params = _common.parameter_count(model)
    state_dtype = state_dtype or dtype
    least = minimal_bytes(model, dtype, variant)
    if state_dtype != dtype and state_bytes is not None:
        least = 3 * DTYPES[dtype] * params + 2 * state_bytes  # θ read and written, g read
    tb_s = least / timing["median_ms"] / 1e9
    return {
        "shape": shape, "dtype": dtype, "variant": variant, "implementation": implementation,
        "params": params, "tensors": len(model), "minimal_bytes": least,
        "rotation": rotated, **timing, "tb_per_s": tb_s, "of_copy": tb_s / copy_tb_s,
        "copy_tb_s": copy_tb_s, "state_dtype": state_dtype,
        "state_bytes_per_param": None if state_bytes is None else state_bytes / params,
    }  # fmt: skip


def run_cuda(
    shapes: Iterable[str] | None = None,
    dtypes: Iterable[str] | None = None,
    variants: Iterable[str] | None = None,
    implementations: Iterable[str] | None = None,
    *,
    steps: int = 50,
    warmup: int = 5,
    compile_max: float = COMPILE_MAX,
    progress: Callable[[str], None] | None = None,
    log: Callable[[str], None] | None = None,
    each_group: Callable[[list[Row]], None] | None = None,
    launch: LaunchSettings | None = None,
    state_dtypes: Iterable[str] | None = None,
) -> list[Row]:
    """Times every implementation on the first CUDA device; returns one row per measurement.

    ``shapes`` are names in `SHAPES`, ``dtypes`` in `DTYPES`, ``variants`` in
    `VARIANTS` (default: all of each). Implementations that can't run here
    are left out, with a ``log`` line saying why; so is torch.compile for
    models above ``compile_max`` parameters (see `plan`). ``progress`` hears
    what is about to be timed, ``log`` the copy bandwidth at the start and
    the end, ``each_group`` every comparison's rows as it ends; the fused kernel
    launches with ``launch`` (`launch_settings`; ``None``: its defaults).
    ``state_dtypes`` (names in `STATE_DTYPES`; default: the parameters' dtype,
    as torch keeps it) times this project's implementations once per way of
    storing the state, each a column named for it where it is not the
    parameters' dtype (``rmsprop fused 8bit``; `rmsprop.benchmark._common.timed`).

    Each row: shape, dtype, variant, implementation, params, tensors,
    minimal_bytes, rotation (parameter sets stepped in turn), median_ms,
    wall_ms, first_s, tb_per_s at the minimal byte count, of_copy (that over
    copy_tb_s, the copy bandwidth at the start) and the speed-ups over torch
    foreach, torch.compile and optax (`REFERENCES`; None where not timed),
    state_dtype, state_bytes_per_param (measured from the first optimizer after
    the timing; None where it hides it) and vs_default_state (the same
    implementation with the parameters' dtype of state over this one).
    """
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("run_cuda times a CUDA device, and torch sees none here")
    _leave_the_gpu_to_torch()
    say = log or (lambda line: None)
    wanted = IMPLEMENTATIONS if implementations is None else implementations
    names, skipped = _common.available(wanted, "cuda")
    for name, why in skipped.items():
        say(f"skipping {name}: {why}")
    models = {name: SHAPES[name] for name in (SHAPES if shapes is None else shapes)}
    dtypes = DTYPES if dtypes is None else dtypes
    variants = VARIANTS if variants is None else variants
    groups = plan(models, dtypes, variants, names, compile_max)
    states = None if state_dtypes is None else list(state_dtypes)
    _common.check_state_dtypes(states or [], [group[1] for group in groups])
    copy_tb_s = copy_bandwidth()
    say(f"device-to-device copy: {copy_tb_s:.2f} TB/s (read + write)")
    l2_bytes = torch.cuda.get_device_properties(0).L2_cache_size
    rows: list[Row] = []
    with contextlib.ExitStack() as stack:
        if any("torch.compile" in group[3] for group in groups):
            import torch._dynamo

            # One compiled step per rotated optimizer: allow that many recompiles.
            stack.enter_context(torch._dynamo.config.patch(cache_size_limit=64))
        for shape, dtype, variant, group_names in groups:
            model = SHAPES[shape]
            measured = []
            columns = _common.timed(group_names, states, dtype)
            for column in columns:
                name = column.label
                torch.cuda.empty_cache()
                free, _ = torch.cuda.mem_get_info()
                # Smaller state, smaller sets: more of them to overflow L2 as often.
                count = rotation(_set_bytes(model, dtype, variant, column.state), free, l2_bytes)
                if progress:
                    progress(f"{shape} · {dtype} · {variant} · {name} ({count} sets)")
                # (the state given only where it is not the parameters': as before otherwise)
                state = {} if column.state == dtype else {"state": column.state}
                try:
                    timing, state_bytes = _time_one(
                        column.implementation, model, dtype, variant, count, steps, warmup,
                        launch, **state,
                    )  # fmt: skip
                except Exception as error:  # one broken implementation must not end the run
                    say(f"{shape} · {dtype} · {variant} · {name} failed: {error!r}")
                    continue
                measured.append(make_row(
                    shape, dtype, variant, name, timing, copy_tb_s, count,
                    state_dtype=column.state, state_bytes=state_bytes,
                ))  # fmt: skip
            _common.add_speedups(measured, REFERENCES)
            _common.add_state_speedups(measured, columns)
            rows += measured
            if each_group:
                each_group(measured)
    say(f"device-to-device copy at the end: {copy_bandwidth():.2f} TB/s")
    return rows


def _set_bytes(model: Shape, dtype: str, variant: str, state: str) -> int:
    """Bytes of one parameter set: θ and g in ``dtype``, the state's buffers in ``state``."""
    buffers = VARIANTS[variant].tensors - 2
    itemsize = DTYPES[dtype] if state == dtype else STATE_DTYPES[state].itemsize
    return math.ceil((2 * DTYPES[dtype] + buffers * itemsize) * _common.parameter_count(model))


def _time_one(
    name: str, model: Shape, dtype: str, variant: str, count: int, steps: int, warmup: int,
    launch: LaunchSettings | None = None, **state: str,
) -> tuple[dict[str, float], int | None]:  # fmt: skip
    """The timing of ``count`` rotated steps, and the state bytes of the first (measured)."""
    built = make_steps(name, model, dtype, variant, count, launch=launch, **state)
    if name == "optax jit":
        first = _common.first_call_s(built[0])
        timing = {**_common.time_host(built, steps, warmup), "first_s": first}
    else:
        timing = time_cuda(built, steps, warmup)
    return timing, _common.state_nbytes(built[0])


def check_launch(block: int, warps: int) -> tuple[int, int]:
    """``(block, warps)`` if both are powers of two, else ValueError; imports nothing (a
    command line checks its arguments before it loads torch).

    >>> check_launch(4096, 8)
    (4096, 8)
    >>> check_launch(3000, 8)
    Traceback (most recent call last):
    ValueError: BLOCK and NUM_WARPS must be powers of two, got 3000 and 8
    """
    if block <= 0 or block & (block - 1) or warps <= 0 or warps & (warps - 1):
        raise ValueError(f"BLOCK and NUM_WARPS must be powers of two, got {block} and {warps}")
    return block, warps


def launch_settings(block: int, warps: int) -> LaunchSettings:
    """The fused kernel's launch settings: ``block`` elements and ``warps`` warps per program
    (what `run_cuda`'s ``launch`` takes). Raises ValueError unless both are powers of two."""
    check_launch(block, warps)
    from rmsprop.torch import LaunchSettings

    return LaunchSettings(block, warps)


def best_launch(rows: Iterable[Row]) -> tuple[int, int]:
    """The (BLOCK, NUM_WARPS) of `sweep_cuda` rows with the least total median time, among
    the settings timed in every comparison (dtype and variant) of the rows; the first on a tie.

    >>> rows = [{"dtype": "float32", "variant": "plain", "block": b, "warps": w, "median_ms": t}
    ...         for b, w, t in [(1024, 4, 3.0), (2048, 8, 2.0), (4096, 8, 2.5)]]
    >>> best_launch(rows)
    (2048, 8)
    """
    times: dict[tuple[int, int], dict[tuple[str, str], float]] = {}
    for row in rows:
        setting, comparison = (row["block"], row["warps"]), (row["dtype"], row["variant"])
        times.setdefault(setting, {})[comparison] = row["median_ms"]
    comparisons = set().union(*times.values())
    complete = [setting for setting, timed in times.items() if set(timed) == comparisons]
    if not complete:
        raise ValueError("best_launch needs a setting timed in every comparison of the rows")
    return min(complete, key=lambda setting: sum(times[setting].values()))


def sweep_cuda(
    shape: str = "gpt2-124m",
    dtypes: Iterable[str] | None = None,
    variants: Iterable[str] | None = None,
    *,
    steps: int = 50,
    warmup: int = 5,
    settings: Iterable[tuple[int, int]] = LAUNCH_SETTINGS,
    copy_tb_s: float | None = None,
    on_row: Callable[[Row], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Row]:
    """Times the fused kernel under each fixed launch setting (BLOCK, NUM_WARPS) in turn.

    Each row: shape, dtype, variant, block, warps, median_ms, wall_ms,
    first_s, tb_per_s, of_copy and copy_tb_s (measured here unless given).
    ``progress`` hears what is about to be timed, ``on_row`` each row as it
    ends. Each step gets its settings as an argument: nothing global changes.
    """
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("sweep_cuda times a CUDA device, and torch sees none here")
    copy_tb_s = copy_bandwidth() if copy_tb_s is None else copy_tb_s
    rows = []
    for dtype in DTYPES if dtypes is None else dtypes:
        for variant in VARIANTS if variants is None else variants:
            sets = _common.parameter_sets(SHAPES[shape], getattr(torch, dtype), 1)
            for block, warps in settings:
                launch = launch_settings(block, warps)
                if progress:
                    progress(f"{shape} · {dtype} · {variant} · BLOCK={block}, NUM_WARPS={warps}")
                options = VARIANTS[variant].options
                step = _common.torch_step("rmsprop fused", sets[0], options, launch)
                timing = time_cuda([step], steps, warmup)
                del step
                row = make_row(shape, dtype, variant, "rmsprop fused", timing, copy_tb_s)
                row |= {"block": block, "warps": warps}
                rows.append(row)
                if on_row:
                    on_row(row)
            del sets
            torch.cuda.empty_cache()
    return rows


class Target(NamedTuple):
    """One of the fused kernel's speed targets: on ``shape`` (every shape: None), each of the
    fused rows' ``key`` must be at least ``least`` (more than it, with ``strictly``)."""

    claim: str
    shape: str | None
    key: str
    least: float
    strictly: bool = False


TARGETS = (
    Target("≥ 3.0× torch foreach at 1.3B, every variant", "gpt-1.3b", "vs_torch_foreach", 3.0),
    Target("≥ 90 % of the copy bandwidth at 1.3B (minimal bytes)", "gpt-1.3b", "of_copy", 0.9),
    Target("≥ 2.5× torch foreach at 124M", "gpt2-124m", "vs_torch_foreach", 2.5),
    Target("faster than torch.compile at 124M", "gpt2-124m", "vs_torch_compile", 1.0, True),
    Target("faster than optax everywhere", None, "vs_optax", 1.0, True),
    Target("not slower than torch foreach at DQN size", "dqn-1m", "vs_torch_foreach", 1.0),
)


def verdicts(rows: Iterable[Row], targets: Iterable[Target] = TARGETS) -> list[Row]:
    """Each target per parameter dtype, judged on the fused rows' worst value.

    Each verdict: claim, dtype, worst (None when nothing was measured), where
    (the worst row's shape and variant), rows (how many were judged) and met
    (True, False, or None when nothing was measured).
    """
    rows = list(rows)
    fused = [r for r in rows if r["implementation"] == "rmsprop fused"]
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows)) or list(DTYPES)
    out = []
    for target in targets:
        for dtype in dtypes:
            judged = [
                r for r in fused
                if r["dtype"] == dtype and target.shape in (None, r["shape"])
                and r.get(target.key) is not None
            ]  # fmt: skip
            worst = min(judged, key=lambda r: r[target.key], default=None)
            value = None if worst is None else worst[target.key]
            met = None
            if value is not None:
                met = value > target.least if target.strictly else value >= target.least
            out.append({
                "claim": target.claim, "dtype": dtype, "worst": value, "rows": len(judged),
                "where": "" if worst is None else f"{worst['shape']} {worst['variant']}",
                "met": met, "key": target.key,
            })  # fmt: skip
    return out


def _verdict_value(verdict: Row) -> str:
    value = verdict["worst"]
    if value is None:
        return "not measured"
    return f"{value:.0%}" if verdict["key"] == "of_copy" else f"{value:.2f}×"


VERDICT_COLUMNS = (
    Column("target", lambda v: v["claim"]),
    Column("dtype", lambda v: v["dtype"]),
    Column("worst case", lambda v: f"{_verdict_value(v)} ({v['where']})" if v["rows"] else "—"),
    Column("rows", lambda v: str(v["rows"])),
    Column("met", lambda v: {True: "yes", False: "**no**", None: "not measured"}[v["met"]]),
)

COLUMNS = (
    Column("dtype", lambda r: r["dtype"]),
    Column("variant", lambda r: r["variant"]),
    Column("implementation", lambda r: r["implementation"]),
    Column("median ms", lambda r: f"{r['median_ms']:.3f}"),
    Column("wall ms/step", lambda r: f"{r['wall_ms']:.3f}", "wall ms"),
    Column("TB/s at minimal bytes", lambda r: f"{r['tb_per_s']:.2f}", "TB/s"),
    Column("of copy", lambda r: f"{r['of_copy']:.0%}"),
    Column("× torch foreach", lambda r: _common.format_ratio(r["vs_torch_foreach"]), "× foreach"),
    Column("× torch.compile", lambda r: _common.format_ratio(r["vs_torch_compile"]), "× compile"),
    Column("× optax", lambda r: _common.format_ratio(r["vs_optax"])),
    Column("first step s", lambda r: f"{r['first_s']:.2f}", "first s"),
)
SWEEP_COLUMNS = (
    Column("dtype", lambda r: r["dtype"]),
    Column("variant", lambda r: r["variant"]),
    Column("BLOCK", lambda r: str(r["block"])),
    Column("warps", lambda r: str(r["warps"])),
    Column("median ms", lambda r: f"{r['median_ms']:.3f}"),
    Column("TB/s", lambda r: f"{r['tb_per_s']:.2f}"),
    Column("of copy", lambda r: f"{r['of_copy']:.0%}"),
)


# With other state than the parameters' dtype: its bytes after the implementation, and the
# speed-up over the same implementation with the parameters' dtype of state at the end.
STATE_COLUMNS = _common.with_state_columns(COLUMNS, after=3)


def columns(rows: Iterable[Row]) -> tuple[Column, ...]:
    """The table's columns: `STATE_COLUMNS` where some row keeps state other than in its
    parameters' dtype."""
    return STATE_COLUMNS if _common.shows_state(rows) else COLUMNS


def title(row: Row) -> str:
    """The heading over a shape's table."""
    return f"{row['shape']} {_details(row)}"


def markdown(rows: Iterable[Row]) -> str:
    """The rows as a Markdown table per shape."""
    rows = list(rows)
    return _common.markdown(rows, columns(rows), _details)


def sweep_markdown(rows: Iterable[Row]) -> str:
    """`sweep_cuda` rows as one Markdown table."""
    lines = _common.markdown_header(SWEEP_COLUMNS)
    lines += [_common.markdown_row(SWEEP_COLUMNS, row) for row in rows]
    return "\n".join(lines)


def verdicts_markdown(rows: Iterable[Row]) -> str:
    """`verdicts` of the rows as one Markdown table."""
    lines = _common.markdown_header(VERDICT_COLUMNS)
    lines += [_common.markdown_row(VERDICT_COLUMNS, v) for v in verdicts(rows)]
    return "\n".join(lines)


def _details(row: Row) -> str:
    return f"({row['params'] / 1e6:.1f}M parameters, {row['tensors']} tensors)"


def environment(launch: LaunchSettings | None = None) -> dict[str, str]:
    """The card, today's date, the versions that matter and the fused kernel's launch
    settings (``launch``, or its defaults), for the record of a run."""
    import torch

    from rmsprop.torch._fused.settings import DEFAULT_LAUNCH

    found = _common.versions(["torch", "triton", "rmsprop", "jax", "optax"])
    found.insert(2, f"CUDA {torch.version.cuda}")  # after Python and torch
    return {
        "card": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device",
        "date": datetime.date.today().isoformat(),
        "versions": ", ".join(found),
        "launch": "BLOCK={}, NUM_WARPS={}".format(*astuple(launch or DEFAULT_LAUNCH)),
    }


def _leave_the_gpu_to_torch() -> None:
    # JAX would take most of the GPU when its backend starts: torch shares it.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
