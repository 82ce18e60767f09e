"""The fused RMSprop step as a Triton kernel: one launch per step for a whole group of tensors.

An RMSprop step is pure memory traffic. The kernel reads θ, g, v (and m, b
when the rule needs them) once, does the math in float32, and writes θ, v
(m, b) once: 20 bytes per float32 parameter, 28 with momentum, 36 centered
with momentum. It computes exactly `rmsprop.Config`'s rule, after unscaling
the gradient (``g ← g / grad_scale``, written back) when a GradScaler scale
is given::

    {rule}

in the single-tensor path's order, every operation correctly rounded (division
and square root too) and none fused into a multiply-add, so a GPU and Triton's
interpreter compute the same values. The single-tensor path agrees to float32
rounding: torch's own kernels fuse some multiply-adds. The centered average
is computed as ``torch.lerp`` computes it.

**Addresses.** Tensors are reached through a device table of addresses, one
row per kind (``PARAM``, ``GRAD``, ``SQUARE_AVG``, ``GRAD_AVG``, ``BUFFER``,
``STEP``, ``NUMEL``: θ, g, v, m, b, the step count, the element count) and
one column per tensor, and a block table mapping each program to (tensor,
chunk). Offsets are 64-bit (tensors over 2³¹ elements). Each program
updates ``BLOCK`` elements; full blocks run an unmasked body (16-byte vector
loads when ``ALIGNED``), the last block of each tensor a masked one.

**The variants** are compile-time switches (``tl.constexpr``, from
`rmsprop._lowering.Switches`), so each compiled kernel holds only the
operations its rule needs; its scalars are `rmsprop._lowering.Scalars`.

**Mixed precision.** Parameters and gradients may be float32, bfloat16 or
float16, the state float32, bfloat16 or float16, each chosen independently;
the math is float32. bfloat16 values are rounded to nearest even through their
bit patterns (identical on a GPU and in Triton's interpreter), or, for
parameters with ``STOCHASTIC``, up or down with probability given by the
distance, from a counter-based hash of (step, tensor, element).

**Low-memory state** (compile-time switches, so float state compiles as before):
with ``QUANTIZED`` the state rows hold `rmsprop.quantization`'s 8-bit codes
(uint8) and the ``*_SCALES`` rows their float32 block scales. A program then
covers ``BLOCK // 256`` whole blocks of 256 (``BLOCK`` a multiple of 256, so
blocks never straddle programs), laid out as a ``[BLOCK // 256, 256]`` tile: it
decodes each buffer (``MAP[code]·scale``, the maps from a small device table),
runs the same float32 rule, takes each block's new scale as a reduction along
the tile's rows (its maximum for v, its largest magnitude for m and b, NaN
where a value is not finite) and encodes every element against it, rounding
stochastically with ``u = uniform(stream_seed(t, buffer), i)``, i the element's
index in its tensor's flattened real view and t the step count after the
update. With ``STATE_STOCHASTIC`` bfloat16 state is rounded stochastically with
the same random numbers' upper 16 bits. Both match `rmsprop.quantization` bit
for bit from the same float32 values.

**Step counters** live on the device, and the kernel advances them, so the
step needs no other launch and a captured CUDA graph advances the counts at
every replay. Where the update reads the count (bias correction, stochastic
rounding), each program reads it and the tensor's last program to finish (an
atomic ticket per tensor) writes the count plus one; otherwise the tensor's
first program alone counts, with no atomic.

**AMP.** With ``GRAD_SCALE`` the gradients are unscaled in the kernel (and
written back unscaled, as ``GradScaler.unscale_`` would leave them); with
``FOUND_INF`` nonzero every program returns before writing anything, step
counters included. This is the protocol of torch's fused Adam.

**Testing without a GPU.** With ``TRITON_INTERPRET=1`` set before triton is
imported, the same kernel runs through Triton's interpreter on CPU tensors,
address tables included (``INTERPRETED``).

This module imports triton only; `rmsprop.torch` launches the kernel.
"""

# Triton's convention: compile-time constants (tl.constexpr) are named in capitals.
# ruff: noqa: N803, SIM300

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from rmsprop._config import with_rule
from rmsprop._versions import release

__doc__ = with_rule(__doc__) or ""  # (no docstring under python -OO)

__all__ = [
    "AVAILABLE",
    "BUFFER",
    "BUFFER_SCALES",
    "GRAD",
    "GRAD_AVG",
    "GRAD_AVG_SCALES",
    "INTERPRETED",
    "MINIMUM_TRITON",
    "NUMEL",
    "PARAM",
    "ROWS",
    "SQUARE_AVG",
    "SQUARE_AVG_SCALES",
    "STEP",
    "WHY_UNAVAILABLE",
    "float32_to_bfloat16",
    "rmsprop_kernel",
    "rmsprop_lowmem_kernel",
    "tl",
    "too_old",
    "triton",
]

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


# Rows of the address table (the scales' rows are read only with QUANTIZED state).
PARAM, GRAD, SQUARE_AVG, GRAD_AVG, BUFFER, STEP, NUMEL = range(7)
SQUARE_AVG_SCALES, GRAD_AVG_SCALES, BUFFER_SCALES = 7, 8, 9
ROWS = 10

# 8-bit state: elements per block (one scale each), and where each map starts in the
# kernel's table of maps (`rmsprop.torch._fused.triton` builds it from rmsprop.quantization):
# the unsigned map, the signed map, the signed map's magnitudes (k/127)⁴ for k = 0..127.
QUANTIZED_BLOCK = 256
UNSIGNED_MAP_AT, SIGNED_MAP_AT, MAGNITUDES_AT = 0, 256, 512


if AVAILABLE:
    # The table's rows, as the compile-time constants kernels may read.
    _PARAM_ROW = tl.constexpr(PARAM)
    _GRAD_ROW = tl.constexpr(GRAD)
    _SQUARE_AVG_ROW = tl.constexpr(SQUARE_AVG)
    _GRAD_AVG_ROW = tl.constexpr(GRAD_AVG)
    _BUFFER_ROW = tl.constexpr(BUFFER)
    _STEP_ROW = tl.constexpr(STEP)
    _NUMEL_ROW = tl.constexpr(NUMEL)
    _SQUARE_AVG_SCALES_ROW = tl.constexpr(SQUARE_AVG_SCALES)
    _GRAD_AVG_SCALES_ROW = tl.constexpr(GRAD_AVG_SCALES)
    _BUFFER_SCALES_ROW = tl.constexpr(BUFFER_SCALES)
    _QBLOCK = tl.constexpr(QUANTIZED_BLOCK)
    _UNSIGNED_AT = tl.constexpr(UNSIGNED_MAP_AT)
    _SIGNED_AT = tl.constexpr(SIGNED_MAP_AT)
    _MAGNITUDES_AT = tl.constexpr(MAGNITUDES_AT)

    @_jit()
    def _bfloat16_to_float32(x):  # type: ignore[no-untyped-def]
        # Exact, through the bit pattern (Triton's interpreter flushes subnormals).
        bits = x.to(tl.uint16, bitcast=True).to(tl.uint32) << 16
        return bits.to(tl.float32, bitcast=True)

    @_jit()
    def float32_to_bfloat16(x, noise, STOCHASTIC: tl.constexpr):  # type: ignore[no-untyped-def]
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
            tl.store(ptr + offsets, float32_to_bfloat16(x, noise, STOCHASTIC), mask=mask)
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
    def _fmix32(h):  # type: ignore[no-untyped-def]
        # MurmurHash3's finalizer (`rmsprop.quantization.fmix32`): uint32 products wrap.
        h = h ^ (h >> 16)
        h = h * 0x85EBCA6B
        h = h ^ (h >> 13)
        h = h * 0xC2B2AE35
        return h ^ (h >> 16)

    @_jit()
    def _stream_key(count, BUFFER_INDEX: tl.constexpr):  # type: ignore[no-untyped-def]
        # fmix32(stream_seed(t, buffer)) = fmix32(4·t + buffer mod 2^32), t the new count.
        t = count.to(tl.int64).to(tl.uint32)
        return _fmix32(t * 4 + BUFFER_INDEX)

    @_jit()
    def _random_bits(index, key):  # type: ignore[no-untyped-def]
        # `rmsprop.quantization.random_bits`: the element's index (mod 2^32) mixed with the key.
        return _fmix32(index.to(tl.uint32) ^ key)

    @_jit()
    def _decode(  # type: ignore[no-untyped-def]
        ptr, scales_ptr, maps_ptr, offsets, rows, mask, row_mask, other,
        MAP_AT: tl.constexpr, MASKED: tl.constexpr,
    ):  # fmt: skip
        # MAP[code]·scale over a [blocks, 256] tile; a NaN scale decodes to NaN.
        if MASKED:
            codes = tl.load(ptr + offsets, mask=mask, other=0).to(tl.int32)
            scale = tl.load(scales_ptr + rows, mask=row_mask, other=0.0)
            x = tl.load(maps_ptr + MAP_AT + codes) * scale[:, None]
            return tl.where(mask, x, other)
        codes = tl.load(ptr + offsets).to(tl.int32)
        return tl.load(maps_ptr + MAP_AT + codes) * tl.load(scales_ptr + rows)[:, None]

    @_jit()
    def _encode(  # type: ignore[no-untyped-def]
        ptr, scales_ptr, maps_ptr, offsets, rows, mask, row_mask, x, index, key,
        SIGNED: tl.constexpr, MASKED: tl.constexpr,
    ):  # fmt: skip
        # `rmsprop.quantization.quantize` of a [blocks, 256] tile: each row's scale, then
        # each element's lower neighbour (closed form, one correction) and a stochastic
        # step up with probability (x - lo)/(hi - lo).
        if MASKED:
            x = tl.where(mask, x, 0.0)  # a partial block counts as padded with zeros
        finite = tl.abs(x) < float("inf")  # (False for NaN)
        reduced = tl.abs(x) if SIGNED else x
        top = tl.max(tl.where(finite, reduced, 0.0), axis=1)
        broken = tl.max(tl.where(finite, 0, 1), axis=1)
        scale = tl.where(broken > 0, float("nan"), top)
        tl.store(scales_ptr + rows, scale, mask=row_mask)
        usable = (scale > 0.0) & (scale < float("inf"))
        divisor = tl.where(usable, scale, 1.0)[:, None]
        units = tl.where(usable[:, None], tl.div_rn(x, divisor), 0.0)
        magnitude = tl.abs(units)
        root = tl.sqrt_rn(tl.sqrt_rn(magnitude))
        if SIGNED:
            table = maps_ptr + _MAGNITUDES_AT
            highest = 126
            guess = tl.floor(127.0 * root)
        else:
            table = maps_ptr + _UNSIGNED_AT
            highest = 254
            guess = tl.floor(256.0 * root) - 1.0
        code = tl.minimum(tl.maximum(guess, 0.0), highest).to(tl.int32)
        up = (code < highest) & (tl.load(table + code + 1) <= magnitude)
        down = (up == 0) & (code > 0) & (tl.load(table + code) > magnitude)
        code = code + up.to(tl.int32) - down.to(tl.int32)
        low = tl.load(table + code)
        high = tl.load(table + code + 1)
        u = (_random_bits(index, key) >> 8).to(tl.float32) * 5.9604644775390625e-08  # 2^-24
        code += (u * (high - low) < magnitude - low).to(tl.int32)
        if SIGNED:
            code = tl.where(units < 0.0, 128 - code, 128 + code)
        tl.store(ptr + offsets, code.to(tl.uint8), mask=mask)

    @_jit()
    def _load_state(  # type: ignore[no-untyped-def]
        ptr, scales_ptr, maps_ptr, offsets, rows, mask, row_mask, other,
        STATE: tl.constexpr, QUANTIZED: tl.constexpr, MAP_AT: tl.constexpr,
        MASKED: tl.constexpr,
    ):  # fmt: skip
        if QUANTIZED:
            return _decode(
                ptr, scales_ptr, maps_ptr, offsets, rows, mask, row_mask, other, MAP_AT, MASKED
            )
        return _load(ptr, offsets, mask, other, STATE)

    @_jit()
    def _store_state(  # type: ignore[no-untyped-def]
        ptr, scales_ptr, maps_ptr, offsets, rows, mask, row_mask, x, index, key,
        STATE: tl.constexpr, QUANTIZED: tl.constexpr, STATE_STOCHASTIC: tl.constexpr,
        SIGNED: tl.constexpr, MASKED: tl.constexpr,
    ):  # fmt: skip
        if QUANTIZED:
            _encode(
                ptr, scales_ptr, maps_ptr, offsets, rows, mask, row_mask, x, index, key,
                SIGNED, MASKED,
            )  # fmt: skip
        elif STATE_STOCHASTIC:  # bfloat16: + the random bits' upper 16, as the format rounds
            _store(ptr, offsets, mask, x, _random_bits(index, key) >> 16, STATE, True)
        else:
            _store(ptr, offsets, mask, x, 0, STATE, False)

    @_jit()
    def _update_block(  # type: ignore[no-untyped-def]
        p_ptr,
        g_ptr,
        v_ptr,
        m_ptr,
        b_ptr,
        vs_ptr,
        ms_ptr,
        bs_ptr,
        maps_ptr,
        count,
        first,
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
        v_key,
        m_key,
        b_key,
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
        QUANTIZED: tl.constexpr,
        STATE_STOCHASTIC: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        if QUANTIZED:  # a [blocks, 256] tile: each row one block of the format
            rows = tl.arange(0, BLOCK // _QBLOCK)
            offsets = rows[:, None] * _QBLOCK + tl.arange(0, _QBLOCK)[None, :]
            row_mask = rows * _QBLOCK < count if MASKED else None
        else:
            offsets = tl.arange(0, BLOCK)
            rows = None
            row_mask = None
        mask = offsets < count if MASKED else None
        # Each element's index in its tensor (the random numbers of the state's rounding).
        index = first + offsets if QUANTIZED or STATE_STOCHASTIC else None
        # Masked-off lanes compute on v = 1 so they never divide 0 by 0.
        one = 1.0 if MASKED else None
        zero = 0.0 if MASKED else None
        theta = _load(p_ptr, offsets, mask, zero, PARAM)
        g = _load(g_ptr, offsets, mask, zero, GRAD)
        v = _load_state(
            v_ptr, vs_ptr, maps_ptr, offsets, rows, mask, row_mask, one,
            STATE, QUANTIZED, _UNSIGNED_AT, MASKED,
        )  # fmt: skip
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
        _store_state(
            v_ptr, vs_ptr, maps_ptr, offsets, rows, mask, row_mask, v, index, v_key,
            STATE, QUANTIZED, STATE_STOCHASTIC, False, MASKED,
        )  # fmt: skip
        second = v
        if CENTERED:
            m = _load_state(
                m_ptr, ms_ptr, maps_ptr, offsets, rows, mask, row_mask, zero,
                STATE, QUANTIZED, _SIGNED_AT, MASKED,
            )  # fmt: skip
            # torch.lerp(m, g, w), with its two formulas
            m = tl.where(
                one_minus_decay < 0.5,
                m + one_minus_decay * (g - m),
                g - (g - m) * (1.0 - one_minus_decay),
            )
            _store_state(
                m_ptr, ms_ptr, maps_ptr, offsets, rows, mask, row_mask, m, index, m_key,
                STATE, QUANTIZED, STATE_STOCHASTIC, True, MASKED,
            )  # fmt: skip
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
            b = _load_state(
                b_ptr, bs_ptr, maps_ptr, offsets, rows, mask, row_mask, zero,
                STATE, QUANTIZED, _SIGNED_AT, MASKED,
            )  # fmt: skip
            if LR_IN_MOMENTUM:
                scaled = tl.div_rn(lr * g, denominator)
                b = b * momentum + scaled
                step = b * momentum + scaled if NESTEROV else b
            else:
                u = tl.div_rn(g, denominator)
                b = b * momentum + u
                step = lr * (b * momentum + u) if NESTEROV else lr * b
            _store_state(
                b_ptr, bs_ptr, maps_ptr, offsets, rows, mask, row_mask, b, index, b_key,
                STATE, QUANTIZED, STATE_STOCHASTIC, True, MASKED,
            )  # fmt: skip
        else:
            step = tl.div_rn(lr * g, denominator)
        _store(p_ptr, offsets, mask, theta - step, noise, PARAM, STOCHASTIC)

    @_jit()
    def _program(  # type: ignore[no-untyped-def]
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
        maps_ptr,
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
        QUANTIZED: tl.constexpr,
        STATE_STOCHASTIC: tl.constexpr,
        ALIGNED: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        # One program's work; the kernels below differ only in what they may be given.
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
            vs_ptr = None
            ms_ptr = None
            bs_ptr = None
            if QUANTIZED:  # codes are bytes; each block of 256 has one float32 scale
                first_scale = start // _QBLOCK
                vs_ptr = tl.load(tables + _SQUARE_AVG_SCALES_ROW * n_tensors + tensor).to(
                    tl.pointer_type(tl.float32)
                )
                vs_ptr += first_scale
                ms_ptr = tl.load(tables + _GRAD_AVG_SCALES_ROW * n_tensors + tensor).to(
                    tl.pointer_type(tl.float32)
                )
                ms_ptr += first_scale
                bs_ptr = tl.load(tables + _BUFFER_SCALES_ROW * n_tensors + tensor).to(
                    tl.pointer_type(tl.float32)
                )
                bs_ptr += first_scale
            step_ptr = tl.load(tables + _STEP_ROW * n_tensors + tensor).to(tl.pointer_type(STEP))
            # The only uses of the count in the update: bias correction and random numbers.
            if BIAS_CORRECTION or STOCHASTIC or QUANTIZED or STATE_STOCHASTIC:
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
            v_key = 0
            m_key = 0
            b_key = 0
            if QUANTIZED or STATE_STOCHASTIC:  # the format's seeds: stream_seed(t, buffer)
                v_key = _stream_key(step, 0)
                m_key = _stream_key(step, 1)
                b_key = _stream_key(step, 2)
            seed = 0
            if STOCHASTIC:
                seed = _mix(
                    step.to(tl.uint32) * 0x9E3779B9
                    ^ _mix(tensor.to(tl.uint32) * 0x85EBCA6B ^ chunk.to(tl.uint32))
                )

            count = numel - start
            if count >= BLOCK:
                _update_block(
                    p_ptr, g_ptr, v_ptr, m_ptr, b_ptr, vs_ptr, ms_ptr, bs_ptr, maps_ptr,
                    count, start,
                    lr, shrink, decay, one_minus_decay, eps, momentum, weight_decay,
                    inv_scale, correction, seed, v_key, m_key, b_key,
                    PARAM, GRAD, STATE, False, MAXIMIZE, WEIGHT_DECAY, CENTERED, MOMENTUM,
                    NESTEROV, LR_IN_MOMENTUM, EPS_IN_SQRT, BIAS_CORRECTION, GRAD_SCALE,
                    STOCHASTIC, QUANTIZED, STATE_STOCHASTIC, BLOCK,
                )  # fmt: skip
            else:
                _update_block(
                    p_ptr, g_ptr, v_ptr, m_ptr, b_ptr, vs_ptr, ms_ptr, bs_ptr, maps_ptr,
                    count, start,
                    lr, shrink, decay, one_minus_decay, eps, momentum, weight_decay,
                    inv_scale, correction, seed, v_key, m_key, b_key,
                    PARAM, GRAD, STATE, True, MAXIMIZE, WEIGHT_DECAY, CENTERED, MOMENTUM,
                    NESTEROV, LR_IN_MOMENTUM, EPS_IN_SQRT, BIAS_CORRECTION, GRAD_SCALE,
                    STOCHASTIC, QUANTIZED, STATE_STOCHASTIC, BLOCK,
                )  # fmt: skip

            if BIAS_CORRECTION or STOCHASTIC or QUANTIZED or STATE_STOCHASTIC:
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

    @_jit(do_not_specialize=["n_tensors"])
    def rmsprop_kernel(  # type: ignore[no-untyped-def]
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
        """The step of float state (each tensor's state in its dtype)."""
        _program(
            tables, block_tensor, block_chunk, tickets, n_tensors, lr_ptr, grad_scale_ptr,
            found_inf_ptr, lr, shrink, decay, one_minus_decay, eps, momentum, weight_decay,
            log2_decay_high, log2_decay_low, None, PARAM, GRAD, STATE, STEP, MAXIMIZE,
            WEIGHT_DECAY, CENTERED, MOMENTUM, NESTEROV, LR_IN_MOMENTUM, EPS_IN_SQRT,
            BIAS_CORRECTION, LR_ON_DEVICE, GRAD_SCALE, FOUND_INF, STOCHASTIC, False, False,
            ALIGNED, BLOCK,
        )  # fmt: skip

    @_jit(do_not_specialize=["n_tensors"])
    def rmsprop_lowmem_kernel(  # type: ignore[no-untyped-def]
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
        maps_ptr,
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
        QUANTIZED: tl.constexpr,
        STATE_STOCHASTIC: tl.constexpr,
        ALIGNED: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        """The step of low-memory state: 8-bit codes and block scales (QUANTIZED, the
        maps' table at ``maps_ptr``) or bfloat16 rounded stochastically (STATE_STOCHASTIC)."""
        _program(
            tables, block_tensor, block_chunk, tickets, n_tensors, lr_ptr, grad_scale_ptr,
            found_inf_ptr, lr, shrink, decay, one_minus_decay, eps, momentum, weight_decay,
            log2_decay_high, log2_decay_low, maps_ptr, PARAM, GRAD, STATE, STEP, MAXIMIZE,
            WEIGHT_DECAY, CENTERED, MOMENTUM, NESTEROV, LR_IN_MOMENTUM, EPS_IN_SQRT,
            BIAS_CORRECTION, LR_ON_DEVICE, GRAD_SCALE, FOUND_INF, STOCHASTIC, QUANTIZED,
            STATE_STOCHASTIC, ALIGNED, BLOCK,
        )  # fmt: skip

    INTERPRETED = not isinstance(rmsprop_kernel, triton.runtime.JITFunction)
else:
    INTERPRETED = False
