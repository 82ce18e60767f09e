"""The fused RMSprop step in Triton: one kernel launch per step for a whole group of tensors.

An RMSprop step is pure memory traffic. The kernel reads θ, g, v (and m, b
when the rule needs them) once, does the math in float32, and writes θ, v
(m, b) once: 20 bytes per float32 parameter, 28 with momentum, 36 centered
with momentum. It computes exactly `rmsprop.Config`'s rule::

    g ← g / grad_scale                       if a GradScaler scale is given (written back)
    g ← -g                                   if maximize
    g ← g + λ·θ  (L2)   or   θ ← θ·(1 - η·λ)  (decoupled)
    v ← v·ρ + (1-ρ)·g·g
    m ← lerp(m, g, 1-ρ)                      if centered
    v̂, m̂ ← v/c, m/c  with c = 1 - ρᵗ         if bias correction
    s ← max(v̂ - m̂², 0) if centered, else v̂
    u ← g / sqrt(s + ε)   or   g / (sqrt(s) + ε)
    θ ← θ - η·u, or with momentum b ← μ·b + u (or + η·u), θ ← θ - η·b (or - b),
      Nesterov θ ← θ - η·(u + μ·b) (or - (η·u + μ·b))

in the single-tensor path's order, every operation correctly rounded (division
and square root too) and none fused into a multiply-add, so a GPU and Triton's
interpreter compute the same values. The single-tensor path agrees to float32
rounding: torch's own kernels fuse some multiply-adds.

**One launch.** Every tensor of a (device, parameter dtype, gradient dtype,
state dtype, 16-byte alignment) group is reached through a device table of addresses, one row
per kind (θ, g, v, m, b, step, element count) and one column per tensor, and
a block table mapping each program to (tensor, chunk). Both are built once and
cached, keyed by the sizes and addresses of the parameters and their state; when only
the gradients moved (``zero_grad(set_to_none=True)`` may reallocate them),
only their row is uploaded again. Offsets are 64-bit (tensors over 2³¹
elements). Each program updates ``BLOCK`` elements; full blocks run an
unmasked body (16-byte vector loads when every address is 16-byte aligned:
a parameter or state off that alignment, such as a view into a flat buffer,
is launched apart with the others like it), the last block of each tensor a
masked one.

**The variants** are compile-time switches (``tl.constexpr``), so each
compiled kernel holds only the operations its rule needs.

**Mixed precision.** Parameters and gradients may be float32, bfloat16 or
float16, the state float32, bfloat16 or float16, each chosen independently;
the math is float32. bfloat16 values are rounded to nearest even through their
bit patterns (identical on a GPU and in Triton's interpreter), or, for
parameters with ``stochastic_rounding``, up or down with probability given by
the distance, from a counter-based hash of (step, tensor, element).

**Step counters** live on the device, and the kernel advances them, so the
step needs no other launch and a captured CUDA graph advances the counts at
every replay. Where the update reads the count (bias correction, stochastic
rounding), each program reads it and the tensor's last program to finish (an
atomic ticket per tensor) writes the count plus one; otherwise the tensor's
first program alone counts, with no atomic.

**AMP.** With a ``grad_scale`` the gradients are unscaled in the kernel (and
written back unscaled, as ``GradScaler.unscale_`` would leave them); with a
``found_inf`` that is nonzero every program returns before writing anything,
step counters included. This is the protocol of torch's fused Adam.

**Capturable.** The learning rate may be a device tensor the kernel reads;
tables built while a CUDA graph is being captured are uploaded from pinned
memory inside the graph and kept for its lifetime, apart from the eager cache.

**torch.compile.** Under compilation the step is one call of the custom op
``rmsprop::fused_step`` (`rmsprop.torch._custom_op`), opaque to the compiler
(the kernel writes through its address tables, which no tracer can see).

**Testing without a GPU.** With ``TRITON_INTERPRET=1`` set before triton is
imported, the same kernel runs through Triton's interpreter on CPU tensors,
address tables included.
"""

# Triton's convention: compile-time constants (tl.constexpr) are named in capitals.
# ruff: noqa: N803, SIM300

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from rmsprop.torch._functional import Hyper, StepTensors, _unfused_step, mark_written, release
from rmsprop.torch._plans import (
    addressable,
    cached_plan,
    identity,
    listed_twice,
    real_dtype,
    same_dense_layout,
)

# The oldest triton the kernel is tested with (the `triton` extra's floor).
MINIMUM_TRITON = (3, 6)


def too_old(version: str) -> str:
    """Why a triton of this version can't run the kernel ('' when it can)."""
    if release(version) >= MINIMUM_TRITON:
        return ""
    return (
        f"triton {version} is installed, and the fused kernel needs triton >= "
        f"{'.'.join(map(str, MINIMUM_TRITON))} (an older torch may pin an older triton: "
        "upgrade both, or step with fused=False)"
    )


try:
    import triton  # type: ignore[import-untyped, import-not-found, unused-ignore]
    import triton.language as tl  # type: ignore[import-untyped, import-not-found, unused-ignore]
except ImportError as error:  # the `triton` extra is not installed
    triton = tl = None
    WHY_UNAVAILABLE = f"triton is not installed ({error}); install rmsprop[triton]"
else:
    WHY_UNAVAILABLE = too_old(triton.__version__)
    if WHY_UNAVAILABLE:
        triton = tl = None

AVAILABLE = triton is not None


def _jit(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    """``triton.jit``, typed for mypy: what it returns is a Triton kernel, not a function."""
    return cast(Callable[[Callable[..., Any]], Any], triton.jit(**options))


# Elements per program and warps per program, fixed rather than autotuned:
# autotuning runs the kernel repeatedly, which would update live state each time.
# The least total time of `rmsprop.benchmark.cuda.sweep_cuda` at 1.3B parameters on an
# H200 over float32 and bfloat16, plain and centered+momentum (BENCHMARKS.md).
BLOCK = 1024
NUM_WARPS = 4

# Rows of the address table.
_PARAM, _GRAD, _SQUARE_AVG, _GRAD_AVG, _BUFFER, _STEP, _NUMEL = range(7)
_ROWS = 7

# Parameter, gradient and state dtypes the kernel reads and writes (complex64 as float32 pairs).
_TENSOR_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_STEP_DTYPES = (torch.float32, torch.float64)


if AVAILABLE:
    # The table's rows, as the compile-time constants kernels may read.
    _PARAM_ROW = tl.constexpr(_PARAM)
    _GRAD_ROW = tl.constexpr(_GRAD)
    _SQUARE_AVG_ROW = tl.constexpr(_SQUARE_AVG)
    _GRAD_AVG_ROW = tl.constexpr(_GRAD_AVG)
    _BUFFER_ROW = tl.constexpr(_BUFFER)
    _STEP_ROW = tl.constexpr(_STEP)
    _NUMEL_ROW = tl.constexpr(_NUMEL)

    @_jit()
    def _bfloat16_to_float32(x):  # type: ignore[no-untyped-def]
        # Exact, through the bit pattern (Triton's interpreter flushes subnormals).
        bits = x.to(tl.uint16, bitcast=True).to(tl.uint32) << 16
        return bits.to(tl.float32, bitcast=True)

    @_jit()
    def _float32_to_bfloat16(x, noise, STOCHASTIC: tl.constexpr):  # type: ignore[no-untyped-def]
        # Round the float32 bit pattern to its top 16 bits: to nearest even, or
        # stochastically by adding 16 random low bits. NaN stays a quiet NaN.
        bits = x.to(tl.uint32, bitcast=True)
        bits = bits + noise if STOCHASTIC else bits + (0x7FFF + ((bits >> 16) & 1))
        bits = tl.where(x == x, bits >> 16, 0x7FC0)
        return bits.to(tl.uint16).to(tl.bfloat16, bitcast=True)

    @_jit()
    def _load(ptr, offsets, mask, other, DTYPE: tl.constexpr):  # type: ignore[no-untyped-def]
        x = tl.load(ptr + offsets, mask=mask, other=other)
        if DTYPE == tl.bfloat16:
            return _bfloat16_to_float32(x)
        return x.to(tl.float32)

    @_jit()
    def _store(ptr, offsets, mask, x, noise, DTYPE: tl.constexpr, STOCHASTIC: tl.constexpr):  # type: ignore[no-untyped-def]
        if DTYPE == tl.bfloat16:
            tl.store(ptr + offsets, _float32_to_bfloat16(x, noise, STOCHASTIC), mask=mask)
        else:
            tl.store(ptr + offsets, x.to(DTYPE), mask=mask)

    @_jit()
    def _mix(h):  # type: ignore[no-untyped-def]
        # A bijective 32-bit integer hash (lowbias32): every output bit depends on every input bit.
        h = h ^ (h >> 16)
        h = h * 0x7FEB352D
        h = h ^ (h >> 15)
        h = h * 0x846CA68B
        return h ^ (h >> 16)

    @_jit()
    def _update_block(  # type: ignore[no-untyped-def]
        p_ptr,
        g_ptr,
        v_ptr,
        m_ptr,
        b_ptr,
        count,
        lr,
        shrink,
        decay,
        one_minus_decay,
        eps,
        momentum,
        weight_decay,
        inv_scale,
        correction,
        seed,
        PARAM: tl.constexpr,
        GRAD: tl.constexpr,
        STATE: tl.constexpr,
        MASKED: tl.constexpr,
        MAXIMIZE: tl.constexpr,
        WEIGHT_DECAY: tl.constexpr,
        CENTERED: tl.constexpr,
        MOMENTUM: tl.constexpr,
        NESTEROV: tl.constexpr,
        LR_IN_MOMENTUM: tl.constexpr,
        EPS_IN_SQRT: tl.constexpr,
        BIAS_CORRECTION: tl.constexpr,
        GRAD_SCALE: tl.constexpr,
        STOCHASTIC: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        offsets = tl.arange(0, BLOCK)
        mask = offsets < count if MASKED else None
        # Masked-off lanes compute on v = 1 so they never divide 0 by 0.
        one = 1.0 if MASKED else None
        zero = 0.0 if MASKED else None
        theta = _load(p_ptr, offsets, mask, zero, PARAM)
        g = _load(g_ptr, offsets, mask, zero, GRAD)
        v = _load(v_ptr, offsets, mask, one, STATE)
        noise = 0
        if STOCHASTIC:
            noise = _mix(offsets.to(tl.uint32) ^ seed) & 0xFFFF

        if GRAD_SCALE:
            g = g * inv_scale
            _store(g_ptr, offsets, mask, g, noise, GRAD, False)
        if MAXIMIZE:
            g = -g
        if WEIGHT_DECAY == 1:  # L2: on the gradient
            g = g + weight_decay * theta
        if WEIGHT_DECAY == 2:  # decoupled: shrink the parameter before the step
            theta = theta * shrink

        v = v * decay + one_minus_decay * g * g
        _store(v_ptr, offsets, mask, v, noise, STATE, False)
        second = v
        if CENTERED:
            m = _load(m_ptr, offsets, mask, zero, STATE)
            # torch.lerp(m, g, w), with its two formulas
            m = tl.where(
                one_minus_decay < 0.5,
                m + one_minus_decay * (g - m),
                g - (g - m) * (1.0 - one_minus_decay),
            )
            _store(m_ptr, offsets, mask, m, noise, STATE, False)
            first = m
        if BIAS_CORRECTION:
            second = tl.div_rn(second, correction)
            if CENTERED:
                first = tl.div_rn(first, correction)
        if CENTERED:
            second = tl.maximum(second - first * first, 0.0, propagate_nan=tl.PropagateNan.ALL)
        denominator = tl.sqrt_rn(second + eps) if EPS_IN_SQRT else tl.sqrt_rn(second) + eps
        # As the single-tensor path's addcdiv: value·g/d, the product first.
        if MOMENTUM:
            b = _load(b_ptr, offsets, mask, zero, STATE)
            if LR_IN_MOMENTUM:
                scaled = tl.div_rn(lr * g, denominator)
                b = b * momentum + scaled
                step = b * momentum + scaled if NESTEROV else b
            else:
                u = tl.div_rn(g, denominator)
                b = b * momentum + u
                step = lr * (b * momentum + u) if NESTEROV else lr * b
            _store(b_ptr, offsets, mask, b, noise, STATE, False)
        else:
            step = tl.div_rn(lr * g, denominator)
        _store(p_ptr, offsets, mask, theta - step, noise, PARAM, STOCHASTIC)

    @_jit(do_not_specialize=["n_tensors"])
    def _rmsprop_kernel(  # type: ignore[no-untyped-def]
        tables,
        block_tensor,
        block_chunk,
        tickets,
        n_tensors,
        lr_ptr,
        grad_scale_ptr,
        found_inf_ptr,
        lr,
        shrink,
        decay,
        one_minus_decay,
        eps,
        momentum,
        weight_decay,
        log2_decay_high,
        log2_decay_low,
        PARAM: tl.constexpr,
        GRAD: tl.constexpr,
        STATE: tl.constexpr,
        STEP: tl.constexpr,
        MAXIMIZE: tl.constexpr,
        WEIGHT_DECAY: tl.constexpr,
        CENTERED: tl.constexpr,
        MOMENTUM: tl.constexpr,
        NESTEROV: tl.constexpr,
        LR_IN_MOMENTUM: tl.constexpr,
        EPS_IN_SQRT: tl.constexpr,
        BIAS_CORRECTION: tl.constexpr,
        LR_ON_DEVICE: tl.constexpr,
        GRAD_SCALE: tl.constexpr,
        FOUND_INF: tl.constexpr,
        STOCHASTIC: tl.constexpr,
        ALIGNED: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        block = tl.program_id(0)
        tensor = tl.load(block_tensor + block)
        chunk = tl.load(block_chunk + block)
        found_inf = tl.load(found_inf_ptr) if FOUND_INF else 0.0
        if found_inf == 0:
            numel = tl.load(tables + _NUMEL_ROW * n_tensors + tensor)
            start = chunk.to(tl.int64) * BLOCK
            p_ptr = (
                tl.load(tables + _PARAM_ROW * n_tensors + tensor).to(tl.pointer_type(PARAM)) + start
            )
            g_ptr = (
                tl.load(tables + _GRAD_ROW * n_tensors + tensor).to(tl.pointer_type(GRAD)) + start
            )
            v_ptr = tl.load(tables + _SQUARE_AVG_ROW * n_tensors + tensor).to(
                tl.pointer_type(STATE)
            )
            v_ptr += start
            m_ptr = tl.load(tables + _GRAD_AVG_ROW * n_tensors + tensor).to(tl.pointer_type(STATE))
            m_ptr += start
            b_ptr = tl.load(tables + _BUFFER_ROW * n_tensors + tensor).to(tl.pointer_type(STATE))
            b_ptr += start
            if ALIGNED:  # every address is 16-byte aligned, and so is each chunk's start
                p_ptr = tl.multiple_of(p_ptr, 16)
                g_ptr = tl.multiple_of(g_ptr, 16)
                v_ptr = tl.multiple_of(v_ptr, 16)
                m_ptr = tl.multiple_of(m_ptr, 16)
                b_ptr = tl.multiple_of(b_ptr, 16)
            step_ptr = tl.load(tables + _STEP_ROW * n_tensors + tensor).to(tl.pointer_type(STEP))
            if BIAS_CORRECTION or STOCHASTIC:  # the only uses of the count in the update
                step = tl.load(step_ptr) + 1  # this step's count, written back below

            if LR_ON_DEVICE:
                lr = tl.load(lr_ptr).to(tl.float32)
                shrink = 1.0 - lr * weight_decay
            inv_scale = 1.0
            if GRAD_SCALE:
                inv_scale = tl.div_rn(1.0, tl.load(grad_scale_ptr).to(tl.float32))
            correction = 1.0
            if BIAS_CORRECTION:
                # 1 - ρᵗ in float64, with log2(ρ) passed as two float32 halves.
                t = step.to(tl.float64)
                exponent = t * tl.cast(log2_decay_high, tl.float64)
                exponent += t * tl.cast(log2_decay_low, tl.float64)
                correction = (1.0 - tl.exp2(exponent)).to(tl.float32)
            seed = 0
            if STOCHASTIC:
                seed = _mix(
                    step.to(tl.uint32) * 0x9E3779B9
                    ^ _mix(tensor.to(tl.uint32) * 0x85EBCA6B ^ chunk.to(tl.uint32))
                )

            count = numel - start
            if count >= BLOCK:
                _update_block(
                    p_ptr, g_ptr, v_ptr, m_ptr, b_ptr, count,
                    lr, shrink, decay, one_minus_decay, eps, momentum, weight_decay,
                    inv_scale, correction, seed,
                    PARAM, GRAD, STATE, False, MAXIMIZE, WEIGHT_DECAY, CENTERED, MOMENTUM,
                    NESTEROV, LR_IN_MOMENTUM, EPS_IN_SQRT, BIAS_CORRECTION, GRAD_SCALE,
                    STOCHASTIC, BLOCK,
                )  # fmt: skip
            else:
                _update_block(
                    p_ptr, g_ptr, v_ptr, m_ptr, b_ptr, count,
                    lr, shrink, decay, one_minus_decay, eps, momentum, weight_decay,
                    inv_scale, correction, seed,
                    PARAM, GRAD, STATE, True, MAXIMIZE, WEIGHT_DECAY, CENTERED, MOMENTUM,
                    NESTEROV, LR_IN_MOMENTUM, EPS_IN_SQRT, BIAS_CORRECTION, GRAD_SCALE,
                    STOCHASTIC, BLOCK,
                )  # fmt: skip

            if BIAS_CORRECTION or STOCHASTIC:
                # Every program of the tensor read the old count before taking its
                # ticket (acquire-release); the one holding the last ticket writes
                # the new count and resets the tickets for the next step.
                blocks = tl.maximum((numel + BLOCK - 1) // BLOCK, 1)
                # Every warp has read the count before one thread's release publishes that.
                tl.debug_barrier()
                ticket = tl.atomic_add(tickets + tensor, 1)
                if ticket == blocks - 1:
                    tl.store(step_ptr, step)
                    tl.store(tickets + tensor, 0)
            elif chunk == 0:
                # No other program reads the count: one counts, with no atomic (a
                # ticket per program serializes on one address, and slows short blocks).
                tl.store(step_ptr, tl.load(step_ptr) + 1)

    INTERPRETED = not isinstance(_rmsprop_kernel, triton.runtime.JITFunction)
    _TL_DTYPES = {
        torch.float32: tl.float32,
        torch.bfloat16: tl.bfloat16,
        torch.float16: tl.float16,
        torch.float64: tl.float64,
    }
else:
    INTERPRETED = False


def unsupported_reason(device_type: str) -> str:
    """Why the Triton kernel can't run on tensors of this device type ('' when it can)."""
    if not AVAILABLE:
        return WHY_UNAVAILABLE
    if device_type == "cuda":
        if INTERPRETED:
            return (
                "triton was imported with TRITON_INTERPRET=1, and its interpreter "
                "cannot reach CUDA memory through the kernel's address tables"
            )
        return ""
    if device_type == "cpu":
        if not INTERPRETED:
            return (
                "the Triton kernel runs on CPU tensors only through Triton's interpreter "
                "(set TRITON_INTERPRET=1 before triton is imported)"
            )
        return ""
    return f"the Triton kernel needs CUDA tensors, got {device_type} tensors"


class _Launch:
    """One kernel launch: the device tables of a group of tensors sharing a device and dtypes.

    ``indices`` are the group's positions in the step's tensor lists;
    ``columns`` the address table on the host: per tensor, the addresses of θ,
    g, v, m, b and the step count, and the element count (complex tensors
    count their reals). ``like``, when given, is a launch over the same
    tensors whose block table (it depends only on their sizes) this one shares.

    The pinned host copies the device tables were uploaded from are kept and
    never written: a CUDA graph replays the upload from them.
    """

    n_blocks: int
    host_blocks: Tensor
    blocks: Tensor
    host_tables: Tensor

    def __init__(
        self,
        indices: list[int],
        key: tuple[Any, ...],
        columns: list[list[int]],
        like: _Launch | None = None,
    ) -> None:
        self.indices = indices
        self.device, self.param_dtype, self.grad_dtype, self.state_dtype, self.step_dtype = key[:5]
        self.columns = columns
        self.block = BLOCK  # the tables below are cut in blocks of this size
        self.n_tensors = len(indices)
        if like is not None:
            self.n_blocks, self.host_blocks, self.blocks = (
                like.n_blocks,
                like.host_blocks,
                like.blocks,
            )
        else:
            counts = [max(1, -(-n // self.block)) for n in columns[_NUMEL]]
            self.n_blocks = sum(counts)
            tensor_of_block = torch.arange(self.n_tensors).repeat_interleave(torch.tensor(counts))
            first_block = torch.tensor([0, *counts[:-1]]).cumsum(0)
            chunk_of_block = torch.arange(self.n_blocks) - first_block[tensor_of_block]
            blocks = torch.stack([tensor_of_block, chunk_of_block]).to(torch.int32)
            self.host_blocks = _pinned(blocks, self.device)
            self.blocks = _upload(self.host_blocks, self.device)
        self.block_tensor, self.block_chunk = self.blocks[0], self.blocks[1]
        if like is not None and like.columns == columns:
            self.host_tables = like.host_tables  # never written: see point_grads
        else:
            self.host_tables = _pinned(torch.tensor(columns, dtype=torch.int64), self.device)
        self.tables = _upload(self.host_tables, self.device)
        self.tickets = torch.zeros(self.n_tensors, dtype=torch.int32, device=self.device)
        self.aligned = _aligned(columns)

    def point_grads(self, addresses: list[int]) -> None:
        """Uploads the gradients' row (``addresses``, in step order) if they moved."""
        new = [addresses[i] for i in self.indices]
        if new == self.columns[_GRAD]:
            return
        columns = [*self.columns[:_GRAD], new, *self.columns[_GRAD + 1 :]]
        # A new host table rather than a write into the old one, which a copy (or a
        # captured graph) may still read; uploaded before anything here says it was.
        host_tables = _pinned(torch.tensor(columns, dtype=torch.int64), self.device)
        self.tables.copy_(host_tables, non_blocking=True)
        self.columns, self.host_tables, self.aligned = columns, host_tables, _aligned(columns)


def _pinned(values: Tensor, device: torch.device) -> Tensor:
    # Pinned, so the copy is asynchronous and may be captured in a CUDA graph.
    return values.pin_memory() if device.type == "cuda" else values


def _upload(host: Tensor, device: torch.device) -> Tensor:
    return host.to(device, non_blocking=True) if device.type == "cuda" else host.clone()


def _aligned(columns: list[list[int]]) -> bool:
    rows = (_PARAM, _GRAD, _SQUARE_AVG, _GRAD_AVG, _BUFFER)
    return all(address % 16 == 0 for row in rows for address in columns[row])


class _Plan:
    """How one step's tensors are updated: launches for the kernel, the ``rest`` by
    foreach, parameters listed twice (``looped``) by the single-tensor loop.

    `rmsprop.torch._plans.cached_plan` keeps ``grads`` and ``signatures``: the
    gradients the tables point at.
    """

    def __init__(
        self, launches: list[_Launch], rest: list[int], looped: list[int], grads: list[int]
    ) -> None:
        self.launches = launches
        self.rest = rest
        self.looped = looped
        self.grads = grads  # the gradient addresses the tables hold, in step order
        self.signatures: tuple[list[Any], ...] = ()

    def point_grads(self, addresses: list[int]) -> None:
        for launch in self.launches:
            launch.point_grads(addresses)
        self.grads = addresses


# Plans of eager steps, keyed by the sizes and addresses of the parameters and their state.
_plans: OrderedDict[tuple[Any, ...], _Plan] = OrderedDict()

# Plans built while a CUDA graph was captured: the graph reads their tables at every replay.
_graph_plans: list[_Plan] = []


def fused_rmsprop(
    tensors: StepTensors,
    hyper: Hyper,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
    stochastic_rounding: bool = False,
) -> None:
    """The fused step on CUDA tensors (or, interpreted, CPU tensors): updates everything in place.

    ``tensors.state_steps`` are on the parameters' device. ``hyper.lr`` may
    be a tensor on that device (the kernel reads it, so a captured graph sees
    later changes). Tensors the kernel can't take (other dtypes, layouts or
    devices) go through the foreach path, same rule.
    """
    if not tensors.params:
        return
    lr = hyper.lr
    if isinstance(lr, Tensor) and lr.device.type != tensors.params[0].device.type:
        hyper = hyper._replace(lr=lr.item())  # a host scalar: no sync
    tensors = tensors.used_by(hyper)
    plan = _plan_for(tensors)
    for launch in plan.launches:
        _launch(launch, hyper, grad_scale, found_inf, stochastic_rounding)
    # The kernel writes behind autograd's back: tell it, as an in-place op would.
    mark_written(tensors.written(grad_scale is not None))
    if plan.rest:
        _unfused_step(tensors.pick(plan.rest), hyper, grad_scale, found_inf, foreach=True)
    if plan.looped:
        _unfused_step(tensors.pick(plan.looped), hyper, grad_scale, found_inf, foreach=False)


def _plan_for(tensors: StepTensors) -> _Plan:
    """The cached plan for these tensors, its gradient rows updated; built when new."""
    params, grads, square_avgs, grad_avgs, momentum_buffers, state_steps = tensors
    key = identity(params, square_avgs, grad_avgs, momentum_buffers, state_steps)
    if params[0].is_cuda and torch.cuda.is_current_stream_capturing():
        # Tables the graph owns (eager steps may move the cached ones' gradient rows),
        # sharing the warm-up plan's pinned copies where they match: its block tables
        # always (they depend on sizes only), its address table if no gradient moved.
        plan = _build_plan(tensors, like=_plans.get(key))
        _graph_plans.append(plan)
        return plan
    return cached_plan(_plans, key, grads, lambda: _build_plan(tensors))


def _build_plan(tensors: StepTensors, like: _Plan | None = None) -> _Plan:
    """Groups the tensors into launches; with ``like``, an eager plan of the same tensors,
    reusing its host tables and block tables wherever they match."""
    params, grads, square_avgs, grad_avgs, momentum_buffers, state_steps = tensors
    groups: dict[tuple[Any, ...], list[int]] = {}
    rest, looped = [], []
    twice = listed_twice(params)
    for i, p in enumerate(params):
        if twice and p.numel() and p.data_ptr() in twice:
            looped.append(i)
            continue
        state = [square_avgs[i]]
        state += [grad_avgs[i]] if grad_avgs else []
        state += [momentum_buffers[i]] if momentum_buffers else []
        key = _launch_key(p, grads[i], state, state_steps[i])
        if key is None:
            rest.append(i)
        else:
            groups.setdefault(key, []).append(i)
    launches = []
    for key, indices in groups.items():
        columns = [[0] * len(indices) for _ in range(_ROWS)]
        for column, i in enumerate(indices):
            columns[_PARAM][column] = params[i].data_ptr()
            columns[_GRAD][column] = grads[i].data_ptr()
            columns[_SQUARE_AVG][column] = square_avgs[i].data_ptr()
            if grad_avgs:
                columns[_GRAD_AVG][column] = grad_avgs[i].data_ptr()
            if momentum_buffers:
                columns[_BUFFER][column] = momentum_buffers[i].data_ptr()
            columns[_STEP][column] = state_steps[i].data_ptr()
            columns[_NUMEL][column] = params[i].numel() * (2 if params[i].is_complex() else 1)
        same = [old for old in (like.launches if like else []) if old.indices == indices]
        launches.append(_Launch(indices, key, columns, same[0] if same else None))
    return _Plan(launches, rest, looped, list(map(Tensor.data_ptr, grads)))


def _launch_key(p: Tensor, g: Tensor, state: list[Tensor], step: Tensor) -> tuple[Any, ...] | None:
    """(device, parameter, gradient, state and step dtypes, whether p and its state are
    16-byte aligned) if the kernel takes p, else None.

    Alignment is part of the key so that one tensor off it (a view into a flat
    buffer, say) costs its own launch scalar accesses, not everyone's.
    """
    device = p.device
    if unsupported_reason(device.type):
        return None
    if any(t.device != device for t in (g, *state, step)):
        return None
    if not addressable(p, [g, *state, step]):
        return None
    param_dtype, grad_dtype, state_dtype = real_dtype(p), real_dtype(g), real_dtype(state[0])
    if (
        param_dtype not in _TENSOR_DTYPES
        or grad_dtype not in _TENSOR_DTYPES
        or state_dtype not in _TENSOR_DTYPES
        or any(t.dtype != state[0].dtype for t in state)
        or any(t.is_complex() != p.is_complex() for t in (g, *state))
        or any(t.is_conj() or t.is_neg() for t in (p, g, *state))  # memory ≠ values
        or step.dtype not in _STEP_DTYPES
        or step.numel() != 1
        or not same_dense_layout(p, [g, *state])
    ):
        return None
    aligned = all(t.data_ptr() % 16 == 0 for t in (p, *state))
    return device, param_dtype, grad_dtype, state_dtype, step.dtype, aligned


def _launch(
    launch: _Launch,
    hyper: Hyper,
    grad_scale: Tensor | None,
    found_inf: Tensor | None,
    stochastic_rounding: bool,
) -> None:
    device = launch.device
    lr = hyper.lr
    lr_ptr = None
    if isinstance(lr, Tensor):
        # Read where it lies, so a captured graph sees later changes (and nothing syncs).
        lr_ptr = lr if lr.dtype in _STEP_DTYPES else lr.float()
        lr_ptr, lr = lr_ptr.to(device, non_blocking=True), 0.0
    if grad_scale is not None:
        grad_scale = grad_scale.to(device, torch.float32, non_blocking=True)
    if found_inf is not None:
        found_inf = found_inf.to(device, torch.float32, non_blocking=True)
    # Plain floats: Triton types (and may specialize) each scalar by its Python type, so a
    # param group's int (momentum=0, lr=1) would compile another kernel, or fail to.
    lr = float(lr)
    decay, weight_decay = float(hyper.decay), float(hyper.weight_decay)
    # log2(ρ) in float64, passed as two float32 halves (kernel scalars are float32).
    if decay > 0:
        log2_decay = math.log2(decay)
        log2_decay_high = float(np.float32(log2_decay))
        log2_decay_low = log2_decay - log2_decay_high
    else:  # ρᵗ = 0, so the correction is 1: exp2(-inf) = 0
        log2_decay_high, log2_decay_low = -math.inf, 0.0
    decay_form = 0 if weight_decay == 0 else 2 if hyper.decoupled_weight_decay else 1
    with _CurrentDevice(device):
        _rmsprop_kernel[(launch.n_blocks,)](
            launch.tables,
            launch.block_tensor,
            launch.block_chunk,
            launch.tickets,
            launch.n_tensors,
            lr_ptr,
            grad_scale,
            found_inf,
            lr,
            1 - lr * weight_decay,
            decay,
            1 - decay,
            float(hyper.eps),
            float(hyper.momentum),
            weight_decay,
            log2_decay_high,
            log2_decay_low,
            PARAM=_TL_DTYPES[launch.param_dtype],
            GRAD=_TL_DTYPES[launch.grad_dtype],
            STATE=_TL_DTYPES[launch.state_dtype],
            STEP=_TL_DTYPES[launch.step_dtype],
            MAXIMIZE=hyper.maximize,
            WEIGHT_DECAY=decay_form,
            CENTERED=hyper.centered,
            MOMENTUM=hyper.momentum > 0,
            NESTEROV=hyper.nesterov,
            LR_IN_MOMENTUM=hyper.lr_in_momentum,
            EPS_IN_SQRT=hyper.eps_in_sqrt,
            BIAS_CORRECTION=hyper.bias_correction,
            LR_ON_DEVICE=lr_ptr is not None,
            GRAD_SCALE=grad_scale is not None,
            FOUND_INF=found_inf is not None,
            STOCHASTIC=stochastic_rounding and launch.param_dtype == torch.bfloat16,
            ALIGNED=launch.aligned,
            BLOCK=launch.block,
            num_warps=NUM_WARPS,
            enable_fp_fusion=False,
        )


class _CurrentDevice:
    """Makes the tensors' CUDA device current (Triton launches on the current one)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.previous: int | None = None

    def __enter__(self) -> None:
        if self.device.type == "cuda" and self.device.index != torch.cuda.current_device():
            self.previous = torch.cuda.current_device()
            torch.cuda.set_device(self.device)

    def __exit__(self, *_: object) -> None:
        if self.previous is not None:
            torch.cuda.set_device(self.previous)
