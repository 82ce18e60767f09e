"""The fused CPU path: threads, chunk edges, 16-bit math, choosing it, and refusing it."""

from __future__ import annotations

import copy

import dtensors
import pytest

torch = pytest.importorskip("torch", reason="the torch backend needs the torch extra")
pytest.importorskip("numba", reason="the fused CPU kernel needs the fast extra (numba)")

from rmsprop._versions import release  # noqa: E402
from rmsprop.kernels import numba_cpu as _fused_cpu  # noqa: E402
from rmsprop.torch import RMSprop, _fused  # noqa: E402
from rmsprop.torch._fused import numba_cpu as torch_fused_cpu  # noqa: E402


def _choose_path(group, params):
    """(fused, foreach) as the optimizer chooses it for this group (the registry's answer)."""
    options = {key: group[key] for key in ("fused", "foreach", "differentiable")}
    return _fused.choose_path(params, **options)


# Sizes around the chunk edge, and one big enough to be split over threads.
SIZES = [1, _fused_cpu.CHUNK - 1, _fused_cpu.CHUNK + 1, 3 * _fused_cpu.CHUNK + 5, 300_007]
OPTIONS = [
    {},
    {"momentum": 0.9, "centered": True, "weight_decay": 0.1},
    {"flavor": "tensorflow", "momentum": 0.9, "nesterov": True, "bias_correction": True},
    {"flavor": "keras", "weight_decay": 0.1, "maximize": True, "momentum": 0.5},
]


def run(dtype, options, path, steps=5, threads="2", monkeypatch=None, values=None):
    """Steps parameters of `dtype` whose values (and gradients) are representable in `values`."""
    monkeypatch.setenv("RMSPROP_NUM_THREADS", threads)
    # Small enough to run in CI, yet split over the threads: lower the threshold.
    monkeypatch.setattr(_fused_cpu, "SERIAL_BELOW", 4 * _fused_cpu.CHUNK)
    values = values or dtype

    def draw(n, generator=None):
        return torch.randn(n, generator=generator, dtype=torch.float64).to(values).to(dtype)

    torch.manual_seed(0)
    params = [torch.nn.Parameter(draw(n)) for n in SIZES]
    opt = RMSprop(params, **path, **options)
    for step in range(steps):
        generator = torch.Generator().manual_seed(step)
        for p in params:
            p.grad = draw(p.shape, generator)
        opt.step()
    return params, opt


@pytest.mark.parametrize("options", OPTIONS, ids=["plain", "centered", "tf-nesterov", "keras"])
@pytest.mark.parametrize(
    ("dtype", "tolerance"), [(torch.float64, 1e-13), (torch.float32, 1e-5)], ids=["f64", "f32"]
)
def test_threaded_chunks_match_the_single_tensor_path(dtype, tolerance, options, monkeypatch):
    fused, _ = run(dtype, options, {"fused": True}, monkeypatch=monkeypatch)
    loop, _ = run(dtype, options, {"foreach": False}, monkeypatch=monkeypatch)
    for a, b in zip(fused, loop):
        torch.testing.assert_close(a, b, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16_bit_tensors_get_float32_math(dtype, monkeypatch):
    # One step on 16-bit tensors equals the float32 step on the same values,
    # rounded once at the end: the math in between is float32.
    options = {"momentum": 0.9, "centered": True}
    fused, opt = run(dtype, options, {"fused": True}, steps=1, monkeypatch=monkeypatch)
    wide, _ = run(
        torch.float32, options, {"fused": True}, steps=1, monkeypatch=monkeypatch, values=dtype
    )
    for a, b in zip(fused, wide):
        assert a.dtype == dtype
        torch.testing.assert_close(a.float(), b.to(dtype).float(), rtol=0, atol=0)
    assert opt.state[fused[0]]["square_avg"].dtype == dtype


@pytest.mark.parametrize("layer", ["auto", "pool"])
def test_the_threaded_and_serial_runs_agree_exactly(layer, monkeypatch):
    options = {"momentum": 0.9, "centered": True}
    monkeypatch.setenv("RMSPROP_CPU_THREADS", layer)
    monkeypatch.setattr(_fused_cpu, "_pool", None)
    launches = []
    parallel = _fused_cpu.parallel_table_kernel
    monkeypatch.setattr(
        _fused_cpu, "parallel_table_kernel", lambda *a: launches.append(1) or parallel(*a)
    )
    two, _ = run(torch.float32, options, {"fused": True}, threads="2", monkeypatch=monkeypatch)
    # The work really went to a second thread: TBB's where steps take it, else the pool's.
    if layer == "auto" and _fused_cpu.threading_layer() == "tbb":
        assert launches and _fused_cpu._pool is None
    else:
        assert _fused_cpu._pool is not None and not launches
    one, _ = run(torch.float32, options, {"fused": True}, threads="1", monkeypatch=monkeypatch)
    for a, b in zip(two, one):
        assert torch.equal(a, b)


def test_fused_is_the_default_on_cpu_unless_another_path_is_asked_for():
    params = [torch.nn.Parameter(torch.ones(3))]
    assert _choose_path(RMSprop(params).param_groups[0], params) == (True, False)
    assert _choose_path(RMSprop(params, foreach=True).param_groups[0], params) == (False, True)
    assert _choose_path(RMSprop(params, foreach=False).param_groups[0], params) == (False, False)
    group = RMSprop(params, differentiable=True).param_groups[0]
    assert _choose_path(group, params) == (False, False)


def test_fused_true_where_it_cannot_run_is_an_error(monkeypatch):
    meta = torch.nn.Parameter(torch.empty(3, device="meta"))
    meta.grad = torch.empty(3, device="meta")
    with pytest.raises(
        RuntimeError, match="fused=True, but the fused CPU kernel needs CPU tensors"
    ):
        RMSprop([meta], fused=True).step()
    monkeypatch.setattr(_fused_cpu, "AVAILABLE", False)
    monkeypatch.setattr(_fused_cpu, "WHY_UNAVAILABLE", "numba is not installed")
    cpu = torch.nn.Parameter(torch.ones(3))
    cpu.grad = torch.ones(3)
    with pytest.raises(RuntimeError, match="fused=True, but numba is not installed"):
        RMSprop([cpu], fused=True).step()
    RMSprop([cpu]).step()  # the default quietly takes another path


@pytest.mark.parametrize(
    ("switches", "message"),
    [
        ({"foreach": True}, "fused=True cannot be combined with foreach=True"),
        ({"differentiable": True}, "fused=True cannot be combined with differentiable=True"),
    ],
)
def test_contradictory_switches_are_refused(switches, message):
    with pytest.raises(ValueError, match=message):
        RMSprop([torch.nn.Parameter(torch.ones(2))], fused=True, **switches)


def test_mixed_dtypes_and_layouts_in_one_group():
    shapes_dtypes = [((7,), torch.float32), ((5,), torch.float64), ((4, 3), torch.bfloat16)]

    def make():
        torch.manual_seed(0)
        return [torch.nn.Parameter(torch.randn(s, dtype=d)) for s, d in shapes_dtypes] + [
            torch.nn.Parameter(torch.randn(3, 4).t()),  # transposed: dense, so the kernel takes it
            torch.nn.Parameter(torch.randn(3, dtype=torch.complex64)),
        ]

    fused, loop = make(), make()
    for params, path in ((fused, {"fused": True}), (loop, {"foreach": False})):
        opt = RMSprop(params, momentum=0.5, **path)
        for step in range(3):
            for p in params:
                p.grad = torch.full_like(p, 0.5 + step)
            opt.step()
    for a, b in zip(fused, loop):
        # bfloat16: the loop computes in bfloat16, the kernel in float32.
        tolerance = 1e-2 if a.dtype == torch.bfloat16 else 1e-6
        torch.testing.assert_close(a, b, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("bias_correction", [False, True])
def test_cached_plans_follow_moved_grads_skipped_steps_schedules_and_new_state(bias_correction):
    # One run that changes, step by step, what the fused path caches between
    # steps; the single-tensor path, which caches nothing, must agree throughout.
    def make():
        torch.manual_seed(0)
        return [
            torch.nn.Parameter(torch.randn(3, 4)),
            torch.nn.Parameter(torch.randn(0)),
            torch.nn.Parameter(torch.randn(5, dtype=torch.float64)),
            torch.nn.Parameter(torch.randn(6, dtype=torch.complex64)),
            torch.nn.Parameter(torch.randn(40_000)),
        ]

    def grad(p, step, strided=False):
        if strided:  # same shape, transposed memory: this step the loop must take it
            return torch.full(p.shape[::-1], 0.25 * step, dtype=p.dtype).t()
        return torch.full_like(p, 0.5 + step) * (1 + torch.arange(p.numel()).view(p.shape) % 3)

    runs = []
    for path in ({"fused": True}, {"foreach": False}):
        params = make()
        options = {"momentum": 0.9, "centered": True, "bias_correction": bias_correction}
        opt = RMSprop(params, lr=0.01, **options, **path)
        schedule = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        for step in range(8):
            for i, p in enumerate(params):
                p.grad = grad(p, step, strided=step == 3 and i == 0)
            if step == 2:
                params[2].grad = None  # its step count falls behind the others'
            if step == 5:  # new state tensors, at new addresses
                opt.load_state_dict(copy.deepcopy(opt.state_dict()))
            opt.step()
            schedule.step()
        runs.append(params)
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


# ---- what the kernel must never be handed: it trusts every address and size -------------


def one_param_state(p):
    return [p], [torch.ones_like(p)], [torch.zeros_like(p)], [], [], [torch.zeros(())]


HYPER = dict(
    lr=0.1, decay=0.9, eps=1e-8, eps_in_sqrt=False, centered=False, momentum=0.0,
    nesterov=False, lr_in_momentum=False, bias_correction=False, weight_decay=0.0,
    decoupled_weight_decay=False, maximize=False,
)  # fmt: skip


def test_state_smaller_than_its_parameter_is_refused_before_any_write():
    from rmsprop.torch import rmsprop

    buffer = torch.zeros(8)
    p = torch.zeros(8)
    lists = one_param_state(p)
    rmsprop(*lists[:2], [buffer], *lists[3:], foreach=False, fused=True, **HYPER)  # cached
    message = r"square_avgs\[0\] has shape \(4,\), its parameter \(8,\)"
    with pytest.raises(ValueError, match=message):
        # The same address as the cached plan's state, but half the size.
        rmsprop(*lists[:2], [buffer[:4]], *lists[3:], foreach=False, fused=True, **HYPER)
    assert lists[-1][0].item() == 1  # one step counted, the refused one not


def test_a_parameter_resized_under_the_optimizer_is_refused_without_a_change():
    p = torch.nn.Parameter(torch.ones(4))
    opt = RMSprop([p], fused=True)
    p.grad = torch.ones(4)
    opt.step()
    p.data, p.grad = torch.ones(1 << 16), torch.ones(1 << 16)
    with pytest.raises(ValueError, match="its parameter"):
        opt.step()
    assert torch.equal(p.data, torch.ones(1 << 16)) and opt.state[p]["step"].item() == 1


def compare_with_the_loop(make, grads_at, steps=3, **options):
    results = []
    for path in ({"fused": True}, {"foreach": False}):
        params = make()
        opt = RMSprop(params, **options, **path)
        for step in range(steps):
            for p, g in zip(params, grads_at(params, step)):
                p.grad = g
            opt.step()
        results.append(params)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_gradients_seen_through_another_layout_at_the_same_address():
    memory = torch.arange(9.0).view(3, 3)

    def grads_at(params, step):  # the same memory each step, transposed on odd steps
        return [memory.t() if step % 2 else memory]

    compare_with_the_loop(lambda: [torch.nn.Parameter(torch.ones(3, 3))], grads_at, steps=4)


def test_lazily_negated_gradients_are_taken_by_value():
    def grads_at(params, step):
        return [torch._neg_view(torch.full_like(p, step + 1.0)) for p in params]

    compare_with_the_loop(lambda: [torch.nn.Parameter(torch.ones(5))], grads_at, momentum=0.5)


@pytest.mark.parametrize("path", [{"fused": True}, {"foreach": False}], ids=["fused", "loop"])
def test_lazily_conjugated_gradients_are_refused_as_torch_refuses_them(path):
    z = torch.nn.Parameter(torch.ones(3, dtype=torch.complex64))
    other = torch.nn.Parameter(torch.ones(3))
    opt = RMSprop([other, z], **path)
    z.grad, other.grad = torch.full_like(z, 1 + 2j).conj(), torch.ones(3)
    with pytest.raises(RuntimeError, match="conjugate"):
        opt.step()
    assert torch.equal(z.detach(), torch.ones(3, dtype=torch.complex64))
    if path.get("fused"):  # the loop had updated `other` first; the kernel had not started
        assert torch.equal(other.detach(), torch.ones(3))


def test_autograd_sees_the_kernel_change_a_parameter():
    p = torch.nn.Parameter(torch.ones(4))
    x = torch.ones(4, requires_grad=True)
    loss = (p * x).sum()
    p.grad = torch.ones(4)
    RMSprop([p], fused=True).step()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_a_parameter_listed_twice_is_stepped_twice_as_the_loop_does():
    def make():
        p = torch.nn.Parameter(torch.ones(40_000))
        return [p, p]

    with pytest.warns(UserWarning, match="duplicate"):
        compare_with_the_loop(
            make, lambda params, step: [torch.full_like(params[0], 0.5)] * 2, bias_correction=True
        )


def test_a_bad_thread_count_is_refused_before_any_write(monkeypatch):
    p = torch.nn.Parameter(torch.ones(4))
    p.grad = torch.ones(4)
    opt = RMSprop([p], fused=True)
    monkeypatch.setenv("RMSPROP_NUM_THREADS", "auto")
    with pytest.raises(ValueError, match="RMSPROP_NUM_THREADS must be a positive integer"):
        opt.step()
    assert torch.equal(p.detach(), torch.ones(4)) and opt.state[p]["step"].item() == 0


def test_many_param_groups_keep_their_plans(monkeypatch):
    groups = [{"params": [torch.nn.Parameter(torch.ones(3))], "lr": 0.01 * k} for k in range(40)]
    opt = RMSprop(groups, fused=True)
    for group in groups:
        group["params"][0].grad = torch.ones(3)
    opt.step()
    builds = []
    build = torch_fused_cpu._build_plan
    monkeypatch.setattr(torch_fused_cpu, "_build_plan", lambda *a: builds.append(1) or build(*a))
    for _ in range(3):
        opt.step()
    assert not builds


def test_dense_layouts_other_than_contiguous_take_the_kernel_gapped_ones_the_loop():
    def make():
        torch.manual_seed(0)
        weight = torch.randn(8, 3, 5, 5).to(memory_format=torch.channels_last)
        gapped = torch.randn(4, 6)[:, ::2]  # every other column: the loop's
        return [torch.nn.Parameter(t) for t in (weight, torch.randn(6, 4).t(), gapped)]

    def grads_at(params, step):  # as autograd makes them: laid out as the parameter
        return [torch.full_like(p, 0.5 + step) for p in params]

    compare_with_the_loop(make, grads_at, momentum=0.9, centered=True)
    plan = next(reversed(torch_fused_cpu._plans.values()))
    assert plan.leftover == [2] and plan.counted == [0, 1]


# ---- tensor subclasses: FSDP2's DTensors --------------------------------------------------

RULES = [{}, {"momentum": 0.9, "centered": True, "weight_decay": 0.1}]  # plain, and a rich one


def step_dtensors(mesh, placements, grad_placements, path, options, steps=3):
    """Parameters as DTensors (and, with ``mesh=None``, as plain tensors of the same values)
    stepped with seeded gradients laid out as ``grad_placements`` says."""
    params = []
    for k, placement in enumerate(placements):
        value = torch.randn(6 - k, 4, generator=torch.Generator().manual_seed(k))
        params.append(value if mesh is None else dtensors.as_dtensor(value, mesh, placement))
    params = [torch.nn.Parameter(p) for p in params]
    opt = RMSprop(params, **path, **options)
    for step in range(steps):
        generator = torch.Generator().manual_seed(100 + step)
        for p, placement in zip(params, grad_placements):
            grad = torch.randn(p.shape, generator=generator)
            p.grad = grad if mesh is None else dtensors.as_dtensor(grad, mesh, placement)
        opt.step()
    return [p.to_local() if mesh is not None else p for p in params], opt


@dtensors.needed
@pytest.mark.parametrize("options", RULES, ids=["plain", "centered"])
def test_fsdp2_dtensors_step_through_their_local_shards(options):
    placements = ["shard", "replicate", "shard"]
    plain, _ = step_dtensors(None, placements, placements, {"fused": True}, options)
    with dtensors.one_rank_mesh("cpu") as mesh:
        shards, opt = step_dtensors(mesh, placements, placements, {"fused": True}, options)
        # The kernel read the shards' memory (a DTensor itself has none: address 0).
        ((table, indices),) = next(reversed(torch_fused_cpu._plans.values())).tables
        assert indices == [0, 1, 2]
        assert list(table.addresses[_fused_cpu.PARAM]) == [s.data_ptr() for s in shards]
        assert all(opt.state[p]["step"].item() == 3 for p in opt.param_groups[0]["params"])
    for a, b in zip(shards, plain):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


PARTIAL_SUMS = pytest.mark.skipif(
    release(torch.__version__) < (2, 10),
    reason="DTensor before torch 2.10 can't redistribute a sharded parameter to a partial sum "
    "(in any optimizer's single-tensor path)",
)


@dtensors.needed
@pytest.mark.parametrize(
    "grad_placement",
    ["replicate", pytest.param("partial", marks=PARTIAL_SUMS)],
    ids=["grad-laid-out-otherwise", "partial-grad"],
)
def test_dtensors_whose_shards_differ_take_the_single_tensor_path(grad_placement, monkeypatch):
    build = torch_fused_cpu._build_plan

    def addresses_only(tensors):  # a DTensor has no memory of its own: its address is 0
        assert all(t.data_ptr() for ts in tensors[:-1] for t in ts), "a DTensor reached the kernel"
        return build(tensors)

    monkeypatch.setattr(torch_fused_cpu, "_build_plan", addresses_only)
    options = RULES[1]
    loop, _ = step_dtensors(None, ["shard"], ["shard"], {"foreach": False}, options)
    with dtensors.one_rank_mesh("cpu") as mesh:
        got, _ = step_dtensors(mesh, ["shard"], [grad_placement], {"fused": True}, options)
    for a, b in zip(got, loop):
        # The same ops, though a partial gradient's may run in another order.
        torch.testing.assert_close(a, b)


@dtensors.needed
def test_a_dtensor_whose_shard_is_a_subclass_too_takes_the_single_tensor_path():
    # As a float8 weight's shard is under FSDP2: the shard has no memory of its own either.
    two_tensor = pytest.importorskip("torch.testing._internal.two_tensor")

    def run(path):
        with dtensors.one_rank_mesh("cpu") as mesh:
            value = torch.randn(8, generator=torch.Generator().manual_seed(0))
            p = torch.nn.Parameter(
                dtensors.as_dtensor(two_tensor.TwoTensor(value, value.clone()), mesh, "shard")
            )
            p.grad = dtensors.as_dtensor(torch.full((8,), 0.5), mesh, "shard")
            RMSprop([p], momentum=0.9, **path).step()
            shard = p.to_local()
            return shard.a, shard.b

    fused, loop = run({"fused": True}), run({"foreach": False})  # fused used to segfault here
    for a, b in zip(fused, loop):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@dtensors.needed
def test_autograd_sees_a_dtensor_change_when_the_kernel_steps_its_shard():
    with dtensors.one_rank_mesh("cpu") as mesh:
        p = torch.nn.Parameter(dtensors.as_dtensor(torch.randn(4), mesh, "shard"))
        loss = (p * p).sum()  # saves p for backward
        p.grad = dtensors.as_dtensor(torch.randn(4), mesh, "shard")
        RMSprop([p], fused=True).step()
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            loss.backward()


@dtensors.needed
def test_a_step_the_fused_path_refuses_changes_nothing_even_its_subclass_tensors():
    # Rounding bfloat16 parameters stochastically needs the Triton kernel: refused on the CPU
    # before any tensor moves, those headed for the single-tensor path included.
    with dtensors.one_rank_mesh("cpu") as mesh:
        shard = dtensors.as_dtensor(torch.ones(4), mesh, "shard")
        bf16 = torch.ones(4, dtype=torch.bfloat16)
        params = [torch.nn.Parameter(shard), torch.nn.Parameter(bf16.clone())]
        params[0].grad = dtensors.as_dtensor(torch.ones(4), mesh, "replicate")  # not alike
        params[1].grad = bf16.clone()
        opt = RMSprop(params, fused=True, stochastic_rounding=True)
        with pytest.raises(ValueError, match="needs the fused Triton kernel"):
            opt.step()
        assert torch.equal(params[0].full_tensor(), torch.ones(4))
        assert torch.equal(params[1].detach(), bf16)


# ---- torch.compile -------------------------------------------------------------------------


@pytest.mark.skipif(not _fused.ONE_OP, reason="torch < 2.5 can't functionalize the op")
@pytest.mark.parametrize("options", RULES, ids=["plain", "centered"])
def test_a_compiled_step_calls_the_kernel_as_one_op(options):
    import torch._dynamo

    def make(optimizer=RMSprop, **path):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        return model, optimizer(model.parameters(), **path, **options)

    graphs = []

    def recording(graph_module, example_inputs):  # then through AOT autograd, as inductor would
        graphs.append(graph_module)
        return torch._dynamo.backends.debugging.aot_eager(graph_module, example_inputs)

    eager, eager_opt = make(fused=True)
    compiled, compiled_opt = make(fused=True)
    torch._dynamo.reset()
    step = torch.compile(compiled_opt.step, backend=recording)
    for i in range(3):
        x = torch.randn(8, 4, generator=torch.Generator().manual_seed(i))
        for model in (eager, compiled):
            model.zero_grad()
            model(x).pow(2).mean().backward()
        eager_opt.step()
        step()
    for a, b in zip(compiled.parameters(), eager.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # the same kernel on the same memory
    ops = (torch.ops.rmsprop.fused_step, torch.ops.rmsprop.fused_step.default)
    calls = [node for graph in graphs for node in graph.graph.nodes if node.target in ops]
    assert len(calls) == 1  # traced once, as one op over every tensor
    # No graph break of its own: only those torch's optimizer step inserts (as torch's has).
    breaks = torch._dynamo.explain(compiled_opt.step)().graph_break_count
    torch_model, torch_opt = make(torch.optim.RMSprop, foreach=False)
    torch_model(x).pow(2).mean().backward()
    assert breaks == torch._dynamo.explain(torch_opt.step)().graph_break_count >= 0


@dtensors.needed
@pytest.mark.parametrize("one_op", [True, False], ids=["one-op", "between-graphs"])
def test_a_compiled_step_moves_the_version_counters_of_dtensors_it_steps(one_op, monkeypatch):
    import torch._dynamo

    if not _fused.ONE_OP:  # the fallback's own logic is checked here with torch >= 2.5
        pytest.skip("torch < 2.5 can't functionalize the op, nor compile this DTensor step")
    monkeypatch.setattr(_fused, "ONE_OP", one_op)
    torch._dynamo.reset()
    with dtensors.one_rank_mesh("cpu") as mesh:
        p = torch.nn.Parameter(dtensors.as_dtensor(torch.randn(4), mesh, "shard"))
        opt = RMSprop([p], fused=True)
        step = torch.compile(opt.step, backend="aot_eager")
        versions = []
        for _ in range(2):
            p.grad = dtensors.as_dtensor(torch.randn(4), mesh, "shard")
            step()
            versions.append(p._version)
        assert 0 < versions[0] < versions[1]  # as an eager step's in-place ops would move them


def eager_and_compiled(steps, tensor_lr=False, scheduled=False):
    """A small model stepped eagerly, then the same through a compiled step (fused, the rich
    rule): both models' parameters, and the graphs compiled by the end of each step."""
    import torch._dynamo

    results, graphs, compiled_by_step = [], [], []

    def recording(graph_module, example_inputs):  # then through AOT autograd, as inductor would
        graphs.append(graph_module)
        return torch._dynamo.backends.debugging.aot_eager(graph_module, example_inputs)

    torch._dynamo.reset()
    for compiled in (False, True):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        lr = torch.tensor(0.01) if tensor_lr else 0.01
        opt = RMSprop(model.parameters(), lr=lr, fused=True, **RULES[1])
        schedule = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.5) if scheduled else None
        step = torch.compile(opt.step, backend=recording) if compiled else opt.step
        for i in range(steps):
            x = torch.randn(8, 4, generator=torch.Generator().manual_seed(i))
            model.zero_grad()
            model(x).pow(2).mean().backward()
            step()
            if schedule is not None:
                schedule.step()
            compiled_by_step.append(len(graphs))
        results.append(list(model.parameters()))
    return results, graphs, compiled_by_step[steps:]


def test_a_tensor_lr_under_a_scheduler_compiles_once():
    # A float lr is a constant to torch.compile: each new value recompiles the step, as with
    # torch.optim. A tensor lr is an input, which schedulers fill in place.
    # 100 steps: none recompiles as the scheduler moves the lr.
    (eager, compiled), _, by_step = eager_and_compiled(100, tensor_lr=True, scheduled=True)
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert by_step[2] and by_step[-1] == by_step[2]  # none after


def test_where_the_op_cannot_be_compiled_a_step_runs_it_between_graphs(monkeypatch):
    # As with torch 2.4, whose functionalization refuses ops that mutate tensor lists.
    monkeypatch.setattr(_fused, "ONE_OP", False)
    (eager, compiled), graphs, _ = eager_and_compiled(3)
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    ops = (torch.ops.rmsprop.fused_step, torch.ops.rmsprop.fused_step.default)
    assert graphs and not [n for g in graphs for n in g.graph.nodes if n.target in ops]
