"""The fused CPU step: one pass over memory per tensor, every `Config` variant, all cores.

An RMSprop step is pure memory traffic, so the kernel reads θ, g, v (and m, b
when the rule needs them) once and writes θ, v (m, b) once, with no
parameter-sized temporaries. It is one Numba loop, compiled (and cached on
disk) for each combination of dtype and optional buffers; the variants that
don't change which arrays are touched (ε placement, weight decay form, lr in
or out of the momentum buffer, Nesterov, bias correction, maximize) are
folded into per-tensor coefficients, so one loop body serves them all at no
extra cost: multiplying by 1 or adding 0 is exact.

Work is split into chunks and spread over a small thread pool; the kernel
releases the GIL. 16-bit tensors are converted chunk by chunk into
thread-local float32 buffers that stay in cache, so the math is float32 and
memory is still crossed once.

Both backends launch it: `rmsprop.numpy` on arrays, `rmsprop.torch` on the
arrays under CPU tensors.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np

numba: Any
try:
    import numba
except ImportError as error:  # the `fast` extra is not installed
    numba = None
    WHY_UNAVAILABLE = f"numba is not installed ({error}); install rmsprop[fast]"
else:
    WHY_UNAVAILABLE = ""

AVAILABLE = numba is not None

# Chunks of this many elements are the unit of work: large enough that the
# per-call cost (~2 µs) vanishes, small enough to balance two or more threads
# and, for 16-bit tensors, to keep the float32 buffers in cache. 32768 is also
# PyTorch's intra-op grain size, so its dtype conversions stay single-threaded.
CHUNK = 1 << 15
# Below this many elements in a step, handing work to threads costs more than it saves.
SERIAL_BELOW = 1 << 17
KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class Coefficients(NamedTuple):
    """The rule of one tensor's step, folded into the kernel's scalars.

    Per element, with every unused term an exact 1 or 0:
    ``g ← g_sign·g + l2·θ; v ← ρ·v + (1-ρ)·g²; s ← v·bias`` (centered:
    ``m ← ρ·m + (1-ρ)·g; s ← max(s - (m·bias)², 0)``);
    ``u ← g / (sqrt(s + eps_in) + eps_out)``; with momentum
    ``b ← μ·b + buf_scale·u; u ← nest_u·u + nest_b·b``; then
    ``θ ← θ·decay_scale - lr_out·u``.
    """

    g_sign: float
    l2: float
    decay_scale: float
    rho: float
    one_minus_rho: float
    bias: float
    eps_in: float
    eps_out: float
    mu: float
    buf_scale: float
    nest_u: float
    nest_b: float
    lr_out: float


def coefficients(
    *,
    lr: float,
    decay: float,
    eps: float,
    eps_in_sqrt: bool,
    momentum: float,
    nesterov: bool,
    lr_in_momentum: bool,
    bias_correction: bool,
    weight_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
    step: float,
    **_: Any,
) -> Coefficients:
    """Folds a `Config`'s fields (and the tensor's step count, from 1) into `Coefficients`."""
    with_momentum = momentum > 0
    # lr multiplies u inside the buffer (TF) or the buffer's output (PyTorch).
    buf_scale = lr if (with_momentum and lr_in_momentum) else 1.0
    return Coefficients(
        g_sign=-1.0 if maximize else 1.0,
        l2=weight_decay if not decoupled_weight_decay else 0.0,
        decay_scale=1 - lr * weight_decay if decoupled_weight_decay else 1.0,
        rho=decay,
        one_minus_rho=1 - decay,
        bias=1 / (1 - decay**step) if bias_correction else 1.0,
        eps_in=eps if eps_in_sqrt else 0.0,
        eps_out=0.0 if eps_in_sqrt else eps,
        mu=momentum,
        buf_scale=buf_scale,
        nest_u=buf_scale if nesterov else 0.0,
        nest_b=momentum if nesterov else 1.0,
        lr_out=1.0 if (with_momentum and lr_in_momentum) else lr,
    )


def _kernel_source(p: Any, g: Any, v: Any, m: Any, b: Any, c: Any) -> None:
    # Numba compiles one version per dtype and per None-ness of m and b; the
    # `is None` branches are pruned at compile time, and the loop vectorizes.
    g_sign, l2, decay_scale, rho, one_minus_rho, bias = c[0], c[1], c[2], c[3], c[4], c[5]
    eps_in, eps_out, mu, buf_scale, nest_u, nest_b, lr_out = (
        c[6],
        c[7],
        c[8],
        c[9],
        c[10],
        c[11],
        c[12],
    )
    zero = rho - rho
    for i in range(p.size):
        gi = g_sign * g[i] + l2 * p[i]
        vi = rho * v[i] + one_minus_rho * (gi * gi)
        v[i] = vi
        s = vi * bias
        if m is not None:
            mi = rho * m[i] + one_minus_rho * gi
            m[i] = mi
            mi = mi * bias
            s = max(s - mi * mi, zero)
        u = gi / (np.sqrt(s + eps_in) + eps_out)
        if b is not None:
            bi = mu * b[i] + buf_scale * u
            b[i] = bi
            u = nest_u * u + nest_b * bi
        p[i] = p[i] * decay_scale - lr_out * u


_kernel: Any = (
    numba.njit(nogil=True, cache=True, error_model="numpy", boundscheck=False)(_kernel_source)
    if AVAILABLE
    else None
)


def kernel(
    p: np.ndarray,
    g: np.ndarray,
    v: np.ndarray,
    m: np.ndarray | None,
    b: np.ndarray | None,
    c: Coefficients,
) -> None:
    """Runs the step in place on 1-D contiguous arrays of one float dtype (32 or 64 bit)."""
    _kernel(p, g, v, m, b, tuple(p.dtype.type(x) for x in c))


# ---- chunking and threads ------------------------------------------------------------

Job = tuple[int, Callable[[], None]]  # (element count, the work)


def array_jobs(arrays: Sequence[np.ndarray | None], c: Coefficients) -> list[Job]:
    """Chunked jobs for 1-D contiguous float32 or float64 arrays (p, g, v, m, b), in place.

    m and b are None where the rule has no centered average or momentum.
    """
    p = arrays[0]
    assert p is not None
    scalars = tuple(p.dtype.type(x) for x in c)
    return [
        (stop - start, _slice_job(arrays, slice(start, stop), scalars))
        for start, stop in _chunks(p.size)
    ]


Copy = Callable[[Any, Any], None]  # copy(destination, source), converting the dtype


def converted_jobs(arrays: Sequence[Any], c: Coefficients, copy: Copy) -> list[Job]:
    """Chunked jobs for 1-D contiguous 16-bit arrays (p, g, v, m, b): float32 math.

    Each chunk is copied into float32 buffers with ``copy``, stepped, and
    copied back (rounded to nearest even); the gradient is only read.
    """
    size = len(arrays[0])
    return [
        (stop - start, _converted_job(arrays, slice(start, stop), c, copy))
        for start, stop in _chunks(size)
    ]


def _chunks(n: int) -> list[tuple[int, int]]:
    return [(start, min(start + CHUNK, n)) for start in range(0, n, CHUNK)]


def _slice_job(
    arrays: Sequence[np.ndarray | None], s: slice, scalars: tuple[Any, ...]
) -> Callable[[], None]:
    def job() -> None:
        _kernel(*(None if a is None else a[s] for a in arrays), scalars)

    return job


_local = threading.local()


def _buffers(count: int) -> list[np.ndarray]:
    """This thread's float32 scratch buffers, one chunk each (reused: they stay in cache)."""
    buffers = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = [np.empty(CHUNK, np.float32) for _ in range(5)]
    return buffers[:count]


def _converted_job(
    arrays: Sequence[Any], s: slice, c: Coefficients, copy: Copy
) -> Callable[[], None]:
    scalars = tuple(np.float32(x) for x in c)

    def job() -> None:
        n = s.stop - s.start
        present = [a[s] for a in arrays if a is not None]
        work = [buf[:n] for buf in _buffers(len(present))]
        for buf, a in zip(work, present):
            copy(buf, a)
        it = iter(work)
        _kernel(*(None if a is None else next(it) for a in arrays), scalars)
        # g (index 1) is read-only; every other array is written back, rounded.
        for index, (buf, a) in enumerate(zip(work, present)):
            if index != 1:
                copy(a, buf)

    return job


def num_threads() -> int:
    """Threads the fused step uses: RMSPROP_NUM_THREADS, else the CPUs this process may use."""
    configured = os.environ.get("RMSPROP_NUM_THREADS")
    if configured:
        return max(1, int(configured))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def run(jobs: Sequence[Job]) -> None:
    """Runs the jobs, spread over the threads in contiguous, equally sized groups."""
    global _pool, _pool_size
    total = sum(count for count, _ in jobs)
    threads = min(num_threads(), max(1, len(jobs)))
    if threads == 1 or total < SERIAL_BELOW:
        for _, job in jobs:
            job()
        return
    if _pool is None or _pool_size != threads:
        _pool = ThreadPoolExecutor(threads - 1, thread_name_prefix="rmsprop")
        _pool_size = threads
    groups = _balanced_groups(jobs, total, threads)
    futures = [_pool.submit(_run_group, group) for group in groups[1:]]
    _run_group(groups[0])  # the calling thread takes a share too
    for future in futures:
        future.result()


def _run_group(group: Sequence[Callable[[], None]]) -> None:
    for job in group:
        job()


def _balanced_groups(
    jobs: Sequence[Job], total: int, groups: int
) -> list[list[Callable[[], None]]]:
    out: list[list[Callable[[], None]]] = [[] for _ in range(groups)]
    done = 0
    for count, job in jobs:
        out[min(groups - 1, done * groups // total)].append(job)
        done += count
    return out
