r"""Low-memory optimizer state: the format every backend stores, and its NumPy oracle.

RMSprop keeps up to three buffers per parameter: the average of squares v
(never negative), and by rule the average of gradients m (``centered``) and
the momentum buffer b. With ``state_dtype="8bit"`` each buffer is stored in
about one byte per element; with bfloat16 in two. This module is the one
definition of both formats, written so that a fused kernel (Triton, Numba) or
an array library (``jax.numpy``, ``torch``) computes the same codes from the
same float32 values: integer and float32 operations only, a 256-entry table
per map, no data-dependent loops.

**Blocks.** A buffer is quantized along its flattened real view (a complex
buffer is pairs of reals, real part first), in blocks of `BLOCK` = 256
elements; the last block may be partial. Each block stores one float32
*scale*, each element one uint8 *code*, and element i decodes to

.. math::

    x_i = \mathrm{MAP}[\mathrm{code}_i] \cdot \mathrm{scale}_{\lfloor i/256 \rfloor}

Buffers of fewer than `MIN_QUANTIZED_NUMEL` = 4096 real elements are not
quantized: they stay float32 (as in bitsandbytes and torchao), so 8-bit state
costs at most 1 + 4·⌈n/256⌉/n ≤ 1.017 bytes per element (`state_bytes`).

**Maps** (tables of 256 float32 values in units of the block scale), both
fourth powers, whose codes crowd towards the block's largest values:

* `UNSIGNED_MAP`, for v: ``MAP[c] = ((c + 1)/256)⁴``, c = 0..255, and the
  block scale is the block's maximum. Code 255 is 1.0, code 0 is 2^-32 ≈ 2.3e-10;
  no code is 0, so in a block whose scale is positive no element decodes to 0
  and 1/√v stays finite. Two neighbours differ by a factor ≈ 1 + 4/(c + 1):
  1.6 % next to the block's maximum, 5 % at 1e-2 of it, 16 % at 1e-4 (a
  gradient 1 % of the block's largest), and the map reaches 9.6 decades of v
  (4.8 of |g|); below that an element is stored as code 0, its v (and so its
  denominator) rounded up. Why not a log map (the same relative gap
  everywhere): stochastic rounding's error is unbiased but enters the running
  average at every step, and its spread there grows to about
  gap·√(1/(1 - ρ²)) (7× the gap at ρ = 0.99). Most of a block's v is within
  a decade or two of its maximum, where the quartic is 2-6× finer than
  2^((c - 255)/8), the log map with the same range: after 10⁴ steps at
  ρ = 0.99, the median deviation from float32 was 3 % with the quartic, 13 %
  with that log map. A block whose maximum is 0 has scale 0 and decodes to
  exactly 0, so the initial v = 0 is exact.
* `SIGNED_MAP`, for m and b: ``MAP[c] = sign(k)·(min(|k|, 127)/127)⁴``,
  k = c - 128, and the block scale is the block's largest magnitude. Code 128
  is 0, 255 is +1 and 1 is -1, symmetric (``MAP[128 + k] = -MAP[128 - k]``),
  dense near 0: the smallest magnitude is 127^-4 ≈ 3.8e-9, the widest gap
  (next to ±1) 3.1 %. Code 0 decodes to -1 as code 1 does and is never written.

**Encoding**, element by element, once the block's new scale is known: the
value in units of the scale ``x = value/scale`` (0 where the scale is 0 or not
finite) lies in [0, 1] (unsigned) or [-1, 1] (signed). Its lower neighbour in
the table is found in closed form and corrected by at most one step
(`lower_code`), then **stochastic rounding** picks the upper neighbour with
probability (x - lo)/(hi - lo): ``up = u·(hi - lo) < x - lo`` for a uniform
u in [0, 1). The decoded value is then unbiased, E[x̂] = x, so a small change
of the state survives on average instead of being rounded away at every step
(with round-to-nearest the average of squares freezes: "signal swamping").
Values equal to a table entry are stored exactly.

**Random numbers.** ``u = uniform(seed, i)`` for element i of the flattened
real view of the (local) tensor: ``fmix32(i ⊕ fmix32(seed)) >> 8``, times
2^-24, where fmix32 is MurmurHash3's 32-bit finalizer and i is taken modulo
2^32. The seed of a step's buffer is ``stream_seed(t, buffer) = 4·t + buffer``
(mod 2^32), with t the step count after the update (1 on the first) and
buffer `SQUARE_AVG` (0), `GRAD_AVG` (1) or `MOMENTUM_BUFFER` (2), so no two
buffers and no two steps use the same numbers. A sharded tensor is quantized
shard by shard, with each element's index in its local shard; blocks never
straddle shards. Parameters (and shards) of the same size share the same
numbers at a step: each one's rounding is still unbiased.

**Non-finite values.** A block holding a NaN or ±inf gets a NaN scale and
decodes to NaN everywhere (its codes are those of 0), so a diverged run fails
visibly, as it would in float32, a block at a time.

**bfloat16 state** keeps the upper 16 bits of each float32 value
(`round_to_bfloat16`), rounded stochastically with the same random numbers:
add the hash's upper 16 bits to the float32's bits, then clear the lower 16.

`update` is the 8-bit (or bfloat16) step as a fused kernel performs it:
decode every buffer to float32, run `rmsprop.numpy`'s float32 rule, encode
the new buffers (each block's scale from its new values first).

Example:
    >>> import numpy as np
    >>> import rmsprop
    >>> from rmsprop import quantization as q
    >>> v = np.linspace(0.01, 2.0, 5000, dtype=np.float32) ** 2
    >>> stored = q.quantize(v, "unsigned", seed=q.stream_seed(1, q.SQUARE_AVG))
    >>> stored.codes.dtype, stored.codes.shape, stored.scales.shape
    (dtype('uint8'), (5000,), (20,))
    >>> decoded = q.dequantize(stored, "unsigned")
    >>> bool(decoded[-1] == v[-1]), bool(np.all(np.abs(decoded - v) < 0.04 * v))
    (True, True)
    >>> q.state_bytes(5000, "8bit"), q.state_bytes(1000, "8bit")  # small: float32
    (5080, 4000)

    One RMSprop step with 8-bit state:

    >>> config = rmsprop.flavor("pytorch", momentum=0.9)
    >>> theta = np.ones((64, 80), np.float32)
    >>> state = q.init(theta, config, "8bit")
    >>> theta, state = q.update(theta, np.full_like(theta, 0.5), state, config)
    >>> print(theta[0, 0], state.step, type(state.square_avg).__name__)
    0.90000004 1 QuantizedBuffer
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np

from rmsprop import numpy as rnp
from rmsprop._config import Config

__all__ = [
    "BLOCK",
    "GRAD_AVG",
    "MIN_QUANTIZED_NUMEL",
    "MOMENTUM_BUFFER",
    "SIGNED_MAP",
    "SQUARE_AVG",
    "STATE_DTYPES",
    "UNSIGNED_MAP",
    "LowMemoryState",
    "QuantizedBuffer",
    "block_scales",
    "bytes_per_element",
    "dequantize",
    "encode",
    "fmix32",
    "from_bfloat16",
    "init",
    "is_quantized",
    "lower_code",
    "quantize",
    "random_bits",
    "round_to_bfloat16",
    "state_bytes",
    "stream_seed",
    "uniform",
    "update",
]

Kind = Literal["unsigned", "signed"]
Rounding = Literal["stochastic", "nearest"]
StateDtype = Literal["8bit", "bfloat16", "float32"]

BLOCK = 256
"""Elements per block: each block of the flattened real view has one float32 scale."""

MIN_QUANTIZED_NUMEL = 4096
"""Buffers with fewer real elements stay float32."""

STATE_DTYPES: tuple[str, ...] = ("8bit", "bfloat16", "float32")
"""The state formats `state_bytes` and `init` know."""

MAP_POWER = 4
UNSIGNED_MAP: np.ndarray = (((np.arange(256) + 1) / 256.0) ** MAP_POWER).astype(np.float32)
"""v's map: ``UNSIGNED_MAP[c] = ((c + 1)/256)⁴`` (in float64, rounded to float32)."""

_SIGNED_K = np.arange(256) - 128
SIGNED_MAP: np.ndarray = (
    np.sign(_SIGNED_K) * (np.minimum(np.abs(_SIGNED_K), 127) / 127.0) ** MAP_POWER
).astype(np.float32)
"""m's and b's map: ``SIGNED_MAP[c] = sign(k)·(min(|k|, 127)/127)⁴``, k = c - 128 (in
float64, rounded to float32)."""

_MAGNITUDES = SIGNED_MAP[128:]  # (k/127)⁴ for k = 0..127: the signed map's non-negative half
_TOP = {"unsigned": 254, "signed": 126}  # the largest lower neighbour (its upper one is 1.0)

SQUARE_AVG, GRAD_AVG, MOMENTUM_BUFFER = 0, 1, 2
"""Which buffer a seed is for (`stream_seed`)."""

_KIND_OF: dict[int, Kind] = {SQUARE_AVG: "unsigned", GRAD_AVG: "signed", MOMENTUM_BUFFER: "signed"}
_UINT32 = 2**32


class QuantizedBuffer(NamedTuple):
    """A buffer in 8-bit blocks.

    Attributes:
        codes: uint8, one per element of the flattened real view.
        scales: float32, one per block of `BLOCK` elements (the last may be partial).
    """

    codes: np.ndarray
    scales: np.ndarray


class LowMemoryState(NamedTuple):
    """One parameter's state in a low-memory format, with `rmsprop.numpy.LeafState`'s names.

    Each buffer is stored flat, over the parameter's real view: a `QuantizedBuffer`
    (8-bit), a uint16 array of bfloat16 bits (bfloat16), or a float32 array (an
    8-bit buffer too small to quantize, see `is_quantized`).

    Attributes:
        step: how many updates this parameter has had.
        square_avg: v.
        grad_avg: m (``None`` unless centered).
        momentum_buffer: b (``None`` without momentum).
    """

    step: int
    square_avg: QuantizedBuffer | np.ndarray
    grad_avg: QuantizedBuffer | np.ndarray | None
    momentum_buffer: QuantizedBuffer | np.ndarray | None


# -- random numbers -----------------------------------------------------------------


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer, a bijection of uint32 that mixes every bit.

    ``h ^= h >> 16; h *= 0x85EBCA6B; h ^= h >> 13; h *= 0xC2B2AE35; h ^= h >> 16``,
    with uint32 wrap-around.

    Example:
        >>> [hex(int(x)) for x in fmix32(np.array([0, 1, 2], np.uint32))]
        ['0x0', '0x514e28b7', '0x30f4c306']
    """
    h = np.array(h, dtype=np.uint32, ndmin=1)  # arrays: uint32 products wrap without warnings
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


def stream_seed(step: int, buffer: int) -> int:
    """The seed of buffer ``buffer`` (`SQUARE_AVG`, `GRAD_AVG`, `MOMENTUM_BUFFER`) at step
    ``step`` (the count after the update, 1 on the first): ``(4·step + buffer) mod 2^32``."""
    if buffer not in _KIND_OF:
        raise ValueError(
            f"buffer must be SQUARE_AVG (0), GRAD_AVG (1) or MOMENTUM_BUFFER (2), got {buffer!r}"
        )
    return (4 * int(step) + buffer) % _UINT32


def random_bits(seed: int, index: np.ndarray) -> np.ndarray:
    """``fmix32(index ⊕ fmix32(seed))``: 32 random bits per element index (mod 2^32)."""
    _check_seed(seed)
    key = fmix32(np.array([seed], np.uint32))[0]
    index = np.asarray(index)
    # Indices past 2^32 wrap: their numbers repeat every 4 GiB of elements.
    wrapped = (index.astype(np.uint64) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    return fmix32(wrapped ^ key).reshape(index.shape)


def uniform(seed: int, index: np.ndarray) -> np.ndarray:
    """Uniform float32 numbers in [0, 1), one per element index, 24 bits each:
    ``(random_bits(seed, index) >> 8) · 2^-24`` (exact in float32).

    Example:
        >>> print(uniform(5, np.arange(3)))
        [0.61725533 0.18277037 0.26538265]
    """
    bits = random_bits(seed, index) >> np.uint32(8)
    return bits.astype(np.float32) * np.float32(2.0**-24)


# -- the 8-bit format ----------------------------------------------------------------


def is_quantized(numel: int) -> bool:
    """Whether a buffer of ``numel`` real elements is stored in 8 bits (else float32)."""
    return int(numel) >= MIN_QUANTIZED_NUMEL


def state_bytes(numel: int, state_dtype: str) -> int:
    """Bytes one state buffer of ``numel`` real elements takes (scales included).

    ``"8bit"``: ``numel + 4·⌈numel/256⌉`` if `is_quantized`, else ``4·numel``;
    ``"bfloat16"``: ``2·numel``; ``"float32"``: ``4·numel``.
    """
    _check_state_dtype(state_dtype)
    numel = int(numel)
    if numel < 0:
        raise ValueError(f"numel must be >= 0, got {numel}")
    if state_dtype == "bfloat16":
        return 2 * numel
    if state_dtype == "8bit" and is_quantized(numel):
        return numel + 4 * -(-numel // BLOCK)
    return 4 * numel


def bytes_per_element(numel: int, state_dtype: str) -> float:
    """`state_bytes` per element (0 for an empty buffer): at most 1.017 for 8-bit buffers
    that are quantized, 4 for those that are not."""
    return state_bytes(numel, state_dtype) / numel if numel else 0.0


def block_scales(values: np.ndarray, kind: Kind) -> np.ndarray:
    """One float32 scale per block of `BLOCK` elements of a flat float32 array.

    ``"unsigned"``: the block's maximum; ``"signed"``: its largest magnitude. A
    block holding a NaN or ±inf gets NaN.
    """
    _check_kind(kind)
    padded = np.zeros(-(-values.size // BLOCK) * BLOCK, np.float32)
    padded[: values.size] = values
    blocks = padded.reshape(-1, BLOCK)
    if kind == "signed":
        blocks = np.abs(blocks)
    scales = blocks.max(axis=1)
    return np.where(np.isfinite(scales), scales, np.float32(np.nan)).astype(np.float32)


def lower_code(units: np.ndarray, kind: Kind) -> np.ndarray:
    """The lower neighbour of each value in units of its block scale, as an int32 index.

    Unsigned (``units`` in [0, 1]): the largest code c ≤ 254 with
    ``UNSIGNED_MAP[c] ≤ x``, or 0 below the table. Signed: the same over the
    magnitudes, k ≤ 126 with ``(k/127)⁴ ≤ |x|`` (the code is then 128 ± k).

    Closed form, then one correction step (so a root rounded differently
    still gives the same answer); in float32, with r = sqrt(sqrt(|x|)):

    * unsigned: ``c = clamp(floor(256·r) - 1, 0, 254)``;
    * signed: ``k = clamp(floor(127·r), 0, 126)``;

    then ``c += 1`` if ``c < top`` and ``MAP[c + 1] ≤ x``, else ``c -= 1`` if
    ``c > 0`` and ``MAP[c] > x`` (top = 254 or 126; MAP the unsigned map or the
    magnitudes ``SIGNED_MAP[128 + k]``).
    """
    _check_kind(kind)
    units = np.asarray(units, np.float32)
    units = np.abs(units)  # unsigned values are >= 0 already
    root = np.sqrt(np.sqrt(units))
    if kind == "unsigned":
        table, guess = UNSIGNED_MAP, np.floor(np.float32(256) * root) - 1
    else:
        table, guess = _MAGNITUDES, np.floor(np.float32(127) * root)
    top = _TOP[kind]
    code = np.clip(guess, 0, top).astype(np.int32)
    up = (code < top) & (table[np.minimum(code + 1, top + 1)] <= units)
    down = ~up & (code > 0) & (table[code] > units)
    corrected: np.ndarray = code + up.astype(np.int32) - down.astype(np.int32)
    return corrected


def encode(units: np.ndarray, kind: Kind, random: np.ndarray | None) -> np.ndarray:
    """uint8 codes for values in units of their block scale.

    Args:
        units: float32 values in [0, 1] (unsigned) or [-1, 1] (signed).
        kind: ``"unsigned"`` or ``"signed"``.
        random: one uniform number in [0, 1) per value (`uniform`): round up
            where ``random·(hi - lo) < x - lo``, lo and hi the two neighbours
            (`lower_code`). ``None``: round to the nearest neighbour (ties to the
            smaller magnitude), which freezes slowly changing state; for
            comparison only.
    """
    units = np.asarray(units, np.float32)
    code = lower_code(units, kind)
    table = UNSIGNED_MAP if kind == "unsigned" else _MAGNITUDES
    magnitude = units if kind == "unsigned" else np.abs(units)
    low, high = table[code], table[code + 1]
    if random is None:
        up = (magnitude - low) > (high - magnitude)
    else:
        up = np.asarray(random, np.float32) * (high - low) < (magnitude - low)
    code = code + up.astype(np.int32)
    if kind == "signed":
        code = np.where(units < 0, 128 - code, 128 + code)
    codes: np.ndarray = code.astype(np.uint8)
    return codes


def quantize(
    values: np.ndarray, kind: Kind, seed: int, *, rounding: Rounding = "stochastic"
) -> QuantizedBuffer:
    """Stores a buffer in 8-bit blocks.

    Args:
        values: a real or complex array (quantized as its flattened real view,
            in float32); unsigned values must not be negative.
        kind: ``"unsigned"`` (v) or ``"signed"`` (m, b).
        seed: the random numbers' seed (`stream_seed`), in [0, 2^32).
        rounding: ``"stochastic"`` (the format's) or ``"nearest"`` (for comparison).

    Returns:
        The codes (uint8, one per real element) and scales (float32, one per block).

    Raises:
        ValueError: an unknown ``kind`` or ``rounding``, a negative unsigned
            value, or a seed out of range.
        TypeError: ``values`` is not a float or complex array.
    """
    _check_kind(kind)
    if rounding not in ("stochastic", "nearest"):
        raise ValueError(f"rounding must be 'stochastic' or 'nearest', got {rounding!r}")
    flat = _real_view(values)
    if kind == "unsigned" and np.any(flat < 0):
        raise ValueError("the unsigned map stores values >= 0 (an average of squares)")
    scales = block_scales(flat, kind)
    per_element = np.repeat(scales, BLOCK)[: flat.size]
    usable = np.isfinite(per_element) & (per_element > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        units = np.where(usable, flat / np.where(usable, per_element, 1), np.float32(0))
    random = (
        uniform(seed, np.arange(flat.size, dtype=np.int64)) if rounding == "stochastic" else None
    )
    if random is None:
        _check_seed(seed)
    return QuantizedBuffer(encode(units, kind, random), scales)


def dequantize(buffer: QuantizedBuffer, kind: Kind) -> np.ndarray:
    """A quantized buffer's values: flat float32, ``MAP[code]·scale`` (the real view:
    ``.view(np.complex64)`` gives a complex buffer back)."""
    table = _table(kind)
    codes = np.asarray(buffer.codes)
    if codes.dtype != np.uint8 or codes.ndim != 1:
        raise TypeError(f"codes must be a flat uint8 array, got {codes.dtype} {codes.shape}")
    scales = np.asarray(buffer.scales, np.float32)
    if scales.shape != (-(-codes.size // BLOCK),):
        raise ValueError(
            f"{codes.size} codes need {-(-codes.size // BLOCK)} scales, got {scales.shape}"
        )
    values: np.ndarray = table[codes] * np.repeat(scales, BLOCK)[: codes.size]
    return values


# -- bfloat16 ------------------------------------------------------------------------------


def round_to_bfloat16(values: np.ndarray, seed: int | None) -> np.ndarray:
    """float32 values rounded to bfloat16, as uint16 bit patterns.

    With a seed, stochastically: ``(bits + (random_bits(seed, i) >> 16)) & 0xFFFF0000``,
    which rounds the magnitude up with probability (its dropped 16 bits)/2^16,
    so the result is unbiased. ``None``: to nearest even, as a cast does.
    NaN stays NaN and ±inf stays ±inf.
    """
    flat = _real_view(values)
    bits = flat.view(np.uint32).astype(np.uint64)  # room for the carry
    if seed is None:
        bits = bits + 0x7FFF + ((bits >> np.uint64(16)) & np.uint64(1))
    else:
        bits = bits + (random_bits(seed, np.arange(flat.size)) >> np.uint32(16))
    rounded = (bits >> np.uint64(16)).astype(np.uint16)
    finite = np.isfinite(flat)
    kept = (flat.view(np.uint32) >> np.uint32(16)).astype(np.uint16)  # ±inf: exact
    kept = np.where(np.isnan(flat), np.uint16(0x7FC0), kept)
    return np.where(finite, rounded, kept).astype(np.uint16)


def from_bfloat16(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) as float32 values (exact)."""
    bits = np.asarray(bits)
    if bits.dtype != np.uint16:
        raise TypeError(f"bfloat16 bits must be uint16, got {bits.dtype}")
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


# -- the step ------------------------------------------------------------------------------


def init(param: np.ndarray, config: Config, state_dtype: StateDtype = "8bit") -> LowMemoryState:
    """The initial `LowMemoryState` of one parameter.

    Args:
        param: a real or complex array.
        config: the rule: which buffers exist and where v starts.
        state_dtype: ``"8bit"`` (quantized if `is_quantized`, else float32),
            ``"bfloat16"`` or ``"float32"``.

    Raises:
        ValueError: an unknown ``state_dtype``.
    """
    _check_state_dtype(state_dtype)
    numel = _real_view(np.zeros(np.shape(param), np.asarray(param).dtype)).size
    fill = np.full(numel, config.initial_square_avg, np.float32)
    zeros = np.zeros(numel, np.float32)
    return LowMemoryState(
        step=0,
        square_avg=_store(fill, state_dtype, SQUARE_AVG, 0, "stochastic"),
        grad_avg=_store(zeros, state_dtype, GRAD_AVG, 0, "stochastic") if config.centered else None,
        momentum_buffer=(
            _store(zeros, state_dtype, MOMENTUM_BUFFER, 0, "stochastic")
            if config.momentum > 0
            else None
        ),
    )


def update(
    param: np.ndarray,
    grad: np.ndarray,
    state: LowMemoryState,
    config: Config,
    *,
    rounding: Rounding = "stochastic",
) -> tuple[np.ndarray, LowMemoryState]:
    """One RMSprop step with low-memory state, as a fused kernel computes it.

    Per parameter, in one pass: decode each buffer to float32; run
    `rmsprop.numpy.update`'s rule in float32 (or the parameter's dtype if
    wider); encode each new buffer in its format, with the seed
    ``stream_seed(t, buffer)`` for the new step count t. An 8-bit buffer's
    block scales are the new values' (so the block's largest value is stored
    exactly), then every element is encoded against them.

    Args:
        param: the parameter (real or complex); the returned one has its dtype.
        grad: its gradient, same shape.
        state: what `init` or the previous `update` returned.
        config: the rule (pass ``config.replace(lr=...)`` to schedule it).
        rounding: ``"stochastic"`` (the format's) or ``"nearest"`` (which
            freezes slowly changing state: for comparison only).

    Returns:
        ``(new_param, new_state)``.
    """
    if not isinstance(state, LowMemoryState):
        raise TypeError(f"state must be a LowMemoryState (from init), got {type(state).__name__}")
    param, grad = np.asarray(param), np.asarray(grad)
    if grad.shape != param.shape:
        raise ValueError(f"gradient shape {grad.shape} != parameter shape {param.shape}")
    math_dtype = np.result_type(param.dtype, np.float32)
    step = state.step + 1

    def decoded(buffer: QuantizedBuffer | np.ndarray | None, which: int) -> np.ndarray | None:
        if buffer is None:
            return None
        flat = _load(buffer, _KIND_OF[which]).astype(np.finfo(math_dtype).dtype)
        return flat.view(math_dtype).reshape(param.shape)

    leaf = rnp.LeafState(
        state.step,
        decoded(state.square_avg, SQUARE_AVG),  # type: ignore[arg-type]
        decoded(state.grad_avg, GRAD_AVG),
        decoded(state.momentum_buffer, MOMENTUM_BUFFER),
    )
    new_param, new = rnp.update(param.astype(math_dtype), grad.astype(math_dtype), leaf, config)

    def encoded(
        old: QuantizedBuffer | np.ndarray | None, value: np.ndarray | None, which: int
    ) -> QuantizedBuffer | np.ndarray | None:
        if old is None or value is None:
            return None
        return _store(_real_view(value), _format_of(old), which, step, rounding)

    return np.asarray(new_param).astype(param.dtype), LowMemoryState(
        step,
        encoded(state.square_avg, new.square_avg, SQUARE_AVG),  # type: ignore[arg-type]
        encoded(state.grad_avg, new.grad_avg, GRAD_AVG),
        encoded(state.momentum_buffer, new.momentum_buffer, MOMENTUM_BUFFER),
    )


# -- helpers -------------------------------------------------------------------------------


def _store(
    values: np.ndarray, state_dtype: str, which: int, step: int, rounding: Rounding
) -> QuantizedBuffer | np.ndarray:
    """Flat float32 ``values`` in ``state_dtype``, with buffer ``which``'s seed at ``step``."""
    seed = stream_seed(step, which)
    if state_dtype == "bfloat16":
        return round_to_bfloat16(values, seed if rounding == "stochastic" else None)
    if state_dtype == "8bit" and is_quantized(values.size):
        return quantize(values, _KIND_OF[which], seed, rounding=rounding)
    return values.astype(np.float32)


def _load(buffer: QuantizedBuffer | np.ndarray, kind: Kind) -> np.ndarray:
    """A stored buffer as flat float32."""
    if isinstance(buffer, QuantizedBuffer):
        return dequantize(buffer, kind)
    if buffer.dtype == np.uint16:
        return from_bfloat16(buffer)
    return np.asarray(buffer, np.float32)


def _format_of(buffer: QuantizedBuffer | np.ndarray) -> str:
    if isinstance(buffer, QuantizedBuffer):
        return "8bit"
    return "bfloat16" if buffer.dtype == np.uint16 else "8bit"  # float32: too small for 8 bits


def _real_view(values: np.ndarray) -> np.ndarray:
    """The flattened real view in float32 (complex: real, imaginary, real, ...)."""
    values = np.asarray(values)
    if values.dtype.kind == "c":
        values = np.ascontiguousarray(values).view(values.real.dtype)
    elif values.dtype.kind != "f":
        raise TypeError(f"expected a float or complex array, got {values.dtype}")
    return np.ascontiguousarray(values, dtype=np.float32).reshape(-1)


def _check_kind(kind: str) -> None:
    if kind not in ("unsigned", "signed"):
        raise ValueError(f"kind must be 'unsigned' (v) or 'signed' (m, b), got {kind!r}")


def _table(kind: str) -> np.ndarray:
    _check_kind(kind)
    return UNSIGNED_MAP if kind == "unsigned" else SIGNED_MAP


def _check_seed(seed: int) -> None:
    if not 0 <= int(seed) < _UINT32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed!r}")


def _check_state_dtype(state_dtype: str) -> None:
    if state_dtype not in STATE_DTYPES:
        raise ValueError(
            f"state_dtype must be one of {', '.join(map(repr, STATE_DTYPES))}, got {state_dtype!r}"
        )
