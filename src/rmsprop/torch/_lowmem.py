r"""Low-memory state in torch: `rmsprop.quantization`'s format in torch ops, on any device.

The same bits as the NumPy definition from the same float32 values: 8-bit
codes in blocks of 256 with the quartic maps, the closed-form encoder, the
murmur3 ``fmix32`` counter hash seeded by ``stream_seed(t, buffer)``, and
bfloat16 rounded stochastically with the same random numbers. Integer
arithmetic is int64 holding uint32 values (torch has no wrapping uint32
multiply everywhere).

The optimizer's state for one buffer (``square_avg``, ``grad_avg``,
``momentum_buffer``) of a parameter with at least 4096 real elements is a
uint8 tensor of codes in the parameter's real-view shape (a complex parameter's
``view_as_real`` shape) under the buffer's key, and its float32 block scales
under ``key + "_scales"``. The reference step (`step_in_float`) decodes every
buffer a parameter stores narrower than its math, runs the float single-tensor
rule on the decoded values and encodes them again.

A DTensor parameter (FSDP2's) is quantized shard by shard, each element with its
index in its local shard, so blocks never straddle shards and no step
communicates. Its codes are a DTensor with the parameter's mesh and placements
over the real-view shape; its scales a float32 DTensor of global shape
``(shards, count)`` (`sharded_scales_shape`), sharded on dim 0 over the mesh
dims that shard the parameter: each rank holds one row, its shard's
⌈local/256⌉ scales, padded with zeros to ``count``, the largest shard's number of
blocks (DTensor's chunks are even). The shape names the sharding, so
`torch.distributed.checkpoint` refuses an 8-bit checkpoint of another sharding
(a size mismatch) instead of reading scales of other blocks.

How a state tensor is stored beyond its dtype (an 8-bit buffer's scales,
stochastic bfloat16 rounding) is kept beside it here (`keep_format`), not in
the tensor lists a step is handed: the optimizer records it before each step,
and the reference paths, which the fused kernels hand what they cannot take,
read it back (`format_of`).

Example:
    >>> import torch
    >>> from rmsprop.torch import _lowmem
    >>> v = torch.linspace(0.01, 2.0, 5000) ** 2
    >>> stored = _lowmem.quantize(v, "unsigned", seed=4)
    >>> stored.codes.dtype, tuple(stored.codes.shape), tuple(stored.scales.shape)
    (torch.uint8, (5000,), (20,))
    >>> decoded = _lowmem.dequantize(stored.codes, stored.scales, "unsigned")
    >>> bool(decoded[-1] == v[-1]), bool(((decoded - v).abs() < 0.04 * v).all())
    (True, True)
"""

from __future__ import annotations

import functools
import math
import sys
import weakref
from collections.abc import Callable, Iterable, Mapping
from operator import attrgetter
from typing import Any, Literal, NamedTuple, cast

import numpy as np
import torch
from torch import Tensor

from rmsprop import quantization as q
from rmsprop.torch import _shards
from rmsprop.torch._step import Hyper, StepTensors

__all__ = [
    "BUFFER_KEYS",
    "KIND_OF",
    "Quantized",
    "StoredFormat",
    "buffer_nbytes",
    "dequantize",
    "dequantize_buffer",
    "filled",
    "float_step_indices",
    "fmix32",
    "format_of",
    "is_dtensor",
    "is_quantized",
    "keep_format",
    "keep_formats",
    "quantize",
    "quantize_buffer",
    "random_bits",
    "real_shape",
    "round_to_bfloat16",
    "scales_key",
    "sharded_scales_shape",
    "state_nbytes",
    "step_in_float",
    "store_bfloat16",
    "uniform",
]

Kind = Literal["unsigned", "signed"]
Rule = Callable[
    ..., None
]  # the float single-tensor rule: (tensors, hyper, *, capturable, differentiable)

BUFFER_KEYS = ("square_avg", "grad_avg", "momentum_buffer")
"""The state keys of the buffers, in `rmsprop.quantization`'s buffer order (its seeds)."""

KIND_OF: dict[str, Kind] = {
    "square_avg": "unsigned",
    "grad_avg": "signed",
    "momentum_buffer": "signed",
}
_BUFFER_INDEX = {
    key: i for i, key in enumerate(BUFFER_KEYS)
}  # SQUARE_AVG, GRAD_AVG, MOMENTUM_BUFFER
_MASK = 0xFFFFFFFF
# Elements encoded at a time: bounds the int64 temporaries of the hash (a multiple of BLOCK).
_CHUNK = 1 << 20


class Quantized(NamedTuple):
    """A buffer in 8-bit blocks: uint8 ``codes`` (the values' real-view shape) and float32
    ``scales``, one per `rmsprop.quantization.BLOCK` elements of the flattened codes."""

    codes: Tensor
    scales: Tensor


def scales_key(key: str) -> str:
    """The state key of buffer ``key``'s block scales."""
    return key + "_scales"


def real_shape(p: Tensor) -> tuple[int, ...]:
    """The shape of ``p``'s real view: its own, with a trailing 2 if complex."""
    return (*p.shape, 2) if p.is_complex() else tuple(p.shape)


def is_quantized(p: Tensor) -> bool:
    """Whether an 8-bit optimizer stores ``p``'s buffers in 8 bits (else float32):
    at least `rmsprop.quantization.MIN_QUANTIZED_NUMEL` real elements."""
    return q.is_quantized(p.numel() * (2 if p.is_complex() else 1))


# -- random numbers ------------------------------------------------------------------------


def _times_(h: Tensor, constant: int) -> Tensor:
    """``h ← h·constant mod 2^32`` for uint32 values in int64, in place, without
    overflowing: the constant's halves multiply separately (each product < 2^48)."""
    carried = (h * (constant >> 16)).bitwise_and_(0xFFFF).bitwise_left_shift_(16)
    return h.mul_(constant & 0xFFFF).add_(carried).bitwise_and_(_MASK)


def fmix32(h: Tensor) -> Tensor:
    """MurmurHash3's 32-bit finalizer on uint32 values held in an int64 tensor.

    Example:
        >>> [hex(int(x)) for x in fmix32(torch.tensor([0, 1, 2]))]
        ['0x0', '0x514e28b7', '0x30f4c306']
    """
    h = h ^ (h >> 16)  # (a copy: the caller's tensor stays; in place from here)
    _times_(h, 0x85EBCA6B)
    h ^= h >> 13
    _times_(h, 0xC2B2AE35)
    h ^= h >> 16
    return h


@functools.lru_cache(maxsize=256)
def _key(seed: int) -> int:
    return int(q.fmix32(np.array([seed], np.uint32))[0])


def random_bits(seed: int, start: int, count: int, device: torch.device | str) -> Tensor:
    """``fmix32(i ⊕ fmix32(seed))`` for element indices i = start … start + count - 1
    (mod 2^32): 32 random bits each, in int64."""
    if not 0 <= int(seed) <= _MASK:
        raise ValueError(f"seed must be in [0, 2**32), got {seed!r}")
    index = torch.arange(start, start + count, dtype=torch.int64, device=device)
    return fmix32(index.bitwise_and_(_MASK).bitwise_xor_(_key(int(seed))))


def uniform(seed: int, start: int, count: int, device: torch.device | str) -> Tensor:
    """Uniform float32 numbers in [0, 1), 24 bits each, as `rmsprop.quantization.uniform`.

    Example:
        >>> print(uniform(5, 0, 3, "cpu"))
        tensor([0.6173, 0.1828, 0.2654])
    """
    bits = random_bits(seed, start, count, device) >> 8
    return bits.to(torch.float32) * (2.0**-24)


# -- the 8-bit format ----------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _tables(device: torch.device) -> dict[Kind, Tensor]:
    """The unsigned map and the signed map's non-negative half (k = 0…127), on ``device``."""
    return {
        "unsigned": torch.from_numpy(q.UNSIGNED_MAP.copy()).to(device),
        "signed": torch.from_numpy(q.SIGNED_MAP[128:].copy()).to(device),
    }


@functools.lru_cache(maxsize=16)
def _decode_tables(device: torch.device) -> dict[Kind, Tensor]:
    return {
        "unsigned": torch.from_numpy(q.UNSIGNED_MAP.copy()).to(device),
        "signed": torch.from_numpy(q.SIGNED_MAP.copy()).to(device),
    }


_TOP: dict[Kind, int] = {"unsigned": 254, "signed": 126}


def _real_flat(values: Tensor) -> Tensor:
    """The flattened real view in float32 (complex: real, imaginary, real, ...)."""
    if values.is_complex():
        values = torch.view_as_real(values.resolve_conj())
    elif not values.is_floating_point():
        raise TypeError(f"expected a float or complex tensor, got {values.dtype}")
    return values.to(torch.float32).reshape(-1).contiguous()


def _check_kind(kind: str) -> None:
    if kind not in ("unsigned", "signed"):
        raise ValueError(f"kind must be 'unsigned' (v) or 'signed' (m, b), got {kind!r}")


def block_scales(flat: Tensor, kind: Kind) -> Tensor:
    """One float32 scale per block of a flat float32 tensor: the block's maximum (unsigned)
    or largest magnitude (signed); NaN for a block holding a NaN or ±inf."""
    blocks = torch.nn.functional.pad(flat, (0, -flat.numel() % q.BLOCK)).view(-1, q.BLOCK)
    scales = (blocks.abs() if kind == "signed" else blocks).amax(dim=1)
    return torch.where(torch.isfinite(scales), scales, torch.nan)


def _lower_code(magnitude: Tensor, kind: Kind, table: Tensor) -> Tensor:
    """`rmsprop.quantization.lower_code` of values' magnitudes, in int64."""
    root = magnitude.sqrt().sqrt()
    guess = (root * 256).floor() - 1 if kind == "unsigned" else (root * 127).floor()
    top = _TOP[kind]
    code = guess.clamp(0, top).to(torch.int64)
    up = (code < top) & (table[(code + 1).clamp(max=top + 1)] <= magnitude)
    down = ~up & (code > 0) & (table[code] > magnitude)
    return code + up.to(torch.int64) - down.to(torch.int64)


def _encode(units: Tensor, kind: Kind, random: Tensor) -> Tensor:
    """uint8 codes of values in units of their block scale, rounded stochastically."""
    table = _tables(units.device)[kind]
    magnitude = units.abs()  # (unsigned values are >= 0 already)
    code = _lower_code(magnitude, kind, table)
    low, high = table[code], table[code + 1]
    code = code + (random * (high - low) < magnitude - low).to(torch.int64)
    if kind == "signed":
        code = torch.where(units < 0, 128 - code, 128 + code)
    return code.to(torch.uint8)


def quantize(values: Tensor, kind: Kind, seed: int) -> Quantized:
    """`rmsprop.quantization.quantize` in torch: the same codes and scales, bit for bit.

    Args:
        values: a real or complex tensor, quantized as its flattened real view in float32
            (unsigned values must not be negative).
        kind: ``"unsigned"`` (v) or ``"signed"`` (m, b).
        seed: the random numbers' seed (`rmsprop.quantization.stream_seed`).

    Returns:
        Codes in the values' real-view shape, on their device, and the block scales.
    """
    _check_kind(kind)
    flat = _real_flat(values)
    scales = block_scales(flat, kind)
    codes = torch.empty(flat.numel(), dtype=torch.uint8, device=flat.device)
    for start in range(0, flat.numel(), _CHUNK):
        part = flat[start : start + _CHUNK]
        per_element = scales[start // q.BLOCK :].repeat_interleave(q.BLOCK)[: part.numel()]
        usable = torch.isfinite(per_element) & (per_element > 0)
        units = torch.where(usable, part / torch.where(usable, per_element, 1.0), 0.0)
        random = uniform(seed, start, part.numel(), flat.device)
        codes[start : start + part.numel()] = _encode(units, kind, random)
    return Quantized(codes.view(real_shape(values)), scales)


def dequantize(codes: Tensor, scales: Tensor, kind: Kind) -> Tensor:
    """Float32 values ``MAP[code]·scale`` in the codes' shape (a real view: `torch.view_as_complex`
    gives a complex buffer back)."""
    _check_kind(kind)
    flat = codes.reshape(-1).to(torch.int64)
    per_element = scales.repeat_interleave(q.BLOCK)[: flat.numel()]
    values: Tensor = _decode_tables(codes.device)[kind][flat] * per_element
    return values.view(codes.shape)


def round_to_bfloat16(values: Tensor, seed: int | None) -> Tensor:
    """Float32 values rounded to bfloat16 (same shape): with a seed, stochastically as
    `rmsprop.quantization.round_to_bfloat16` (add the random bits' upper 16 to the float32
    bits, keep the upper 16: unbiased); ``None``, to nearest even. NaN and ±inf stay."""
    flat = values.to(torch.float32).reshape(-1).contiguous()
    if seed is None:
        return _quiet_nan(flat, flat.to(torch.bfloat16)).view(values.shape)
    rounded = torch.empty_like(flat)
    for start in range(0, flat.numel(), _CHUNK):
        part = flat[start : start + _CHUNK]
        bits = part.view(torch.int32).to(torch.int64) & _MASK
        bits = (bits + (random_bits(seed, start, part.numel(), flat.device) >> 16)) & 0xFFFF0000
        signed = torch.where(bits > 0x7FFFFFFF, bits - (1 << 32), bits).to(torch.int32)
        rounded[start : start + part.numel()] = signed.view(torch.float32)
    # (the low 16 bits are zero now: the cast is exact)
    rounded = torch.where(torch.isfinite(flat), rounded, flat).to(torch.bfloat16)
    return _quiet_nan(flat, rounded).view(values.shape)


def _quiet_nan(flat: Tensor, rounded: Tensor) -> Tensor:
    """NaN as the format's one bfloat16 NaN, 0x7FC0 (a cast may keep other bits)."""
    return rounded.view(torch.int16).masked_fill_(flat.isnan(), 0x7FC0).view(torch.bfloat16)


# -- DTensors: every shard in blocks of its own --------------------------------------------


def is_dtensor(t: Any) -> bool:
    """Whether ``t`` is a DTensor (FSDP2's parameters and their state)."""
    dtensor = _shards.dtensor_class()
    return dtensor is not None and isinstance(t, dtensor)


def _placement_types() -> tuple[type, type]:
    for name in ("torch.distributed.tensor", "torch.distributed._tensor"):  # torch >= 2.5, 2.4
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "Shard"):
            return module.Shard, module.Replicate
    raise RuntimeError("DTensor parameters without torch's DTensor module")  # (never: one exists)


def _scales_placements(p: Tensor) -> tuple[list[Any], int]:
    """The scales' placements for DTensor ``p`` (dim 0 sharded wherever p is sharded) and
    the number of shards. Placements other than Shard and Replicate are refused."""
    shard, replicate = _placement_types()
    placements, shards = [], 1
    for i, placement in enumerate(cast(Any, p).placements):
        if type(placement) is shard:
            placements.append(shard(0))
            shards *= cast(Any, p).device_mesh.size(i)
        elif type(placement) is replicate:
            placements.append(replicate())
        else:
            raise NotImplementedError(
                f"state_dtype='8bit' takes DTensor parameters sharded by Shard or Replicate "
                f"placements, not {placement!r}"
            )
    return placements, shards


def sharded_scales_shape(p: Tensor) -> tuple[int, int]:
    """The global shape ``(shards, count)`` of an 8-bit buffer's scales for DTensor ``p``:
    one row per shard, ``count`` the largest shard's number of blocks (rank 0's: DTensor's
    shards are torch.chunk's, the first ones the largest).

    Example: 103 rows of 100 over 2 ranks are shards of 52 and 51 rows, 21 and 20 blocks:
    shape (2, 21), the second rank's row padded with one 0.
    """
    _, shards = _scales_placements(p)
    shape = list(p.shape)
    mesh = cast(Any, p).device_mesh
    for i, placement in enumerate(cast(Any, p).placements):
        if placement.is_shard():
            dim = placement.dim % max(len(shape), 1)
            shape[dim] = -(-shape[dim] // mesh.size(i))
    numel = math.prod(shape) * (2 if p.is_complex() else 1)
    return shards, -(-numel // q.BLOCK)


def _blocks(codes: Tensor) -> int:
    return -(-codes.numel() // q.BLOCK)


def _like(p: Tensor, local: Tensor, shape: tuple[int, ...] | None = None) -> Tensor:
    """``local`` (this rank's shard) as a DTensor laid out as ``p``: of p's global shape and
    strides, or of ``shape``, contiguous (the codes: p's real view)."""
    stride = tuple(p.stride()) if shape is None else _contiguous_strides(shape)
    p_any = cast(Any, p)
    return cast(
        Tensor,
        _shards.dtensor_class().from_local(
            local,
            p_any.device_mesh,
            p_any.placements,
            run_check=False,
            shape=tuple(p.shape) if shape is None else shape,
            stride=stride,
        ),
    )


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def _sharded(p: Tensor, local: Quantized) -> Quantized:
    """A shard's codes and scales as the DTensors of ``p``'s 8-bit buffer (see the module's
    docstring): the scales padded with zeros to the largest shard's count."""
    shape = sharded_scales_shape(p)
    placements, _ = _scales_placements(p)
    row = torch.zeros(shape[1], dtype=torch.float32, device=local.scales.device)
    row[: local.scales.numel()] = local.scales
    mesh = cast(Any, p).device_mesh
    scales = _shards.dtensor_class().from_local(
        row.view(1, -1), mesh, placements, run_check=False, shape=shape, stride=(shape[1], 1)
    )
    return Quantized(_like(p, local.codes, real_shape(p)), cast(Tensor, scales))


def _shard_scales(codes: Tensor, scales: Tensor) -> Tensor:
    """This rank's scales of DTensor codes: the local row, without its padding (a view)."""
    return _local(scales).view(-1)[: _blocks(_local(codes))]


def filled(p: Tensor, key: str, value: float) -> Quantized:
    """Buffer ``key`` of ``p`` with every element ``value`` (v₀, or 0): one table entry, each
    block's largest, so exact. A DTensor ``p`` gets DTensor codes and scales (every shard's
    blocks filled; the scales' padding 0)."""
    one = quantize(torch.tensor([value]), KIND_OF[key], 0)
    code, scale = int(one.codes[0]), float(one.scales[0])
    local = _local(p)
    codes = torch.full(real_shape(local), code, dtype=torch.uint8, device=local.device)
    scales = torch.full((_blocks(codes),), scale, dtype=torch.float32, device=local.device)
    return _sharded(p, Quantized(codes, scales)) if is_dtensor(p) else Quantized(codes, scales)


# -- how each state tensor is stored -------------------------------------------------------


class StoredFormat(NamedTuple):
    """How a state tensor is stored beyond its dtype.

    Attributes:
        scales: an 8-bit buffer's block scales (None for a float buffer).
        stochastic: a bfloat16 buffer is rounded stochastically (else to nearest).
    """

    scales: Tensor | None
    stochastic: bool


_FORMATS: dict[int, tuple[weakref.ref[Tensor], StoredFormat]] = {}


def keep_format(state: Tensor, scales: Tensor | None = None, *, stochastic: bool = False) -> None:
    """Records how ``state`` is stored, for as long as it lives (read with `format_of`)."""
    key = id(state)
    found = _FORMATS.get(key)
    if found is not None and found[0]() is state:
        kept = found[1]
        if kept.scales is scales and kept.stochastic == stochastic:
            return
    _FORMATS[key] = (
        weakref.ref(state, functools.partial(_forget, key)),
        StoredFormat(scales, stochastic),
    )


def _forget(key: int, _: Any) -> None:
    _FORMATS.pop(key, None)


def format_of(state: Tensor) -> StoredFormat | None:
    """What `keep_format` recorded for this very tensor, or None."""
    found = _FORMATS.get(id(state))
    return found[1] if found is not None and found[0]() is state else None


def keep_formats(p: Tensor, p_state: Mapping[str, Any], stochastic: bool) -> None:
    """Records the formats of one parameter's buffers: an 8-bit buffer's scales, and with
    ``stochastic``, stochastic rounding of bfloat16 buffers of a wider parameter."""
    stochastic = stochastic and p.dtype != torch.bfloat16
    for key in BUFFER_KEYS:
        buffer = p_state.get(key)
        if buffer is None:
            continue
        scales = p_state.get(scales_key(key))
        if scales is not None and is_dtensor(buffer):
            # Kept for the shard, which the steps (and the fused kernels) are handed.
            local = _local(buffer)
            kept = format_of(local)
            if not (kept is not None and _same_view(kept.scales, _local(scales), local)):
                keep_format(local, _shard_scales(buffer, scales))
        elif scales is not None:
            keep_format(buffer, scales)
        elif stochastic and buffer.dtype == torch.bfloat16:
            keep_format(buffer, stochastic=True)


def _same_view(kept: Tensor | None, row: Tensor, codes: Tensor) -> bool:
    """Whether ``kept`` is already the unpadded view of this scales row for these codes (kept
    as is: the CPU kernel's plan holds on to the very tensor)."""
    return (
        kept is not None
        and kept.data_ptr() == row.data_ptr()
        and kept.numel() == _blocks(codes)
        and kept.device == row.device
    )


# -- the step ------------------------------------------------------------------------------

_DTYPE = attrgetter("dtype")


def _used_lists(tensors: StepTensors, hyper: Hyper) -> list[list[Tensor]]:
    lists = [tensors.square_avgs]
    lists += [tensors.grad_avgs] if hyper.centered else []
    lists += [tensors.momentum_buffers] if hyper.momentum > 0 else []
    return lists


def _math_dtype(p: Tensor, states: Iterable[Tensor]) -> torch.dtype:
    """The dtype a step of ``p`` computes in: p's, at least float32 (complex64), and at
    least any float state's (a uint8 code is no float)."""
    dtype = torch.promote_types(p.dtype, torch.complex64 if p.is_complex() else torch.float32)
    for s in states:
        if s.is_floating_point() or s.is_complex():
            dtype = torch.promote_types(dtype, s.dtype)
    return dtype


def _is_stored_narrow(p: Tensor, states: list[Tensor]) -> bool:
    math = _math_dtype(p, states)
    return any(s.dtype != p.dtype and s.dtype != math for s in states)


def float_step_indices(tensors: StepTensors, hyper: Hyper) -> list[int]:
    """The parameters whose state is stored narrower than their math (8-bit codes, bfloat16
    state of float32 parameters, ...), which `step_in_float` steps; state in the parameter's
    own dtype is stepped by the rule itself, as torch does."""
    params = tensors.params
    lists = _used_lists(tensors, hyper)
    param_dtypes = list(map(_DTYPE, params))
    if all(list(map(_DTYPE, listed)) == param_dtypes for listed in lists):
        return []  # (the usual case, in a few C calls)
    return [i for i, p in enumerate(params) if _is_stored_narrow(p, [ls[i] for ls in lists])]


def _decoded(state: Tensor, key: str, p: Tensor, math: torch.dtype) -> Tensor:
    """A buffer's values in the math dtype, in p's shape (the state itself where it is
    stored in that dtype already: stepped in place)."""
    if state.dtype == math:
        return state
    if state.dtype != torch.uint8:
        return state.to(math)
    codes = _local(state)  # (a DTensor's shard: its blocks are the shard's own)
    stored = format_of(codes)
    if stored is None or stored.scales is None:
        raise RuntimeError(
            f"{key} holds 8-bit codes whose block scales this step was not given: step "
            "8-bit state through rmsprop.torch.RMSprop, which keeps them"
        )
    real = dequantize(codes, stored.scales, KIND_OF[key]).to(_real_dtype(math))
    values = torch.view_as_complex(real) if math.is_complex else real
    # The rule steps DTensors as DTensors (its ops on every shard, as with float state).
    return values if codes is state else _like(p, values)


def _real_dtype(dtype: torch.dtype) -> torch.dtype:
    return {torch.complex64: torch.float32, torch.complex128: torch.float64}.get(dtype, dtype)


def _store(state: Tensor, values: Tensor, key: str, step: int) -> None:
    """Writes a buffer's new values back in its format, with the seed of ``step``."""
    if values is state:
        return
    seed = q.stream_seed(step, _BUFFER_INDEX[key])
    if state.dtype == torch.uint8:
        local = _local(state)  # (a DTensor's shard, with element indices in the shard)
        stored = format_of(local)
        assert stored is not None and stored.scales is not None  # (checked by _decoded)
        codes, scales = quantize(_local(values), KIND_OF[key], seed)
        local.copy_(codes.view(local.shape))
        stored.scales.copy_(scales)
        return
    stored = format_of(state)
    if state.dtype == torch.bfloat16 and stored is not None and stored.stochastic:
        store_bfloat16(state, values, seed)
    else:
        state.copy_(values)


def store_bfloat16(state: Tensor, values: Tensor, seed: int) -> None:
    """Writes ``values`` into bfloat16 ``state``, rounded stochastically with ``seed``; a
    DTensor shard by shard, each element with its index in its local shard."""
    _local(state).copy_(round_to_bfloat16(_local(values).to(torch.float32), seed))


def _local(t: Tensor) -> Tensor:
    """A DTensor's local shard (its memory, the very tensor every call), another tensor
    itself."""
    to_local = getattr(t, "to_local", None)
    if to_local is None:
        return t
    with torch.no_grad():  # (with grad, to_local makes a new view each time)
        return to_local()  # type: ignore[no-any-return]


def step_in_float(
    tensors: StepTensors, hyper: Hyper, rule: Rule, *, capturable: bool, differentiable: bool
) -> None:
    r"""Steps parameters whose state is stored narrower than their math, one at a time:
    decode each buffer into the math dtype (at least float32), run ``rule`` (the
    single-tensor rule) on the decoded values, and store the new values in the buffer's
    format, with the seed ``stream_seed(t, buffer)`` of the new step count t:

    .. math::

        \hat v = \mathrm{decode}(v), \quad (\theta, \hat v') = \mathrm{rule}(\theta, g, \hat v),
        \quad v' = \mathrm{encode}(\hat v', \mathrm{seed}(t, \mathrm{buffer}))

    A parameter narrower than float32 (bfloat16 beside 8-bit state) is stepped in float32
    and rounded once, as `rmsprop.quantization.update` does.
    """
    keys = ["square_avg"]
    keys += ["grad_avg"] if hyper.centered else []
    keys += ["momentum_buffer"] if hyper.momentum > 0 else []
    for i, p in enumerate(tensors.params):
        states = [getattr(tensors, _LIST_OF[key])[i] for key in keys]
        math = _math_dtype(p, states)
        work = p if p.dtype == math else p.to(math)
        grad = tensors.grads[i]
        grad = grad if work is p else grad.to(math)
        decoded = {key: _decoded(s, key, p, math) for key, s in zip(keys, states)}
        step = tensors.state_steps[i]
        one = StepTensors(
            [work],
            [grad],
            [decoded["square_avg"]],
            [decoded["grad_avg"]] if "grad_avg" in decoded else [],
            [decoded["momentum_buffer"]] if "momentum_buffer" in decoded else [],
            [step],
        )
        rule(one, hyper, capturable=capturable, differentiable=differentiable)
        count = int(step.item())
        for key, s in zip(keys, states):
            _store(s, decoded[key], key, count)
        if work is not p:
            p.copy_(work)


_LIST_OF = {
    "square_avg": "square_avgs",
    "grad_avg": "grad_avgs",
    "momentum_buffer": "momentum_buffers",
}


# -- checkpoints and sizes -----------------------------------------------------------------


def quantize_buffer(values: Tensor, key: str, step: int) -> Quantized:
    """A float buffer (the parameter's shape) as 8-bit codes and scales, rounded with the
    seed a step ending at ``step`` would use: ``stream_seed(step, buffer)``. A DTensor
    buffer is quantized shard by shard, into DTensor codes and scales."""
    seed = q.stream_seed(step, _BUFFER_INDEX[key])
    stored = quantize(_local(values).detach(), KIND_OF[key], seed)
    return _sharded(values, stored) if is_dtensor(values) else stored


def dequantize_buffer(codes: Tensor, scales: Tensor, key: str, p: Tensor) -> Tensor:
    """An 8-bit buffer as float32 values in ``p``'s shape (complex64 for a complex p); DTensor
    codes and scales (a DTensor ``p``'s) as a DTensor laid out as ``p``, decoded shard by
    shard."""
    if is_dtensor(codes):
        local = _local(codes)
        shard = dequantize_buffer(local, _shard_scales(codes, scales), key, _local(p))
        return _like(p, shard)
    real = dequantize(codes, scales.to(device=codes.device, dtype=torch.float32), KIND_OF[key])
    return torch.view_as_complex(real) if p.is_complex() else real.view(p.shape)


def buffer_nbytes(p: Tensor | int, state_dtype: torch.dtype | str | None) -> int:
    """Bytes one state buffer of a parameter takes (scales included), as the optimizer
    stores it: ``"8bit"``: ``n + 4·⌈n/256⌉`` for n ≥ 4096 real elements, else ``4n``; a
    float dtype: its size; ``None``: the parameter's dtype. ``p`` is a tensor, or a count of
    real float32 elements.

    Example:
        >>> buffer_nbytes(5000, "8bit"), buffer_nbytes(100, "8bit")
        (5080, 400)
        >>> buffer_nbytes(torch.zeros(5000), torch.bfloat16)
        10000
    """
    if isinstance(p, Tensor):
        numel = p.numel() * (2 if p.is_complex() else 1)
        own = p.element_size() // (2 if p.is_complex() else 1)
    else:
        numel, own = int(p), 4
    if state_dtype == "8bit":
        return q.state_bytes(numel, "8bit")
    if state_dtype is None:
        return numel * own
    if isinstance(state_dtype, torch.dtype) and state_dtype.is_floating_point:
        return numel * state_dtype.itemsize
    raise ValueError(
        f"state_dtype must be '8bit', a floating torch.dtype or None, got {state_dtype!r}"
    )


def state_nbytes(state: Mapping[Any, Mapping[str, Any]]) -> int:
    """Bytes an optimizer's state buffers take (codes, scales and float buffers; step counts
    not counted), summed over its parameters: ``state_nbytes(opt.state)``. A DTensor counts
    its local shard, the memory this process holds."""
    keys = {*BUFFER_KEYS, *map(scales_key, BUFFER_KEYS)}
    return sum(
        _local(value).numel() * value.element_size()
        for p_state in state.values()
        for key, value in p_state.items()
        if key in keys and isinstance(value, Tensor)
    )
