"""The kept fused step: an unchanged step reuses its lists and plan, and any change is caught.

Each row changes one thing between two steps (a gradient's address, layout,
dtype or lazy negation, a parameter's memory, a state tensor, the state dicts,
a group's options or parameter list). The fused optimizer must compute what
the single-tensor path computes on the same changes, its kept step must refuse
the changed step (the check that catches it ran) and be taken again on the
steps after it.

The main run exercises the Numba kernel; with ``TRITON_INTERPRET=1`` (the
interpreter run of ``ci/test.sh``) the same rows exercise the Triton kernel's
launcher: the test ids name the kernel.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import pytest

torch = pytest.importorskip("torch", reason="the torch backend needs the torch extra")

from rmsprop.torch import RMSprop, _fused, _optimizer  # noqa: E402

KERNEL = _fused.fused_kernel("cpu")
if KERNEL.why_not("cpu"):
    pytest.skip(
        f"no fused kernel on CPU tensors here: {KERNEL.why_not('cpu')}", allow_module_level=True
    )

if not _optimizer._COUNTED_STATE:
    pytest.skip(
        "torch < 2.5: the optimizer keeps torch's plain state dicts (its torch.compile cannot "
        "trace counting ones), so no step is kept",
        allow_module_level=True,
    )

SHAPES = [(3, 4), (5,), (2, 3, 2)]
STEPS, CHANGE_AT = 6, 3


def _grads(step: int, params: list[torch.Tensor]) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(100 + step)
    return [torch.randn(p.shape, generator=generator, dtype=p.dtype) for p in params]


# --- the changes: each mutates (params, optimizer) between steps ---------------------


def new_grad_addresses(params, opt):
    for p in params:
        p.grad = p.grad.clone()


def transposed_grad(params, opt):
    g = params[0].grad
    params[0].grad = g.t().contiguous().t()  # same values and shape, column-major


def negated_grad_view(params, opt):
    g = params[1].grad
    params[1].grad = torch._neg_view(-g)  # same values, memory holding their negation


def grad_dtype_changed_in_place(params, opt):
    params[2].grad.data = params[2].grad.data.double()


def one_grad_missing(params, opt):
    params[1].grad = None


def param_memory_replaced(params, opt):
    params[0].data = params[0].data.clone()


def param_dtype_changed(params, opt):
    params[1].data = params[1].data.double()
    params[1].grad = params[1].grad.double()


def state_tensor_replaced(params, opt):
    state = opt.state[params[0]]
    state["square_avg"] = state["square_avg"].clone()


def state_memory_replaced_in_place(params, opt):
    v = opt.state[params[2]]["square_avg"]
    v.data = v.data.clone()


def step_count_memory_replaced_in_place(params, opt):
    step = opt.state[params[1]]["step"]
    step.data = step.data.clone()


def state_reset_by_the_user(params, opt):
    opt.state = defaultdict(dict)


def state_dict_loaded(params, opt):
    opt.load_state_dict(opt.state_dict())


def momentum_turned_on(params, opt):
    opt.param_groups[0]["momentum"] = 0.5


def centered_turned_on(params, opt):
    opt.param_groups[0]["centered"] = True


def param_appended_to_the_group(params, opt):
    extra = torch.nn.Parameter(torch.randn(4, generator=torch.Generator().manual_seed(7)))
    params.append(extra)
    opt.param_groups[0]["params"].append(extra)


def learning_rate_scheduled(params, opt):
    opt.param_groups[0]["lr"] *= 0.5


def _when_off(option: str) -> Callable[[dict], bool]:
    """Refused when the option was off (turning it on needs new state); else a new rule only."""
    return lambda options: not options.get(option)


# (change, whether the kept step must refuse the step after it (or a function of the options
# saying so), whether a step is kept again after it)
CHANGES: list[tuple[Callable[..., None], object, bool]] = [
    (new_grad_addresses, False, True),  # followed: only the tables' gradient rows move
    (transposed_grad, True, True),
    (negated_grad_view, True, True),
    (grad_dtype_changed_in_place, True, True),  # (the next gradient is float32 again)
    (one_grad_missing, True, False),  # the group then has a parameter without a gradient
    (param_memory_replaced, True, True),
    (param_dtype_changed, True, False),  # its state is float32 now: the single-tensor path's
    (state_tensor_replaced, True, True),
    (state_memory_replaced_in_place, True, True),
    (step_count_memory_replaced_in_place, KERNEL.on_device, True),  # Triton writes it
    (state_reset_by_the_user, True, True),
    (state_dict_loaded, True, True),
    (momentum_turned_on, _when_off("momentum"), True),
    (centered_turned_on, _when_off("centered"), True),
    (param_appended_to_the_group, True, True),
    (learning_rate_scheduled, False, True),  # a new rule, same tensors: no new plan
]


def _train(change, fused: bool, taken: list[bool] | None = None, **options):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape)) for shape in SHAPES]
    opt = RMSprop(params, fused=fused, foreach=None if fused else False, lr=0.01, **options)
    for step in range(STEPS):
        for p, g in zip(params, _grads(step, params)):
            if p.grad is not None or step == 0 or change is not one_grad_missing:
                p.grad = g
        if step == CHANGE_AT:
            change(params, opt)
        if taken is not None:
            taken.append(bool(opt._kept))
        opt.step()
    return params


@pytest.fixture
def runs(monkeypatch):
    """Records whether each step that found a kept step took it."""
    answers: list[bool] = []
    take = RMSprop._take_kept

    def recording(self, *args, **kwargs):
        answer = take(self, *args, **kwargs)
        answers.append(answer)
        return answer

    monkeypatch.setattr(RMSprop, "_take_kept", recording)
    return answers


@pytest.mark.parametrize(
    "options",
    [{}, {"momentum": 0.9, "centered": True}, {"flavor": "tensorflow", "bias_correction": True}],
    ids=["plain", "centered-momentum", "tf-bias-corrected"],
)
@pytest.mark.parametrize(
    ("change", "refused", "kept_again"), CHANGES, ids=[c.__name__ for c, _, _ in CHANGES]
)
def test_a_changed_step_is_caught_and_computed_right(change, refused, kept_again, options, runs):
    try:
        expected = _train(change, fused=False, **options)
    except RuntimeError as error:  # the change is an error for torch's ops: for ours too
        with pytest.raises(type(error)):
            _train(change, fused=True, **options)
        return
    kept_before: list[bool] = []
    got = _train(change, fused=True, taken=kept_before, **options)
    for e, g in zip(expected, got):
        assert g.dtype == e.dtype
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)
    # Whether each step found a kept step, and took it.
    answers = iter(runs)
    taken = [next(answers) if had else None for had in kept_before]
    assert taken[1] is True and taken[CHANGE_AT - 1] is True  # unchanged steps reuse it
    if callable(refused):
        refused = refused(options)
    assert (taken[CHANGE_AT] is True) is (not refused)
    assert (taken[-1] is True) is kept_again


@pytest.fixture(autouse=True, params=[KERNEL.name])
def kernel_name(request):
    """Names the kernel under test in every id (the interpreter run selects 'triton')."""
    return request.param


def test_the_kept_step_is_taken_and_pays_no_per_parameter_dict_lookups(runs, monkeypatch):
    params = [torch.nn.Parameter(torch.randn(3)) for _ in range(5)]
    opt = RMSprop(params, fused=True)
    lookups = []
    getitem = type(opt.state).__getitem__
    monkeypatch.setattr(
        type(opt.state), "__getitem__", lambda s, k: lookups.append(1) or getitem(s, k)
    )
    for _ in range(3):
        for p in params:
            p.grad = torch.randn(3)
        opt.step()
    assert runs == [True, True]
    assert len(lookups) == len(params)  # the first step's only


def test_only_a_fused_step_is_kept():
    params = [torch.nn.Parameter(torch.randn(3))]
    opt = RMSprop(params, fused=True)
    params[0].grad = torch.randn(3)
    opt.step()
    assert opt._kept
    opt2 = RMSprop(params, fused=False, foreach=True)
    opt2.step()
    assert not opt2._kept


def test_a_state_dict_holds_plain_dicts_and_loads_with_weights_only(tmp_path):
    params = [torch.nn.Parameter(torch.randn(3))]
    opt = RMSprop(params, fused=True)
    params[0].grad = torch.randn(3)
    opt.step()
    state_dict = opt.state_dict()
    assert all(type(s) is dict for s in state_dict["state"].values())
    torch.save(state_dict, tmp_path / "opt.pt")
    loaded = torch.load(tmp_path / "opt.pt", weights_only=True)
    opt.load_state_dict(loaded)
    torch.testing.assert_close(opt.state[params[0]]["square_avg"], loaded["state"][0]["square_avg"])


def test_every_way_of_changing_the_state_dicts_is_counted():
    params = [torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.randn(3))]
    opt = RMSprop(params)
    state = opt.state
    p, q = params
    edits = [
        lambda: state[p],  # created by the default factory
        lambda: state[p].__setitem__("x", 1),
        lambda: state[p].update(y=2),
        lambda: state[p].setdefault("z", 3),
        lambda: state[p].pop("z"),
        lambda: state[p].popitem(),
        lambda: state[p].__delitem__("x"),
        lambda: state[p].__ior__({"w": 1}),
        lambda: state[p].clear(),
        lambda: state.__setitem__(q, {"a": 1}),
        lambda: state[q].__setitem__("b", 2),  # a dict stored is counted as well
        lambda: state.update({p: {}}),
        lambda: state.pop(q),
        lambda: state.setdefault(q, {}),
        lambda: state.__delitem__(p),
        lambda: state.__setitem__(p, {}),
        lambda: state.popitem(),
        lambda: state.clear(),
    ]
    for edit in edits:
        before = state.generation.value
        edit()
        assert state.generation.value > before, edit
