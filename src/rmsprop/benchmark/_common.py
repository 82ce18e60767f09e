"""What the CPU and CUDA step benchmarks share: the rules timed, what can run, timing, rows.

Nothing here imports torch, JAX or optax at import time: each function that
needs one imports it.
"""

from __future__ import annotations

import contextlib
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import torch

    from rmsprop.torch import LaunchSettings

__all__ = [
    "IMPLEMENTATIONS",
    "STATEFUL",
    "STATE_DTYPES",
    "VARIANTS",
    "Column",
    "OptaxStep",
    "Row",
    "Shape",
    "StateDtype",
    "Step",
    "Timed",
    "Variant",
    "add_speedups",
    "add_state_speedups",
    "available",
    "by_shape",
    "check_state_dtypes",
    "first_call_s",
    "format_ratio",
    "jitted_update",
    "markdown",
    "markdown_header",
    "markdown_row",
    "optax_rmsprop",
    "optax_steps",
    "parameter_count",
    "parameter_sets",
    "shows_state",
    "state_cell",
    "state_nbytes",
    "state_options",
    "terminal_table",
    "time_host",
    "timed",
    "torch_step",
    "unavailable",
    "versions",
]

Shape = list[tuple[int, ...]]  # a model, as its parameters' shapes
Step = Callable[[], Any]
Row = dict[str, Any]  # one measurement; JSON-ready
Update = Callable[[Any, Any, Any], tuple[Any, Any]]  # (params, state, grads) -> (params, state)


@dataclass(frozen=True)
class Variant:
    """A rule to time: its ``torch.optim.RMSprop`` options and the traffic no step can avoid."""

    options: Mapping[str, Any] = field(default_factory=dict)
    # Tensor elements a step must read or write per parameter: read θ, g, v and
    # write θ, v (5); momentum reads and writes m too (7), centered b (9).
    accesses: int = 5

    @property
    def tensors(self) -> int:
        """Tensors per parameter: θ, g, v (, m) (, b); each is read, all but g written."""
        return (self.accesses + 1) // 2

    def bytes_per_param(self, element_size: int = 4) -> int:
        """The fewest bytes a step moves per parameter of ``element_size`` bytes."""
        return self.accesses * element_size


VARIANTS: dict[str, Variant] = {
    "plain": Variant({}, 5),
    "momentum": Variant({"momentum": 0.9}, 7),
    "centered+momentum": Variant({"centered": True, "momentum": 0.9}, 9),
}

# Timed on every device (the CPU engine adds the NumPy fast path).
IMPLEMENTATIONS: tuple[str, ...] = (
    "rmsprop fused",
    "rmsprop foreach",
    "torch foreach",
    "torch for-loop",
    "torch.compile",
    "optax jit",
)


@dataclass(frozen=True)
class StateDtype:
    """How `rmsprop.torch.RMSprop` stores its state: ``state_dtype`` (a torch dtype's name or
    ``"8bit"``) and ``stochastic_rounding``."""

    stored: str
    itemsize: float  # bytes per element, about (8-bit: its scales too), to size memory by
    stochastic: bool = False


# --state-dtype's names (`rmsprop info` sizes the same formats).
STATE_DTYPES: dict[str, StateDtype] = {
    "float32": StateDtype("float32", 4),
    "bfloat16": StateDtype("bfloat16", 2),
    "bfloat16-stochastic": StateDtype("bfloat16", 2, stochastic=True),
    "8bit": StateDtype("8bit", 1 + 4 / 256),
}
# The implementations a state dtype applies to: ours. torch.optim.RMSprop, optax and the
# NumPy fast path keep their state in the parameters' dtype.
STATEFUL: tuple[str, ...] = ("rmsprop fused", "rmsprop foreach")


class Timed(NamedTuple):
    """One column of a comparison: ``implementation`` with its state in ``state``."""

    label: str  # the row's "implementation": "rmsprop fused", "rmsprop fused 8bit", ...
    implementation: str
    state: str  # a `STATE_DTYPES` name: the parameters' dtype unless the label says otherwise


def check_state_dtypes(state_dtypes: Iterable[str], param_dtypes: Iterable[str]) -> None:
    """ValueError for a state dtype `timed` can't time beside parameters of these dtypes."""
    state_dtypes, param_dtypes = list(state_dtypes), list(param_dtypes)
    for name in state_dtypes:
        if name not in STATE_DTYPES:
            raise ValueError(f"unknown state dtype {name!r}; choose from {', '.join(STATE_DTYPES)}")
    if "bfloat16-stochastic" in state_dtypes and "bfloat16" in param_dtypes:
        # There stochastic_rounding=True would round the parameters, not the state.
        raise ValueError(
            "bfloat16-stochastic is bfloat16 state beside float32 parameters; bfloat16 "
            "parameters keep bfloat16 state already (and stochastic_rounding would round the "
            "parameters themselves)"
        )


def timed(
    implementations: Iterable[str], state_dtypes: Iterable[str] | None, param_dtype: str
) -> list[Timed]:
    """The columns of one comparison, in order: each of `STATEFUL` once per state dtype (in
    `STATE_DTYPES`' order; ``None``: the parameters' dtype), each other implementation once.
    A column whose state is not the parameters' dtype is named for it: ``rmsprop fused 8bit``.

    >>> [t.label for t in timed(["rmsprop fused", "torch foreach"], ["8bit", "float32"],
    ...                         "float32")]
    ['rmsprop fused', 'rmsprop fused 8bit', 'torch foreach']
    """
    wanted = [param_dtype] if state_dtypes is None else list(state_dtypes)
    check_state_dtypes(wanted, [param_dtype])
    states = [name for name in STATE_DTYPES if name in wanted]
    columns = []
    for name in implementations:
        for state in states if name in STATEFUL else [param_dtype]:
            label = name if state == param_dtype else f"{name} {state}"
            columns.append(Timed(label, name, state))
    return columns


def state_options(state: str, param_dtype: str) -> dict[str, Any]:
    """`rmsprop.torch.RMSprop`'s options for state ``state`` beside ``param_dtype`` parameters:
    none where that is the parameters' dtype (the optimizer's default)."""
    if state == param_dtype:
        return {}
    import torch

    form = STATE_DTYPES[state]
    stored = form.stored if form.stored == "8bit" else getattr(torch, form.stored)
    return {"state_dtype": stored, **({"stochastic_rounding": True} if form.stochastic else {})}


def parameter_count(shape: Shape) -> int:
    """Parameters in a model of these shapes."""
    return sum(math.prod(s) for s in shape)


def unavailable(name: str, device: str) -> str:
    """Why implementation ``name`` can't be timed on ``device`` ('' when it can)."""
    if name == "optax jit":
        try:
            import jax  # noqa: F401
            import optax  # noqa: F401
        except ImportError as error:
            return f"not installed ({error})"
    elif name == "rmsprop fused":
        from rmsprop.torch import _fused  # the registry the optimizer asks

        return _fused.why_not_on(device)
    elif name == "numpy fused":
        from rmsprop.kernels import numba_cpu

        return numba_cpu.WHY_UNAVAILABLE
    return ""


def available(names: Iterable[str], device: str) -> tuple[list[str], dict[str, str]]:
    """The implementations that can be timed on ``device``, and why not for the others."""
    runnable, skipped = [], {}
    for name in names:
        reason = unavailable(name, device)
        if reason:
            skipped[name] = reason
        else:
            runnable.append(name)
    return runnable, skipped


# Building steps.


def parameter_sets(
    shape: Shape, dtype: torch.dtype, count: int, device: str = "cuda"
) -> list[list[torch.nn.Parameter]]:
    """``count`` independent models of this shape, gradients in place (drawn in float32)."""
    import torch

    sets = []
    for i in range(count):
        generator = torch.Generator(device=device).manual_seed(i)
        params = []
        for s in shape:
            p = torch.nn.Parameter(torch.randn(s, generator=generator, device=device).to(dtype))
            p.grad = (torch.randn(s, generator=generator, device=device) * 1e-2).to(dtype)
            params.append(p)
        sets.append(params)
    return sets


def torch_step(
    name: str,
    params: list[torch.nn.Parameter],
    options: Mapping[str, Any],
    launch: LaunchSettings | None = None,
    state: Mapping[str, Any] | None = None,
) -> Step:
    """The step of an eager torch implementation over ``params`` (torch.compile has recipes
    of its own per engine); the fused kernel launches with ``launch`` (None: its defaults).
    ``state`` (`state_options`) sets how this project's optimizer stores its state."""
    import torch

    from rmsprop.torch import RMSprop

    state = dict(state or {})
    if state and name not in STATEFUL:
        raise ValueError(f"{name} keeps its state in the parameters' dtype, not {state}")
    if name == "rmsprop fused":
        return RMSprop(params, fused=True, launch=launch, **options, **state).step
    if name == "rmsprop foreach":
        return RMSprop(params, fused=False, foreach=True, **options, **state).step
    if name == "torch foreach":
        return torch.optim.RMSprop(params, foreach=True, **options).step
    if name == "torch for-loop":
        return torch.optim.RMSprop(params, foreach=False, **options).step
    raise ValueError(f"not an eager torch implementation: {name!r}")


def optax_rmsprop(options: Mapping[str, Any]) -> Any:
    """``optax.rmsprop`` with torch's rule and defaults (ε outside the root, ρ = 0.99)."""
    import optax

    return optax.rmsprop(
        1e-2, decay=0.99, eps=1e-8, eps_in_sqrt=False,
        centered=options.get("centered", False), momentum=options.get("momentum"),
    )  # fmt: skip


def jitted_update(tx: Any) -> Update:
    """``(params, state, grads) -> (params, state)`` under ``jax.jit``, updating its inputs'
    buffers in place, as the other implementations do."""
    import jax
    import optax

    def update(params: Any, state: Any, grads: Any) -> tuple[Any, Any]:
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(update, donate_argnums=(0, 1))


class OptaxStep:
    """One optax model: calling it takes a step and waits for it (JAX owns its streams)."""

    def __init__(self, update: Update, params: Any, state: Any, grads: Any) -> None:
        self.update, self.params, self.state, self.grads = update, params, state, grads

    def __call__(self) -> None:
        import jax

        self.params, self.state = self.update(self.params, self.state, self.grads)
        jax.block_until_ready(self.params)  # type: ignore[no-untyped-call]


def optax_steps(
    shape: Shape, options: Mapping[str, Any], dtype: str = "float32", count: int = 1
) -> list[OptaxStep]:
    """``count`` independent optax models of this shape, in ``dtype`` (a jax.numpy name)."""
    import jax
    import jax.numpy as jnp

    tx = optax_rmsprop(options)
    update = jitted_update(tx)
    jax_dtype = getattr(jnp, dtype)
    steps = []
    for i in range(count):
        keys = jax.random.split(jax.random.PRNGKey(i), 2 * len(shape))
        params = [jax.random.normal(k, s, jax_dtype) for k, s in zip(keys[::2], shape)]
        grads = [1e-2 * jax.random.normal(k, s, jax_dtype) for k, s in zip(keys[1::2], shape)]
        steps.append(OptaxStep(update, params, tx.init(params), grads))
    return steps


def state_nbytes(step: Step) -> int | None:
    """Bytes the state of a built step holds (its averages and momentum buffers; 8-bit codes
    with their scales; not the step counts), measured from its optimizer: `rmsprop.torch`'s
    ``state_nbytes()``, the tensors of a ``torch.optim`` optimizer's state, the arrays of
    an optax state or of a step that says (a ``state_nbytes`` method). None where the step
    hides its optimizer (torch.compile's)."""
    owner: Any = getattr(step, "__self__", step)  # a bound optimizer.step, or a step object
    measure = getattr(owner, "state_nbytes", None)
    if callable(measure):
        return int(measure())
    if isinstance(step, OptaxStep):
        import jax

        leaves = jax.tree_util.tree_leaves(step.state)
        return sum(int(leaf.nbytes) for leaf in leaves if leaf.ndim)  # (not the count)
    if hasattr(owner, "param_groups"):  # a torch.optim optimizer: its state's tensors
        return sum(
            int(value.numel() * value.element_size())
            for p_state in owner.state.values()
            for key, value in p_state.items()
            if key != "step" and hasattr(value, "element_size")
        )
    return None


# Timing.


def first_call_s(step: Step, wait: Callable[[], Any] | None = None) -> float:
    """Seconds one call takes (the first builds state, and compiles what it compiles)."""
    start = time.perf_counter()
    step()
    if wait is not None:
        wait()
    return time.perf_counter() - start


def warm_up(steps: Sequence[Step], warmup: int) -> None:
    """``warmup`` calls rotating over ``steps``, and more if need be so each is called once:
    a first call builds state (and a fused step's plan), which the timing must not see; then
    waits for any kernel still loading in the background, which would take a core from it."""
    for i in range(max(warmup, len(steps))):
        steps[i % len(steps)]()
    loaded = sys.modules.get("rmsprop.kernels.numba_cpu")  # (never imported here for this)
    if loaded is not None:
        loaded.wait_for_warm_up()


def time_host(steps: Sequence[Step], repeats: int, warmup: int) -> dict[str, float]:
    """Host time per call, rotating over ``steps`` after `warm_up`: the median and the mean
    (what back-to-back calls cost), in milliseconds."""
    warm_up(steps, warmup)
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        steps[i % len(steps)]()
        times.append(time.perf_counter() - start)
    return {"median_ms": statistics.median(times) * 1e3, "wall_ms": sum(times) / repeats * 1e3}


# Rows and tables.


def add_speedups(group: Sequence[Row], references: Mapping[str, str]) -> None:
    """Adds ``key: reference's median / the row's median`` to every row of one comparison
    (None where ``reference`` was not timed)."""
    median = {row["implementation"]: row["median_ms"] for row in group}
    for row in group:
        for key, reference in references.items():
            row[key] = median[reference] / row["median_ms"] if reference in median else None


def add_state_speedups(group: Sequence[Row], columns: Iterable[Timed]) -> None:
    """Adds ``vs_default_state``: the median of the same implementation with its state in the
    parameters' dtype over the row's, for each column whose state is another (None for the
    rest, and where that implementation was not timed with default state)."""
    median = {row["implementation"]: row["median_ms"] for row in group}
    reference = {c.label: c.implementation for c in columns if c.label != c.implementation}
    for row in group:
        base = reference.get(row["implementation"])
        row["vs_default_state"] = (
            median[base] / row["median_ms"] if base is not None and base in median else None
        )


def shows_state(rows: Iterable[Row]) -> bool:
    """Whether a table of these rows needs the state's columns: some row's state is not its
    parameters' dtype (so the tables of a default run stay as they were)."""
    return any(
        row.get("state_dtype", row.get("dtype", "float32")) != row.get("dtype", "float32")
        for row in rows
    )


def state_cell(row: Row) -> str:
    """The state's bytes per parameter, as measured (``—`` where it could not be)."""
    value = row.get("state_bytes_per_param")
    return "—" if value is None else f"{value:.3f}"


def with_state_columns(columns: Sequence[Column], after: int) -> tuple[Column, ...]:
    """``columns`` with the state's: its bytes per parameter after the first ``after``, and
    the speed-up over the same implementation with default state before the last."""
    return (
        *columns[:after],
        Column("state bytes / param", state_cell, "state B/param"),
        *columns[after:-1],
        Column(
            "× state_dtype=None",
            lambda r: format_ratio(r.get("vs_default_state")),
            "× default state",
        ),
        columns[-1],
    )


def by_shape(rows: Iterable[Row]) -> dict[str, list[Row]]:
    """Rows grouped by model shape, in order of first appearance."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row["shape"], []).append(row)
    return groups


def format_ratio(value: float | None) -> str:
    """A speed-up as ``1.23×``, or ``—`` when there was nothing to compare with."""
    return "—" if value is None else f"{value:.2f}×"


class Column(NamedTuple):
    """A table column: its Markdown header, how a row fills it, a shorter terminal header."""

    header: str
    cell: Callable[[Row], str]
    short: str = ""


def markdown_header(columns: Sequence[Column]) -> list[str]:
    """A Markdown table's header and rule lines."""
    return ["| " + " | ".join(c.header for c in columns) + " |", "|" + "---|" * len(columns)]


def markdown_row(columns: Sequence[Column], row: Row) -> str:
    """One Markdown table line."""
    return "| " + " | ".join(c.cell(row) for c in columns) + " |"


def markdown(
    rows: Iterable[Row], columns: Sequence[Column], details: Callable[[Row], str] | None = None
) -> str:
    """A Markdown table per model shape, under its name in bold (and ``details``, if any)."""
    out = []
    for group in by_shape(rows).values():
        about = f" {details(group[0])}" if details else ""
        out += [f"\n**{group[0]['shape']}**{about}\n", *markdown_header(columns)]
        out += [markdown_row(columns, row) for row in group]
    return "\n".join(out)


def terminal_table(
    columns: Sequence[Column], rows: Iterable[Row]
) -> tuple[list[str], list[list[str]]]:
    """Headers (the short ones where given) and cells, for a text table."""
    return [c.short or c.header for c in columns], [[c.cell(r) for c in columns] for r in rows]


def versions(packages: Iterable[str]) -> list[str]:
    """``Python x.y.z`` and ``name version`` for each of ``packages`` installed here."""
    found = [f"Python {platform.python_version()}"]
    for name in packages:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append(f"{name} {metadata.version(name)}")
    return found
