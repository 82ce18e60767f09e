"""The fused CPU step: one pass over memory per tensor, every `Config` variant, all cores.

An RMSprop step is pure memory traffic, so the kernel reads θ, g, v (and m, b
when the rule needs them) once and writes θ, v (m, b) once, with no
parameter-sized temporaries. It is one Numba loop, compiled (and cached on
disk) for each combination of dtype and optional buffers; the variants that
don't change which arrays are touched (ε placement, weight decay form, lr in
or out of the momentum buffer, Nesterov, bias correction, maximize) are
folded into per-tensor coefficients, so one loop body serves them all at no
extra cost: multiplying by 1 or adding 0 is exact.

float32 and float64 tensors go through a `Table` of their addresses: one
kernel call per thread updates all of them, so a step's host work does not
grow with the number of tensors. Small steps run inline; large ones are split
into equal shares, each thread taking one. 16-bit tensors are `Task`s,
converted chunk by chunk into thread-local float32 buffers that stay in cache,
so the math is float32 and memory is still crossed once.

Which threads take the shares (`threading_layer()`):

- ``"tbb"``: Numba's TBB threading layer runs a ``prange`` over the shares
  (`parallel_table_kernel`, a few microseconds a launch). It needs the ``tbb``
  package (in the ``fast`` extra) and is used only where TBB is, or will be,
  the layer Numba itself uses: TBB is safe under fork and when several Python
  threads step at once. Numba's other layers are not (GNU OpenMP does not
  survive a fork, workqueue aborts on concurrent launches), so a user's
  ``NUMBA_THREADING_LAYER=omp`` or ``workqueue`` keeps the pool, and this
  module never starts them.
- ``"pool"``: a small Python thread pool (the kernel releases the GIL), about
  0.07 ms a round trip on a 2-core machine. It takes the 16-bit tasks always,
  and the tables without TBB or with ``RMSPROP_CPU_THREADS=pool``.

Both backends launch it: `rmsprop.numpy` on arrays, `rmsprop.torch` on the
memory of CPU tensors. Its per-tensor scalars are `rmsprop._lowering`'s
`Coefficients`.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import os
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from typing import Any, NamedTuple

import numpy as np

from rmsprop._lowering import Coefficients

__all__ = [
    "AVAILABLE",
    "CHUNK",
    "KERNEL_DTYPES",
    "QUANTIZED_BLOCK",
    "SERIAL_BELOW",
    "SERIAL_BELOW_POOL",
    "WHY_UNAVAILABLE",
    "Bfloat16StateTable",
    "QuantizedTable",
    "Table",
    "Task",
    "as_array",
    "bfloat16_table_kernel",
    "num_threads",
    "parallel_bfloat16_table_kernel",
    "parallel_quantized_table_kernel",
    "parallel_table_kernel",
    "quantized_table_kernel",
    "run",
    "table_kernel",
    "task",
    "threading_layer",
    "wait_for_warm_up",
    "warm_up",
    "warm_up_in_background",
]

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
# Below this many elements in a table, one thread does it where TBB's threads take the
# shares. One float32 tensor, plain rule, one thread inline against two TBB threads, medians
# in µs (2-core machine, 2026-12-05): 16K 5.1 / 7.2, 32K 10.0 / 10.2, 48K 15.2 / 12.3,
# 64K 20.6 / 15.3, 128K 39.8 / 25.4, 256K 76.7 / 43.7. Under load from other processes
# two threads gained nothing up to 256K, but lost only the ~2 µs launch: a TBB thread that
# is late leaves its share to the caller, where a pool thread is waited for.
SERIAL_BELOW = 1 << 16
# The same for the Python pool, whose hand-off costs about 0.1 ms here (2-core machine:
# 262K elements ran faster on one thread, 524K on two).
SERIAL_BELOW_POOL = 3 << 17
PIECES_PER_THREAD = 2
KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _kernel_source(p: Any, g: Any, v: Any, m: Any, b: Any, c: Any) -> None:
    # Numba compiles one version per dtype and per None-ness of m and b; the
    # `is None` branches are pruned at compile time, and the loop vectorizes.
    g_sign, l2, decay_scale, rho, one_minus_rho, bias = c[0], c[1], c[2], c[3], c[4], c[5]
    eps_in, eps_out, mu, buf_scale, nest_u, nest_b, lr_out = c[6:13]
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

# Rows of a table's addresses.
PARAM, GRAD, SQUARE_AVG, GRAD_AVG, BUFFER = range(5)
_BIAS = Coefficients._fields.index("bias")


def _table_kernel_source(addresses: Any, pieces: Any, c: Any, m_marker: Any, b_marker: Any) -> None:
    # Each row of `pieces` is (tensor, start, stop): that range of the tensor's
    # arrays, reached through their addresses. The markers are None when the
    # rule has no m (b), so those branches are pruned at compile time.
    dtype = c.dtype
    size = c.itemsize
    for row in range(pieces.shape[0]):
        t, start, stop = pieces[row, 0], pieces[row, 1], pieces[row, 2]
        n = stop - start
        offset = start * size
        p = numba.carray(_pointer(addresses[PARAM, t] + offset), n, dtype)
        g = numba.carray(_pointer(addresses[GRAD, t] + offset), n, dtype)
        v = numba.carray(_pointer(addresses[SQUARE_AVG, t] + offset), n, dtype)
        if m_marker is None:
            if b_marker is None:
                _kernel(p, g, v, None, None, c[t])
            else:
                b = numba.carray(_pointer(addresses[BUFFER, t] + offset), n, dtype)
                _kernel(p, g, v, None, b, c[t])
        else:
            m = numba.carray(_pointer(addresses[GRAD_AVG, t] + offset), n, dtype)
            if b_marker is None:
                _kernel(p, g, v, m, None, c[t])
            else:
                b = numba.carray(_pointer(addresses[BUFFER, t] + offset), n, dtype)
                _kernel(p, g, v, m, b, c[t])


if AVAILABLE:
    from numba.core import cgutils
    from numba.extending import intrinsic

    def _pointer_typing(typingctx: Any, address: Any) -> Any:
        """An integer address as the pointer `numba.carray` takes."""

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            return builder.inttoptr(args[0], cgutils.voidptr_t)

        return numba.types.voidptr(numba.types.int64), codegen

    _pointer: Any = intrinsic(_pointer_typing)
    table_kernel: Any = numba.njit(nogil=True, cache=True, error_model="numpy", boundscheck=False)(
        _table_kernel_source
    )
else:
    table_kernel = None


def _parallel_table_kernel_source(
    addresses: Any, rows: Any, bounds: Any, c: Any, m_marker: Any, b_marker: Any
) -> None:
    # Share k is rows[bounds[k]:bounds[k + 1]]; Numba's threads take one share each.
    for share in numba.prange(bounds.size - 1):
        table_kernel(addresses, rows[bounds[share] : bounds[share + 1]], c, m_marker, b_marker)


# Compiling this (or loading it from the cache) starts Numba's threading layer: only after
# `_tbb_ready()` has said yes.
parallel_table_kernel: Any = (
    numba.njit(parallel=True, nogil=True, cache=True, error_model="numpy", boundscheck=False)(
        _parallel_table_kernel_source
    )
    if AVAILABLE
    else None
)


class Table:
    """Same-dtype tensors one kernel call per thread updates, reached through their addresses.

    ``addresses[r, i]`` is the address of tensor i's θ, g, v, m or b (rows 0
    to 4; 0 where the rule has no m or b), ``coefficients[i]`` its
    `Coefficients` in the kernel dtype. The owner keeps the memory alive and
    the addresses current: the kernel trusts them.
    """

    def __init__(
        self, dtype: Any, numels: Sequence[int], grad_avg: bool = False, momentum: bool = False
    ) -> None:
        self.dtype = np.dtype(dtype)
        if self.dtype not in KERNEL_DTYPES:
            raise TypeError(f"a Table holds float32 or float64 memory, not {self.dtype}")
        self.numels = list(numels)
        self.total = sum(self.numels)
        self.addresses = np.zeros((5, len(self.numels)), np.int64)
        self.coefficients = np.zeros((len(self.numels), len(Coefficients._fields)), self.dtype)
        marker = np.zeros(0, self.dtype)
        self.markers = (marker if grad_avg else None, marker if momentum else None)
        self._shares: dict[tuple[int, int], list[np.ndarray]] = {}
        self._packed: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def set_coefficients(self, c: Coefficients, bias: Iterable[float] | None = None) -> None:
        """Every tensor's coefficients: ``c``, with one ``bias`` per tensor if given."""
        self.coefficients[:] = np.array(c, self.dtype)
        if bias is not None:
            self.coefficients[:, _BIAS] = np.fromiter(bias, np.float64, len(self.numels))

    def shares(self, threads: int, serial_below: int | None = None) -> list[np.ndarray]:
        """Each thread's (tensor, start, stop) rows: about the same number of elements each;
        one share below ``serial_below`` elements (default `SERIAL_BELOW`)."""
        serial_below = SERIAL_BELOW if serial_below is None else serial_below
        key = (threads, serial_below)
        found = self._shares.get(key)
        if found is None:
            found = self._shares[key] = self._split(threads, serial_below)
        return found

    def _split(self, threads: int, serial_below: int) -> list[np.ndarray]:
        return _split(self.numels, threads, serial_below)

    def run_rows(self, rows: np.ndarray) -> None:
        """Steps these (tensor, start, stop) rows on the calling thread."""
        table_kernel(self.addresses, rows, self.coefficients, *self.markers)

    def run_shares(self, rows: np.ndarray, bounds: np.ndarray) -> None:
        """Steps every share (`packed_shares`) on Numba's threads."""
        parallel_table_kernel(self.addresses, rows, bounds, self.coefficients, *self.markers)

    def packed_shares(self, threads: int) -> tuple[np.ndarray, np.ndarray]:
        """`shares` as `parallel_table_kernel` takes them: all rows, and where each share
        starts (share k is ``rows[bounds[k]:bounds[k + 1]]``)."""
        key = (threads, SERIAL_BELOW)
        found = self._packed.get(key)
        if found is None:
            shares = self.shares(threads)
            bounds = np.cumsum([0] + [len(rows) for rows in shares], dtype=np.int64)
            found = self._packed[key] = (np.concatenate(shares), bounds)
        return found


def _split(numels: Sequence[int], threads: int, serial_below: int) -> list[np.ndarray]:
    total = sum(numels)
    if threads == 1 or total < serial_below:
        rows = [(t, 0, n) for t, n in enumerate(numels) if n]
        return [np.array(rows, np.int64).reshape(-1, 3)]
    # Shares end on multiples of 16 elements (of all the tensors laid end to end),
    # so two threads rarely write one cache line.
    share = -(-total // threads)
    share += -share % 16
    out: list[list[tuple[int, int, int]]] = [[] for _ in range(threads)]
    done = 0
    for t, n in enumerate(numels):
        start = 0
        while start < n:
            thread = done // share
            stop = min(n, start + (thread + 1) * share - done)
            out[thread].append((t, start, stop))
            done += stop - start
            start = stop
    return [np.array(rows, np.int64).reshape(-1, 3) for rows in out if rows]


# -- 8-bit state ----------------------------------------------------------------------------
# `rmsprop.quantization`'s format, block by block: each block of 256 elements is decoded into
# float32 scratch, stepped by `_kernel` (the one float rule), given its new scale and encoded
# again, so the state crosses memory once, in bytes. The maps come from the caller: this
# layer does not import the format's module.

QUANTIZED_BLOCK = 256
# Rows of a quantized table's addresses past the float table's: each buffer's block scales
# (rows SQUARE_AVG, GRAD_AVG and BUFFER hold its codes).
SQUARE_AVG_SCALES, GRAD_AVG_SCALES, BUFFER_SCALES = 5, 6, 7
_UNIT = np.float32(2.0**-24)
_F32 = np.float32
_U32 = np.uint32
_I32 = np.int32
_MAGNITUDE_BITS = _I32(0x7FFFFFFF)
_INF_BITS = 0x7F800000


def _fmix32_source(h: Any) -> Any:
    # MurmurHash3's finalizer, in uint32 arithmetic that wraps (and vectorizes).
    h = _U32(h ^ (h >> _U32(16)))
    h = _U32(h * _U32(0x85EBCA6B))
    h = _U32(h ^ (h >> _U32(13)))
    h = _U32(h * _U32(0xC2B2AE35))
    return _U32(h ^ (h >> _U32(16)))


def _stream_key_source(step: Any, buffer: int) -> Any:
    # fmix32(stream_seed(t, buffer)): the key every element's index is mixed with.
    return _fmix32(_U32((4 * step + buffer) & 0xFFFFFFFF))


def _uniform_source(index: Any, key: Any) -> Any:
    # `rmsprop.quantization.uniform`: 24 random bits of the element's index, in [0, 1).
    return _F32(_I32(_fmix32(_U32(index) ^ key) >> _U32(8))) * _UNIT


def _unsigned_map_source(code: Any) -> Any:
    # UNSIGNED_MAP[c] = ((c + 1)/256)^4, exact in float32: (c + 1)/256 and its square are.
    t = (code + _F32(1.0)) * _F32(1.0 / 256.0)
    t = t * t
    return t * t


def _signed_magnitude_source(k: Any) -> Any:
    # SIGNED_MAP[128 + k] = (k/127)^4: k^4 is exact in float64, and its product with 127^-4
    # rounds to the table's float32 for every k (a test checks all 128).
    k2 = np.float64(k) * np.float64(k)
    return _F32(k2 * k2 * (1.0 / 260144641.0))


def _decode_unsigned_source(codes: Any, scale: Any, out: Any) -> None:
    for j in range(codes.size):
        out[j] = _unsigned_map(_F32(codes[j])) * scale


def _decode_signed_source(codes: Any, scale: Any, table: Any, out: Any) -> None:
    for j in range(codes.size):
        out[j] = table[codes[j]] * scale


def _block_scale_source(values: Any, count: int) -> Any:
    # The block's largest magnitude (its maximum, for v >= 0), on the float32 bits: an
    # integer maximum vectorizes where a float one does not. NaN if any value is not finite
    # (their magnitudes' bits are the largest). A partial block counts as padded with zeros.
    bits = values[:count].view(np.int32)
    top = _I32(0)
    for j in range(count):
        top = max(top, _I32(bits[j] & _MAGNITUDE_BITS))
    if top >= _INF_BITS:
        return _F32(np.nan)
    return _I32(top).view(np.float32)


def _encode_unsigned_source(values: Any, scale: Any, codes: Any, key: Any, first: int) -> None:
    # `rmsprop.quantization.encode` for v, branch-free so that the loop vectorizes (a table
    # lookup, a gather, keeps it scalar: the map is computed): the closed-form lower code,
    # the format's one correction step, then up with probability (x - lo)/(hi - lo).
    if not (scale > 0 and scale < np.inf):
        for j in range(codes.size):  # a NaN (or all-zero) block: the codes of 0
            codes[j] = 0
        return
    for j in range(codes.size):
        x = values[j] / scale
        guess = np.floor(_F32(256.0) * np.sqrt(np.sqrt(x))) - _F32(1.0)
        code = min(max(guess, _F32(0.0)), _F32(254.0))
        at, above = _unsigned_map(code), _unsigned_map(code + _F32(1.0))
        up = (code < _F32(254.0)) & (above <= x)
        down = (not up) & (code > _F32(0.0)) & (at > x)
        code = code + _F32(up) - _F32(down)
        new = _unsigned_map(code + _F32(up))  # the one neighbour neither `at` nor `above` is
        low = above if up else (new if down else at)
        high = new if up else (at if down else above)
        code = code + _F32(_uniform(first + j, key) * (high - low) < x - low)
        codes[j] = np.uint8(code)


def _encode_signed_source(values: Any, scale: Any, codes: Any, key: Any, first: int) -> None:
    # The same over magnitudes k = 0..127, stored as 128 ± k.
    if not (scale > 0 and scale < np.inf):
        for j in range(codes.size):
            codes[j] = 128
        return
    for j in range(codes.size):
        units = values[j] / scale
        x = abs(units)
        k = min(max(np.floor(_F32(127.0) * np.sqrt(np.sqrt(x))), _F32(0.0)), _F32(126.0))
        at, above = _signed_magnitude(k), _signed_magnitude(k + _F32(1.0))
        up = (k < _F32(126.0)) & (above <= x)
        down = (not up) & (k > _F32(0.0)) & (at > x)
        k = k + _F32(up) - _F32(down)
        new = _signed_magnitude(k + _F32(up))
        low = above if up else (new if down else at)
        high = new if up else (at if down else above)
        k = k + _F32(_uniform(first + j, key) * (high - low) < x - low)
        codes[j] = np.uint8(_F32(128.0) - k if units < 0 else _F32(128.0) + k)


def _quantized_rows_source(
    addresses: Any,
    pieces: Any,
    c: Any,
    steps: Any,
    maps: Any,
    v: Any,
    m: Any,
    b: Any,
) -> None:
    # v, m, b: one block's float32 scratch per buffer (m, b None when the rule has none, so
    # their branches are pruned). maps: the unsigned map, the signed map, and the signed
    # map's magnitudes (k = 0..127) in its first half's place.
    dtype = c.dtype
    size = c.itemsize
    signed_map = maps
    for row in range(pieces.shape[0]):
        t, start, stop = pieces[row, 0], pieces[row, 1], pieces[row, 2]
        n = stop - start
        blocks = (n + QUANTIZED_BLOCK - 1) // QUANTIZED_BLOCK
        offset = start * size
        first_block = start // QUANTIZED_BLOCK
        p = numba.carray(_pointer(addresses[PARAM, t] + offset), n, dtype)
        g = numba.carray(_pointer(addresses[GRAD, t] + offset), n, dtype)
        v_codes = numba.carray(_pointer(addresses[SQUARE_AVG, t] + start), n, np.uint8)
        v_scales = numba.carray(
            _pointer(addresses[SQUARE_AVG_SCALES, t] + 4 * first_block), blocks, np.float32
        )
        v_key = _stream_key(steps[t], 0)
        if m is not None:
            m_codes = numba.carray(_pointer(addresses[GRAD_AVG, t] + start), n, np.uint8)
            m_scales = numba.carray(
                _pointer(addresses[GRAD_AVG_SCALES, t] + 4 * first_block), blocks, np.float32
            )
            m_key = _stream_key(steps[t], 1)
        if b is not None:
            b_codes = numba.carray(_pointer(addresses[BUFFER, t] + start), n, np.uint8)
            b_scales = numba.carray(
                _pointer(addresses[BUFFER_SCALES, t] + 4 * first_block), blocks, np.float32
            )
            b_key = _stream_key(steps[t], 2)
        ct = c[t]
        for block in range(blocks):
            lo = block * QUANTIZED_BLOCK
            hi = min(n, lo + QUANTIZED_BLOCK)
            count = hi - lo
            _decode_unsigned(v_codes[lo:hi], v_scales[block], v)
            if m is not None:
                _decode_signed(m_codes[lo:hi], m_scales[block], signed_map, m)
            if b is not None:
                _decode_signed(b_codes[lo:hi], b_scales[block], signed_map, b)
            _kernel(p[lo:hi], g[lo:hi], v, m, b, ct)  # the float rule, on the scratch
            scale = _block_scale(v, count)
            v_scales[block] = scale
            _encode_unsigned(v, scale, v_codes[lo:hi], v_key, start + lo)
            if m is not None:
                scale = _block_scale(m, count)
                m_scales[block] = scale
                _encode_signed(m, scale, m_codes[lo:hi], m_key, start + lo)
            if b is not None:
                scale = _block_scale(b, count)
                b_scales[block] = scale
                _encode_signed(b, scale, b_codes[lo:hi], b_key, start + lo)


def _quantized_table_kernel_source(
    addresses: Any, pieces: Any, c: Any, steps: Any, maps: Any, m_marker: Any, b_marker: Any
) -> None:
    v = np.empty(QUANTIZED_BLOCK, np.float32)
    if m_marker is None:
        if b_marker is None:
            _quantized_rows(addresses, pieces, c, steps, maps, v, None, None)
        else:
            b = np.empty(QUANTIZED_BLOCK, np.float32)
            _quantized_rows(addresses, pieces, c, steps, maps, v, None, b)
    else:
        m = np.empty(QUANTIZED_BLOCK, np.float32)
        if b_marker is None:
            _quantized_rows(addresses, pieces, c, steps, maps, v, m, None)
        else:
            b = np.empty(QUANTIZED_BLOCK, np.float32)
            _quantized_rows(addresses, pieces, c, steps, maps, v, m, b)


def _parallel_quantized_table_kernel_source(
    addresses: Any,
    rows: Any,
    bounds: Any,
    c: Any,
    steps: Any,
    maps: Any,
    m_marker: Any,
    b_marker: Any,
) -> None:
    for share in numba.prange(bounds.size - 1):
        quantized_table_kernel(
            addresses, rows[bounds[share] : bounds[share + 1]], c, steps, maps, m_marker, b_marker
        )


# -- bfloat16 state ---------------------------------------------------------------------------
# The state as bfloat16 bits (uint16), decoded into float32 scratch a block at a time and
# rounded back: to nearest even, as a cast does, or stochastically with the 8-bit format's
# random numbers (`rmsprop.quantization.round_to_bfloat16`): add the hash's upper 16 bits to
# the float32 bits, keep the upper half. NaN is stored as the quiet NaN 0x7FC0, ±inf exactly.

_QUIET_NAN_BFLOAT16 = 0x7FC0


def _decode_bfloat16_source(bits: Any, out: Any) -> None:
    wide = out.view(np.uint32)
    for j in range(bits.size):
        wide[j] = _U32(bits[j]) << _U32(16)


def _encode_bfloat16_source(values: Any, bits: Any, key: Any, first: int, stochastic: bool) -> None:
    wide = values.view(np.uint32)
    for j in range(bits.size):
        x = wide[j]
        magnitude = x & _U32(0x7FFFFFFF)
        if stochastic:
            carry = _fmix32(_U32(first + j) ^ key) >> _U32(16)
        else:
            carry = _U32(0x7FFF) + ((x >> _U32(16)) & _U32(1))
        rounded = _U32(x + carry) >> _U32(16)
        kept = x >> _U32(16) if magnitude == _U32(_INF_BITS) else _U32(_QUIET_NAN_BFLOAT16)
        bits[j] = np.uint16(rounded if magnitude < _U32(_INF_BITS) else kept)


def _bfloat16_rows_source(
    addresses: Any, pieces: Any, c: Any, steps: Any, stochastic: bool, v: Any, m: Any, b: Any
) -> None:
    # Float32 parameters whose buffers are bfloat16: v, m, b are one block's scratch each.
    for row in range(pieces.shape[0]):
        t, start, stop = pieces[row, 0], pieces[row, 1], pieces[row, 2]
        n = stop - start
        p = numba.carray(_pointer(addresses[PARAM, t] + 4 * start), n, np.float32)
        g = numba.carray(_pointer(addresses[GRAD, t] + 4 * start), n, np.float32)
        v_bits = numba.carray(_pointer(addresses[SQUARE_AVG, t] + 2 * start), n, np.uint16)
        v_key = _stream_key(steps[t], 0)
        if m is not None:
            m_bits = numba.carray(_pointer(addresses[GRAD_AVG, t] + 2 * start), n, np.uint16)
            m_key = _stream_key(steps[t], 1)
        if b is not None:
            b_bits = numba.carray(_pointer(addresses[BUFFER, t] + 2 * start), n, np.uint16)
            b_key = _stream_key(steps[t], 2)
        ct = c[t]
        for lo in range(0, n, QUANTIZED_BLOCK):
            hi = min(n, lo + QUANTIZED_BLOCK)
            _decode_bfloat16(v_bits[lo:hi], v)
            if m is not None:
                _decode_bfloat16(m_bits[lo:hi], m)
            if b is not None:
                _decode_bfloat16(b_bits[lo:hi], b)
            _kernel(p[lo:hi], g[lo:hi], v, m, b, ct)
            _encode_bfloat16(v, v_bits[lo:hi], v_key, start + lo, stochastic)
            if m is not None:
                _encode_bfloat16(m, m_bits[lo:hi], m_key, start + lo, stochastic)
            if b is not None:
                _encode_bfloat16(b, b_bits[lo:hi], b_key, start + lo, stochastic)


def _bfloat16_table_kernel_source(
    addresses: Any, pieces: Any, c: Any, steps: Any, stochastic: bool, m_marker: Any, b_marker: Any
) -> None:
    v = np.empty(QUANTIZED_BLOCK, np.float32)
    if m_marker is None:
        if b_marker is None:
            _bfloat16_rows(addresses, pieces, c, steps, stochastic, v, None, None)
        else:
            b = np.empty(QUANTIZED_BLOCK, np.float32)
            _bfloat16_rows(addresses, pieces, c, steps, stochastic, v, None, b)
    else:
        m = np.empty(QUANTIZED_BLOCK, np.float32)
        if b_marker is None:
            _bfloat16_rows(addresses, pieces, c, steps, stochastic, v, m, None)
        else:
            b = np.empty(QUANTIZED_BLOCK, np.float32)
            _bfloat16_rows(addresses, pieces, c, steps, stochastic, v, m, b)


def _parallel_bfloat16_table_kernel_source(
    addresses: Any,
    rows: Any,
    bounds: Any,
    c: Any,
    steps: Any,
    stochastic: bool,
    m_marker: Any,
    b_marker: Any,
) -> None:
    for share in numba.prange(bounds.size - 1):
        bfloat16_table_kernel(
            addresses,
            rows[bounds[share] : bounds[share + 1]],
            c,
            steps,
            stochastic,
            m_marker,
            b_marker,
        )


def _njit(function: Any, **options: Any) -> Any:
    if not AVAILABLE:
        return None
    return numba.njit(nogil=True, cache=True, error_model="numpy", boundscheck=False, **options)(
        function
    )


def _inline(function: Any) -> Any:
    # Inlined into its callers' loops, which then vectorize.
    if not AVAILABLE:
        return None
    return numba.njit(inline="always", error_model="numpy", boundscheck=False)(function)


_fmix32: Any = _inline(_fmix32_source)
_uniform: Any = _inline(_uniform_source)
_unsigned_map: Any = _inline(_unsigned_map_source)
_signed_magnitude: Any = _inline(_signed_magnitude_source)
_stream_key: Any = _njit(_stream_key_source)
_decode_unsigned: Any = _njit(_decode_unsigned_source)
_decode_signed: Any = _njit(_decode_signed_source)
_block_scale: Any = _njit(_block_scale_source)
_encode_unsigned: Any = _njit(_encode_unsigned_source)
_encode_signed: Any = _njit(_encode_signed_source)
_quantized_rows: Any = _njit(_quantized_rows_source)
quantized_table_kernel: Any = _njit(_quantized_table_kernel_source)
# Compiling this starts Numba's threading layer, as `parallel_table_kernel` does.
parallel_quantized_table_kernel: Any = _njit(_parallel_quantized_table_kernel_source, parallel=True)
_decode_bfloat16: Any = _njit(_decode_bfloat16_source)
_encode_bfloat16: Any = _njit(_encode_bfloat16_source)
_bfloat16_rows: Any = _njit(_bfloat16_rows_source)
bfloat16_table_kernel: Any = _njit(_bfloat16_table_kernel_source)
parallel_bfloat16_table_kernel: Any = _njit(_parallel_bfloat16_table_kernel_source, parallel=True)


class QuantizedTable(Table):
    """Tensors whose state buffers are 8-bit (codes and block scales), stepped a block of
    `QUANTIZED_BLOCK` at a time, one kernel call per thread.

    Beyond `Table`'s rows, ``addresses`` rows 2-4 hold the buffers' uint8 codes and rows
    5-7 their float32 block scales; ``steps[i]`` is tensor i's step count after the update
    (its random numbers' seed) and ``maps`` the signed map (256 float32) m and b are
    decoded with (v's map, and the encoder's, are computed).
    Shares split tensors only between blocks.
    """

    def __init__(
        self,
        dtype: Any,
        numels: Sequence[int],
        maps: np.ndarray,
        grad_avg: bool = False,
        momentum: bool = False,
    ) -> None:
        super().__init__(dtype, numels, grad_avg, momentum)
        self.addresses = np.zeros((8, len(self.numels)), np.int64)
        self.steps = np.zeros(len(self.numels), np.int64)
        self.maps = np.ascontiguousarray(maps, np.float32)
        if self.maps.shape != (256,):
            raise ValueError(f"maps must be the signed map's 256 float32, got {self.maps.shape}")

    def _split(self, threads: int, serial_below: int) -> list[np.ndarray]:
        return _split_blocks(self.numels, threads, serial_below)

    def run_rows(self, rows: np.ndarray) -> None:
        quantized_table_kernel(
            self.addresses, rows, self.coefficients, self.steps, self.maps, *self.markers
        )

    def run_shares(self, rows: np.ndarray, bounds: np.ndarray) -> None:
        parallel_quantized_table_kernel(
            self.addresses, rows, bounds, self.coefficients, self.steps, self.maps, *self.markers
        )


class Bfloat16StateTable(Table):
    """float32 tensors whose state buffers are bfloat16 (their bits, uint16), decoded and
    rounded again a block of `QUANTIZED_BLOCK` at a time, one kernel call per thread.

    ``steps[i]`` is tensor i's step count after the update (the seed of its random
    numbers, with ``stochastic``); without ``stochastic`` the state is rounded to nearest
    even, as a cast does.
    """

    def __init__(
        self,
        numels: Sequence[int],
        stochastic: bool,
        grad_avg: bool = False,
        momentum: bool = False,
    ) -> None:
        super().__init__(np.float32, numels, grad_avg, momentum)
        self.steps = np.zeros(len(self.numels), np.int64)
        self.stochastic = bool(stochastic)

    def run_rows(self, rows: np.ndarray) -> None:
        bfloat16_table_kernel(
            self.addresses, rows, self.coefficients, self.steps, self.stochastic, *self.markers
        )

    def run_shares(self, rows: np.ndarray, bounds: np.ndarray) -> None:
        parallel_bfloat16_table_kernel(
            self.addresses,
            rows,
            bounds,
            self.coefficients,
            self.steps,
            self.stochastic,
            *self.markers,
        )


def _split_blocks(numels: Sequence[int], threads: int, serial_below: int) -> list[np.ndarray]:
    """`_split`, with every cut inside a tensor on a multiple of `QUANTIZED_BLOCK` (a block's
    scale depends on all its elements)."""
    total = sum(numels)
    if threads == 1 or total < serial_below:
        return _split(numels, 1, serial_below)
    share = -(-total // threads)
    out: list[list[tuple[int, int, int]]] = [[] for _ in range(threads)]
    done = 0
    for t, n in enumerate(numels):
        start = 0
        while start < n:
            thread = min(done // share, threads - 1)
            stop = start + (thread + 1) * share - done
            stop = min(n, -(-stop // QUANTIZED_BLOCK) * QUANTIZED_BLOCK)
            out[thread].append((t, start, stop))
            done += stop - start
            start = stop
    return [np.array(rows, np.int64).reshape(-1, 3) for rows in out if rows]


Arrays = Sequence[Any]  # p, g, v, m, b: 1-D, one length; m and b may be None
Copy = Callable[[Any, Any], None]  # copy(destination, source), converting the dtype


class Task(NamedTuple):
    """One tensor's step: its arrays, its coefficients, and how to reach float32.

    ``copy`` is None when the arrays are float32 or float64 memory the kernel
    updates directly; otherwise they are 16-bit, and ``copy`` moves chunks
    between them and float32 buffers.
    """

    arrays: Arrays
    coefficients: np.ndarray
    copy: Copy | None


def task(arrays: Arrays, c: np.ndarray, copy: Copy | None = None) -> Task:
    """A `Task`; ``c`` is `as_array(coefficients)` in the kernel's dtype (float32 with ``copy``)."""
    return Task(arrays, c, copy)


def as_array(c: Coefficients, dtype: Any) -> np.ndarray:
    """The coefficients as the small array the kernel reads (cheaper to pass than a tuple)."""
    return np.array(c, dtype=dtype)


def run(tasks: Sequence[Task] = (), tables: Sequence[Table] = (), threads: int = 0) -> None:
    """Runs the tasks and tables: inline when small, else spread over ``threads`` (or
    `num_threads()`): the tables by Numba's TBB threads where `threading_layer()` is "tbb",
    the rest by a Python thread pool."""
    threads = threads or num_threads()
    if tables and threads > 1 and _tbb_ready():
        _run_tables_on_tbb(tables, min(threads, numba.config.NUMBA_NUM_THREADS))
        tables = ()
    _run_on_the_pool(tasks, tables, threads)


def _run_tables_on_tbb(tables: Sequence[Table], threads: int) -> None:
    # Numba's thread count belongs to the calling thread: set for these launches (when it
    # differs: 2 µs), then put back.
    before = numba.get_num_threads()
    if before == threads:
        _launch_tables(tables, threads)
        return
    numba.set_num_threads(threads)
    try:
        _launch_tables(tables, threads)
    finally:
        numba.set_num_threads(before)


def _launch_tables(tables: Sequence[Table], threads: int) -> None:
    for table in tables:
        rows, bounds = table.packed_shares(threads)
        if bounds.size == 2:  # one share: inline, no launch
            table.run_rows(rows)
        else:
            table.run_shares(rows, bounds)


def _run_on_the_pool(tasks: Sequence[Task], tables: Sequence[Table], threads: int) -> None:
    global _pool, _pool_size
    work: list[list[tuple[Callable[..., None], tuple[Any, ...]]]] = [[] for _ in range(threads)]
    for table in tables:
        for thread, rows in enumerate(table.shares(threads, SERIAL_BELOW_POOL)):
            work[thread].append((table.run_rows, (rows,)))
    total = sum(len(t.arrays[0]) for t in tasks)
    if threads == 1 or total < SERIAL_BELOW_POOL:
        work[0] += [(_run_range, (t, 0, len(t.arrays[0]))) for t in tasks]
    elif tasks:
        # A few pieces per thread: enough to balance, few enough that the Python
        # work of handing them out (which holds the GIL) stays negligible.
        piece = max(CHUNK, total // (threads * PIECES_PER_THREAD))
        pieces = [(t, a, b) for t in tasks for a, b in _chunks(len(t.arrays[0]), piece)]
        for thread, group in enumerate(_balanced_groups(pieces, total, threads)):
            work[thread].append((_run_group, (group,)))
    if not any(work[1:]):
        _run_calls(work[0])
        return
    if _pool is None or _pool_size != threads:
        if _pool is not None:
            _pool.shutdown(wait=False)
        _pool = ThreadPoolExecutor(threads - 1, thread_name_prefix="rmsprop")
        _pool_size = threads
    futures = [_pool.submit(_run_calls, calls) for calls in work[1:] if calls]
    _run_calls(work[0])  # the calling thread takes a share too
    for future in futures:
        future.result()


def _run_calls(calls: Sequence[tuple[Callable[..., None], tuple[Any, ...]]]) -> None:
    for function, args in calls:
        function(*args)


Piece = tuple[Task, int, int]


def _run_group(pieces: Sequence[Piece]) -> None:
    for t, start, stop in pieces:
        _run_range(t, start, stop)


def _run_range(t: Task, start: int, stop: int) -> None:
    if t.copy is None:
        whole = start == 0 and stop == len(t.arrays[0])
        arrays = t.arrays if whole else [None if a is None else a[start:stop] for a in t.arrays]
        _kernel(*arrays, t.coefficients)
        return
    for chunk_start, chunk_stop in _chunks(stop - start):
        _run_converted(t, slice(start + chunk_start, start + chunk_stop))


def _run_converted(t: Task, s: slice) -> None:
    n = s.stop - s.start
    present = [a[s] for a in t.arrays if a is not None]
    work = [buf[:n] for buf in _buffers(len(present))]
    for buf, a in zip(work, present):
        t.copy(buf, a)  # type: ignore[misc]
    it = iter(work)
    _kernel(*(None if a is None else next(it) for a in t.arrays), t.coefficients)
    # g (index 1) is read-only; every other array is written back, rounded.
    for index, (buf, a) in enumerate(zip(work, present)):
        if index != 1:
            t.copy(a, buf)  # type: ignore[misc]


def _chunks(n: int, size: int = CHUNK) -> list[tuple[int, int]]:
    return [(start, min(start + size, n)) for start in range(0, n, size)]


_local = threading.local()


def _buffers(count: int) -> list[np.ndarray]:
    """This thread's float32 scratch buffers, one chunk each (reused: they stay in cache)."""
    buffers = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = [np.empty(CHUNK, np.float32) for _ in range(5)]
    return buffers[:count]


def num_threads(limit: int | None = None) -> int:
    """Threads the fused step uses: ``RMSPROP_NUM_THREADS`` when set, else the CPUs this
    process may use (its CPU affinity and its cgroup's CPU quota), at most ``limit`` (a
    framework's own setting: `rmsprop.torch` passes ``torch.get_num_threads()``).

    Asked on every step, so a worker process that narrows its affinity or its framework's
    threads after it starts (16 workers on 16 cores, one thread each) is followed at once.

    Raises:
        ValueError: ``RMSPROP_NUM_THREADS`` is set to anything but a positive integer, or
            ``RMSPROP_CPU_THREADS`` to anything but ``auto`` or ``pool`` (checked here so
            that a step fails before any write).
    """
    _forced_pool()
    configured = os.environ.get("RMSPROP_NUM_THREADS")
    if configured:
        if not configured.strip().isdigit() or int(configured) < 1:
            raise ValueError(f"RMSPROP_NUM_THREADS must be a positive integer, got {configured!r}")
        return int(configured)
    usable = min(_affinity(), _CGROUP_CPUS)
    return max(1, min(usable, limit)) if limit is not None else usable


def _affinity() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _cgroup_cpus(path: str = "/sys/fs/cgroup/cpu.max") -> int:
    """The CPUs a cgroup v2 quota allows ("200000 100000" → 2), or a large number if none."""
    try:
        with open(path) as f:
            quota, period = f.read().split()[:2]
        return max(1, -(-int(quota) // int(period)))
    except (OSError, ValueError):  # no cgroup v2 file, or "max": no quota
        return 1 << 30


_CGROUP_CPUS = _cgroup_cpus()  # fixed for the process's life (a fork stays in its cgroup)


def threading_layer() -> str:
    """Which threads take the float32/float64 tables' shares in this process: ``"tbb"``
    (Numba's TBB threading layer) or ``"pool"`` (a Python thread pool).

    "tbb" where TBB is installed (the ``tbb`` package, in the ``fast`` extra) and is, or will
    be, the layer Numba itself uses, unless ``RMSPROP_CPU_THREADS=pool``. Asked first from a
    thread other than the main one, before anything started Numba's layer, it says "pool"
    for now: the layer is started from the main thread only (see `_decide_tbb`).

    Raises:
        ValueError: ``RMSPROP_CPU_THREADS`` is set to anything but ``auto`` or ``pool``.
    """
    return "tbb" if _tbb_ready() else "pool"


def _forced_pool() -> bool:
    chosen = os.environ.get("RMSPROP_CPU_THREADS", "").strip().lower()
    if chosen in ("", "auto"):
        return False
    if chosen == "pool":
        return True
    raise ValueError(f"RMSPROP_CPU_THREADS must be 'auto' or 'pool', got {chosen!r}")


_tbb: bool | None = None  # whether this process spreads tables with TBB; None: not decided
_tbb_lock = threading.Lock()


def _tbb_ready() -> bool:
    global _tbb
    if _forced_pool():
        return False
    if _tbb is None:
        with _tbb_lock:
            if _tbb is None:
                decided = _decide_tbb()
                if decided is None:
                    return False
                _tbb = decided
    return _tbb


def _decide_tbb() -> bool | None:
    """Whether Numba's threading layer is, or can now be started as, TBB; None when only the
    main thread may start it. Never starts another layer: the user's NUMBA_THREADING_LAYER
    (omp, workqueue) is theirs, GNU OpenMP does not survive a fork, and workqueue aborts
    when two threads launch at once."""
    if not AVAILABLE:
        return False
    running = _running_layer()
    if running is not None:
        return running == "tbb"
    if not (_numba_picks_tbb_first() and _tbb_loaded()):
        return False
    # Numba's TBB fork handler can only stop TBB's threads before a fork (so that the child
    # can start its own) from the thread that started the layer: make that the main one.
    if threading.current_thread() is not threading.main_thread():
        return None
    numba.get_num_threads()  # starts the layer
    return _running_layer() == "tbb"


def _running_layer() -> str | None:
    try:
        return str(numba.threading_layer())
    except ValueError:  # not started yet
        return None


def _numba_picks_tbb_first() -> bool:
    """Whether Numba's layer setting takes TBB when TBB loads (a sure no for omp, workqueue,
    or a priority list that puts another layer first)."""
    chosen = str(numba.config.THREADING_LAYER).lower()
    if chosen == "default":
        return list(numba.config.THREADING_LAYER_PRIORITY)[:1] == ["tbb"]
    return chosen in ("tbb", "safe", "threadsafe", "forksafe")


_TBB_LIBRARY = {"linux": "libtbb.so.12", "darwin": "libtbb.12.dylib", "win32": "tbb12.dll"}
_TBB_OLDEST = 12060  # TBB 2021.6's interface version: the oldest Numba's TBB layer takes


@functools.cache
def _tbb_loaded() -> bool:
    """Whether a TBB runtime that Numba's layer takes is loaded, loading it where needed.

    Numba's TBB module links TBB by name, with no search path. pip installs the ``tbb``
    wheel's library in the environment's ``lib`` folder, which the loader searches in a
    conda environment (through Python's own run path) but not in a virtual environment or
    a user install. Loaded once by its full path, the library answers every later request
    for its name, Numba's included.
    """
    name = _TBB_LIBRARY.get(sys.platform)
    if name is None:
        return False
    try:
        library = ctypes.CDLL(name)
    except OSError:
        path = _installed_tbb(name)
        if path is None:
            return False
        try:
            library = ctypes.CDLL(path)
        except OSError:
            return False
    version = getattr(library, "TBB_runtime_interface_version", None)  # TBB 2021 and later
    if version is None:
        return False
    version.restype = ctypes.c_int
    if version() < _TBB_OLDEST:  # Numba would refuse it and fall back to another layer
        return False
    try:
        importlib.import_module("numba.np.ufunc.tbbpool")  # built into Numba's wheels
    except ImportError:
        return False
    return True


def _installed_tbb(name: str) -> str | None:
    """Where the ``tbb`` package put its library ``name``, if it is installed."""
    try:
        files = metadata.files("tbb") or []
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == name:
            return str(file.locate())
    return None


_pool: ThreadPoolExecutor | None = None
_pool_size = 0


Variant = tuple[Any, ...]  # (kernel dtype, with m, with b[, state format]): one table kernel


def warm_up(variants: Iterable[Variant] | None = None, parallel: bool | None = None) -> None:
    """Loads the table kernels' ``variants`` (default: every dtype and buffer combination of
    float state) from Numba's on-disk cache (compiling them, once per machine, where the cache
    is cold), by running each over no tensors; with ``parallel`` (default: when steps here
    will take Numba's TBB threads), their parallel kernels too. A fresh process pays this
    once: about half a second, mostly Numba's own start, then milliseconds a variant. A
    variant is ``(dtype, with m, with b)``, or with a fourth item, the state's format:
    ``"float"``, ``"8bit"`` (`QuantizedTable`) or ``"bfloat16"`` (`Bfloat16StateTable`,
    float32 only); a cold compile of a low-memory variant takes seconds.
    """
    if not AVAILABLE:
        return
    if variants is None:
        variants = [(d, m, b) for d in KERNEL_DTYPES for m in (False, True) for b in (False, True)]
    if parallel is None:
        parallel = _steps_take_tbb()
    no_rows = np.zeros((0, 3), np.int64)
    no_shares = np.zeros(1, np.int64)
    for dtype, grad_avg, momentum, *state in variants:
        table = _empty_table(dtype, grad_avg, momentum, state[0] if state else "float")
        table.run_rows(no_rows)
        if parallel:
            table.run_shares(no_rows, no_shares)


def _empty_table(dtype: Any, grad_avg: bool, momentum: bool, state: str) -> Table:
    if state == "8bit":
        return QuantizedTable(dtype, [], np.zeros(256, np.float32), grad_avg, momentum)
    if state == "bfloat16":
        return Bfloat16StateTable([], False, grad_avg, momentum)
    return Table(dtype, [], grad_avg, momentum)


def _steps_take_tbb() -> bool:
    try:
        return num_threads() > 1 and _tbb_ready()
    except ValueError:  # a bad RMSPROP_* setting: the step itself says so, before any write
        return False


def warm_up_in_background(variants: Iterable[Variant]) -> None:
    """Starts `warm_up` of the variants not asked for yet in a thread of its own, so that a new
    worker's set-up (its environment, its first forward pass) hides the kernel's loading; a
    step that comes first waits for what is left (Numba's dispatcher holds a lock while it
    loads). Only the variants a step will take: the others would compete with it for a core.

    Called from the main thread, it starts Numba's TBB layer there first (a few
    milliseconds) when steps will take it: the background thread must not be the one that
    starts it (see `_decide_tbb`).
    """
    if not AVAILABLE:
        return
    with _warming_lock:
        new = [(np.dtype(d), bool(m), bool(b), *state) for d, m, b, *state in variants]
        new = [v for v in dict.fromkeys(new) if v not in _warmed]
        if not new:
            return
        _warmed.update(new)
        parallel = _steps_take_tbb()
        thread = threading.Thread(
            target=warm_up, args=(new, parallel), name="rmsprop-warm-up", daemon=True
        )
        _warming.append(thread)
        thread.start()


def wait_for_warm_up() -> None:
    """Returns once every background `warm_up` has finished (a fork waits for this too: a
    child forked while a thread is importing would inherit half-imported modules)."""
    for thread in list(_warming):
        thread.join()


_warming: list[threading.Thread] = []
_warmed: set[Variant] = set()
_warming_lock = threading.Lock()
_forking_from_main = True


def _before_fork() -> None:
    global _forking_from_main
    wait_for_warm_up()
    _forking_from_main = threading.current_thread() is threading.main_thread()


def _after_fork_in_child() -> None:
    # A forked child inherits the pool object but none of its threads: a task submitted
    # to it would wait forever. The child starts its own on first use. Numba restarts TBB's
    # threads in the child only after a fork from the thread that started them (the main
    # one): after any other, the child keeps to the pool.
    global _pool, _pool_size, _warming_lock, _tbb, _tbb_lock
    _pool, _pool_size = None, 0
    _warming_lock = threading.Lock()
    _tbb_lock = threading.Lock()
    if not _forking_from_main and _tbb:
        _tbb = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


def _balanced_groups(pieces: Sequence[Piece], total: int, groups: int) -> list[list[Piece]]:
    """Contiguous groups of pieces holding about total/groups elements each."""
    out: list[list[Piece]] = [[] for _ in range(groups)]
    done = 0
    for piece in pieces:
        out[min(groups - 1, done * groups // total)].append(piece)
        done += piece[2] - piece[1]
    return out
