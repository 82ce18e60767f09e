"""The fused Triton kernel: dtypes, layouts and protocols, against the single-tensor path.

Every rule against the float64 oracle: tests/test_oracle.py's torch-fused-triton rows.

Triton decides at import whether kernels are compiled or interpreted
(``TRITON_INTERPRET=1``), so without a GPU ci/test.sh runs this file (and the
oracle's Triton rows) a second time, in a pytest run with that variable set,
where the kernel runs on CPU tensors, address tables included. With a GPU the
same tests run on CUDA in the main run (marker ``gpu``), with the GPU-only ones
(CUDA graphs, GradScaler on CUDA, torch.compile with inductor, a tensor over
2³¹ elements).

The interpreter and a GPU compute the same IEEE operations (no fused
multiply-adds, correctly rounded division and square root, bfloat16 rounded
through bit patterns), so the tolerances below hold on both.
"""

from __future__ import annotations

import copy
import os

import dtensors
import pytest
from tables import config_kwargs

torch = pytest.importorskip("torch", reason="the torch backend needs the torch extra")
triton = pytest.importorskip("triton", reason="the fused CUDA kernel needs the triton extra")
tl = triton.language

from rmsprop.kernels import triton as kernel  # noqa: E402

if not kernel.AVAILABLE:  # an older triton, pinned by an older torch
    pytest.skip(kernel.WHY_UNAVAILABLE, allow_module_level=True)

from rmsprop import Config  # noqa: E402
from rmsprop.kernels.triton import float32_to_bfloat16  # noqa: E402
from rmsprop.torch import (  # noqa: E402
    RMSprop,
    _fused,
    rmsprop,
)
from rmsprop.torch._fused import triton as launcher  # noqa: E402
from rmsprop.torch._fused.settings import DEFAULT_LAUNCH  # noqa: E402

INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"


def choose_path(group, params):
    """(fused, foreach) as the optimizer chooses it for this group (the registry's answer)."""
    options = {key: group[key] for key in ("fused", "foreach", "differentiable")}
    return _fused.choose_path(params, **options)


CUDA = torch.cuda.is_available() and not INTERPRETING
try:
    gpu = pytest.mark.gpu  # registered in pyproject.toml
except pytest.fail.Exception:  # not registered (yet): select GPU tests by CUDA alone
    gpu = pytest.mark.skipif(False, reason="")
needs_cuda = [gpu, pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")]
# Where the kernel runs in this process: CPU tensors when interpreting, else CUDA.
DEVICES = ["cpu"] if INTERPRETING else [pytest.param("cuda", marks=needs_cuda)]
interpreted_or_cuda = pytest.mark.parametrize("device", DEVICES)

BLOCK = DEFAULT_LAUNCH.block
# Worst seen over every case below, interpreted: 9.5e-7 after 3 steps. The
# loop's own kernels fuse some multiply-adds (and on the CPU its square root is
# not correctly rounded), so the paths differ in the last float32 bits.
FLOAT32 = {"rtol": 1e-5, "atol": 1e-5}


def draw(shape, dtype, generator):
    """Random values exactly representable in ``dtype``, as ``dtype``."""
    x = torch.randn(shape, generator=generator, dtype=torch.float64)
    if dtype.is_complex:
        x = torch.complex(x, torch.randn(shape, generator=generator, dtype=torch.float64))
    return x.to(dtype)


# 0-d, empty, odd, 2-D, one full block plus a masked one, complex, and one
# non-contiguous (the foreach path takes it, beside the kernel).
SHAPES = [((), None), ((0,), None), ((7,), None), ((3, 5), None), ((BLOCK + 3,), None)]
EXTRA = [((3,), torch.complex64), ((6, 4), "transposed")]


def make_params(device, dtype, seed=0, extra=True):
    generator = torch.Generator().manual_seed(seed)
    params = []
    for shape, kind in SHAPES + (EXTRA if extra else []):
        if kind == "transposed":
            p = draw(shape[::-1], dtype, generator).t()
        else:
            p = draw(shape, kind or dtype, generator)
        params.append(torch.nn.Parameter(p.to(device)))
    return params


def train(params, options, steps, seed=1, schedule=None, grad_dtype=None):
    """Steps an RMSprop over ``params`` with seeded gradients; returns the optimizer."""
    opt = RMSprop(params, **options)
    for step in range(steps):
        generator = torch.Generator().manual_seed(seed * 1000 + step)
        for p in params:
            p.grad = draw(p.shape, p.dtype, generator).to(p.device)
            if not p.is_contiguous():
                p.grad = p.grad.t().contiguous().t()  # laid out as the parameter is
        if schedule is not None:
            opt.param_groups[0]["lr"] = schedule(step)
        opt.step()
    return opt


FUSED = {"fused": True}
LOOP = {"fused": False, "foreach": False}


def assert_close(got, want, **tolerance):
    for a, b in zip(got, want):
        torch.testing.assert_close(a.detach().cpu(), b.detach().cpu(), **tolerance)


# ---- precision ---------------------------------------------------------------------------

ONE_STEP_OPTIONS = [
    {"momentum": 0.9, "centered": True},
    {"flavor": "tensorflow", "momentum": 0.9, "nesterov": True, "bias_correction": True},
    {"flavor": "keras", "weight_decay": 0.1, "maximize": True},
]


@interpreted_or_cuda
@pytest.mark.parametrize("options", ONE_STEP_OPTIONS, ids=["centered", "tf-nesterov", "keras"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("state_dtype", [None, torch.float32], ids=["state-same", "state-fp32"])
def test_16_bit_parameters_get_float32_math_rounded_once(device, dtype, state_dtype, options):
    # One step on 16-bit tensors is the float32 step on the same values,
    # rounded to nearest even once at the end.
    half = make_params(device, dtype, extra=False)
    wide = [torch.nn.Parameter(p.detach().float()) for p in half]
    train(half, {**FUSED, "state_dtype": state_dtype, **options}, steps=1)
    train(wide, {**LOOP, **options}, steps=1)
    differ = total = 0
    for a, b in zip(half, wide):
        assert a.dtype == dtype
        want = b.detach().to(dtype)
        mismatch = a.detach() != want
        differ += int(mismatch.sum())
        total += a.numel()
        # Where the two float32 results straddle a rounding boundary: one unit apart.
        ulp = torch.finfo(dtype).eps * want[mismatch].abs().float()
        assert ((a.detach()[mismatch].float() - want[mismatch].float()).abs() <= ulp).all()
    assert differ <= 0.005 * total


@interpreted_or_cuda
def test_state_dtype_is_independent_of_the_parameter_dtype(device):
    for param_dtype, state_dtype in [
        (torch.bfloat16, torch.float32),
        (torch.float32, torch.bfloat16),
    ]:
        params = make_params(device, param_dtype, extra=False)
        opt = train(params, {**FUSED, "state_dtype": state_dtype, "momentum": 0.9,
                             "centered": True}, steps=2)  # fmt: skip
        for p in params:
            assert p.dtype == param_dtype
            for key in ("square_avg", "momentum_buffer", "grad_avg"):
                assert opt.state[p][key].dtype == state_dtype
        reference = [torch.nn.Parameter(p.detach().double()) for p in make_params(
            device, param_dtype, extra=False)]  # fmt: skip
        train(reference, {**LOOP, "momentum": 0.9, "centered": True}, steps=2)
        tolerance = 2 * torch.finfo(torch.bfloat16).eps
        assert_close([p.double() for p in params], reference, rtol=tolerance, atol=tolerance)


@interpreted_or_cuda
@pytest.mark.parametrize(
    ("param_dtype", "grad_dtype", "state_dtype"),
    [
        (torch.float32, torch.bfloat16, torch.float32),
        (torch.bfloat16, torch.float16, torch.bfloat16),
        (torch.float16, torch.float32, torch.float32),
    ],
)
def test_gradient_dtype_may_differ_from_the_parameter_dtype(
    device, param_dtype, grad_dtype, state_dtype
):
    generator = torch.Generator().manual_seed(0)
    shapes = [(5,), (BLOCK + 1,)]
    params = [draw(s, param_dtype, generator).to(device) for s in shapes]
    grads = [draw(s, grad_dtype, generator).to(device) for s in shapes]
    wide = [p.double() for p in params]
    lists = {
        True: (params, [torch.zeros_like(p, dtype=state_dtype) for p in params]),
        False: (wide, [torch.zeros_like(p) for p in wide]),
    }
    hyper = config_kwargs(Config(lr=0.01))
    del hyper["initial_square_avg"]  # a state-creation setting, not the step's
    for fused, (ps, vs) in lists.items():
        steps = [torch.zeros((), device=device) for _ in ps]
        rmsprop(ps, [g.to(ps[0].dtype) if not fused else g for g in grads], vs, [], [], steps,
                foreach=False, fused=fused, **hyper)  # fmt: skip
    tolerance = torch.finfo(param_dtype).eps
    assert_close([p.double() for p in params], wide, rtol=tolerance, atol=tolerance)


@triton.jit
def _round_to_bfloat16_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):  # noqa: N803
    offsets = tl.arange(0, BLOCK)
    mask = offsets < n
    x = tl.load(x_ptr + offsets, mask=mask)
    tl.store(out_ptr + offsets, float32_to_bfloat16(x, 0, False), mask=mask)


@interpreted_or_cuda
def test_bfloat16_rounding_is_to_nearest_even_like_torch(device):
    tiny = torch.finfo(torch.float32).tiny
    specials = [0.0, -0.0, 1.0, 1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-8 + 2**-20, -(1 + 2**-8),
                tiny, tiny / 3, -tiny / 7, 1e-40, 3.3e38, 3.4e38, -3.4e38,
                float("inf"), float("-inf"), float("nan")]  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    x = torch.cat([torch.tensor(specials), torch.randn(1000, generator=generator) * 1e3])
    x = x.to(device)
    out = torch.empty(x.shape, dtype=torch.bfloat16, device=device)
    _round_to_bfloat16_kernel[(1,)](x, out, x.numel(), BLOCK=2048)
    want = x.cpu().to(torch.bfloat16)
    got = out.cpu()
    assert torch.equal(got.isnan(), want.isnan())
    finite = ~want.isnan()
    assert torch.equal(got[finite].view(torch.int16), want[finite].view(torch.int16))


@interpreted_or_cuda
def test_stochastic_rounding_keeps_updates_below_half_a_unit_on_average(device):
    # v starts at 1 and the gradient is 1, so every step moves θ by lr = 1e-3,
    # under half a bfloat16 unit at 1 (2⁻⁹): to nearest, θ never moves.
    def run(stochastic):
        p = torch.nn.Parameter(torch.ones(2 * BLOCK, dtype=torch.bfloat16, device=device))
        opt = RMSprop([p], lr=1e-3, eps=0.0, initial_square_avg=1.0,
                      state_dtype=torch.float32, stochastic_rounding=stochastic)  # fmt: skip
        for _ in range(20):
            p.grad = torch.ones_like(p)
            opt.step()
        return p.detach().float().cpu()

    assert torch.equal(run(False), torch.ones(2 * BLOCK))
    rounded = run(True)
    assert abs(rounded.mean().item() - (1 - 20e-3)) < 2e-3
    assert len(rounded.unique()) > 1  # elements draw different numbers
    assert torch.equal(rounded, run(True))  # from (step, tensor, element): reproducible


# ---- shapes, layouts and bookkeeping -----------------------------------------------------


def last_plan():
    return next(reversed(launcher._plans.values()))


@interpreted_or_cuda
def test_layouts_alignments_and_dtypes_the_kernel_cannot_take(device):
    def make():
        generator = torch.Generator().manual_seed(0)
        channels_last = torch.channels_last
        return [
            draw((2, 3, 4, 5), torch.float32, generator).to(device, memory_format=channels_last),
            draw((101,), torch.float32, generator).to(device)[1:],  # 4 bytes past an alignment
            draw((4, 6), torch.float32, generator).to(device).t(),  # not the gradient's layout
            draw((5,), torch.float64, generator).to(device),  # float64 keeps float64 math: foreach
            draw((3,), torch.complex64, generator).to(device),
        ]

    def grads(params, step):
        generator = torch.Generator().manual_seed(step)
        out = [draw(p.shape, p.dtype, generator) for p in params]
        out[0] = out[0].to(memory_format=torch.channels_last)
        return out

    results = []
    for path in (FUSED, LOOP):
        params = [torch.nn.Parameter(t) for t in make()]
        opt = RMSprop(params, momentum=0.9, **path)
        for step in range(3):
            for p, g in zip(params, grads(params, step)):
                p.grad = g.to(device)
            opt.step()
            if path is FUSED:
                plan = last_plan()
        results.append(params)
    assert_close(*results, **FLOAT32)
    assert plan.rest == [2, 3]
    # The misaligned parameter has a launch of its own: the others keep 16-byte accesses.
    assert {tuple(launch.indices): launch.aligned for launch in plan.launches} == {
        (0, 4): True, (1,): False,
    }  # fmt: skip


@interpreted_or_cuda
def test_a_gradient_of_another_shape_is_never_read_by_the_kernel(device):
    # Through the functional API nothing checks shapes first: the kernel reads
    # as many elements as θ has, so a shorter gradient must go to foreach, which refuses it.
    p = torch.zeros(2 * BLOCK, device=device)
    short = torch.ones(BLOCK, device=device)
    lists = [[p], [short], [torch.zeros_like(p)], [], [], [torch.zeros((), device=device)]]
    hyper = config_kwargs(Config())
    del hyper["initial_square_avg"]  # only the state's creation reads it
    with pytest.raises(RuntimeError, match="size"):
        rmsprop(*lists, foreach=False, fused=True, **hyper)
    assert last_plan().rest == [0] and not last_plan().launches


@interpreted_or_cuda
def test_gradients_through_another_layout_or_lazily_negated_at_the_same_address(device):
    memory = draw((3, 3), torch.float32, torch.Generator().manual_seed(0)).to(device)
    results = []
    for path in (FUSED, LOOP):
        params = [torch.nn.Parameter(torch.ones(3, 3, device=device)) for _ in range(2)]
        opt = RMSprop(params, momentum=0.5, **path)
        for step in range(4):  # the same memory each step, read another way on odd steps
            params[0].grad = memory.t() if step % 2 else memory
            params[1].grad = torch._neg_view(memory) if step % 2 else memory
            opt.step()
        results.append(params)
    assert_close(*results, **FLOAT32)


@interpreted_or_cuda
def test_lazily_conjugated_gradients_are_refused_as_torch_refuses_them(device):
    z = torch.nn.Parameter(torch.ones(3, dtype=torch.complex64, device=device))
    z.grad = torch.full_like(z, 1 + 2j).conj()
    with pytest.raises(RuntimeError, match="conjugate"):
        RMSprop([z], fused=True).step()
    assert torch.equal(z.detach().cpu(), torch.ones(3, dtype=torch.complex64))


@interpreted_or_cuda
@pytest.mark.parametrize(
    "reads_count", [True, False], ids=["counted-by-tickets", "counted-by-the-first-program"]
)
def test_step_counts_with_many_blocks_and_skipped_parameters(device, reads_count):
    # Bias correction reads the count in every program; without it one program counts.
    params = [torch.nn.Parameter(torch.randn(n, device=device)) for n in (3 * BLOCK + 1, 1, 0)]
    opt = RMSprop(params, fused=True, bias_correction=reads_count)
    for step in range(5):
        for i, p in enumerate(params):
            p.grad = None if (i == 1 and step == 2) else torch.randn_like(p)
        opt.step()
        for launch in last_plan().launches:
            assert not launch.tickets.any()  # every tensor's last program reset them
    assert [opt.state[p]["step"].item() for p in params] == [5.0, 4.0, 5.0]
    assert all(opt.state[p]["step"].device == p.device for p in params)


@interpreted_or_cuda
def test_tables_follow_moved_gradients_and_replaced_state(device):
    def run(path, reload=False):
        params = make_params(device, torch.float32, extra=False)
        opt = RMSprop(params, momentum=0.5, **path)
        kept, plans = [], []
        for step in range(4):
            generator = torch.Generator().manual_seed(step)
            kept += [p.grad for p in params]  # so the new gradients get new addresses
            for p in params:
                p.grad = draw(p.shape, p.dtype, generator).to(device)
            if reload and step == 2:
                opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # new state tensors
            opt.step()
            plans.append(id(last_plan()) if path is FUSED else None)
        return params, plans

    for reload in (False, True):
        fused, plans = run(FUSED, reload)
        loop, _ = run(LOOP, reload)
        assert_close(fused, loop, **FLOAT32)
        assert plans[1] == plans[2] if not reload else plans[1] != plans[2]
        assert plans[2] == plans[3]


@interpreted_or_cuda
def test_a_graph_plan_shares_the_warm_up_plans_block_tables(device, monkeypatch):
    # What a CUDA-graph capture does (checked on a GPU below): fresh tables for
    # the graph, sharing the eager plan's block tables and pinned copies.
    built = []
    eager_plan_for = launcher._plan_for

    def plan_like_a_capture(tensors, settings):
        eager = eager_plan_for(tensors, settings)
        plan = launcher._build_plan(tensors, settings, like=eager)
        for old, new in zip(eager.launches, plan.launches, strict=True):
            assert new.blocks is old.blocks and new.host_blocks is old.host_blocks
            assert new.tables is not old.tables and new.tickets is not old.tickets
            assert new.host_tables is old.host_tables  # nothing pinned during a capture
        built.append(plan)
        return plan

    results = []
    for capture in (False, True):
        params = make_params(device, torch.float32, extra=False)
        opt = RMSprop(params, momentum=0.9, centered=True, bias_correction=True, fused=True)
        for step in range(3):
            if capture and step == 1:
                monkeypatch.setattr(launcher, "_plan_for", plan_like_a_capture)
                # (A step being captured neither takes nor keeps a kept step.)
                monkeypatch.setattr(RMSprop, "_take_kept", lambda *args: False)
                monkeypatch.setattr(launcher, "plan_to_keep", lambda *args: None)
            generator = torch.Generator().manual_seed(step)
            for p in params:
                p.grad = draw(p.shape, p.dtype, generator).to(device)
            opt.step()
        monkeypatch.undo()
        results.append(params)
    assert_close(*results, rtol=0, atol=0)
    assert len(built) == 2 and all(plan.launches for plan in built)


@interpreted_or_cuda
@pytest.mark.parametrize("centered", [False, True])
def test_zero_decay_with_bias_correction(device, centered):
    # ρ = 0: the averages are the last gradient, and the correction 1/(1 - 0ᵗ) is 1.
    results = []
    for path in (FUSED, LOOP):
        params = make_params(device, torch.float32, extra=False)
        train(params, {**path, "alpha": 0.0, "bias_correction": True, "centered": centered}, 3)
        results.append(params)
    start = make_params(device, torch.float32, extra=False)
    for p, s in zip(results[0], start):
        assert torch.isfinite(p).all() and (p.numel() == 0 or not torch.equal(p, s))
    if not centered:
        assert_close(*results, **FLOAT32)
    # Centered, v - m² = g² - g·g is 0 or a rounding error of g², then divided by
    # ε: the paths may differ wildly there, and only finiteness is meaningful.


@interpreted_or_cuda
def test_integer_hyperparameters_reach_the_kernel_as_floats(device, monkeypatch):
    # Triton types each scalar argument by its Python type (and specializes an int 1):
    # a group's momentum=0 or lr=1 must not compile another kernel, or a wrong one.
    compiled, calls = kernel.rmsprop_kernel, []

    class Recording:
        def __getitem__(self, grid):
            def launch(*args, **switches):
                calls.append(args)
                return compiled[grid](*args, **switches)

            return launch

    monkeypatch.setattr(kernel, "rmsprop_kernel", Recording())
    integers = {"lr": 1, "alpha": 0, "eps": 1, "momentum": 0, "weight_decay": 1}
    results = []
    for path in (FUSED, LOOP):
        params = make_params(device, torch.float32, extra=False)
        opt = RMSprop(params, **path)
        opt.param_groups[0].update(integers)
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()
        results.append(params)
    assert calls and all(type(arg) is float for args in calls for arg in args[8:])
    assert_close(*results, **FLOAT32)


@interpreted_or_cuda
def test_a_failed_gradient_upload_is_retried_not_forgotten(device, monkeypatch):
    params = [torch.nn.Parameter(torch.ones(5, device=device))]
    opt = RMSprop(params, fused=True)
    params[0].grad = torch.ones(5, device=device)
    opt.step()
    launch = last_plan().launches[0]
    moved = torch.full((5,), 2.0, device=device)
    params[0].grad = moved

    def broken(*args):
        raise RuntimeError("no pinned memory left")

    monkeypatch.setattr(launcher, "_pinned", broken)
    with pytest.raises(RuntimeError, match="no pinned memory"):
        opt.step()
    monkeypatch.undo()
    opt.step()  # the same gradients: they must still be uploaded now
    grad_row = kernel.GRAD * launch.n_tensors
    assert launch.tables.view(-1)[grad_row].item() == moved.data_ptr()


def test_the_custom_op_stays_out_of_compiled_cuda_graphs():
    if not hasattr(torch.Tag, "cudagraph_unsafe"):
        pytest.skip("this torch has no cudagraph_unsafe tag")
    assert torch.Tag.cudagraph_unsafe in torch.ops.rmsprop.fused_step.default.tags


@interpreted_or_cuda
@dtensors.needed
def test_fsdp2_dtensors_step_through_their_local_shards(device):
    placements = ["shard", "replicate", "shard", "partial"]  # the last one's gradient is partial

    def run(mesh):
        params = []
        generator = torch.Generator().manual_seed(0)
        for k, placement in enumerate(placements):
            value = draw((BLOCK + 5 - k,), torch.float32, generator).to(device)
            as_param = placement if placement != "partial" else "shard"
            params.append(value if mesh is None else dtensors.as_dtensor(value, mesh, as_param))
        params = [torch.nn.Parameter(p) for p in params]
        opt = RMSprop(params, fused=True, momentum=0.9, centered=True)
        for step in range(3):
            generator = torch.Generator().manual_seed(step + 1)
            for p, placement in zip(params, placements):
                grad = draw(p.shape, torch.float32, generator).to(device)
                p.grad = grad if mesh is None else dtensors.as_dtensor(grad, mesh, placement)
            opt.step()
        return [p if mesh is None else p.to_local() for p in params]

    plain = run(None)
    with dtensors.one_rank_mesh(device) as mesh:
        shards = run(mesh)
        plan = last_plan()
    # The kernel updated the shards of the first three (a DTensor's own address is 0); the
    # fourth's partial gradient sent it through the single-tensor path.
    (launch,) = plan.launches
    assert launch.columns[kernel.PARAM] == [s.data_ptr() for s in shards[:3]]
    assert_close(shards[:3], plain[:3], rtol=0, atol=0)
    assert_close(shards[3:], plain[3:], **FLOAT32)


@interpreted_or_cuda
def test_autograd_sees_the_parameters_change(device):
    p = torch.nn.Parameter(torch.randn(4, device=device))
    p.grad = torch.randn_like(p)
    before = p._version
    RMSprop([p], fused=True).step()
    assert p._version > before


# ---- AMP, capturable, compile ------------------------------------------------------------


@interpreted_or_cuda
def test_grad_scale_and_found_inf_are_applied_in_the_kernel(device):
    scale = 2.0**10  # exact: scaled and unscaled gradients give the same bits

    def run(grad_scale=None, found_inf=None):
        params = make_params(device, torch.float32, extra=False)
        opt = train(params, {**FUSED, "momentum": 0.9, "centered": True}, steps=2)
        generator = torch.Generator().manual_seed(99)
        grads = [draw(p.shape, p.dtype, generator).to(device) for p in params]
        for p, g in zip(params, grads):
            p.grad = g * scale if grad_scale is not None else g.clone()
        opt.grad_scale, opt.found_inf = grad_scale, found_inf  # as GradScaler sets them
        opt.step()
        return params, opt, grads

    def flag(value):
        return torch.tensor(value, device=device)

    plain, _, grads = run()
    scaled, _, _ = run(flag(scale), flag(0.0))
    assert_close(scaled, plain, rtol=0, atol=0)
    assert_close([p.grad for p in scaled], grads, rtol=0, atol=0)  # unscaled, as unscale_ does

    skipped, skipped_opt, _ = run(flag(scale), flag(1.0))
    untouched = make_params(device, torch.float32, extra=False)
    untouched_opt = train(untouched, {**FUSED, "momentum": 0.9, "centered": True}, steps=2)
    assert_close(skipped, untouched, rtol=0, atol=0)
    for a, b in zip(skipped, untouched):
        for key, value in untouched_opt.state[b].items():
            assert torch.equal(skipped_opt.state[a][key], value), key  # steps included
    assert_close([p.grad for p in skipped], [g * scale for g in grads], rtol=0, atol=0)


@interpreted_or_cuda
def test_a_parameter_listed_twice_is_stepped_twice_as_the_loop_does(device):
    # The kernel's programs would update it at once, racing: it goes to the loop, beside
    # the kernel's launch, and its gradient is unscaled once.
    scale = 2.0**10

    def run(path):
        generator = torch.Generator().manual_seed(0)
        twice, once = (torch.nn.Parameter(draw((BLOCK + 9,), torch.float32, generator).to(device))
                       for _ in range(2))  # fmt: skip
        params = [twice, once, twice]
        with pytest.warns(UserWarning, match="duplicate"):
            opt = RMSprop(params, momentum=0.9, bias_correction=True, **path)
        for _ in range(2):
            for p in (twice, once):
                p.grad = draw(p.shape, p.dtype, generator).to(device) * scale
            opt.grad_scale = torch.tensor(scale, device=device)  # as GradScaler sets it
            opt.found_inf = torch.tensor(0.0, device=device)
            opt.step()
        return [twice, once], opt

    fused, fused_opt = run(FUSED)
    loop, _ = run(LOOP)
    assert_close(fused, loop, **FLOAT32)
    plan = last_plan()
    assert plan.looped == [0, 2] and [launch.indices for launch in plan.launches] == [[1]]
    assert fused_opt.state[fused[0]]["step"].item() == 4


@interpreted_or_cuda
def test_a_grad_scaler_trains_identically_and_skips_overflowing_steps(device):
    def make():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
        return model.to(device)

    inputs = [torch.randn(16, 6, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    plain, scaled = make(), make()
    plain_opt = RMSprop(plain.parameters(), fused=True, momentum=0.9)
    scaled_opt = RMSprop(scaled.parameters(), fused=True, momentum=0.9)
    assert scaled_opt._step_supports_amp_scaling
    scaler = torch.amp.GradScaler(device, init_scale=2.0**12)
    for x in inputs:
        x = x.to(device)
        plain(x).pow(2).mean().backward()
        plain_opt.step()
        plain_opt.zero_grad()
        scaler.scale(scaled(x).pow(2).mean()).backward()
        scaler.step(scaled_opt)
        scaler.update()
        scaled_opt.zero_grad()
    assert_close(list(scaled.parameters()), list(plain.parameters()), **FLOAT32)

    before = [p.detach().clone() for p in scaled.parameters()]
    steps = [scaled_opt.state[p]["step"].item() for p in scaled.parameters()]
    scaler.scale(scaled(inputs[0].to(device)).pow(2).mean()).backward()
    next(scaled.parameters()).grad[0, 0] = float("inf")
    scaler.step(scaled_opt)
    scaler.update()
    assert_close(list(scaled.parameters()), before, rtol=0, atol=0)
    assert [scaled_opt.state[p]["step"].item() for p in scaled.parameters()] == steps
    assert scaler.get_scale() == 2.0**11


@interpreted_or_cuda
def test_a_tensor_lr_on_the_device_follows_a_scheduler(device):
    def run(lr, capturable=True):
        params = make_params(device, torch.float32, extra=False)
        opt = RMSprop(params, lr=lr, fused=True, capturable=capturable, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.5)
        for step in range(3):
            generator = torch.Generator().manual_seed(step)
            for p in params:
                p.grad = draw(p.shape, p.dtype, generator).to(device)
            opt.step()
            scheduler.step()
        return params, opt

    on_device, opt = run(torch.tensor(0.01, device=device))
    assert opt.param_groups[0]["lr"].device.type == torch.device(device).type
    floats, _ = run(0.01)
    assert_close(on_device, floats, **FLOAT32)
    # Not capturable: the kernel still reads a tensor lr where it lies, without a sync.
    not_captured, _ = run(torch.tensor(0.01, device=device), capturable=False)
    assert_close(not_captured, floats, **FLOAT32)
    on_the_host, _ = run(torch.tensor(0.01), capturable=False)
    assert_close(on_the_host, floats, **FLOAT32)


@interpreted_or_cuda
def test_a_compiled_training_step_calls_the_kernel_as_one_op(device):
    graphs = []

    def recording_backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    def make():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        model = model.to(device)
        return model, RMSprop(model.parameters(), fused=True, momentum=0.9, centered=True)

    def train_step(model, opt, x):
        loss = model(x).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    inputs = [torch.randn(8, 4, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    eager, eager_opt = make()
    compiled, compiled_opt = make()
    step = torch.compile(train_step, backend=recording_backend)
    for x in inputs:
        train_step(eager, eager_opt, x.to(device))
        step(compiled, compiled_opt, x.to(device))
    assert_close(list(compiled.parameters()), list(eager.parameters()), **FLOAT32)
    calls = [
        node
        for graph in graphs
        for node in graph.graph.nodes
        if node.target in (torch.ops.rmsprop.fused_step, torch.ops.rmsprop.fused_step.default)
    ]
    assert len(calls) == 1  # traced once, as one op over every tensor


# ---- choosing the path, and refusing -----------------------------------------------------


@interpreted_or_cuda
def test_fused_runs_the_triton_kernel_here(device, monkeypatch):
    params = [torch.nn.Parameter(torch.ones(3, device=device))]
    params[0].grad = torch.ones(3, device=device)
    assert choose_path(RMSprop(params).param_groups[0], params) == (True, False)
    from rmsprop.torch._fused import numba_cpu

    monkeypatch.setattr(numba_cpu, "fused_rmsprop", None)  # Numba must not run
    launcher._plans.clear()
    RMSprop(params, fused=True).step()
    assert launcher._plans


@pytest.mark.skipif(INTERPRETING, reason="without the interpreter only")
def test_cpu_tensors_need_the_interpreter_and_other_devices_are_refused():
    assert "TRITON_INTERPRET=1" in launcher.unsupported_reason("cpu")
    assert "needs CUDA tensors, got meta" in launcher.unsupported_reason("meta")
    meta = torch.nn.Parameter(torch.empty(3, device="meta"))
    assert _fused.why_not_fused([meta]) == (
        "the fused CPU kernel needs CPU tensors, got meta tensors (and the Triton kernel CUDA "
        "tensors)"
    )


def test_without_triton_fused_true_on_cuda_says_so(monkeypatch):
    monkeypatch.setattr(kernel, "AVAILABLE", False)
    monkeypatch.setattr(kernel, "WHY_UNAVAILABLE", "triton is not installed")
    assert launcher.unsupported_reason("cuda") == "triton is not installed"
    assert _fused.why_not_on("cuda") == "triton is not installed"  # what every caller asks


def test_stochastic_rounding_and_state_dtype_are_checked():
    params = [torch.nn.Parameter(torch.ones(2))]
    with pytest.raises(ValueError, match="stochastic_rounding=True needs the fused kernel"):
        RMSprop(params, stochastic_rounding=True, foreach=True)
    with pytest.raises(TypeError, match=r"state_dtype must be a floating torch\.dtype"):
        RMSprop(params, state_dtype=torch.int32)
    if not INTERPRETING:  # CPU tensors go to the Numba kernel, which can't round bfloat16
        bf16 = [torch.nn.Parameter(torch.ones(2, dtype=torch.bfloat16))]  # parameters
        bf16[0].grad = torch.ones(2, dtype=torch.bfloat16)
        with pytest.raises(ValueError, match="stochastic_rounding=True needs the fused Triton"):
            RMSprop(bf16, stochastic_rounding=True).step()


def test_optimizer_wide_options_survive_pickling_and_state_dicts():
    params = [torch.nn.Parameter(torch.ones(2, dtype=torch.bfloat16))]
    params[0].grad = torch.ones(2, dtype=torch.bfloat16)
    opt = RMSprop(params, state_dtype=torch.float32, foreach=False)
    opt.step()
    clone = copy.deepcopy(opt)
    assert clone.state_dtype == torch.float32 and clone.stochastic_rounding is False
    fresh = RMSprop(params, state_dtype=torch.float32, foreach=False)
    fresh.load_state_dict(opt.state_dict())
    assert fresh.state[params[0]]["square_avg"].dtype == torch.float32


# ---- compiled for a GPU, checked without one ---------------------------------------------

HOPPER_VARIANTS = {
    "plain": {},
    "centered-momentum": {"CENTERED": True, "MOMENTUM": True},
    "bf16-everything": {
        "PARAM": "bf16", "GRAD": "bf16", "STATE": "bf16", "CENTERED": True, "MOMENTUM": True,
        "NESTEROV": True, "LR_IN_MOMENTUM": True, "BIAS_CORRECTION": True, "WEIGHT_DECAY": 2,
        "LR_ON_DEVICE": True, "GRAD_SCALE": True, "FOUND_INF": True, "STOCHASTIC": True,
    },
}  # fmt: skip


@pytest.mark.skipif(INTERPRETING, reason="compiling needs triton's compiler, not its interpreter")
@pytest.mark.parametrize("switches", HOPPER_VARIANTS.values(), ids=list(HOPPER_VARIANTS))
def test_the_kernel_compiles_for_hopper_with_16_byte_accesses(switches):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    dtypes = {"f32": tl.float32, "bf16": tl.bfloat16}
    constexprs = {
        "PARAM": tl.float32, "GRAD": tl.float32, "STATE": tl.float32, "STEP": tl.float32,
        "MAXIMIZE": False, "WEIGHT_DECAY": 0, "CENTERED": False, "MOMENTUM": False,
        "NESTEROV": False, "LR_IN_MOMENTUM": False, "EPS_IN_SQRT": False,
        "BIAS_CORRECTION": False, "LR_ON_DEVICE": False, "GRAD_SCALE": False,
        "FOUND_INF": False, "STOCHASTIC": False, "ALIGNED": True, "BLOCK": BLOCK,
    }  # fmt: skip
    constexprs.update(
        {k: dtypes.get(v, v) if isinstance(v, str) else v for k, v in switches.items()}
    )
    signature = {
        "tables": "*i64", "block_tensor": "*i32", "block_chunk": "*i32", "tickets": "*i32",
        "n_tensors": "i32",
    }  # fmt: skip
    for name, switch in [("lr_ptr", "LR_ON_DEVICE"), ("grad_scale_ptr", "GRAD_SCALE"),
                         ("found_inf_ptr", "FOUND_INF")]:  # fmt: skip
        signature[name] = "*fp32" if constexprs[switch] else "constexpr"
        if not constexprs[switch]:
            constexprs[name] = None
    for name in ("lr", "shrink", "decay", "one_minus_decay", "eps", "momentum", "weight_decay",
                 "log2_decay_high", "log2_decay_low"):  # fmt: skip
        signature[name] = "fp32"
    signature.update({name: "constexpr" for name in constexprs if name.isupper()})
    source = ASTSource(fn=kernel.rmsprop_kernel, signature=signature, constexprs=constexprs)
    options = {"num_warps": DEFAULT_LAUNCH.num_warps, "enable_fp_fusion": False}
    ptx = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options).asm["ptx"]
    assert "ld.global.v4.b32" in ptx and "st.global.v4.b32" in ptx  # full blocks: 16 bytes
    assert ".local" not in ptx  # no register spills
    if constexprs["BIAS_CORRECTION"] or constexprs["STOCHASTIC"]:  # programs read the count
        # Every warp has read the step count before the ticket's release publishes that.
        assert "bar.sync" in ptx[: ptx.index("atom.")]
    else:  # one program counts: no ticket, so no atomic on one address per tensor
        assert "atom." not in ptx
    assert "ex2.approx" not in ptx  # bias correction's power in float64, not approximated


# ---- GPU only ----------------------------------------------------------------------------


def small_model(device):
    layers = [torch.nn.Linear(32, 64), torch.nn.Tanh(), torch.nn.Linear(64, 4)]
    return torch.nn.Sequential(*layers).to(device)


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=needs_cuda)])
def test_fused_is_the_default_on_cuda_with_device_step_counts(device):
    params = [torch.nn.Parameter(torch.randn(10, device=device))]
    params[0].grad = torch.randn_like(params[0])
    opt = RMSprop(params)
    assert choose_path(opt.param_groups[0], params) == (True, False)
    assert opt._step_supports_amp_scaling
    opt.step()
    assert opt.state[params[0]]["step"].is_cuda


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=needs_cuda)])
def test_a_whole_training_step_captured_in_a_cuda_graph(device):
    def make():
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(32, 64), torch.nn.Tanh(), torch.nn.Linear(64, 4)
        )
        model = model.to(device)
        lr = torch.tensor(0.01, device=device)
        opt = RMSprop(model.parameters(), lr=lr, fused=True, capturable=True, momentum=0.9)
        return model, opt, torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)

    inputs = [torch.randn(16, 32, generator=torch.Generator().manual_seed(i)) for i in range(8)]
    eager, eager_opt, eager_scheduler = make()
    for x in inputs:
        eager(x.to(device)).pow(2).mean().backward()
        eager_opt.step()
        eager_opt.zero_grad(set_to_none=True)
        eager_scheduler.step()

    model, opt, scheduler = make()
    static_x = inputs[0].to(device)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up steps, as torch's recipe asks
        for x in inputs[:3]:
            static_x.copy_(x)
            model(static_x).pow(2).mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            scheduler.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        model(static_x).pow(2).mean().backward()
        opt.step()
    for x in inputs[3:]:
        static_x.copy_(x)
        graph.replay()
        scheduler.step()
    torch.cuda.synchronize()
    assert_close(list(model.parameters()), list(eager.parameters()), **FLOAT32)
    assert all(opt.state[p]["step"].item() == len(inputs) for p in model.parameters())


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=needs_cuda)])
@pytest.mark.parametrize("mode", [None, "reduce-overhead"])
def test_inductor_compiles_a_training_step(device, mode):
    def make():
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(32, 64), torch.nn.Tanh(), torch.nn.Linear(64, 4)
        )
        return model.to(device)

    def train_step(model, opt, x):
        loss = model(x).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    eager, compiled = make(), make()
    options = {"fused": True, "momentum": 0.9, "bias_correction": True}
    eager_opt = RMSprop(eager.parameters(), **options)
    compiled_opt = RMSprop(compiled.parameters(), **options)
    step = torch.compile(train_step, mode=mode)
    steps = 8  # warm-up, recording and replays of CUDA graphs under "reduce-overhead"
    # CUDA graph trees check that no memory of their pool is held from outside.
    checks = {"triton.slow_path_cudagraph_asserts": True}
    if not hasattr(torch._inductor.config.triton, "slow_path_cudagraph_asserts"):
        checks = {}
    with torch._inductor.config.patch(checks):
        for i in range(steps):
            x = torch.randn(16, 32, generator=torch.Generator().manual_seed(i)).to(device)
            train_step(eager, eager_opt, x)
            step(compiled, compiled_opt, x)
    assert_close(list(compiled.parameters()), list(eager.parameters()), **FLOAT32)
    # Step counts (which bias correction reads) advanced once per step, replays included.
    assert all(compiled_opt.state[p]["step"].item() == steps for p in compiled.parameters())


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=needs_cuda)])
def test_a_tensor_of_more_than_2_31_elements(device):
    n = 2**31 + BLOCK + 5
    if torch.cuda.get_device_properties(device).total_memory < 40 * 2**30:
        pytest.skip("needs 40 GiB of GPU memory")
    generator = torch.Generator(device=device).manual_seed(0)
    p = torch.nn.Parameter(torch.randn(n, generator=generator, device=device).bfloat16())
    p.grad = torch.randn(n, generator=generator, device=device).bfloat16()
    windows = [slice(0, 1000), slice(2**31 - 500, 2**31 + 500), slice(n - 1000, n)]
    wide = [torch.nn.Parameter(p.detach()[w].float()) for w in windows]
    for w, q in zip(windows, wide):
        q.grad = p.grad[w].float()
    opt = RMSprop([p], fused=True, momentum=0.9, state_dtype=torch.bfloat16)
    opt.step()
    RMSprop(wide, **LOOP, momentum=0.9).step()
    for w, q in zip(windows, wide):
        # float32 math rounded once: at most one bfloat16 unit from the loop's float32 result
        torch.testing.assert_close(p.detach()[w], q.detach().bfloat16(), rtol=2**-7, atol=0)
    assert opt.state[p]["step"].item() == 1
