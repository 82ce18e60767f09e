"""Tests of 8-bit state in the fused CPU kernel (`rmsprop.kernels.numba_cpu.QuantizedTable`).

The kernel's encoder against `rmsprop.quantization` bit for bit (NaN and zero
blocks, partial blocks); the fused 8-bit step against the reference path
(`rmsprop.torch._lowmem.step_in_float`, itself checked against the NumPy
oracle) over every distinct rule of the flavor table, with partial blocks,
buffers under and over 4096 elements, complex and float64 parameters; shares
cut on block boundaries, on TBB's threads and the pool's, giving the serial
bits; and kept steps.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tables import config_kwargs, flavor_cases

torch = pytest.importorskip("torch", reason="the torch backend needs the torch extra")

from rmsprop import quantization as q  # noqa: E402
from rmsprop.kernels import numba_cpu as kernel  # noqa: E402
from rmsprop.torch import RMSprop, _fused, _optimizer  # noqa: E402

NO_FUSED_CPU = _fused.fused_kernel("cpu").why_not("cpu")
# Whether fused steps are kept at all (not with torch 2.4: see test_torch_kept_step.py).
KEEPS_STEPS = _optimizer._COUNTED_STATE
pytestmark = pytest.mark.skipif(bool(NO_FUSED_CPU), reason=f"no fused CPU kernel: {NO_FUSED_CPU}")

# Partial last blocks, a buffer just under and just at the 8-bit threshold, a small one.
SHAPES = [(64, 70), (80, 60), (4095,), (4096,), (3, 5)]
STEPS = 3


def distinct_rules() -> list[tuple[str, Any]]:
    from rmsprop._lowering import switches

    seen: dict[Any, tuple[str, Any]] = {}
    for name, config in flavor_cases():
        seen.setdefault((switches(config), config.initial_square_avg > 0), (name, config))
    return list(seen.values())


CASES = distinct_rules()


def make_params(shapes: list[tuple[int, ...]], dtype: Any = torch.float32) -> list[Any]:
    generator = torch.Generator().manual_seed(1)
    return [torch.nn.Parameter(torch.randn(s, generator=generator).to(dtype)) for s in shapes]


def train(
    shapes: list[tuple[int, ...]],
    options: dict[str, Any],
    dtype: Any = torch.float32,
    steps: int = STEPS,
    forget_kept: bool = False,
) -> tuple[list[Any], RMSprop]:
    params = make_params(shapes, dtype)
    generator = torch.Generator().manual_seed(2)
    opt = RMSprop(params, state_dtype="8bit", **options)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator).to(dtype)
        if forget_kept:
            opt._kept.clear()
        opt.step()
    return params, opt


def assert_close_states(
    fused: RMSprop, reference: RMSprop, params: list[Any], refs: list[Any]
) -> None:
    """Close, not equal: the kernel's float32 math may differ from torch's by an ulp, and one
    stochastic rounding of such a value may pick the other neighbour; a step later that
    code's value moves its parameter (by up to a few % of one update)."""
    for p, r in zip(params, refs):
        a, b = torch.view_as_real(p.detach()) if p.is_complex() else p.detach(), r.detach()
        b = torch.view_as_real(b) if b.is_complex() else b
        close = torch.isclose(a, b, rtol=1e-4, atol=1e-5)
        assert close.float().mean() > 0.995
        assert (a - b).abs().max() < 0.05
        for key, value in fused.state[p].items():
            other = reference.state[r][key]
            if value.dtype == torch.uint8:
                assert value.shape == other.shape, key
                apart = (value.int() - other.int()).abs()
                assert (apart == 0).float().mean() > 0.99, key
                assert (apart <= 1).float().mean() > 0.999, key
            elif key.endswith("_scales"):
                torch.testing.assert_close(value, other, rtol=2e-2, atol=1e-6)
            else:
                torch.testing.assert_close(value, other, rtol=1e-4, atol=1e-6)


def quantized_tables(opt: RMSprop) -> list[Any]:
    from rmsprop.torch._fused import numba_cpu as launcher

    return [t for plan in launcher._plans.values() for t, _ in plan.quantized]


# ---- the kernel's encoder, bit for bit ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["unsigned", "signed"])
def test_block_encoding_matches_the_numpy_format(kind: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(9000) * np.exp(rng.uniform(-30, 5, 9000))
    x[:5], x[600] = [0.0, 1e-30, 5.0, 1e-45, -0.0], np.nan
    x[1024:1280] = 0.0  # a block whose scale is 0
    table = q.UNSIGNED_MAP if kind == "unsigned" else q.SIGNED_MAP
    x[2048:2304] = table * 3.0  # every table entry of a block, exactly
    x[2304:2560] = np.nextafter(np.float32(table * 3.0), np.float32(np.inf))  # and just above
    values = np.float32(x * x if kind == "unsigned" else x)
    values[2048:2560] = np.float32(x[2048:2560])
    if kind == "unsigned":
        values = np.abs(values)
    seed = q.stream_seed(11, q.GRAD_AVG)
    want = q.quantize(values, kind, seed)
    key = kernel._stream_key(11, q.GRAD_AVG)
    codes = np.zeros(values.size, np.uint8)
    scales = np.zeros(want.scales.size, np.float32)
    for block, start in enumerate(range(0, values.size, q.BLOCK)):
        part = values[start : start + q.BLOCK]
        scales[block] = kernel._block_scale(part, part.size)
        out = codes[start : start + part.size]
        if kind == "unsigned":
            kernel._encode_unsigned(part, scales[block], out, key, start)
        else:
            kernel._encode_signed(part, scales[block], out, key, start)
    np.testing.assert_array_equal(scales, want.scales)
    np.testing.assert_array_equal(codes, want.codes)
    decoded = np.zeros(q.BLOCK, np.float32)
    for block, start in enumerate(range(0, values.size - q.BLOCK, q.BLOCK)):
        part = codes[start : start + q.BLOCK]
        if kind == "unsigned":
            kernel._decode_unsigned(part, scales[block], decoded)
        else:
            kernel._decode_signed(part, scales[block], q.SIGNED_MAP, decoded)
        np.testing.assert_array_equal(decoded, table[part] * scales[block])


def test_the_kernel_computes_the_maps_it_does_not_look_up() -> None:
    """v's map and the magnitudes of m's and b's are computed in the kernel, bit for bit."""
    codes = np.arange(256, dtype=np.float32)
    unsigned = np.array([kernel._unsigned_map.py_func(c) for c in codes], np.float32)
    np.testing.assert_array_equal(unsigned, q.UNSIGNED_MAP)
    magnitudes = np.array([kernel._signed_magnitude.py_func(k) for k in codes[:128]], np.float32)
    np.testing.assert_array_equal(magnitudes, q.SIGNED_MAP[128:])


def test_shares_are_cut_between_blocks() -> None:
    numels = [4480, 300, 70000, 4096, 9000]
    for threads in (2, 3, 7):
        shares = kernel._split_blocks(numels, threads, 0)
        rows = np.concatenate(shares)
        assert len(shares) > 1
        assert all(start % q.BLOCK == 0 for _, start, _ in rows)
        covered = {t: sum(int(b - a) for tt, a, b in rows if tt == t) for t in range(len(numels))}
        assert covered == dict(enumerate(numels))


# ---- the step against the reference path ----------------------------------------------------


@pytest.mark.parametrize(("name", "config"), CASES, ids=[name for name, _ in CASES])
def test_fused_8bit_step_is_within_one_code_of_the_reference(name: str, config: Any) -> None:
    options = config_kwargs(config)
    params, fused = train(SHAPES, {**options, "fused": True})
    refs, reference = train(SHAPES, {**options, "foreach": False})
    assert fused._kept or not KEEPS_STEPS, "an 8-bit group the kernel takes whole is kept"
    assert quantized_tables(fused)
    assert_close_states(fused, reference, params, refs)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.float64])
def test_complex_and_float64_parameters(dtype: Any) -> None:
    options = {"momentum": 0.9, "centered": True}
    params, fused = train([(64, 80), (70,)], {**options, "fused": True}, dtype)
    refs, reference = train([(64, 80), (70,)], {**options, "foreach": False}, dtype)
    assert fused.state[params[0]]["square_avg"].dtype == torch.uint8
    assert_close_states(fused, reference, params, refs)


def test_bfloat16_parameters_with_8bit_state_stay_on_the_reference_path() -> None:
    options = {"momentum": 0.9}
    params, fused = train([(64, 70)], {**options, "fused": True}, torch.bfloat16)
    refs, reference = train([(64, 70)], {**options, "foreach": False}, torch.bfloat16)
    assert torch.equal(params[0].detach(), refs[0].detach())
    for key, value in fused.state[params[0]].items():
        assert torch.equal(value, reference.state[refs[0]][key]), key


# ---- threads and kept steps -------------------------------------------------------------------


@pytest.mark.parametrize("layer", ["auto", "pool"])
def test_shares_on_several_threads_give_the_serial_bits(
    layer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    shapes = [(64, 70), (300, 50), (4096,), (3, 5), (97, 61)]
    options = {"momentum": 0.5, "centered": True, "fused": True}
    monkeypatch.setenv("RMSPROP_NUM_THREADS", "1")
    serial, serial_opt = train(shapes, options)
    monkeypatch.setenv("RMSPROP_NUM_THREADS", "2")
    monkeypatch.setenv("RMSPROP_CPU_THREADS", layer)
    monkeypatch.setattr(kernel, "SERIAL_BELOW", 1024)
    monkeypatch.setattr(kernel, "SERIAL_BELOW_POOL", 1024)
    threaded, threaded_opt = train(shapes, options)
    tables = quantized_tables(threaded_opt)
    assert tables and len(tables[0].shares(2, 1024)) == 2
    for p, o in zip(serial, threaded):
        assert torch.equal(p.detach(), o.detach())
        for key, value in serial_opt.state[p].items():
            assert torch.equal(value, threaded_opt.state[o][key]), key


@pytest.mark.skipif(not KEEPS_STEPS, reason="this torch keeps no fused step (torch 2.4)")
def test_a_kept_8bit_step_gives_the_bits_of_a_full_one() -> None:
    options = {"momentum": 0.9, "fused": True}
    kept, kept_opt = train([(64, 70), (3, 5)], options, steps=4)
    full, full_opt = train([(64, 70), (3, 5)], options, steps=4, forget_kept=True)
    assert kept_opt._kept
    for p, o in zip(kept, full):
        assert torch.equal(p.detach(), o.detach())
        for key, value in kept_opt.state[p].items():
            assert torch.equal(value, full_opt.state[o][key]), key


def test_replaced_scales_are_followed_by_a_new_plan() -> None:
    params, opt = train([(64, 70)], {"fused": True}, steps=2)
    state = opt.state[params[0]]
    old = state["square_avg_scales"]
    state["square_avg_scales"] = old.clone()  # counted: the plan must follow it
    before, new = old.clone(), state["square_avg_scales"]
    params[0].grad = torch.ones(64, 70)
    opt.step()
    assert torch.equal(old, before)  # no longer the state's: left alone
    assert not torch.equal(new, before)


# ---- bfloat16 state ------------------------------------------------------------------------


@pytest.mark.parametrize("stochastic", [True, False], ids=["stochastic", "nearest"])
@pytest.mark.parametrize(("name", "config"), CASES, ids=[name for name, _ in CASES])
def test_fused_bfloat16_state_is_the_float32_step_rounded(
    name: str, config: Any, stochastic: bool
) -> None:
    """From the same state, the kernel's bfloat16-state step is its float32-state step with
    each buffer rounded as `rmsprop.quantization.round_to_bfloat16` rounds it (stochastically
    with the buffer's seed, or to nearest even), bit for bit."""
    import copy

    from rmsprop.torch._fused import numba_cpu as launcher

    options = {**config_kwargs(config), "fused": True}
    params = make_params([(64, 70), (300,)])
    wide_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    narrow = RMSprop(params, state_dtype=torch.bfloat16, stochastic_rounding=stochastic, **options)
    wide = RMSprop(wide_params, **options)
    generator = torch.Generator().manual_seed(3)
    for step in range(1, STEPS + 1):
        for p, w in zip(params, wide_params):
            p.grad = torch.randn(p.shape, generator=generator)
            w.grad = p.grad.clone()
            w.data.copy_(p.detach())
        if step > 1:
            wide.load_state_dict(copy.deepcopy(narrow.state_dict()))  # widened to float32
        narrow.step()
        wide.step()
        tables = [t for plan in launcher._plans.values() for t, _ in plan.seeded]
        assert any(isinstance(t, kernel.Bfloat16StateTable) for t in tables)
        for p, w in zip(params, wide_params):
            assert torch.equal(p.detach(), w.detach()), name
            for buffer, key in enumerate(("square_avg", "grad_avg", "momentum_buffer")):
                if key not in narrow.state[p]:
                    continue
                seed = q.stream_seed(step, buffer) if stochastic else None
                want = q.round_to_bfloat16(wide.state[w][key].numpy(), seed)
                got = narrow.state[p][key].view(torch.int16).numpy().view(np.uint16).ravel()
                np.testing.assert_array_equal(got, want, err_msg=f"{name} {key} step {step}")


def test_the_bfloat16_encoder_keeps_nan_and_infinities() -> None:
    values = np.array([np.nan, -np.nan, np.inf, -np.inf, 3.4e38, -0.0, 1.0], np.float32)
    values = np.resize(values, q.BLOCK)
    for stochastic in (True, False):
        bits = np.zeros(q.BLOCK, np.uint16)
        kernel._encode_bfloat16(values, bits, kernel._stream_key(5, 0), 0, stochastic)
        want = q.round_to_bfloat16(values, q.stream_seed(5, 0) if stochastic else None)
        np.testing.assert_array_equal(bits, want)


# ---- warm-up -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state_dtype", "variant"),
    [("8bit", (np.dtype(np.float32), True, True, "8bit")),
     (torch.bfloat16, (np.dtype(np.float32), True, True, "bfloat16"))],
)  # fmt: skip
def test_a_new_optimizer_loads_its_low_memory_kernels_in_the_background(
    state_dtype: Any, variant: tuple[Any, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's optimizer starts loading the kernel its state takes (seconds to compile
    where Numba's cache is cold) before its first step, beside the float state's."""
    kernel.wait_for_warm_up()
    monkeypatch.setattr(kernel, "_warmed", set())  # (what earlier tests asked for: forgotten)
    params = make_params([(64, 70)])
    RMSprop(params, state_dtype=state_dtype, centered=True, momentum=0.9, fused=True)
    kernel.wait_for_warm_up()
    assert variant in kernel._warmed
    assert (np.dtype(np.float32), True, True) in kernel._warmed
