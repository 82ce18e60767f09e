"""Low-memory state in the fused Triton kernel: 8-bit codes and stochastically rounded bfloat16.

The kernel's encoder against `rmsprop.quantization` bit for bit (zero, NaN,
infinite and tiny blocks, a partial last block); a whole 8-bit step against the
float kernel's step followed by the NumPy format (bit for bit: the same float32
rule, then the same codes); the optimizer's 8-bit step against the reference
path (`rmsprop.torch._lowmem.step_in_float`, foreach=False) over every option,
within one code; stochastic bfloat16 state against
`rmsprop.quantization.round_to_bfloat16` of the float kernel's values (bit for
bit) and against the reference path; the group kept on the fused path; kept
steps; replaced scales.

Like tests/torch/test_torch_triton.py these run where the kernel does: on
CUDA, or on CPU tensors in the interpreted run of ci/test.sh
(``TRITON_INTERPRET=1``); elsewhere they skip, saying why. Tensors are few and
small (the interpreter is slow).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
from tables import config_kwargs, flavor_cases

torch = pytest.importorskip("torch", reason="the torch backend needs the torch extra")
triton = pytest.importorskip("triton", reason="the fused CUDA kernel needs the triton extra")
tl = triton.language

from rmsprop.kernels import triton as kernel  # noqa: E402

if not kernel.AVAILABLE:  # an older triton, pinned by an older torch
    pytest.skip(kernel.WHY_UNAVAILABLE, allow_module_level=True)

from rmsprop import Config  # noqa: E402
from rmsprop import quantization as q  # noqa: E402
from rmsprop.torch import LaunchSettings, RMSprop, _fused, _lowmem, _optimizer, rmsprop  # noqa: E402
from rmsprop.torch._fused import triton as launcher  # noqa: E402
from rmsprop.torch._step import StepTensors  # noqa: E402

INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
CUDA = torch.cuda.is_available() and not INTERPRETING
# Every test but the compilation check steps tensors, where the kernel runs.
runs_kernel = pytest.mark.skipif(
    not (INTERPRETING or CUDA),
    reason="the Triton kernel runs on CUDA tensors, or on CPU tensors through Triton's "
    "interpreter (ci/test.sh's TRITON_INTERPRET=1 run)",
)
DEVICE = "cpu" if INTERPRETING else "cuda"

# Few programs per tensor: the interpreter's cost is per program.
LAUNCH = LaunchSettings(block=4096, num_warps=4)
# A partial last block (4480 = 17.5 blocks of 256), a complex one, one too small for 8 bits.
SHAPES = [(64, 70), (3, 5)]
STEPS = 3


def _rule_named(*names: str) -> list[tuple[str, Any]]:
    found = dict(flavor_cases())
    return [(name, found[name]) for name in names]


# Every option at least once: lr outside and inside momentum, Nesterov, both weight decays,
# maximize, centered, bias correction, eps inside and outside the root, v starting at 1.
RULES = _rule_named(
    "pytorch-as-is",
    "pytorch-nesterov",
    "pytorch-lr-in-momentum-flipped",
    "pytorch-decoupled",
    "tensorflow-nesterov",
    "graves-bias-correction",
    "graves-maximize",
    "dqn-decoupled",
    "keras-maximize",
)


def make_params(shapes: list[tuple[int, ...]], dtype: Any = torch.float32) -> list[Any]:
    generator = torch.Generator().manual_seed(1)
    return [
        torch.nn.Parameter(torch.randn(s, generator=generator, dtype=dtype).to(DEVICE))
        for s in shapes
    ]


def train(
    options: dict[str, Any],
    shapes: list[tuple[int, ...]] = SHAPES,
    dtype: Any = torch.float32,
    steps: int = STEPS,
    forget_kept: bool = False,
) -> tuple[list[Any], RMSprop]:
    params = make_params(shapes, dtype)
    generator = torch.Generator().manual_seed(2)
    options = {"state_dtype": "8bit", **options}
    if options.get("fused"):
        options.setdefault("launch", LAUNCH)
    opt = RMSprop(params, **options)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator, dtype=dtype).to(DEVICE)
        if forget_kept:
            opt._kept.clear()
        opt.step()
    return params, opt


def launches() -> list[Any]:
    return [launch for plan in launcher._plans.values() for launch in plan.launches]


def assert_within_one_code(
    fused: RMSprop, reference: RMSprop, params: list[Any], refs: list[Any]
) -> None:
    """Close, not equal: the kernel's float32 math may differ from torch's in the last bit,
    and a stochastic rounding of such a value may pick the other neighbour (whose value
    then moves its parameter by a few % of one update on the next step)."""
    for p, r in zip(params, refs):
        a, b = p.detach().cpu(), r.detach().cpu()
        a = torch.view_as_real(a) if a.is_complex() else a
        b = torch.view_as_real(b) if b.is_complex() else b
        assert torch.isclose(a, b, rtol=1e-4, atol=1e-5).float().mean() > 0.995
        assert (a - b).abs().max() < 0.05
        for key, value in fused.state[p].items():
            value, other = value.cpu(), reference.state[r][key].cpu()
            if value.dtype == torch.uint8:
                assert value.shape == other.shape, key
                apart = (value.int() - other.int()).abs()
                assert (apart == 0).float().mean() > 0.99, key
                assert apart.max() <= 1, key
            elif key.endswith("_scales"):
                torch.testing.assert_close(value, other, rtol=2e-2, atol=1e-6)
            else:
                torch.testing.assert_close(value, other, rtol=1e-4, atol=1e-6)


# ---- the encoder, bit for bit ------------------------------------------------------------


@triton.jit
def _encode_kernel(  # type: ignore[no-untyped-def]
    values,
    codes,
    scales,
    maps,
    n,
    t,
    SIGNED: tl.constexpr,  # noqa: N803 (Triton's convention: constants in capitals)
    BUFFER: tl.constexpr,  # noqa: N803
):
    # One block of 1024 per program, as the step cuts them: rows of 256, the last masked;
    # the seed as the step computes it, stream_seed(t, buffer).
    start = tl.program_id(0).to(tl.int64) * 1024
    rows = tl.arange(0, 4)
    offsets = rows[:, None] * 256 + tl.arange(0, 256)[None, :]
    mask = offsets < n - start
    x = tl.load(values + start + offsets, mask=mask, other=0.0)
    key = kernel._stream_key(t, BUFFER)
    kernel._encode(
        codes + start, scales + start // 256, maps, offsets, rows, mask,
        rows * 256 < n - start, x, start + offsets, key, SIGNED, True,
    )  # fmt: skip


def crafted(kind: str) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(9000) * np.exp(rng.uniform(-30, 5, 9000))
    x[:3], x[600], x[2100] = [0.0, 1e-30, 5.0], np.nan, -np.inf
    x[1024:1280] = 0.0  # a block whose scale is 0
    x[3072:3328] = rng.standard_normal(256) * 1e-19  # a block of tiny values (v ~ 1e-38)
    x[4096:4352] = rng.choice([-1.0, 1.0], 256) * q.SIGNED_MAP[rng.integers(129, 256, 256)]
    return np.float32(x * x if kind == "unsigned" else x)  # (x²: NaN and +inf stay)


@runs_kernel
@pytest.mark.parametrize("kind", ["unsigned", "signed"])
@pytest.mark.parametrize("n", [9000, 4096])
def test_triton_encoder_matches_the_numpy_format(kind: str, n: int) -> None:
    values = crafted(kind)[:n]  # 9000: a partial last block and a partial last program
    seed = q.stream_seed(11, q.GRAD_AVG)
    want = q.quantize(values, kind, seed)
    codes = torch.zeros(n, dtype=torch.uint8, device=DEVICE)
    scales = torch.zeros(-(-n // 256), dtype=torch.float32, device=DEVICE)
    _encode_kernel[(-(-n // 1024),)](
        torch.from_numpy(values).to(DEVICE),
        codes,
        scales,
        launcher._maps(torch.device(DEVICE))[1],
        n,
        11,
        SIGNED=kind == "signed",
        BUFFER=q.GRAD_AVG,
    )
    np.testing.assert_array_equal(scales.cpu().numpy(), want.scales)
    np.testing.assert_array_equal(codes.cpu().numpy(), want.codes)


# ---- a whole step: the float kernel's, then the format ------------------------------------


def _functional_step(params, grads, state, steps, options, launch):  # type: ignore[no-untyped-def]
    square_avgs, grad_avgs, buffers = state
    rmsprop(
        params, grads, square_avgs, grad_avgs, buffers, steps,
        foreach=False, fused=True, launch=launch, **options,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("name", "config"),
    _rule_named("pytorch-as-is", "graves-bias-correction", "dqn-decoupled"),
    ids=lambda value: value if isinstance(value, str) else "",
)
@pytest.mark.parametrize("block", [128, 1024])  # 128: launched in blocks of 256 anyway
@runs_kernel
def test_triton_8bit_step_is_the_float_step_then_the_format(
    name: str, config: Any, block: int
) -> None:
    options = _full(config_kwargs(config))
    shape, t = (64, 70), 7  # a partial last block and a partial last program; step 7 → 8
    generator = torch.Generator().manual_seed(3)
    theta = torch.randn(shape, generator=generator)
    grad = torch.randn(shape, generator=generator)
    buffers = {
        "square_avg": torch.rand(shape, generator=generator) ** 2,
        "grad_avg": torch.randn(shape, generator=generator) * 0.1,
        "momentum_buffer": torch.randn(shape, generator=generator) * 0.01,
    }
    keys = ["square_avg"]
    keys += ["grad_avg"] if config.centered else []
    keys += ["momentum_buffer"] if config.momentum > 0 else []
    stored = {k: _lowmem.quantize_buffer(buffers[k], k, t) for k in keys}
    decoded = {k: _lowmem.dequantize_buffer(*stored[k], k, theta) for k in keys}

    def lists(values: dict[str, Any]) -> tuple[list[Any], list[Any], list[Any]]:
        return tuple([values[k]] if k in values else [] for k in _lowmem.BUFFER_KEYS)  # type: ignore[return-value]

    launch = LaunchSettings(block=block, num_warps=4)
    # 8-bit: codes and scales, their format recorded as the optimizer records it.
    p8, codes = theta.clone().to(DEVICE), {}
    for k in keys:
        codes[k] = stored[k].codes.clone().to(DEVICE)
        _lowmem.keep_format(codes[k], stored[k].scales.clone().to(DEVICE))
    step8 = torch.tensor(float(t), device=DEVICE)
    _functional_step([p8], [grad.to(DEVICE)], lists(codes), [step8], options, launch)
    assert [x.stored for x in launches() if x.indices == [0] and x.block == max(block, 256)]
    # float32: the decoded values, stepped by the float kernel.
    pf, floats = theta.clone().to(DEVICE), {k: decoded[k].clone().to(DEVICE) for k in keys}
    stepf = torch.tensor(float(t), device=DEVICE)
    _functional_step([pf], [grad.to(DEVICE)], lists(floats), [stepf], options, launch)

    assert torch.equal(p8.cpu(), pf.cpu())
    assert step8.item() == stepf.item() == t + 1
    for k in keys:
        seed = q.stream_seed(t + 1, _lowmem.BUFFER_KEYS.index(k))
        want = q.quantize(floats[k].cpu().numpy(), _lowmem.KIND_OF[k], seed)
        scales = _lowmem.format_of(codes[k]).scales  # type: ignore[union-attr]
        np.testing.assert_array_equal(scales.cpu().numpy(), want.scales, err_msg=k)
        np.testing.assert_array_equal(codes[k].cpu().numpy().reshape(-1), want.codes, err_msg=k)


# ---- the optimizer: every option, against the reference path ------------------------------


@runs_kernel
@pytest.mark.parametrize(("name", "config"), RULES, ids=[name for name, _ in RULES])
def test_triton_8bit_steps_are_within_one_code_of_the_reference(name: str, config: Any) -> None:
    options = config_kwargs(config)
    params, fused = train({**options, "fused": True})
    refs, reference = train({**options, "foreach": False})
    assert fused._kept, "an 8-bit group the kernel takes whole is kept"
    assert any(launch.stored == "8bit" for launch in launches())
    assert fused.state[params[0]]["square_avg"].dtype == torch.uint8
    assert_within_one_code(fused, reference, params, refs)


@runs_kernel
def test_triton_8bit_complex_parameters() -> None:
    options = {"momentum": 0.9, "centered": True}
    shapes = [(48, 50), (70,)]  # 4800 reals: quantized; 140: float32
    params, fused = train({**options, "fused": True}, shapes, torch.complex64)
    refs, reference = train({**options, "foreach": False}, shapes, torch.complex64)
    assert fused.state[params[0]]["square_avg"].shape == (48, 50, 2)
    assert fused._kept
    assert_within_one_code(fused, reference, params, refs)


@runs_kernel
def test_triton_takes_the_group_without_the_reference_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the reference path stepped state the kernel takes")

    monkeypatch.setattr(_lowmem, "step_in_float", refuse)
    params, opt = train({"fused": True, "momentum": 0.9, "centered": True})
    assert opt._kept and opt.state[params[0]]["momentum_buffer"].dtype == torch.uint8
    p, state = params[0], opt.state[params[0]]
    assert _fused.takes_stored_format(p, p.grad, [state["square_avg"]])


@runs_kernel
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_triton_leaves_8bit_state_of_other_parameters_to_the_reference(dtype: Any) -> None:
    # float64 (the kernel's math is float32) and 16-bit parameters beside 8-bit state.
    options = {"momentum": 0.9}
    params, fused = train({**options, "fused": True}, [(64, 70)], dtype, steps=2)
    refs, reference = train({**options, "foreach": False}, [(64, 70)], dtype, steps=2)
    state = fused.state[params[0]]
    assert not _fused.takes_stored_format(params[0], params[0].grad, [state["square_avg"]])
    assert torch.equal(params[0].detach(), refs[0].detach())
    for key, value in state.items():
        assert torch.equal(value, reference.state[refs[0]][key]), key


# ---- stochastic bfloat16 state -------------------------------------------------------------


@runs_kernel
def test_triton_stochastic_bfloat16_state_is_the_format_of_the_float_step() -> None:
    options = {"momentum": 0.9, "centered": True, "lr": 0.01}
    shape, t = (70, 90), 4  # two programs of 4096, the second partial
    generator = torch.Generator().manual_seed(4)
    theta, grad = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
    start = [torch.rand(shape, generator=generator) ** 2]
    start += [torch.randn(shape, generator=generator) * 0.01 for _ in range(2)]
    start = [x.to(torch.bfloat16) for x in start]  # exact in both runs
    start[0][0, :3] = torch.tensor([float("nan"), float("inf"), 0.0])
    narrow = [x.clone().to(DEVICE) for x in start]
    for x in narrow:
        _lowmem.keep_format(x, stochastic=True)
    wide = [x.float().to(DEVICE) for x in start]
    results = []
    for state in (narrow, wide):
        p, step = theta.clone().to(DEVICE), torch.tensor(float(t), device=DEVICE)
        lists = ([state[0]], [state[1]], [state[2]])
        _functional_step([p], [grad.to(DEVICE)], lists, [step], _full(options), LAUNCH)
        results.append(p.cpu())
    assert any(launch.stored == "stochastic" for launch in launches())
    assert torch.equal(results[0].view(torch.int32), results[1].view(torch.int32))
    for i, (got, exact) in enumerate(zip(narrow, wide)):
        want = q.round_to_bfloat16(exact.cpu().numpy(), q.stream_seed(t + 1, i))
        bits = got.cpu().view(torch.int16).numpy().view(np.uint16).reshape(-1)
        np.testing.assert_array_equal(bits, want, err_msg=f"buffer {i}")


def _full(options: dict[str, Any]) -> dict[str, Any]:
    """The functional step's keywords: a `rmsprop.Config`'s fields, but where v starts."""
    kwargs = config_kwargs(Config(**options))
    kwargs.pop("initial_square_avg")
    return kwargs


@runs_kernel
def test_triton_stochastic_bfloat16_state_against_the_reference_path() -> None:
    options = {"momentum": 0.9, "centered": True, "state_dtype": torch.bfloat16}
    options["stochastic_rounding"] = True
    params, fused = train({**options, "fused": True}, [(64, 70)], steps=3)
    refs, reference = train({**options, "foreach": False}, [(64, 70)], steps=3)
    assert fused._kept and any(launch.stored == "stochastic" for launch in launches())
    torch.testing.assert_close(params[0].detach().cpu(), refs[0].detach().cpu())
    for key, value in fused.state[params[0]].items():
        other = reference.state[refs[0]][key]
        if key == "step":
            assert torch.equal(value.cpu(), other.cpu())
            continue
        a, b = value.cpu().view(torch.int16).int(), other.cpu().view(torch.int16).int()
        # The same random bits: only a last-bit difference of the float32 math shows.
        assert (a == b).float().mean() > 0.99, key
        assert (a - b).abs().max() <= 1, key


# ---- kept steps and replaced scales ----------------------------------------------------------


@runs_kernel
def test_triton_kept_8bit_steps_give_the_bits_of_full_ones() -> None:
    options = {"momentum": 0.9, "fused": True, "bias_correction": True}
    kept, kept_opt = train(options, steps=4)
    full, full_opt = train(options, steps=4, forget_kept=True)
    assert kept_opt._kept
    for p, o in zip(kept, full):
        assert torch.equal(p.detach(), o.detach())
        for key, value in kept_opt.state[p].items():
            assert torch.equal(value, full_opt.state[o][key]), key


@runs_kernel
def test_triton_replaced_scales_are_followed_by_a_new_plan() -> None:
    params, opt = train({"fused": True}, [(64, 70)], steps=2)
    state = opt.state[params[0]]
    old = state["square_avg_scales"]
    state["square_avg_scales"] = old.clone()  # counted: the plan must follow it
    before, new = old.clone(), state["square_avg_scales"]
    params[0].grad = torch.ones(64, 70, device=DEVICE)
    opt.step()
    assert torch.equal(old, before)  # no longer the state's: left alone
    assert not torch.equal(new, before)


@runs_kernel
def test_triton_a_plan_refuses_scales_replaced_behind_it() -> None:
    params, opt = train({"fused": True}, [(64, 70)], steps=1)
    p, state = params[0], opt.state[params[0]]
    tensors = StepTensors([p], [p.grad], [state["square_avg"]], [], [], [state["step"]])
    hyper = _optimizer._hyper(opt.param_groups[0])
    plan = launcher.plan_to_keep(tensors, LAUNCH)
    assert plan is not None
    codes, before = state["square_avg"].clone(), state["square_avg_scales"].clone()
    _lowmem.keep_format(state["square_avg"], before.clone())  # behind the plan's back
    with pytest.raises(RuntimeError, match="scales were replaced"):
        launcher.run(plan, tensors, hyper, None, None, False)
    assert torch.equal(state["square_avg"], codes)  # nothing written
    assert torch.equal(state["square_avg_scales"], before)


# ---- compiled for a GPU, checked without one -----------------------------------------------

LOWMEM_VARIANTS = {
    "8bit-plain": {"STATE": "u8", "QUANTIZED": True},
    "8bit-everything": {
        "STATE": "u8", "QUANTIZED": True, "CENTERED": True, "MOMENTUM": True,
        "NESTEROV": True, "BIAS_CORRECTION": True, "WEIGHT_DECAY": 2, "MAXIMIZE": True,
        "LR_ON_DEVICE": True, "GRAD_SCALE": True, "FOUND_INF": True,
    },
    "bf16-stochastic-state": {
        "STATE": "bf16", "STATE_STOCHASTIC": True, "CENTERED": True, "MOMENTUM": True,
    },
}  # fmt: skip


@pytest.mark.skipif(INTERPRETING, reason="compiling needs triton's compiler, not its interpreter")
@pytest.mark.parametrize("switches", LOWMEM_VARIANTS.values(), ids=list(LOWMEM_VARIANTS))
def test_triton_lowmem_kernel_compiles_for_hopper(switches: dict[str, Any]) -> None:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    dtypes = {"f32": tl.float32, "bf16": tl.bfloat16, "u8": tl.uint8}
    constexprs: dict[str, Any] = {
        "PARAM": tl.float32, "GRAD": tl.float32, "STATE": tl.float32, "STEP": tl.float32,
        "MAXIMIZE": False, "WEIGHT_DECAY": 0, "CENTERED": False, "MOMENTUM": False,
        "NESTEROV": False, "LR_IN_MOMENTUM": False, "EPS_IN_SQRT": False,
        "BIAS_CORRECTION": False, "LR_ON_DEVICE": False, "GRAD_SCALE": False,
        "FOUND_INF": False, "STOCHASTIC": False, "QUANTIZED": False, "STATE_STOCHASTIC": False,
        "ALIGNED": True, "BLOCK": 1024,
    }  # fmt: skip
    constexprs.update(
        {k: dtypes.get(v, v) if isinstance(v, str) else v for k, v in switches.items()}
    )
    signature = {
        "tables": "*i64", "block_tensor": "*i32", "block_chunk": "*i32", "tickets": "*i32",
        "n_tensors": "i32",
    }  # fmt: skip
    for name, switch in [("lr_ptr", "LR_ON_DEVICE"), ("grad_scale_ptr", "GRAD_SCALE"),
                         ("found_inf_ptr", "FOUND_INF"), ("maps_ptr", "QUANTIZED")]:  # fmt: skip
        signature[name] = "*fp32" if constexprs[switch] else "constexpr"
        if not constexprs[switch]:
            constexprs[name] = None
    for name in ("lr", "shrink", "decay", "one_minus_decay", "eps", "momentum", "weight_decay",
                 "log2_decay_high", "log2_decay_low"):  # fmt: skip
        signature[name] = "fp32"
    signature.update({name: "constexpr" for name in constexprs if name.isupper()})
    source = ASTSource(fn=kernel.rmsprop_lowmem_kernel, signature=signature, constexprs=constexprs)
    options = {"num_warps": 4, "enable_fp_fusion": False}
    ptx = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options).asm["ptx"]
    assert ".local" not in ptx  # no register spills
    # Programs read the step count (the seeds): every warp has, before the ticket's release.
    assert "bar.sync" in ptx[: ptx.index("atom.")]
    assert "fma.rn.f32" not in ptx  # the format's float32 operations, none fused
