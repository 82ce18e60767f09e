"""Timing the optimizer step, ours beside everyone else's, in one process.

An RMSprop step is memory-bound: the fewest bytes it can move per fp32
parameter are 20 (read θ, g, v; write θ, v), 28 with momentum, 36 centered
with momentum. Each result reports the median step time, the bandwidth that
minimal byte count implies, and how that compares with an in-place add over
the same tensors measured in the same run (the machine's practical ceiling).

This module is what ``benchmarks/cpu_step.py`` and ``rmsprop bench`` run; it
is a script's engine, never a timed test. Example (tiny, so it is quick):

    >>> from rmsprop import benchmark
    >>> rows = benchmark.run_cpu(
    ...     shapes={"tiny": [(1000,)] * 2}, variants=["plain"],
    ...     implementations=["rmsprop fused", "torch for-loop"], steps=3,
    ... )
    >>> [row["implementation"] for row in rows]
    ['rmsprop fused', 'torch for-loop']
    >>> rows[0]["vs_torch_forloop"] > 0 and rows[0]["bytes_per_param"] == 20
    True
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["DQN_NATURE", "IMPLEMENTATIONS", "SHAPES", "VARIANTS", "run_cpu"]

# DeepMind's Nature DQN network (84x84x4 input, 18 actions): 1.69M parameters.
DQN_NATURE = [
    (32, 4, 8, 8), (32,), (64, 32, 4, 4), (64,), (64, 64, 3, 3), (64,),
    (512, 3136), (512,), (18, 512), (18,),
]  # fmt: skip

SHAPES: dict[str, list[tuple[int, ...]]] = {
    "25M params in 100 tensors": [(250_000,)] * 100,
    "DQN (1.7M params, 10 tensors)": DQN_NATURE,
}

# Variant -> (torch.optim.RMSprop options, minimal bytes per fp32 parameter).
VARIANTS: dict[str, tuple[dict[str, Any], int]] = {
    "plain": ({}, 20),
    "momentum": ({"momentum": 0.9}, 28),
    "centered+momentum": ({"centered": True, "momentum": 0.9}, 36),
}

IMPLEMENTATIONS = [
    "rmsprop fused",
    "rmsprop foreach",
    "torch foreach",
    "torch for-loop",
    "torch.compile",
    "optax jit",
    "numpy fused",
]

Step = Callable[[], Any]


def run_cpu(
    shapes: dict[str, list[tuple[int, ...]]] | None = None,
    variants: Iterable[str] | None = None,
    implementations: Iterable[str] | None = None,
    steps: int = 30,
    progress: Callable[[str], None] | None = None,
    rounds: int = 3,
) -> list[dict[str, Any]]:
    """Times every implementation on the CPU; returns one row per measurement.

    For each shape and variant, every implementation (and an in-place add
    over the same tensors) is built once, then timed in ``rounds``
    interleaved rounds of ``steps`` steps: a burst of load from elsewhere on
    a shared machine then spoils one round of everything rather than all of
    one implementation's, and the median over rounds discards it.

    Implementations whose library is missing (optax) are left out. Each row:
    shape, variant, implementation, params, median_ms, compile_s (the first
    step, for compiled implementations), gb_per_s at the minimal byte count,
    vs_add (that bandwidth over the in-place add's), and the speed-ups over
    torch.optim.RMSprop's foreach and for-loop paths.
    """
    import torch

    shapes = SHAPES if shapes is None else shapes
    variants = list(VARIANTS if variants is None else variants)
    implementations = [i for i in (implementations or IMPLEMENTATIONS) if _available(i)]
    rows = []
    for shape_name, shape in shapes.items():
        params = sum(math.prod(s) for s in shape)
        for variant in variants:
            options, bytes_per_param = VARIANTS[variant]
            built: dict[str, tuple[Step, float]] = {"in-place add": (_inplace_add(shape), 0.0)}
            for name in implementations:
                if progress:
                    progress(f"{shape_name} · {variant} · {name}")
                torch.manual_seed(0)
                built[name] = _FACTORIES[name](shape, options)
            times: dict[str, list[float]] = {name: [] for name in built}
            for _ in range(rounds):
                for name, (step, _) in built.items():
                    times[name].append(_median_ms(step, steps))
            first_step = {name: seconds for name, (_, seconds) in built.items()}
            del built  # several GB at the large shape
            median = {name: statistics.median(t) for name, t in times.items()}
            add_gb_per_s = 12 * params / median.pop("in-place add") / 1e6  # read a, b; write a
            for name in implementations:
                gb_per_s = bytes_per_param * params / median[name] / 1e6
                rows.append(
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
                        "vs_torch_foreach": _ratio(median, "torch foreach", name),
                        "vs_torch_forloop": _ratio(median, "torch for-loop", name),
                    }
                )
    return rows


def _ratio(median: dict[str, float], reference: str, name: str) -> float | None:
    return median[reference] / median[name] if reference in median else None


def _median_ms(step: Step, steps: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _available(name: str) -> bool:
    if name == "optax jit":
        try:
            import optax  # noqa: F401
        except ImportError:
            return False
    if "fused" in name:
        from rmsprop import _fused_cpu

        return _fused_cpu.AVAILABLE
    return True


def _torch_params(shape: list[tuple[int, ...]]) -> list[Any]:
    import torch

    params = [torch.nn.Parameter(torch.randn(s)) for s in shape]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-2
    return params


def _inplace_add(shape: list[tuple[int, ...]]) -> Step:
    import torch

    a = [torch.randn(s) for s in shape]
    b = [torch.randn(s) for s in shape]

    def step() -> None:
        for x, y in zip(a, b):
            x.add_(y)

    return step


def _ours(fused: bool) -> Callable[[list[tuple[int, ...]], dict[str, Any]], tuple[Step, float]]:
    def make(shape: list[tuple[int, ...]], options: dict[str, Any]) -> tuple[Step, float]:
        from rmsprop.torch import RMSprop

        opt = RMSprop(_torch_params(shape), fused=fused, foreach=None if fused else True, **options)
        start = time.perf_counter()
        opt.step()  # the first step builds the state (and, fused, loads the kernel)
        return opt.step, time.perf_counter() - start

    return make


def _torch(foreach: bool) -> Callable[[list[tuple[int, ...]], dict[str, Any]], tuple[Step, float]]:
    def make(shape: list[tuple[int, ...]], options: dict[str, Any]) -> tuple[Step, float]:
        import torch

        opt = torch.optim.RMSprop(_torch_params(shape), foreach=foreach, **options)
        start = time.perf_counter()
        opt.step()
        return opt.step, time.perf_counter() - start

    return make


def _torch_compile(shape: list[tuple[int, ...]], options: dict[str, Any]) -> tuple[Step, float]:
    import torch

    opt = torch.optim.RMSprop(_torch_params(shape), foreach=False, **options)
    opt.step()  # state exists before compiling, as torch's own recipe does
    compiled = torch.compile(opt.step)

    def step() -> None:
        compiled()

    start = time.perf_counter()
    step()
    return step, time.perf_counter() - start


def _optax(shape: list[tuple[int, ...]], options: dict[str, Any]) -> tuple[Step, float]:
    import jax
    import optax

    momentum = options.get("momentum")
    tx = optax.rmsprop(
        1e-2, decay=0.99, eps=1e-8, eps_in_sqrt=False,
        centered=options.get("centered", False), momentum=momentum,
    )  # fmt: skip
    keys = jax.random.split(jax.random.PRNGKey(0), len(shape))
    params = [jax.random.normal(k, s) for k, s in zip(keys, shape)]
    grads = [1e-2 * jax.random.normal(k, s) for k, s in zip(keys[::-1], shape)]
    state = tx.init(params)

    def update(params: Any, state: Any, grads: Any) -> Any:
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    update = jax.jit(update, donate_argnums=(0, 1))  # in place, as the others are
    box = [params, state]

    def step() -> None:
        box[0], box[1] = update(box[0], box[1], grads)
        jax.block_until_ready(box[0])  # type: ignore[no-untyped-call]

    start = time.perf_counter()
    step()
    return step, time.perf_counter() - start


def _numpy_fused(shape: list[tuple[int, ...]], options: dict[str, Any]) -> tuple[Step, float]:
    import numpy as np

    import rmsprop.numpy as rnp

    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s, dtype=np.float32) for s in shape]
    grads = [1e-2 * rng.standard_normal(s, dtype=np.float32) for s in shape]
    opt = rnp.RMSprop(params, fused=True, **{"decay": 0.99, **options})

    def step() -> None:
        opt.step(grads)

    start = time.perf_counter()
    step()
    return step, time.perf_counter() - start


_FACTORIES: dict[str, Callable[[list[tuple[int, ...]], dict[str, Any]], tuple[Step, float]]] = {
    "rmsprop fused": _ours(fused=True),
    "rmsprop foreach": _ours(fused=False),
    "torch foreach": _torch(foreach=True),
    "torch for-loop": _torch(foreach=False),
    "torch.compile": _torch_compile,
    "optax jit": _optax,
    "numpy fused": _numpy_fused,
}
