"""The CPU step benchmark: ours beside torch, torch.compile, optax and NumPy, in one process.

An RMSprop step is memory-bound: the fewest bytes it can move per fp32
parameter are 20 (read θ, g, v; write θ, v), 28 with momentum, 36 centered
with momentum. Each result reports the median step time, the bandwidth that
minimal byte count implies, and how that compares with an in-place add over
the same tensors measured in the same run (the machine's practical ceiling).

This module is what ``benchmarks/cpu_step.py`` and ``rmsprop bench`` run; it
is a script's engine, never a timed test. Example (tiny, so it is quick):

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

import statistics
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from rmsprop.benchmark import _common
from rmsprop.benchmark._common import VARIANTS, Column, Row, Shape, Step

__all__ = [
    "COLUMNS",
    "DQN_NATURE",
    "IMPLEMENTATIONS",
    "REFERENCES",
    "SHAPES",
    "VARIANTS",
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
) -> list[Row]:
    """Times every implementation on the CPU; returns one row per measurement.

    For each shape and variant, every implementation (and an in-place add
    over the same tensors) is built once, then timed in ``rounds``
    interleaved rounds of ``steps`` steps: a burst of load from elsewhere on
    a shared machine then spoils one round of everything rather than all of
    one implementation's, and the median over rounds discards it.

    Implementations that can't run here (optax or Numba missing) are left
    out. Each row: shape, variant, implementation, params, bytes_per_param,
    median_ms, compile_s (the first step, for compiled implementations),
    gb_per_s at the minimal byte count, vs_add (that bandwidth over the
    in-place add's), and the speed-ups over torch.optim.RMSprop's foreach and
    for-loop paths (`REFERENCES`).
    """
    shapes = SHAPES if shapes is None else shapes
    variants = list(VARIANTS if variants is None else variants)
    wanted = IMPLEMENTATIONS if implementations is None else implementations
    implementations, _ = _common.available(wanted, "cpu")
    rows = []
    for shape_name, shape in shapes.items():
        params = _common.parameter_count(shape)
        for variant in variants:
            options = VARIANTS[variant].options
            bytes_per_param = VARIANTS[variant].bytes_per_param()
            built: dict[str, tuple[Step, float]] = {"in-place add": (_inplace_add(shape), 0.0)}
            for name in implementations:
                if progress:
                    progress(f"{shape_name} · {variant} · {name}")
                step = _build(name, shape, options)
                built[name] = (step, _common.first_call_s(step))
            times: dict[str, list[float]] = {name: [] for name in built}
            for _ in range(rounds):
                for name, (step, _) in built.items():
                    times[name].append(_common.time_host([step], steps, warmup=3)["median_ms"])
            first_step = {name: seconds for name, (_, seconds) in built.items()}
            del built  # several GB at the large shape
            median = {name: statistics.median(t) for name, t in times.items()}
            add_gb_per_s = 12 * params / median.pop("in-place add") / 1e6  # read a, b; write a
            group = []
            for name in implementations:
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
                    }
                )
            _common.add_speedups(group, REFERENCES)
            rows += group
    return rows


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


def title(row: Row) -> str:
    """The heading over a shape's table."""
    return str(row["shape"])


def markdown(rows: Iterable[Row]) -> str:
    """The rows as a Markdown table per shape."""
    return _common.markdown(rows, COLUMNS)


def _build(name: str, shape: Shape, options: Mapping[str, Any]) -> Step:
    if name == "optax jit":
        return _common.optax_steps(shape, options)[0]
    if name == "numpy fused":
        return _numpy_fused(shape, options)
    import torch

    params = _common.parameter_sets(shape, torch.float32, 1, device="cpu")[0]
    if name == "torch.compile":
        return _torch_compile(params, options)
    return _common.torch_step(name, params, options)


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


def _numpy_fused(shape: Shape, options: Mapping[str, Any]) -> Step:
    import numpy as np

    import rmsprop.numpy as rnp

    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s, dtype=np.float32) for s in shape]
    grads = [1e-2 * rng.standard_normal(s, dtype=np.float32) for s in shape]
    opt = rnp.RMSprop(params, fused=True, **{"decay": 0.99, **options})

    def step() -> None:
        opt.step(grads)

    return step
