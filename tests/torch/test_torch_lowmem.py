"""Tests of `rmsprop.torch.RMSprop`'s low-memory state (``state_dtype="8bit"`` or bfloat16).

The format in torch ops against `rmsprop.quantization` (the same bits from the
same values, golden vectors included); one step of every distinct rule of the
flavor table from the same state against the NumPy oracle `rmsprop.quantization.update`;
every path (single-tensor, foreach, fused on the CPU) against the others; the
bfloat16-state step that failed when centered; checkpoints and conversions; bad
input that must change nothing; and the state's size on a model.
"""

from __future__ import annotations

import copy
import io
from typing import Any

import dtensors
import numpy as np
import pytest
from tables import TOLERANCES, config_kwargs, flavor_cases

torch = pytest.importorskip("torch", reason="the torch backend needs the torch extra")

import rmsprop  # noqa: E402
from rmsprop import quantization as q  # noqa: E402
from rmsprop.torch import RMSprop, _fused, _lowmem  # noqa: E402
from rmsprop.torch import rmsprop as functional_rmsprop  # noqa: E402

SHAPE = (64, 70)  # 4480 reals: 17 blocks and a partial one
SMALL = (3, 5)  # under 4096: float32 state
STEPS = 4
NO_FUSED_CPU = _fused.fused_kernel("cpu").why_not("cpu")
PATHS: dict[str, dict[str, Any]] = {
    "single-tensor": {"foreach": False},
    "foreach": {"foreach": True},
    "fused": {"fused": True},
}


def distinct_rules() -> list[tuple[str, rmsprop.Config]]:
    """The flavor table's cases with distinct rules: one per set of switches (and v₀ = 0 or
    not); the others differ only in numbers."""
    from rmsprop._lowering import switches

    seen: dict[Any, tuple[str, rmsprop.Config]] = {}
    for name, config in flavor_cases():
        seen.setdefault((switches(config), config.initial_square_avg > 0), (name, config))
    return list(seen.values())


CASES = distinct_rules()


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Any:
    """Tensors of a few thousand elements: one thread spares OpenMP's hand-offs, which on a
    busy machine cost milliseconds an operation."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def path_options(path: str) -> dict[str, Any]:
    if path == "fused" and NO_FUSED_CPU:
        pytest.skip(f"no fused kernel on CPU tensors here: {NO_FUSED_CPU}")
    return PATHS[path]


def draws(seed: int, shape: tuple[int, ...], count: int, dtype: Any = torch.float32) -> list[Any]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator).to(dtype) for _ in range(count)]


def make_params(shapes: list[tuple[int, ...]], dtype: Any = torch.float32) -> list[Any]:
    return [torch.nn.Parameter(draws(10 + i, shape, 1, dtype)[0]) for i, shape in enumerate(shapes)]


def train(params: list[Any], options: dict[str, Any], steps: int = STEPS, seed: int = 0) -> RMSprop:
    grads = [draws(seed + 100 + i, p.shape, steps, p.dtype) for i, p in enumerate(params)]
    opt = RMSprop(params, **options)
    for t in range(steps):
        for p, g in zip(params, grads):
            p.grad = g[t]
        opt.step()
    return opt


# ---- the format, bit for bit ---------------------------------------------------------------


def awkward_values(kind: str) -> np.ndarray:
    """Values over 30 decades, exact zeros, a NaN block, a partial last block."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(9000) * np.exp(rng.uniform(-30, 5, 9000))
    x[:3], x[600] = [0.0, 1e-30, 5.0], np.nan
    x[1024:1280] = 0.0  # a block whose scale is 0
    return np.float32(x * x if kind == "unsigned" else x)


@pytest.mark.parametrize("kind", ["unsigned", "signed"])
@pytest.mark.parametrize("seed", [0, 7, 2**32 - 1])
def test_quantize_and_dequantize_match_the_numpy_format(kind: str, seed: int) -> None:
    values = awkward_values(kind)
    want = q.quantize(values, kind, seed)  # type: ignore[arg-type]
    got = _lowmem.quantize(torch.from_numpy(values), kind, seed)  # type: ignore[arg-type]
    np.testing.assert_array_equal(got.codes.numpy(), want.codes)
    np.testing.assert_array_equal(got.scales.numpy(), want.scales)
    decoded = _lowmem.dequantize(got.codes, got.scales, kind)  # type: ignore[arg-type]
    np.testing.assert_array_equal(decoded.numpy(), q.dequantize(want, kind))  # type: ignore[arg-type]


def test_complex_values_are_quantized_as_their_real_view() -> None:
    values = torch.randn(80, 40, dtype=torch.complex64)
    got = _lowmem.quantize(values, "signed", 9)
    assert got.codes.shape == (80, 40, 2)
    want = q.quantize(values.numpy(), "signed", 9)
    np.testing.assert_array_equal(got.codes.reshape(-1).numpy(), want.codes)


@pytest.mark.parametrize("seed", [None, 3, 2**31 + 5])
def test_bfloat16_rounding_matches_the_numpy_format(seed: int | None) -> None:
    x = np.random.default_rng(1).standard_normal(70_000).astype(np.float32)
    x[:6] = [np.inf, -np.inf, np.nan, 3.3e38, -3.3e38, 1e-40]  # overflow, subnormal
    got = _lowmem.round_to_bfloat16(torch.from_numpy(x), seed)
    assert got.dtype == torch.bfloat16
    bits = got.view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(bits, q.round_to_bfloat16(x, seed))


def test_golden_values() -> None:
    # The same bits tests/test_quantization.py pins for every backend.
    assert [int(x) for x in _lowmem.fmix32(torch.tensor([1, 2, 0xFFFFFFFF]))] == [
        0x514E28B7, 0x30F4C306, 0x81F16F39,
    ]  # fmt: skip
    want = torch.tensor([15235900, 14919456, 7223804, 15234737]) * 2.0**-24
    assert torch.equal(_lowmem.uniform(4, 0, 4, "cpu"), want.float())
    i = torch.arange(4096 + 40)
    v = (((i * 73) % 1000 + 1).float() / 1000).float()
    codes = _lowmem.quantize(v, "unsigned", q.stream_seed(1, q.SQUARE_AVG)).codes
    assert codes[:8].tolist() == [44, 132, 158, 174, 188, 199, 208, 215]
    assert codes[-4:].tolist() == [229, 236, 241, 247]
    m = (((i * 37) % 255 - 127).float() / 128).float()
    codes = _lowmem.quantize(m, "signed", q.stream_seed(3, q.MOMENTUM_BUFFER)).codes
    assert codes[:8].tolist() == [1, 11, 26, 53, 209, 232, 246, 2]


# ---- the step against the NumPy oracle -----------------------------------------------------


def numpy_buffer(state: dict[str, Any], key: str) -> Any:
    value = state.get(key)
    if value is None:
        return None
    if value.dtype == torch.uint8:
        scales = state[_lowmem.scales_key(key)]
        return q.QuantizedBuffer(value.reshape(-1).numpy().copy(), scales.numpy().copy())
    if value.dtype == torch.bfloat16:
        return value.reshape(-1).view(torch.int16).numpy().view(np.uint16).copy()
    flat = torch.view_as_real(value) if value.is_complex() else value
    return flat.reshape(-1).numpy().copy()


def oracle_state(state: dict[str, Any]) -> q.LowMemoryState:
    """The torch optimizer's state of one parameter as `rmsprop.quantization`'s."""
    return q.LowMemoryState(
        int(state["step"]),
        *(numpy_buffer(state, key) for key in KEYS),
    )


def stored_units(buffer: Any) -> np.ndarray:
    """A stored buffer in units of its format's steps: codes, bfloat16 bit patterns as
    integers (one apart: one bfloat16 step), or float32 values."""
    if isinstance(buffer, q.QuantizedBuffer):
        return buffer.codes.astype(np.int64)
    return buffer.astype(np.int64) if buffer.dtype == np.uint16 else buffer


KEYS = ("square_avg", "grad_avg", "momentum_buffer")
# The float32 rules of torch and NumPy differ in operation order (lerp, addcdiv, a
# centered v - m² that cancels): new values, and so scales, agree to float32's tolerance.
FLOAT32 = TOLERANCES["float32"]
SCALE_RTOL = FLOAT32["rtol"]
FORMATS: dict[str, dict[str, Any]] = {
    "8bit": {"state_dtype": "8bit"},
    "bfloat16": {"state_dtype": torch.bfloat16, "stochastic_rounding": True},
}


@pytest.mark.parametrize("state_format", FORMATS)
def test_one_step_from_the_same_state_is_within_one_code_of_the_oracle(state_format: str) -> None:
    """Over every distinct rule, each of STEPS steps from the torch state: the oracle's codes
    (bfloat16 bits) are the same or one apart; the same where the float32 math agrees."""
    differing, far, compared = [], [], 0
    for name, config in CASES:
        params = make_params([SHAPE, SMALL])
        grads = [draws(200, p.shape, STEPS) for p in params]
        opt = RMSprop(params, **config_kwargs(config), **FORMATS[state_format], foreach=False)
        for p, g in zip(params, grads):
            p.grad = g[0]
        opt._init_group(opt.param_groups[0], [], [], [], [], [], [])  # the state, as created
        for p in params:
            initial = q.init(p.detach().numpy(), config, state_format)  # type: ignore[arg-type]
            for ours, theirs in zip(oracle_state(opt.state[p])[1:], initial[1:]):
                assert theirs is None or np.array_equal(stored_units(ours), stored_units(theirs))
        for t in range(STEPS):
            expected = []
            for p, g in zip(params, grads):
                state = oracle_state(opt.state[p])
                expected.append(q.update(p.detach().numpy(), g[t].numpy(), state, config))
            for p, g in zip(params, grads):
                p.grad = g[t]
            opt.step()
            for p, (theta, want) in zip(params, expected):
                np.testing.assert_allclose(p.detach().numpy(), theta, **FLOAT32, err_msg=name)
                got = oracle_state(opt.state[p])
                assert got.step == want.step == t + 1
                for key, ours, theirs in zip(KEYS, got[1:], want[1:]):
                    where = f"{name}, step {t + 1}, {key}"
                    if theirs is None:
                        continue
                    if isinstance(theirs, q.QuantizedBuffer):
                        np.testing.assert_allclose(
                            ours.scales, theirs.scales, SCALE_RTOL, err_msg=where
                        )
                    elif theirs.dtype == np.float32:  # a small parameter's float32 state
                        np.testing.assert_allclose(ours, theirs, **FLOAT32, err_msg=where)
                        continue
                    a, b = stored_units(ours), stored_units(theirs)
                    far.append(int(np.sum(np.abs(a - b) > 1)))
                    assert far[-1] <= 1, where
                    differing.append(float(np.mean(a != b)))
                    compared += 1
    assert compared >= len(CASES) * STEPS
    assert np.mean(differing) < 1e-3, np.mean(differing)
    assert sum(far) <= 2, far


@pytest.mark.parametrize("state_format", FORMATS)
def test_complex_and_float64_parameters_match_the_oracle(state_format: str) -> None:
    config = rmsprop.flavor("pytorch", momentum=0.9, centered=True, weight_decay=0.1)
    # (complex parameters keep complex state beside a floating state_dtype)
    for dtype in (torch.complex64, torch.float64)[state_format == "bfloat16" :]:
        p = torch.nn.Parameter(draws(3, (64, 35), 1, dtype)[0])
        grads = draws(4, p.shape, STEPS, dtype)
        opt = RMSprop([p], **config_kwargs(config), **FORMATS[state_format], foreach=False)
        p.grad = grads[0]
        opt._init_group(opt.param_groups[0], [], [], [], [], [], [])
        for t in range(STEPS):
            theta, state = p.detach().numpy().copy(), oracle_state(opt.state[p])
            p.grad = grads[t]
            opt.step()
            theta, state = q.update(theta, grads[t].numpy(), state, config)
            np.testing.assert_allclose(p.detach().numpy(), theta, rtol=1e-5, atol=1e-6)
            for ours, theirs in zip(oracle_state(opt.state[p])[1:], state[1:]):
                assert np.max(np.abs(stored_units(ours) - stored_units(theirs))) <= 1
        if state_format == "8bit" and dtype == torch.complex64:
            assert opt.state[p]["square_avg"].shape == (64, 35, 2)


def test_bfloat16_parameters_with_8bit_state_are_stepped_in_float32() -> None:
    config = rmsprop.flavor("pytorch", momentum=0.9, weight_decay=0.1, decoupled_weight_decay=True)
    p = torch.nn.Parameter(draws(5, SHAPE, 1, torch.bfloat16)[0])
    p.grad = draws(6, SHAPE, 1, torch.bfloat16)[0]
    theta = p.detach().float().numpy()
    RMSprop([p], **config_kwargs(config), state_dtype="8bit", foreach=False).step()
    want, _ = q.update(theta, p.grad.float().numpy(), q.init(theta, config, "8bit"), config)
    # float32 math rounded once to bfloat16
    want_bf16 = torch.from_numpy(want).bfloat16()
    assert p.dtype == torch.bfloat16
    assert (p.detach().float() - want_bf16.float()).abs().max() <= 2**-7 * want_bf16.abs().max()


# ---- the bfloat16-state step ----------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_bfloat16_state_of_float32_parameters_steps_when_centered(path: str) -> None:
    # Failed with "expected dtype c10::BFloat16 for 'end'" on every path before.
    p = torch.nn.Parameter(torch.randn(5000))
    p.grad = torch.randn(5000)
    opt = RMSprop(
        [p], centered=True, momentum=0.9, state_dtype=torch.bfloat16, **path_options(path)
    )
    opt.step()
    assert all(opt.state[p][k].dtype == torch.bfloat16 for k in ("square_avg", "grad_avg"))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("param_dtype", "state_dtype"), [
    (torch.float32, torch.bfloat16), (torch.float64, torch.float32), (torch.float32, torch.float16),
    (torch.bfloat16, torch.float32),
])  # fmt: skip
def test_narrow_state_is_float_math_stored_once(
    path: str, param_dtype: Any, state_dtype: Any
) -> None:
    """Every rule, from the same state: state narrower than the math is the wide rule's new
    values rounded to nearest (no stochastic_rounding); wider state steps as before."""
    options = path_options(path)
    for name, config in CASES:
        params = make_params([SHAPE, SMALL], param_dtype)
        wide_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
        narrow = train(params, {**config_kwargs(config), **options, "state_dtype": state_dtype}, 2)
        math = torch.promote_types(torch.promote_types(param_dtype, state_dtype), torch.float32)
        # (the same path: foreach's bits are the loop's only where the foreach ops' are, and
        # the fused CPU kernel steps float32 parameters' bfloat16 state with its own rule)
        kernel_steps_it = (param_dtype, state_dtype) == (torch.float32, torch.bfloat16)
        same = options if path == "fused" and kernel_steps_it else {"foreach": path == "foreach"}
        wide = RMSprop(wide_params, **config_kwargs(config), state_dtype=math, **same)
        wide.load_state_dict(copy.deepcopy(narrow.state_dict()))  # (torch's load aliases steps)
        for p, w in zip(params, wide_params):
            w.data.copy_(p.detach())
        g = draws(9, SHAPE, 1)[0]
        for p, w in zip(params, wide_params):
            p.grad = w.grad = g[: p.shape[0], : p.shape[1]].to(param_dtype)
        narrow.step()
        wide.step()
        for p, w in zip(params, wide_params):
            assert torch.equal(p.detach(), w.detach()), name
            for key, value in narrow.state[p].items():
                assert value.dtype == (torch.float32 if key == "step" else state_dtype)
                assert torch.equal(value, wide.state[w][key].to(value.dtype)), (name, key)


def test_stochastic_bfloat16_state_is_unbiased_where_nearest_freezes() -> None:
    # v ≈ 1 takes a change of 2^-12 per step: under half a bfloat16 step (2^-8).
    p = torch.nn.Parameter(torch.zeros(4096))
    g = (1 + 2**-12 / 0.001) ** 0.5
    want, results = 1.0, {}
    for _ in range(200):
        want = 0.999 * want + 0.001 * g * g
    for stochastic in (False, True):
        bfloat16 = {"state_dtype": torch.bfloat16, "stochastic_rounding": stochastic}
        opt = RMSprop([p], lr=0.0, alpha=0.999, initial_square_avg=1.0, foreach=True, **bfloat16)
        for _ in range(200):
            p.grad = torch.full_like(p, g)
            opt.step()
        results[stochastic] = opt.state[p]["square_avg"].float().mean().item()
    assert results[False] == 1.0
    assert abs(results[True] - want) < 0.1 * (want - 1), (results, want)


@dtensors.needed
def test_stochastic_bfloat16_state_of_dtensors_is_rounded_shard_by_shard() -> None:
    options = {"state_dtype": torch.bfloat16, "stochastic_rounding": True, "foreach": False}
    plain = make_params([SHAPE])
    with dtensors.one_rank_mesh("cpu") as mesh:
        sharded = [
            torch.nn.Parameter(dtensors.as_dtensor(plain[0].detach().clone(), mesh, "shard"))
        ]
        opt, plain_opt = RMSprop(sharded, **options), RMSprop(plain, **options)
        for g in draws(8, SHAPE, 2):
            plain[0].grad = g
            sharded[0].grad = dtensors.as_dtensor(g, mesh, "shard")
            opt.step()
            plain_opt.step()
        v = opt.state[sharded[0]]["square_avg"]
        assert torch.equal(v.to_local(), plain_opt.state[plain[0]]["square_avg"])  # one shard
        assert torch.equal(sharded[0].to_local(), plain[0].detach())


@dtensors.needed
@pytest.mark.parametrize("path", PATHS)
def test_8bit_state_of_dtensors_is_quantized_shard_by_shard(path: str) -> None:
    # One rank: the shard is the whole tensor, so its state is the plain tensor's, bit for
    # bit, in DTensors (tests/distributed/ has 2 ranks, each shard in blocks of its own).
    options = {**path_options(path), "state_dtype": "8bit", "momentum": 0.9, "centered": True}
    plain = make_params([SHAPE])
    cplx = torch.nn.Parameter(torch.randn(64, 40, dtype=torch.complex64))
    plain.append(cplx)
    with dtensors.one_rank_mesh("cpu") as mesh:
        sharded = [
            torch.nn.Parameter(dtensors.as_dtensor(p.detach().clone(), mesh, "shard"))
            for p in plain
        ]
        opt, plain_opt = RMSprop(sharded, **options), RMSprop(plain, **options)
        for g, h in zip(draws(8, SHAPE, 3), draws(9, (64, 80), 3)):
            grads = [g, torch.view_as_complex(h.reshape(64, 40, 2))]
            for p, s, grad in zip(plain, sharded, grads):
                p.grad = grad
                s.grad = dtensors.as_dtensor(grad, mesh, "shard")
            opt.step()
            plain_opt.step()
        assert opt.state_nbytes() == plain_opt.state_nbytes()
        full = opt.full_precision_state_dict()["state"]
        plain_full = plain_opt.full_precision_state_dict()["state"]
        for i, (p, s) in enumerate(zip(plain, sharded)):
            assert torch.equal(s.to_local(), p.detach())
            state = opt.state[s]
            for key, value in plain_opt.state[p].items():
                if key == "step":
                    continue
                stored = state[key]
                assert type(stored).__name__ == "DTensor", key
                local = stored.to_local()
                if key.endswith("_scales"):  # (shards, blocks): one row here
                    assert stored.shape == (1, value.numel())
                assert torch.equal(local.reshape(value.shape), value), key
            for key, value in plain_full[i].items():  # decoded: DTensor float32 state
                decoded = full[i][key]
                assert torch.equal(decoded if key == "step" else decoded.to_local(), value), key


# ---- every path -----------------------------------------------------------------------------


@pytest.mark.parametrize("state_format", FORMATS)
def test_every_path_computes_the_same_bits(state_format: str) -> None:
    for name, config in CASES[::3]:
        runs = {}
        for path in PATHS:
            if path == "fused":
                continue  # the CPU kernel's own float rule: test_torch_lowmem_fused.py
            params = make_params([SHAPE, (80, 60)])  # (no float32 state: the kernel's own bits)
            opt = train(params, {**config_kwargs(config), **PATHS[path], **FORMATS[state_format]})
            runs[path] = (params, opt)
        (params, opt), *others = runs.values()
        for other_params, other in others:
            for p, o in zip(params, other_params):
                assert torch.equal(p.detach(), o.detach()), name
                for key, value in opt.state[p].items():
                    assert torch.equal(value, other.state[o][key]), (name, key)


def test_8bit_codes_without_their_scales_are_refused_by_the_functional_step() -> None:
    p, codes = torch.zeros(5000), torch.zeros(5000, dtype=torch.uint8)
    with pytest.raises(RuntimeError, match="block scales this step was not given"):
        functional_rmsprop([p], [torch.ones(5000)], [codes], [], [], [torch.zeros(())],
                           foreach=False, **{k: v for k, v in config_kwargs(rmsprop.Config())
                                             .items() if k != "initial_square_avg"})  # fmt: skip


# ---- the state ---------------------------------------------------------------------------------


def test_8bit_state_layout_and_initial_values() -> None:
    big, small = make_params([SHAPE, SMALL])
    cplx = torch.nn.Parameter(torch.zeros(64, 40, dtype=torch.complex64))
    opt = RMSprop([big, small, cplx], state_dtype="8bit", momentum=0.9, centered=True,
                  initial_square_avg=0.1)  # fmt: skip
    for p in (big, small, cplx):
        p.grad = torch.zeros_like(p)
    opt.step()  # a step with zero gradients
    state = opt.state[big]
    assert sorted(state) == sorted(["step", *KEYS, *map(_lowmem.scales_key, KEYS)])
    assert state["square_avg"].dtype == torch.uint8 and state["square_avg"].shape == SHAPE
    assert state["square_avg_scales"].dtype == torch.float32
    assert state["square_avg_scales"].shape == (-(-SHAPE[0] * SHAPE[1] // 256),)
    assert opt.state[cplx]["momentum_buffer"].shape == (64, 40, 2)
    assert sorted(opt.state[small]) == ["grad_avg", "momentum_buffer", "square_avg", "step"]
    assert opt.state[small]["square_avg"].dtype == torch.float32
    fresh = RMSprop([big], state_dtype="8bit", momentum=0.9, initial_square_avg=0.1)
    fresh._init_group(fresh.param_groups[0], [], [], [], [], [], [])
    v = fresh.state[big]
    assert bool((v["square_avg"] == 255).all()) and bool((v["square_avg_scales"] == 0.1).all())
    assert bool((v["momentum_buffer"] == 128).all()) and not v["momentum_buffer_scales"].any()


def test_bytes_per_parameter_of_a_model() -> None:
    torch.manual_seed(0)
    width = 1024
    model = torch.nn.Sequential(  # one transformer-like block: attention projections and MLP
        torch.nn.LayerNorm(width), torch.nn.Linear(width, 3 * width),
        torch.nn.Linear(width, width), torch.nn.LayerNorm(width),
        torch.nn.Linear(width, 4 * width), torch.nn.Linear(4 * width, width),
    )  # fmt: skip
    count = sum(p.numel() for p in model.parameters())
    assert count >= 1_000_000
    opt = RMSprop(model.parameters(), lr=0.0, state_dtype="8bit", momentum=0.9, centered=True)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # (zero gradients, lr 0: creates the state only)
    buffers = 3
    per_parameter = _lowmem.state_nbytes(opt.state) / (count * buffers)
    assert per_parameter <= 1.02, per_parameter
    planned = sum(_lowmem.buffer_nbytes(p, "8bit") for p in model.parameters())
    assert planned * buffers == _lowmem.state_nbytes(opt.state)
    assert sum(_lowmem.buffer_nbytes(p, None) for p in model.parameters()) == 4 * count


def test_share_memory_shares_codes_and_scales() -> None:
    p = torch.nn.Parameter(torch.randn(SHAPE)).share_memory_()
    opt = RMSprop([p], state_dtype="8bit", momentum=0.9).share_memory()
    assert all(value.is_shared() for value in opt.state[p].values())


# ---- checkpoints --------------------------------------------------------------------------------


def saved_and_loaded(state_dict: dict[str, Any]) -> dict[str, Any]:
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    loaded: dict[str, Any] = torch.load(buffer, weights_only=True)
    return loaded


def test_8bit_checkpoints_round_trip_exactly_and_training_continues_the_same() -> None:
    options = {"state_dtype": "8bit", "momentum": 0.9, "centered": True, "foreach": False}
    params = make_params([SHAPE, SMALL])
    opt = train(params, options)
    twin = [torch.nn.Parameter(p.detach().clone()) for p in params]
    twin_opt = RMSprop(twin, **options)
    twin_opt.load_state_dict(saved_and_loaded(opt.state_dict()))
    for p, t in zip(params, twin):
        for key, value in opt.state[p].items():
            assert value.dtype == twin_opt.state[t][key].dtype
            assert torch.equal(value, twin_opt.state[t][key]), key
    grads = draws(3, SHAPE, 2)
    for g in grads:
        for p, t in zip(params, twin):
            p.grad = t.grad = g[: p.shape[0], : p.shape[1]].contiguous()
        opt.step()
        twin_opt.step()
    for p, t in zip(params, twin):
        assert torch.equal(p.detach(), t.detach())
        assert all(torch.equal(v, twin_opt.state[t][k]) for k, v in opt.state[p].items())


def test_a_float32_state_dict_is_quantized_on_load() -> None:
    params = make_params([SHAPE, SMALL])
    grads = draws(1, SHAPE, 3)
    plain = torch.optim.RMSprop(params, momentum=0.9, centered=True)
    for g in grads:
        for p in params:
            p.grad = g[: p.shape[0], : p.shape[1]].contiguous()
        plain.step()
    opt = RMSprop(params, momentum=0.9, centered=True, state_dtype="8bit")
    opt.load_state_dict(plain.state_dict())
    big, small = params
    for key in ("square_avg", "grad_avg", "momentum_buffer"):
        value = plain.state[big][key]
        want = _lowmem.quantize_buffer(value, key, 3)  # the seed of the step it was saved at
        assert torch.equal(opt.state[big][key], want.codes)
        assert torch.equal(opt.state[big][_lowmem.scales_key(key)], want.scales)
        decoded = _lowmem.dequantize_buffer(want.codes, want.scales, key, big)
        torch.testing.assert_close(decoded, value, rtol=0.2, atol=1e-3 * value.abs().max().item())
        assert torch.equal(opt.state[small][key], plain.state[small][key])


def test_an_8bit_state_dict_is_decoded_by_float_optimizers() -> None:
    params = make_params([SHAPE, SMALL])
    opt = train(params, {"state_dtype": "8bit", "momentum": 0.9})
    big = params[0]
    state = opt.state[big]
    decoded = {
        key: _lowmem.dequantize_buffer(state[key], state[_lowmem.scales_key(key)], key, big)
        for key in ("square_avg", "momentum_buffer")
    }
    ours = RMSprop(params, momentum=0.9)
    ours.load_state_dict(opt.state_dict())
    plain = torch.optim.RMSprop(params, momentum=0.9)
    full = opt.full_precision_state_dict()
    assert not any(key.endswith("_scales") for entry in full["state"].values() for key in entry)
    plain.load_state_dict(full)
    for loaded in (ours, plain):
        assert sorted(loaded.state[big]) == ["momentum_buffer", "square_avg", "step"]
        for key, value in decoded.items():
            assert loaded.state[big][key].dtype == torch.float32
            assert torch.equal(loaded.state[big][key], value), key
    assert opt.state[big]["square_avg"].dtype == torch.uint8  # (exporting changed nothing)


def test_a_bfloat16_state_dict_is_exported_in_float32() -> None:
    params = make_params([SHAPE])
    opt = train(params, {"state_dtype": torch.bfloat16, "stochastic_rounding": True,
                         "foreach": False})  # fmt: skip
    full = opt.full_precision_state_dict()["state"][0]["square_avg"]
    assert full.dtype == torch.float32
    assert torch.equal(full, opt.state[params[0]]["square_avg"].float())


def _bad_entries(entry: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    codes, scales = entry["square_avg"], entry["square_avg_scales"]
    return [
        ("codes of the wrong shape", {"square_avg": codes.reshape(70, 64)}, "codes of shape"),
        ("flat codes", {"square_avg": codes.reshape(-1)}, "codes of shape"),
        ("no scales", {"square_avg_scales": None}, "without their scales"),
        ("scales too short", {"square_avg_scales": scales[:-1]}, r"float32 of shape \(18,\)"),
        ("float64 scales", {"square_avg_scales": scales.double()}, r"float32 of shape"),
        ("scales beside floats", {"square_avg": codes.float()}, "not 8-bit codes"),
        ("scales without codes", {"grad_avg_scales": scales}, "has 'grad_avg_scales' but no"),
        ("negative average", {"square_avg": -codes.float(), "square_avg_scales": None},
         "negative values"),
    ]  # fmt: skip


def test_bad_8bit_state_is_refused_and_changes_nothing() -> None:
    params = make_params([SHAPE])
    opt = train(params, {"state_dtype": "8bit", "momentum": 0.9})
    saved = opt.state_dict()
    before = copy.deepcopy(opt.state_dict())
    for what, change, message in _bad_entries(saved["state"][0]):
        bad = copy.deepcopy(saved)
        bad["state"][0].update(change)
        bad["state"][0] = {k: v for k, v in bad["state"][0].items() if v is not None}
        with pytest.raises(ValueError, match=message):
            opt.load_state_dict(bad)
        now = opt.state_dict()
        for key, value in before["state"][0].items():
            assert torch.equal(now["state"][0][key], value), (what, key)


@pytest.mark.parametrize(("state_dtype", "error", "message"), [
    ("4bit", ValueError, "state_dtype='4bit' is not a state format"),
    ("float16", ValueError, "state_dtype='float16' is not a state format"),
    (torch.int8, TypeError, r"must be a floating torch\.dtype, '8bit' or None, got torch\.int8"),
    (8, TypeError, "got 8"),
])  # fmt: skip
def test_unknown_state_dtypes_are_refused_at_construction(
    state_dtype: Any, error: Any, message: str
) -> None:
    with pytest.raises(error, match=message):
        RMSprop([torch.nn.Parameter(torch.zeros(2))], state_dtype=state_dtype)


def test_options_that_cannot_go_together_are_refused() -> None:
    params = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(
        ValueError, match="state_dtype='8bit' cannot be combined with differentiable"
    ):
        RMSprop(params, state_dtype="8bit", differentiable=True)
    with pytest.raises(ValueError, match="stochastic_rounding=True cannot be combined with differ"):
        RMSprop(params, state_dtype=torch.bfloat16, stochastic_rounding=True, differentiable=True)
    with pytest.raises(ValueError, match="stochastic_rounding=True needs the fused kernel"):
        RMSprop(params, state_dtype="8bit", stochastic_rounding=True, foreach=True)
    opt = RMSprop(params, state_dtype="bfloat16", stochastic_rounding=True, foreach=True)
    assert opt.state_dtype == torch.bfloat16
    clone = copy.deepcopy(RMSprop(params, state_dtype="8bit"))
    assert clone.state_dtype == "8bit"
