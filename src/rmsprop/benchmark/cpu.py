"""The CPU step benchmark: ours beside torch, torch.compile, optax and NumPy, in one process.

An RMSprop step is memory-bound: the fewest bytes it can move per fp32
parameter are 20 (read θ, g, v; write θ, v), 28 with momentum, 36 centered
with momentum. Each result reports the median step time, the bandwidth that
minimal byte count implies, and how that compares with an in-place add over
the same tensors measured in the same run (the machine's practical ceiling).

This module is what ``rmsprop bench`` runs (``--first-call``:
`first_call_in_fresh_processes`); it is a command's engine, never a timed
test. Example (tiny, so it is quick):

    >>> from rmsprop.benchmark import cpu
    >>> rows = cpu.run_cpu(
    ...     shapes={"tiny": [(1000,)] * 2}, variants=["plain"],
    ...     implementations=["rmsprop fused", "torch for-loop"], steps=3,
    ... )
    >>> [row["implementation"] for row in rows]
    ['rmsprop fused', 'torch for-loop']
    >>> rows[0]["vs_torch_forloop"] > 0 and rows[0]["bytes_per_param"] == 20
    True
"""

from __future__ import annotations

import datetime
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rmsprop.benchmark import _common
from rmsprop.benchmark._common import STATE_DTYPES, VARIANTS, Column, Row, Shape, Step

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from rmsprop import Config
    from rmsprop.kernels.numba_cpu import Table

__all__ = [
    "COLUMNS",
    "DQN_NATURE",
    "IMPLEMENTATIONS",
    "REFERENCES",
    "SHAPES",
    "STATE_COLUMNS",
    "STATE_DTYPES",
    "VARIANTS",
    "address_table",
    "columns",
    "environment",
    "first_call_in_fresh_processes",
    "markdown",
    "run_cpu",
    "title",
]

# DeepMind's Nature DQN network (84x84x4 input, 18 actions): 1.69M parameters.
DQN_NATURE = [
    (32, 4, 8, 8), (32,), (64, 32, 4, 4), (64,), (64, 64, 3, 3), (64,),
    (512, 3136), (512,), (18, 512), (18,),
]  # fmt: skip

SHAPES: dict[str, Shape] = {
    "25M params in 100 tensors": [(250_000,)] * 100,
    "DQN (1.7M params, 10 tensors)": DQN_NATURE,
}

IMPLEMENTATIONS = [*_common.IMPLEMENTATIONS, "numpy fused"]

# Row key -> the implementation each row's median is compared with.
REFERENCES = {"vs_torch_foreach": "torch foreach", "vs_torch_forloop": "torch for-loop"}


def run_cpu(
    shapes: Mapping[str, Shape] | None = None,
    variants: Iterable[str] | None = None,
    implementations: Iterable[str] | None = None,
    steps: int = 30,
    progress: Callable[[str], None] | None = None,
    rounds: int = 3,
    *,
    warmup: int = 3,
    each_group: Callable[[list[Row]], None] | None = None,
    state_dtypes: Iterable[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[Row]:
    """Times every implementation on the CPU; returns one row per measurement.

    For each shape and variant, every implementation (and an in-place add
    over the same tensors) is built once, then timed in ``rounds``
    interleaved rounds of ``steps`` steps (after ``warmup`` untimed ones): a
    burst of load from elsewhere on a shared machine then spoils one round of
    everything rather than all of one implementation's, and the median over
    rounds discards it. ``progress`` hears what is about to be built,
    ``each_group`` every comparison's rows (one shape and variant) as it ends.

    ``state_dtypes`` (names in `STATE_DTYPES`; default: float32, the
    parameters' dtype) times this project's implementations once per way of
    storing the state, each a column of its own named for it (``rmsprop fused
    8bit``; see `rmsprop.benchmark._common.timed`); the others keep float32.

    Implementations that can't run here (optax or Numba missing) are left
    out; one whose first step fails is left out of its comparison, with a
    ``log`` line saying why. Each row: shape, variant, implementation,
    params, bytes_per_param (the fewest a step moves: 3 per parameter access
    and the state read and written, as measured), median_ms, compile_s (the
    first step, for compiled implementations), gb_per_s at those bytes, vs_add
    (that bandwidth over the in-place add's), the speed-ups over
    torch.optim.RMSprop's foreach and for-loop paths (`REFERENCES`),
    state_dtype, state_bytes_per_param (measured from the optimizer after the
    first step; None where it hides it) and vs_default_state (the same
    implementation with float32 state over this one; None for float32 state).
    """
    shapes = SHAPES if shapes is None else shapes
    variants = list(VARIANTS if variants is None else variants)
    wanted = IMPLEMENTATIONS if implementations is None else implementations
    implementations, _ = _common.available(wanted, "cpu")
    columns = _common.timed(implementations, state_dtypes, "float32")
    say = log or (lambda line: None)
    rows = []
    for shape_name, shape in shapes.items():
        params = _common.parameter_count(shape)
        for variant in variants:
            options = VARIANTS[variant].options
            built: dict[str, tuple[Step, float]] = {"in-place add": (_inplace_add(shape), 0.0)}
            state_bytes: dict[str, int | None] = {}
            for column in columns:
                if progress:
                    progress(f"{shape_name} · {variant} · {column.label}")
                try:
                    step = _build(column.implementation, shape, options, column.state)
                    built[column.label] = (step, _common.first_call_s(step))
                except Exception as error:  # one broken column must not end the run
                    say(f"{shape_name} · {variant} · {column.label} failed: {error!r}")
                    continue
                state_bytes[column.label] = _common.state_nbytes(step)
            times: dict[str, list[float]] = {name: [] for name in built}
            for _ in range(rounds):
                for name, (step, _) in built.items():
                    times[name].append(_common.time_host([step], steps, warmup)["median_ms"])
            first_step = {name: seconds for name, (_, seconds) in built.items()}
            del built  # several GB at the large shape
            median = {name: statistics.median(t) for name, t in times.items()}
            add_gb_per_s = 12 * params / median.pop("in-place add") / 1e6  # read a, b; write a
            group = []
            for column in columns:
                name = column.label
                if name not in median:
                    continue
                measured = state_bytes[name]
                bytes_per_param: float = VARIANTS[variant].bytes_per_param()
                if column.state != "float32" and measured is not None:
                    # θ read and written, g read; every state byte read and written.
                    bytes_per_param = (3 * 4 * params + 2 * measured) / params
                gb_per_s = bytes_per_param * params / median[name] / 1e6
                group.append(
                    {
                        "shape": shape_name,
                        "variant": variant,
                        "implementation": name,
                        "params": params,
                        "bytes_per_param": bytes_per_param,
                        "median_ms": median[name],
                        "compile_s": first_step[name],
                        "gb_per_s": gb_per_s,
                        "vs_add": gb_per_s / add_gb_per_s,
                        "state_dtype": column.state,
                        "state_bytes_per_param": None if measured is None else measured / params,
                    }
                )
            _common.add_speedups(group, REFERENCES)
            _common.add_state_speedups(group, columns)
            rows += group
            if each_group:
                each_group(group)
    return rows


def environment() -> dict[str, str]:
    """The machine, today's date and the versions that matter, for the record of a run."""
    found = _common.versions(["numpy", "torch", "numba", "rmsprop", "jax", "optax"])
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "date": datetime.date.today().isoformat(),
        "versions": ", ".join(found),
    }


# One fused step in a fresh process: its time to stdout.
_FIRST_CALL = """
import time, torch
from rmsprop.torch import RMSprop
p = torch.nn.Parameter(torch.randn(1000)); p.grad = torch.randn(1000)
opt = RMSprop([p], fused=True, momentum=0.9)
start = time.perf_counter(); opt.step(); print(time.perf_counter() - start)
"""


def first_call_in_fresh_processes() -> dict[str, float]:
    """Seconds the fused CPU step's first call takes in a fresh process: ``cold`` with an
    empty Numba cache (it compiles the kernel and caches it), then ``warm`` (it loads it).

    Two processes of this Python, sharing a new cache directory; this rmsprop is importable
    in them whether or not it is installed. Raises CalledProcessError when a step fails.
    """
    package_root = str(pathlib.Path(__file__).resolve().parents[2])  # the folder of rmsprop/
    path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": path}
        cold, warm = (
            float(subprocess.run([sys.executable, "-c", _FIRST_CALL], env=env, check=True,
                                 capture_output=True, text=True).stdout)
            for _ in range(2)
        )  # fmt: skip
    return {"cold": cold, "warm": warm}


def address_table(
    numels: Sequence[int], rule: Config | None = None
) -> tuple[Table, list[npt.NDArray[np.float32]]]:
    """The CPU kernel's `Table` over fresh float32 arrays (θ, g, v for each of ``numels``),
    with the coefficients of ``rule``'s first step (default: the plain rule, lr 1e-3), as
    the fused path builds one; the list keeps the arrays alive (the table holds only their
    addresses). What ``benchmarks/cpu_threads.py`` times. Needs Numba."""
    import numpy as np

    from rmsprop import Config
    from rmsprop._lowering import coefficients
    from rmsprop.kernels import numba_cpu

    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(n).astype(np.float32) for n in numels for _ in range(3)]
    table = numba_cpu.Table(np.float32, numels)
    for row in range(3):
        table.addresses[row] = [a.ctypes.data for a in arrays[row::3]]
    table.set_coefficients(coefficients(Config(lr=1e-3) if rule is None else rule, 1))
    return table, arrays


COLUMNS = (
    Column("variant", lambda r: r["variant"]),
    Column("implementation", lambda r: r["implementation"]),
    Column("median ms", lambda r: f"{r['median_ms']:.2f}"),
    Column("GB/s at minimal bytes", lambda r: f"{r['gb_per_s']:.1f}", "GB/s"),
    Column("vs in-place add", lambda r: f"{r['vs_add']:.0%}", "vs add"),
    Column("× torch foreach", lambda r: _common.format_ratio(r["vs_torch_foreach"]), "× foreach"),
    Column("× torch for-loop", lambda r: _common.format_ratio(r["vs_torch_forloop"]), "× loop"),
    Column("first step s", lambda r: f"{r['compile_s']:.2f}", "first s"),
)
# With state other than float32: its bytes after the implementation, and the speed-up over
# the same implementation with float32 state (state_dtype=None) at the end.
STATE_COLUMNS = _common.with_state_columns(COLUMNS, after=2)


def columns(rows: Iterable[Row]) -> tuple[Column, ...]:
    """The table's columns: `STATE_COLUMNS` where some row keeps state other than float32."""
    return STATE_COLUMNS if _common.shows_state(rows) else COLUMNS


def title(row: Row) -> str:
    """The heading over a shape's table."""
    return str(row["shape"])


def markdown(rows: Iterable[Row]) -> str:
    """The rows as a Markdown table per shape."""
    rows = list(rows)
    return _common.markdown(rows, columns(rows))


def _build(name: str, shape: Shape, options: Mapping[str, Any], state: str = "float32") -> Step:
    if name == "optax jit":
        return _common.optax_steps(shape, options)[0]
    if name == "numpy fused":
        return _NumpyFused(shape, options)
    import torch

    params = _common.parameter_sets(shape, torch.float32, 1, device="cpu")[0]
    if name == "torch.compile":
        return _torch_compile(params, options)
    return _common.torch_step(name, params, options, state=_common.state_options(state, "float32"))


def _inplace_add(shape: Shape) -> Step:
    import torch

    a = [torch.randn(s) for s in shape]
    b = [torch.randn(s) for s in shape]

    def step() -> None:
        for x, y in zip(a, b):
            x.add_(y)

    return step


def _torch_compile(params: list[Any], options: Mapping[str, Any]) -> Step:
    import torch

    opt = torch.optim.RMSprop(params, foreach=False, **options)
    opt.step()  # state exists before compiling, as torch's own recipe does
    compiled = torch.compile(opt.step)

    def step() -> None:
        compiled()

    return step


class _NumpyFused:
    """A step of `rmsprop.numpy.RMSprop` with its fused kernel, which says what its state holds."""

    def __init__(self, shape: Shape, options: Mapping[str, Any]) -> None:
        import numpy as np

        import rmsprop.numpy as rnp

        rng = np.random.default_rng(0)
        params = [rng.standard_normal(s, dtype=np.float32) for s in shape]
        self.grads = [1e-2 * rng.standard_normal(s, dtype=np.float32) for s in shape]
        self.opt = rnp.RMSprop(params, fused=True, **{"decay": 0.99, **options})

    def __call__(self) -> None:
        self.opt.step(self.grads)

    def state_nbytes(self) -> int:
        """Bytes of its state's arrays (the step counts are ints, not arrays)."""
        import numpy as np

        leaves: list[Any] = [value for leaf in self.opt.state for value in leaf]
        return sum(int(value.nbytes) for value in leaves if isinstance(value, np.ndarray))
