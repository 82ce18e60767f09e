"""Benchmark the RMSprop step on one CUDA GPU: the fused Triton kernel beside torch and optax.

Usage:
    python benchmarks/gpu_step.py                      # everything (torch.compile takes minutes)
    python benchmarks/gpu_step.py --shapes gpt2-124m --dtypes float32 --no-compile
    python benchmarks/gpu_step.py --sweep              # the fused kernel's launch settings
    python benchmarks/gpu_step.py --json out.json

For each model shape (GPT-2 124M: 148 tensors; a 1.3B GPT: 292 tensors; a
small DQN-sized network: 1M parameters in 20 tensors), variant (plain,
momentum, centered+momentum) and parameter dtype (float32, bfloat16; the state
takes the parameters' dtype, as in torch), it times one optimizer step of:
this project's fused kernel and foreach path, ``torch.optim.RMSprop``'s foreach
and for-loop paths, a ``torch.compile``d ``torch.optim.RMSprop`` step, and
``optax.rmsprop`` under ``jax.jit`` when jax and optax are installed.

Each row gives the median step time from CUDA events (optax: host time to
``block_until_ready``, as JAX owns its streams), the wall time per step of
back-to-back steps (what a host-bound step costs a training loop), the
bandwidth the minimal byte count implies (20 bytes per float32 parameter, 28
with momentum, 36 centered with momentum; 2 bytes per access in bfloat16) and
its ratio to a device-to-device copy measured in the same run. Steps rotate
over several independent parameter sets until they overflow the L2 cache
several times, so the cache can't flatter small models. One process, one card:
quote ratios from one run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

# JAX must not take most of the GPU at import: torch shares it.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import torch

Step = Callable[[], Any]


def gpt_shapes(layers: int, width: int, vocab: int = 50257, context: int = 1024) -> list[tuple]:
    """A GPT-2-style model's parameter shapes (tied embeddings, Conv1D layout)."""
    shapes: list[tuple] = [(vocab, width), (context, width)]
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


SHAPES: dict[str, list[tuple]] = {
    "gpt2-124m": gpt_shapes(12, 768),  # 148 tensors, 124.4M parameters
    "gpt-1.3b": gpt_shapes(24, 2048, context=2048),  # 292 tensors, 1.31B parameters
    "dqn-1m": [(320, 320), (320,)] * 10,  # 20 tensors, 1.03M parameters
}
VARIANTS: dict[str, tuple[dict[str, Any], int]] = {  # options, accesses per parameter
    "plain": ({}, 5),
    "momentum": ({"momentum": 0.9}, 7),
    "centered+momentum": ({"centered": True, "momentum": 0.9}, 9),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
IMPLEMENTATIONS = [
    "rmsprop fused",
    "rmsprop foreach",
    "torch foreach",
    "torch for-loop",
    "torch.compile",
    "optax jit",
]


def parameter_sets(shape: list[tuple], dtype: torch.dtype, count: int) -> list[list[Any]]:
    sets = []
    for i in range(count):
        generator = torch.Generator(device="cuda").manual_seed(i)
        params = []
        for s in shape:
            p = torch.nn.Parameter(torch.randn(s, generator=generator, device="cuda").to(dtype))
            p.grad = (torch.randn(s, generator=generator, device="cuda") * 1e-2).to(dtype)
            params.append(p)
        sets.append(params)
    return sets


def make_torch_steps(name: str, sets: list[list[Any]], options: dict[str, Any]) -> list[Step]:
    from rmsprop.torch import RMSprop

    steps = []
    for params in sets:
        if name == "rmsprop fused":
            steps.append(RMSprop(params, fused=True, **options).step)
        elif name == "rmsprop foreach":
            steps.append(RMSprop(params, fused=False, foreach=True, **options).step)
        elif name == "torch foreach":
            steps.append(torch.optim.RMSprop(params, foreach=True, **options).step)
        elif name == "torch for-loop":
            steps.append(torch.optim.RMSprop(params, foreach=False, **options).step)
        elif name == "torch.compile":
            # PyTorch's recipe: a tensor lr (no recompiles), the step compiled.
            opt = torch.optim.RMSprop(params, lr=torch.tensor(0.01), foreach=False, **options)
            steps.append(torch.compile(opt.step))
        else:
            raise ValueError(name)
    return steps


def make_optax_steps(shape: list[tuple], dtype_name: str, options: dict[str, Any], count: int):
    import jax
    import jax.numpy as jnp
    import optax

    tx = optax.rmsprop(
        1e-2, decay=0.99, eps=1e-8, eps_in_sqrt=False,
        centered=options.get("centered", False), momentum=options.get("momentum"),
    )  # fmt: skip

    def update(params: Any, state: Any, grads: Any) -> Any:
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    update = jax.jit(update, donate_argnums=(0, 1))  # in place, as the others are
    dtype = getattr(jnp, dtype_name)
    steps = []
    for i in range(count):
        keys = jax.random.split(jax.random.PRNGKey(i), 2 * len(shape))
        params = [jax.random.normal(k, s, dtype) for k, s in zip(keys[::2], shape)]
        grads = [1e-2 * jax.random.normal(k, s, dtype) for k, s in zip(keys[1::2], shape)]
        box = [params, tx.init(params)]

        def step(box: list[Any] = box, grads: Any = grads) -> None:
            box[0], box[1] = update(box[0], box[1], grads)
            jax.block_until_ready(box[0])

        steps.append(step)
    return steps


def time_torch(steps: list[Step], repeats: int, warmup: int) -> dict[str, float]:
    start = time.perf_counter()
    steps[0]()  # the first step builds the state (and compiles what it compiles)
    torch.cuda.synchronize()
    first = time.perf_counter() - start
    for i in range(warmup):
        steps[i % len(steps)]()
    torch.cuda.synchronize()
    begin = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    end = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    start = time.perf_counter()
    for i in range(repeats):
        begin[i].record()
        steps[i % len(steps)]()
        end[i].record()
    torch.cuda.synchronize()
    wall = (time.perf_counter() - start) / repeats * 1e3
    gpu = statistics.median(b.elapsed_time(e) for b, e in zip(begin, end))
    return {"median_ms": gpu, "wall_ms": wall, "first_s": first}


def time_host(steps: list[Step], repeats: int, warmup: int) -> dict[str, float]:
    start = time.perf_counter()
    steps[0]()
    first = time.perf_counter() - start
    for i in range(warmup):
        steps[i % len(steps)]()
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        steps[i % len(steps)]()
        times.append(time.perf_counter() - start)
    median = statistics.median(times) * 1e3
    return {"median_ms": median, "wall_ms": sum(times) / repeats * 1e3, "first_s": first}


def copy_bandwidth(gib: float = 2.0, repeats: int = 20) -> float:
    """Device-to-device copy, in TB/s counting bytes read plus bytes written."""
    n = int(gib * 2**30) // 4
    src, dst = torch.randn(n, device="cuda"), torch.empty(n, device="cuda")
    for _ in range(3):
        dst.copy_(src)
    begin = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    end = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    for b, e in zip(begin, end):
        b.record()
        dst.copy_(src)
        e.record()
    torch.cuda.synchronize()
    ms = statistics.median(b.elapsed_time(e) for b, e in zip(begin, end))
    del src, dst
    torch.cuda.empty_cache()
    return 2 * n * 4 / ms / 1e9


def rotation(set_bytes: int, spare: float) -> int:
    """Parameter sets to rotate over: enough to overflow L2 four times, as memory allows."""
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    wanted = max(1, math.ceil(4 * l2 / set_bytes))
    fits = max(1, int(spare // (set_bytes * 1.5)))  # foreach paths allocate temporaries too
    return min(wanted, fits, 16)


def available(name: str) -> str:
    """'' if the implementation can run here, else why not."""
    if name == "optax jit":
        try:
            import jax  # noqa: F401
            import optax  # noqa: F401
        except ImportError as error:
            return f"not installed ({error})"
    if name == "rmsprop fused":
        from rmsprop.torch import _triton

        return _triton.unsupported_reason("cuda")
    return ""


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    copy_tb_s = copy_bandwidth()
    print(f"device-to-device copy: {copy_tb_s:.2f} TB/s (read + write)", flush=True)
    rows = []
    for shape_name in args.shapes:
        shape = SHAPES[shape_name]
        params = sum(math.prod(s) for s in shape)
        for dtype_name in args.dtypes:
            dtype = DTYPES[dtype_name]
            element = torch.finfo(dtype).bits // 8
            for variant in args.variants:
                options, accesses = VARIANTS[variant]
                minimal_bytes = accesses * element * params
                measured: list[dict[str, Any]] = []
                for name in args.implementations:
                    reason = available(name)
                    if reason:
                        print(f"  skipping {name}: {reason}", file=sys.stderr)
                        continue
                    if name == "torch.compile" and (args.no_compile or params > args.compile_max):
                        continue
                    torch.cuda.empty_cache()
                    free, _ = torch.cuda.mem_get_info()
                    tensors = (accesses + 1) // 2  # θ, g, v (, b) (, m): all read, g not written
                    count = rotation(tensors * element * params, free)
                    what = f"{shape_name} · {dtype_name} · {variant} · {name} ({count} sets)"
                    print(f"  {what}", file=sys.stderr, flush=True)
                    if name == "optax jit":
                        steps = make_optax_steps(shape, dtype_name, options, count)
                        timing = time_host(steps, args.steps, args.warmup)
                    else:
                        sets = parameter_sets(shape, dtype, count)
                        steps = make_torch_steps(name, sets, options)
                        timing = time_torch(steps, args.steps, args.warmup)
                        del sets
                    del steps
                    tb_s = minimal_bytes / timing["median_ms"] / 1e9
                    measured.append({
                        "shape": shape_name, "dtype": dtype_name, "variant": variant,
                        "implementation": name, "params": params, "tensors": len(shape),
                        "minimal_bytes": minimal_bytes, "rotation": count, **timing,
                        "tb_per_s": tb_s, "of_copy": tb_s / copy_tb_s,
                    })  # fmt: skip
                by_name = {row["implementation"]: row["median_ms"] for row in measured}
                for row in measured:
                    for key, ref in (("vs_torch_foreach", "torch foreach"),
                                     ("vs_torch_compile", "torch.compile"),
                                     ("vs_optax", "optax jit")):  # fmt: skip
                        row[key] = by_name[ref] / row["median_ms"] if ref in by_name else None
                rows += measured
                if args.print_each:
                    print(markdown(measured), flush=True)
    print(f"device-to-device copy at the end: {copy_bandwidth():.2f} TB/s", flush=True)
    return rows


def sweep(args: argparse.Namespace) -> None:
    """Times the fused kernel under several fixed launch settings (pick one, never autotune)."""
    from rmsprop.torch import RMSprop, _triton

    copy_tb_s = copy_bandwidth()
    shape = SHAPES[args.shapes[0]]
    params = sum(math.prod(s) for s in shape)
    print(f"{args.shapes[0]}, copy {copy_tb_s:.2f} TB/s")
    print("| dtype | variant | BLOCK | warps | median ms | TB/s | of copy |")
    print("|---|---|---|---|---|---|---|")
    for dtype_name in args.dtypes:
        dtype = DTYPES[dtype_name]
        for variant in args.variants:
            options, accesses = VARIANTS[variant]
            sets = parameter_sets(shape, dtype, 1)
            for block, warps in [(1024, 4), (2048, 4), (4096, 4), (4096, 8), (8192, 8), (8192, 16)]:
                _triton.BLOCK, _triton.NUM_WARPS = block, warps
                _triton._plans.clear()
                step = RMSprop(sets[0], fused=True, **options).step
                timing = time_torch([step], args.steps, args.warmup)
                tb_s = (
                    accesses * (torch.finfo(dtype).bits // 8) * params / timing["median_ms"] / 1e9
                )
                cells = [dtype_name, variant, block, warps, f"{timing['median_ms']:.3f}",
                         f"{tb_s:.2f}", f"{tb_s / copy_tb_s:.0%}"]  # fmt: skip
                print("| " + " | ".join(map(str, cells)) + " |", flush=True)
            del sets
            torch.cuda.empty_cache()


def markdown(rows: list[dict[str, Any]]) -> str:
    def ratio(x: float | None) -> str:
        return "—" if x is None else f"{x:.2f}×"

    out = []
    for shape in dict.fromkeys(r["shape"] for r in rows):
        group = [r for r in rows if r["shape"] == shape]
        out += [f"\n**{shape}** ({group[0]['params'] / 1e6:.1f}M parameters, "
                f"{group[0]['tensors']} tensors)\n",
                "| dtype | variant | implementation | median ms | wall ms/step | TB/s at minimal "
                "bytes | of copy | × torch foreach | × torch.compile | × optax | first step s |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in group:
            out.append(
                f"| {r['dtype']} | {r['variant']} | {r['implementation']} | "
                f"{r['median_ms']:.3f} | {r['wall_ms']:.3f} | {r['tb_per_s']:.2f} | "
                f"{r['of_copy']:.0%} | {ratio(r['vs_torch_foreach'])} | "
                f"{ratio(r['vs_torch_compile'])} | {ratio(r['vs_optax'])} | {r['first_s']:.2f} |"
            )
    return "\n".join(out)


def versions() -> str:
    import triton

    import rmsprop

    parts = [f"Python {platform.python_version()}", f"torch {torch.__version__}",
             f"CUDA {torch.version.cuda}", f"triton {triton.__version__}",
             f"rmsprop {getattr(rmsprop, '__version__', '?')}"]  # fmt: skip
    try:
        import jax
        import optax

        parts += [f"jax {jax.__version__}", f"optax {optax.__version__}"]
    except ImportError:
        pass
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument(
        "--implementations", nargs="+", choices=IMPLEMENTATIONS, default=IMPLEMENTATIONS
    )
    parser.add_argument("--steps", type=int, default=50, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument(
        "--compile-max", type=float, default=2e8,
        help="compile torch's step only for models up to this many parameters",
    )  # fmt: skip
    parser.add_argument("--sweep", action="store_true", help="time fused launch settings only")
    parser.add_argument("--print-each", action="store_true", help="print each table as it ends")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit(
            "benchmarks/gpu_step.py times the CUDA step and needs a CUDA GPU, but "
            "torch.cuda.is_available() is False (benchmarks/cpu_step.py times the CPU)"
        )
    torch._dynamo.config.cache_size_limit = 64  # one compiled step per rotated optimizer
    card = torch.cuda.get_device_name(0)
    today = datetime.date.today().isoformat()
    print(f"{card}, {today}; {versions()}", flush=True)
    if args.sweep:
        sweep(args)
        return
    rows = run(args)
    print(markdown(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"card": card, "date": today, "versions": versions(), "rows": rows}, f,
                      indent=1)  # fmt: skip


if __name__ == "__main__":
    main()
